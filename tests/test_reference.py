"""The judges themselves: the tutorial loop reproduces the seed, the relu loop equals autograd."""
import torch

from manualnn import relu_loop, seed_data, tutorial_loop
from seed_script import run_seed_script


def test_tutorial_loop_reproduces_the_seed_script():
    expected = run_seed_script(0)
    x, y, weights = seed_data(0)
    run = tutorial_loop(x, y, weights)
    got = [f"Epoch:{i}, Loss:{loss:.4f}" for i, loss in enumerate(run.losses)]
    assert got == expected  # same ops in the same order: the same float32 numbers


def test_reference_leaves_inputs_alone():
    x, y, weights = seed_data(1, batch=5, features=7, hidden=(6,), out=3)
    before = [w.clone() for w in weights]
    relu_loop(x, y, weights, 3)
    assert all(torch.equal(a, b) for a, b in zip(before, weights))


def autograd_run(x, y, weights, epochs, lr):
    """nn.Sequential of bias-free Linear and ReLU, sum-of-squares loss, torch.optim.SGD."""
    layers = []
    for i, w in enumerate(weights):
        lin = torch.nn.Linear(w.shape[0], w.shape[1], bias=False, dtype=w.dtype)
        with torch.no_grad():
            lin.weight.copy_(w.t())
        layers.append(lin)
        if i < len(weights) - 1:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses, snapshots = [], []
    for _ in range(epochs):
        opt.zero_grad()
        loss = (model(x) - y).pow(2).sum()
        losses.append(loss.item())
        loss.backward()
        opt.step()
        snapshots.append([m.weight.detach().t().clone() for m in model if isinstance(m, torch.nn.Linear)])
    return losses, snapshots


def test_relu_loop_equals_autograd_step_by_step():
    x, y, weights = seed_data(2, batch=13, features=17, hidden=(9, 5), out=4, dtype=torch.float64)
    losses, snapshots = autograd_run(x, y, weights, 5, 1e-3)
    for epoch in range(5):
        run = relu_loop(x, y, weights, epoch + 1, 1e-3)
        assert abs(run.losses[-1] - losses[epoch]) <= 1e-12 * abs(losses[epoch])
        for w, a in zip(run.weights, snapshots[epoch]):
            torch.testing.assert_close(w, a, rtol=1e-12, atol=1e-12)


def test_tutorial_and_relu_modes_differ():
    # the seed's clamp of gradient values is not the ReLU backward: the judges must tell them apart
    x, y, weights = seed_data(3, batch=8, features=12, hidden=(10,), out=3, dtype=torch.float64)
    a, b = relu_loop(x, y, weights, 3, 1e-3), tutorial_loop(x, y, weights, 3, 1e-3)
    assert not torch.allclose(a.weights[0], b.weights[0])
