"""Chunks of epochs replayed as a graph give exactly the numbers of eager stepping.

On the CPU the graph is a plain recording (graphs.RecordedChunk): that tests the plumbing (the
per-epoch row orders copied into the graph's buffer, the loss slots, the eager first epoch, one
graph per chunk length). On CUDA the real torch.cuda.CUDAGraph is compared with eager stepping.
"""
import contextlib

import pytest
import torch

import manualnn

from manualnn import Trainer, seed_data
from manualnn.training.graphs import ChunkGraph, RecordedChunk, graph_length


def recorded(trainer):
    trainer.graph, trainer.capture = True, RecordedChunk
    return trainer


def problem(device="cpu"):
    x, y, w0 = seed_data(6, batch=45, features=12, hidden=(10, 7), out=3, init="kaiming", device=device)
    labels = y.argmax(1)
    return x[:35], labels[:35], w0, (x[35:], labels[35:])


@pytest.mark.parametrize("batch_size", [None, 8], ids=["full-batch", "minibatch"])
def test_recorded_chunks_equal_eager_epochs(batch_size):
    x, y, w0, val = problem()
    kw = dict(lr=1e-3, backend="torch", batch_size=batch_size, shuffle_seed=3, val_data=val)
    eager = Trainer(x, y, w0, **kw)
    eager.run(13, every=4)
    graphed = recorded(Trainer(x, y, w0, **kw))
    graphed.run(13, every=4)
    assert graphed.losses == eager.losses and graphed.val_losses == eager.val_losses
    assert graphed.val_accuracies == eager.val_accuracies
    assert all(torch.equal(a, b) for a, b in zip(graphed.weights, eager.weights))
    # one eager epoch, then chunks of 4: one graph of 2 epochs, replayed twice per chunk
    assert graphed.chunk_graph.n == 2 and graphed.epoch == 13 and len(graphed.losses) == 13


def test_a_graph_is_replayed_at_least_twice_per_chunk():
    assert [graph_length(n) for n in (1, 3, 4, 7, 8, 19, 64)] == [0, 0, 2, 2, 4, 8, 32]


def test_a_graph_is_bounded_by_its_steps_and_its_orders_bytes():
    from manualnn.training.graphs import MAX_GRAPH_BYTES, MAX_GRAPH_STEPS
    # 2,000 epochs of a million rows in batches of 200: 5,000 steps and 8 MB of order per epoch
    length = graph_length(2000, 5000, 8_000_000)
    assert length == 8 and length * 5000 <= MAX_GRAPH_STEPS and length * 8_000_000 <= MAX_GRAPH_BYTES
    assert graph_length(100, MAX_GRAPH_STEPS + 1) == 0          # one epoch is already too large: eager
    assert graph_length(100, 1, MAX_GRAPH_BYTES // 3) == 2


class FakeStream:
    """A stand-in for torch.cuda.Stream on the CPU that records whom it waited for."""

    def __init__(self, name, log):
        self.name, self.log = name, log

    def wait_stream(self, other):
        self.log.append(f"{self.name} waits for {other.name}")


def test_the_side_stream_waits_for_the_callers_stream(monkeypatch):
    """The trainer's inputs, parameters and buffers are written on the caller's stream: its side stream waits
    for that stream before its first kernel, every time it takes over (and the caller waits for it after)."""
    x, y, w0, _ = problem()
    log = []
    caller, side = FakeStream("caller", log), FakeStream("side", log)
    trainer = Trainer(x, y, w0, lr=1e-3, backend="torch")
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: caller)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: (log.append(f"work on {s.name}"), contextlib.nullcontext())[1])
    trainer.stream = side
    trainer.run(2)
    trainer.train_epoch()
    assert log == ["side waits for caller", "work on side", "caller waits for side"] * 2, log


def test_the_graph_reads_each_epochs_order_from_its_buffer():
    x, y, w0, _ = problem()
    trainer = Trainer(x, y, w0, lr=1e-3, backend="torch", batch_size=8, shuffle_seed=3)
    order = lambda epoch: manualnn.training.batch_order(35, epoch, seed=3)  # noqa: E731
    chunk = ChunkGraph(trainer.runner, 3, order, capture=RecordedChunk)
    chunk.run(first_epoch=5)
    for i in range(3):
        assert torch.equal(chunk.orders[i], order(5 + i))
    assert not torch.equal(chunk.orders[0], chunk.orders[1])


def test_every_loss_slot_is_16_byte_aligned():
    # Triton compiles a kernel variant per pointer alignment: the warm-up epoch and a captured chunk
    # must hand the steps equally aligned loss slots, or the capture compiles (and fails) mid-way
    x, y, w0, val = problem()
    trainer = recorded(Trainer(x, y, w0, lr=1e-3, backend="torch", batch_size=8, val_data=val))
    seen = []
    for step in trainer.steps:
        real = step.step
        step.step = lambda loss_out, real=real: (seen.append(loss_out.data_ptr() % 16), real(loss_out))
    trainer.run(9, every=4)
    assert seen and set(seen) == {0}, seen
    assert trainer.chunk_graph is not None


def test_graph_needs_cuda():
    x, y, w0, _ = problem()
    with pytest.raises(ValueError, match=r"graph: CUDA graphs need a CUDA device, got device cpu"):
        Trainer(x, y, w0, graph=True)
    assert Trainer(x, y, w0).graph is False


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("batch_size", [None, 8], ids=["full-batch", "minibatch"])
def test_cuda_graph_replays_equal_eager_stepping(backend, batch_size):
    x, y, w0, val = problem("cuda")
    kw = dict(lr=1e-3, backend=backend, batch_size=batch_size, shuffle_seed=3, val_data=val)
    eager = Trainer(x, y, w0, graph=False, **kw)
    eager.run(21, every=5)
    graphed = Trainer(x, y, w0, **kw)
    assert graphed.graph
    graphed.run(21, every=5)
    assert graphed.chunk_graph is not None, "no chunk was replayed as a graph"
    assert graphed.losses == eager.losses and graphed.val_losses == eager.val_losses
    assert all(torch.equal(a, b) for a, b in zip(graphed.weights, eager.weights))


@pytest.mark.cuda
def test_the_first_kernels_see_what_the_callers_stream_wrote(monkeypatch):
    """The caller's stream is kept busy just before the trainer builds its parameters ([w; b]) and its
    [x, 1] there: a side stream that did not wait would train on memory not yet written."""
    from manualnn.spec import Params
    x, y, w0, _ = problem("cuda")
    kw = dict(lr=1e-3, backend="torch", bias=True, batch_size=8)
    expected = Trainer(x, y, w0, **kw).run(3)
    real = Params.from_weights.__func__
    monkeypatch.setattr(Params, "from_weights", classmethod(
        lambda cls, *a, **k: (torch.cuda._sleep(200_000_000), real(cls, *a, **k))[1]))
    got = Trainer(x, y, w0, **kw).run(3)
    assert got.losses == expected.losses
    assert all(torch.equal(a, b) for a, b in zip(got.weights, expected.weights))
