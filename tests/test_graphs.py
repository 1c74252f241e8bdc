"""Chunks of epochs replayed as a graph give exactly the numbers of eager stepping.

On the CPU the graph is a plain recording (graphs.RecordedChunk): that tests the plumbing (the
per-epoch row orders copied into the graph's buffer, the loss slots, the eager first epoch, one
graph per chunk length). On CUDA the real torch.cuda.CUDAGraph is compared with eager stepping.
"""
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
