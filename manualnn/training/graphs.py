"""Chunks of epochs as one CUDA graph: no Python and no launch overhead per step.

At the seed's shape a step is a few microseconds of GPU work and tens of microseconds of host
work launching it, so the host decides the speed. ``ChunkGraph`` captures ``n`` epochs of an
EpochRunner (every batch step and the validation pass) once and replays them for each later chunk of
``n`` epochs: the same kernels on the same buffers, so the losses and weights are identical to eager
stepping. What changes between chunks lives in device buffers the graph reads: the rows' order of
each epoch (copied in before the replay) and the loss slots (read out after it).

The Trainer captures only after an eager epoch on the same side stream (autotuning, compilation,
cuBLAS's first use of the stream and the allocations are done by then), and replays one graph length
for a whole run. ``capture=`` swaps the CUDA graph for a plain recording, so the plumbing is tested on
the CPU too.
"""
import torch


class RecordedChunk:
    """A stand-in for torch.cuda.CUDAGraph on the CPU: 'capture' keeps the function, 'replay' calls it."""

    def __init__(self, fn, stream=None):
        self.fn = fn

    def replay(self):
        self.fn()


def cuda_capture(fn, stream):
    """Capture ``fn``'s kernels into a CUDA graph on ``stream`` (which already ran them eagerly once).

    capture_begin/capture_end directly: torch.cuda.graph() would also synchronise the device, collect
    garbage and empty the allocator's cache on every capture, which nothing here needs."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream):
        graph.capture_begin()
        try:
            fn()
        finally:
            graph.capture_end()
    return graph


# What one captured graph may hold: its steps (each a few kernel nodes the driver keeps) and the bytes of
# its epochs' row orders (a buffer the graph reads): 2,000 epochs of a million rows in batches of 200
# would otherwise capture 2.5M steps and a 4 GB order buffer.
MAX_GRAPH_STEPS = 1 << 16
MAX_GRAPH_BYTES = 1 << 28


def graph_length(epochs, steps_per_epoch=1, order_bytes_per_epoch=0):
    """The epochs one graph holds for a chunk of ``epochs``: a power of two that the chunk replays at
    least twice (a graph replayed once costs its capture and saves nothing), within MAX_GRAPH_STEPS steps
    and MAX_GRAPH_BYTES of row orders; 0: run it eagerly."""
    most = min(epochs // 2, MAX_GRAPH_STEPS // max(1, steps_per_epoch),
               MAX_GRAPH_BYTES // max(1, order_bytes_per_epoch))
    if epochs < 4 or most < 1:
        return 0
    return 1 << (most.bit_length() - 1)


class ChunkGraph:
    """``n`` epochs of ``runner`` captured once; ``run(first_epoch)`` replays them.

    ``host_order(epoch)`` gives an epoch's row order on the host. Returns the chunk's output rows
    (see EpochRunner.new_rows), still on the device.
    """

    def __init__(self, runner, n, host_order, *, capture=None, stream=None):
        self.runner, self.n, self.host_order = runner, n, host_order
        self.out = runner.new_rows(n)
        self.orders = None
        if not runner.full:
            self.orders = torch.empty(n, runner.x.shape[0], dtype=torch.int64, device=runner.x.device)
        capture = capture or (cuda_capture if runner.x.device.type == "cuda" else RecordedChunk)
        # The capture records work without running it, so the weights are untouched until replay().
        self.graph = capture(self._epochs, stream)

    def _epochs(self):
        for i in range(self.n):
            self.runner.run(None if self.orders is None else self.orders[i], self.out[i])

    def run(self, first_epoch):
        if self.orders is not None:
            orders = torch.stack([self.host_order(first_epoch + i) for i in range(self.n)])
            if self.orders.device.type == "cuda":
                orders = orders.pin_memory()
            self.orders.copy_(orders, non_blocking=True)   # stream-ordered before the replay
        self.graph.replay()
        return self.out
