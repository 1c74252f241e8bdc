"""The judges themselves: the tutorial loop reproduces the seed; the relu loop and the general reference
run (biases, losses, reductions, optimizers, mini-batches) equal torch.autograd and torch.optim."""
import pytest
import torch

import manualnn
from manualnn import StepSpec, reference_run, relu_loop, seed_data, tutorial_loop
from manualnn.training import batch_order
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


def autograd_general(x, y, weights, biases, *, epochs, batch_size, order, spec, decay_biases=False):
    """nn.Linear layers (with biases when given) + ReLU, the loss as torch writes it, torch.optim: the
    way a PyTorch user trains; weight decay only on the weights (a second param group)."""
    layers = []
    for i, w in enumerate(weights):
        lin = torch.nn.Linear(w.shape[0], w.shape[1], bias=biases is not None, dtype=w.dtype)
        with torch.no_grad():
            lin.weight.copy_(w.t())
            if biases is not None:
                lin.bias.copy_(biases[i])
        layers.append(lin)
        if i < len(weights) - 1:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    groups = [{"params": [m.weight for m in linears], "weight_decay": spec.weight_decay}]
    if biases is not None:
        groups.append({"params": [m.bias for m in linears], "weight_decay": spec.weight_decay if decay_biases else 0.0})
    if spec.optimizer == "adam":
        opt = torch.optim.Adam(groups, lr=spec.lr, betas=spec.betas, eps=spec.eps)
    else:
        opt = torch.optim.SGD(groups, lr=spec.lr, momentum=spec.momentum if spec.optimizer == "momentum" else 0)
    reduction = spec.reduction
    losses = []
    n = x.shape[0]
    for epoch in range(epochs):
        rows, total = order(epoch), 0.0
        for idx in torch.tensor_split(rows, -(-n // batch_size)):   # even batches, the first ones a row larger
            opt.zero_grad()
            z = model(x[idx])
            if spec.loss == "sse":
                loss = torch.nn.functional.mse_loss(z, y[idx], reduction="sum")
            else:
                loss = torch.nn.functional.cross_entropy(z, y[idx].argmax(1), reduction="sum")
            total += loss.item()
            (loss / len(idx) if reduction == "mean" else loss).backward()
            opt.step()
        losses.append(total / n if reduction == "mean" else total)
    return losses, [m.weight.detach().t() for m in linears], [m.bias.detach() for m in linears] if biases else None


@pytest.mark.parametrize("loss", ["sse", "ce"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_reference_run_equals_autograd_and_torch_optim(loss, reduction, optimizer):
    # float64, biases, weight decay on the weights only, mini-batches in a shuffled order, of two sizes a row apart
    x, y, weights = seed_data(4, batch=23, features=11, hidden=(9, 6), out=3, init="kaiming", dtype=torch.float64)
    y = torch.nn.functional.one_hot(y.argmax(1), 3).double() if loss == "ce" else y
    biases = [torch.randn(w.shape[1], dtype=torch.float64) * 0.1 for w in weights]
    spec = StepSpec(lr=1e-2 if optimizer == "adam" or reduction == "mean" else 1e-3, loss=loss, reduction=reduction,
                    optimizer=optimizer, weight_decay=0.05, momentum=0.8, betas=(0.85, 0.99), eps=1e-6)
    order = lambda e: batch_order(23, e, seed=1)  # noqa: E731
    want_losses, want_w, want_b = autograd_general(x, y, weights, biases, epochs=4, batch_size=5, order=order, spec=spec)
    got = reference_run(x, y, weights, biases, epochs=4, spec=spec, batch_size=5, order=order)
    assert got.losses == pytest.approx(want_losses, rel=1e-12)
    for a, b in zip(got.weights + got.biases, want_w + want_b):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)
    # and the comparison can fail: decaying the biases too is another run
    _, _, decayed = autograd_general(x, y, weights, biases, epochs=4, batch_size=5, order=order, spec=spec,
                                     decay_biases=True)
    assert not torch.allclose(got.biases[0], decayed[0], rtol=1e-9, atol=1e-12)


def test_the_judge_fails_a_missing_layer_and_missing_biases():
    """A run that lost a layer (or its biases) is not judged on the layers it kept."""
    from manualnn.testing import judge
    x, y, weights = seed_data(5, batch=12, features=8, hidden=(6, 5), out=3)
    result = manualnn.train(x, y, weights, epochs=2, lr=1e-4, backend="torch")
    whole = judge(result.losses, result.weights, x, y, weights, epochs=2, lr=1e-4, grad="relu")
    assert whole.ok, whole.summary()
    short = judge(result.losses, result.weights[:2], x, y, weights, epochs=2, lr=1e-4, grad="relu")
    assert not short.ok and "expected 3 weight tensors, got 2" in short.summary()
    biased = manualnn.train(x, y, weights, epochs=2, lr=1e-4, bias=True, backend="torch")
    zeros = [torch.zeros(w.shape[1]) for w in weights]
    verdict = judge(biased.losses, biased.weights, x, y, weights, epochs=2, lr=1e-4, grad="relu",
                    biases=biased.biases[:2], biases0=zeros)
    assert not verdict.ok and "expected 3 bias tensors, got 2" in verdict.summary()
