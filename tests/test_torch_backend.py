"""The torch backend against the float64 reference: both gradient modes at many shapes, and every
loss, reduction and optimizer, with and without biases, in mini-batches; its protocol pieces."""
import itertools

import pytest
import torch

import manualnn
from helpers import run_and_judge
from manualnn import StepSpec, seed_data
from manualnn.backends import make_step
from manualnn.spec import Params, with_ones
from manualnn.testing import judge
from manualnn.training import batch_order
from test_reference import autograd_run

SHAPES = {
    # name: (batch, features, hidden, out, lr)
    "seed": (100, 1000, (100,), 10, 1e-6),
    "batch1": (1, 33, (17,), 10, 1e-3),
    "w17": (17, 17, (17,), 17, 1e-3),
    "w33": (33, 129, (33,), 10, 3e-5),
    "w129": (129, 33, (129,), 1, 1e-5),
    "3hidden": (33, 65, (17, 33, 9), 10, 1e-6),
}


@pytest.mark.parametrize("grad", ["relu", "tutorial"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_torch_backend_matches_reference_fp32(shape, grad):
    batch, features, hidden, out, lr = SHAPES[shape]
    x, y, weights = seed_data(10, batch=batch, features=features, hidden=hidden, out=out)
    run_and_judge(x, y, weights, epochs=20, lr=lr, grad=grad, backend="torch")


@pytest.mark.parametrize("grad", ["relu", "tutorial"])
def test_torch_backend_matches_reference_fp64(grad):
    x, y, weights = seed_data(11, dtype=torch.float64)
    run_and_judge(x, y, weights, epochs=20, lr=1e-6, grad=grad, backend="torch")


def test_relu_mode_equals_autograd_step_by_step():
    x, y, weights = seed_data(12, batch=21, features=40, hidden=(17, 9), out=10, dtype=torch.float64)
    losses, snapshots = autograd_run(x, y, weights, 6, 1e-3)
    trainer = manualnn.Trainer(x, y, weights, lr=1e-3, grad="relu", backend="torch")
    for epoch in range(6):
        loss = trainer.train_epoch()
        assert abs(loss.item() - losses[epoch]) <= 1e-12 * abs(losses[epoch])
        for w, a in zip(trainer.weights, snapshots[epoch]):
            torch.testing.assert_close(w, a, rtol=1e-11, atol=1e-12)


def test_judge_rejects_a_wrong_backend():
    # A test that cannot fail is a defect: the tutorial gradient judged as "relu" must fail,
    # and so must a run whose weights are off by one part in 1e4.
    x, y, weights = seed_data(13, batch=20, features=30, hidden=(16,), out=10)
    wrong = manualnn.train(x, y, weights, epochs=5, lr=1e-3, grad="tutorial", backend="torch")
    assert not judge(wrong.losses, wrong.weights, x, y, weights, epochs=5, lr=1e-3, grad="relu").ok
    right = manualnn.train(x, y, weights, epochs=5, lr=1e-3, grad="relu", backend="torch")
    assert judge(right.losses, right.weights, x, y, weights, epochs=5, lr=1e-3, grad="relu").ok
    nudged = [w * (1 + 1e-4) for w in right.weights]
    assert not judge(right.losses, nudged, x, y, weights, epochs=5, lr=1e-3, grad="relu").ok
    nan = list(right.losses)
    nan[2] = float("nan")
    assert not judge(nan, right.weights, x, y, weights, epochs=5, lr=1e-3, grad="relu").ok


COMBOS = list(itertools.product(["sse", "ce"], ["sum", "mean"], ["sgd", "momentum", "adam"], [False, True]))


@pytest.mark.parametrize("loss,reduction,optimizer,bias", COMBOS)
def test_every_step_setting_matches_the_reference(loss, reduction, optimizer, bias):
    x, y, w0 = seed_data(14, batch=37, features=20, hidden=(17, 9), out=3, init="kaiming")
    y = y.argmax(1) if loss == "ce" else y
    b0 = [torch.randn(w.shape[1]) * 0.1 for w in w0] if bias else None
    settings = dict(loss=loss, reduction=reduction, optimizer=optimizer, weight_decay=0.01)
    lr = 1e-2 if optimizer == "adam" or reduction == "mean" else 1e-3
    result = manualnn.train(x, y, w0, biases=b0, epochs=4, lr=lr, batch_size=8, shuffle_seed=2, backend="torch",
                            **settings)
    verdict = judge(result.losses, result.weights, x, y, w0, epochs=4, lr=lr, grad="relu", biases=result.biases,
                    biases0=b0, batch_size=8, order=lambda e: batch_order(37, e, seed=2), **settings)
    assert verdict.ok, verdict.summary()


def step_objects(spec, bias, rows=11, grads=False):
    x, y, w0 = seed_data(15, batch=11, features=7, hidden=(6,), out=3, init="kaiming", dtype=torch.float64)
    x, y = x[:rows], y[:rows]
    y = torch.nn.functional.one_hot(y.argmax(1), 3).double() if spec.loss == "ce" else y
    g = torch.Generator().manual_seed(16)
    b0 = [torch.randn(w.shape[1], dtype=torch.float64, generator=g) for w in w0] if bias else None
    params = Params.from_weights(w0, b0, spec)
    x_in = x
    if bias:
        x_in = with_ones(rows, 7, like=x)
        x_in[:, :-1].copy_(x)
    buffers = [torch.full_like(p, float("nan")) for p in params.tensors] if grads else None
    return make_step("torch", x_in, y, params, spec, grads=buffers), params


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_gradients_then_update_equals_the_step(optimizer):
    # the distributed path (gradients, all-reduce, update) must be the one-process step exactly
    spec = StepSpec(lr=1e-2, loss="ce", reduction="mean", optimizer=optimizer, weight_decay=0.1)
    folded, p1 = step_objects(spec, bias=True)
    split, p2 = step_objects(spec, bias=True, grads=True)
    l1, l2 = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    for _ in range(3):
        folded.step(l1)
        split.gradients(l2)
        split.update()
        assert l1.item() == pytest.approx(l2.item(), rel=1e-14)
    for a, b in zip(p1.tensors + [p1.step], p2.tensors + [p2.step]):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-14)


def test_a_batch_without_rows_gives_zero_loss_and_zero_gradients():
    spec = StepSpec(lr=1e-2, loss="sse", optimizer="adam")
    step, params = step_objects(spec, bias=True, rows=0, grads=True)
    loss = torch.tensor(7.0, dtype=torch.float64)
    seen = []
    step.gradients(loss, ready=seen.append)
    assert loss.item() == 0 and seen == [1, 0]
    assert all(bool((g == 0).all()) for g in step.grads)


def test_weight_decay_spares_the_bias_row():
    spec = StepSpec(lr=0.5, optimizer="sgd", weight_decay=0.1)
    step, params = step_objects(spec, bias=True, grads=True)
    before = [p.clone() for p in params.tensors]
    for g in step.grads:
        g.zero_()
    step.update()   # a zero gradient: only the decay moves the parameters
    for p, b in zip(params.tensors, before):
        torch.testing.assert_close(p[:-1], b[:-1] * (1 - 0.5 * 0.1))
        assert torch.equal(p[-1], b[-1])
