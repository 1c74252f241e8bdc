"""The torch backend against the float64 reference, in both gradient modes, at many shapes."""
import pytest
import torch

import manualnn
from helpers import run_and_judge
from manualnn import seed_data
from manualnn.testing import judge
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
        loss = trainer.step()
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
