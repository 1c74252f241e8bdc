"""Whole chunks of epochs as one CUDA graph: no Python and no launch overhead per step.

At the seed's shape a step is a few microseconds of GPU work and tens of microseconds of host
work launching it, so the host decides the speed. ``ChunkGraph`` captures ``n`` epochs of a
Trainer (every batch step and the validation pass) once, into a ``torch.cuda.CUDAGraph``, and
replays it for each later chunk of ``n`` epochs: the same kernels on the same buffers, so the
losses and weights are identical to eager stepping. What changes between chunks lives in
device buffers the graph reads: the rows' order of each epoch (copied in before the replay) and
the loss slots (read out after it).

The capture runs after the Trainer's first eager epoch (autotuning, compilation and the
allocations are done by then). ``capture=`` swaps the CUDA graph for a plain recording, so the
buffer plumbing is tested on the CPU too.
"""
import torch


class RecordedChunk:
    """A stand-in for torch.cuda.CUDAGraph on the CPU: 'capture' keeps the function, 'replay' calls it."""

    def __init__(self, fn):
        self.fn = fn

    def replay(self):
        self.fn()


def cuda_capture(fn):
    """Capture ``fn``'s kernels into a CUDA graph (warmed up on a side stream, as PyTorch advises)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream):
        with torch.cuda.graph(graph, stream=stream):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    return graph


class ChunkGraph:
    """``n`` epochs of ``trainer`` captured once; ``run(first_epoch)`` replays them.

    Returns the chunk's [n, 3] buffer: per epoch the loss, the validation loss and the count of
    right validation answers (as Trainer.run expects), still on the device.
    """

    def __init__(self, trainer, n, capture=None):
        self.trainer, self.n = trainer, n
        self.out = trainer._loss_buffer(3 * n).view(n, 3)
        rows = trainer.x.shape[0]
        self.orders = None
        if trainer._plan is not None:
            self.orders = torch.empty(n, rows, dtype=torch.int64, device=trainer.device)
        capture = capture or (cuda_capture if trainer.device.type == "cuda" else RecordedChunk)
        # The capture records work without running it, so the weights are untouched until replay().
        self.graph = capture(self._epochs)

    def _epochs(self):
        for i in range(self.n):
            order = None if self.orders is None else self.orders[i]
            self.trainer._train_epoch(order, self.out[i, 0], self.out[i, 1:])

    def run(self, first_epoch):
        if self.orders is not None:
            orders = torch.stack([self.trainer._host_order(first_epoch + i) for i in range(self.n)])
            if self.orders.device.type == "cuda":
                orders = orders.pin_memory()
            self.orders.copy_(orders, non_blocking=True)   # stream-ordered before the replay
        self.graph.replay()
        return self.out
