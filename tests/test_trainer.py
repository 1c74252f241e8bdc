"""Trainer API: copies vs in place, step-wise use, state round trip, divergence handling."""
import math

import pytest
import torch

import manualnn
from manualnn import NonFiniteLossError, Trainer, seed_data, train
from manualnn.preprocessing import fit_standardizer, standardize
from manualnn.spec import patience_for


def small(seed=20, dtype=torch.float32):
    return seed_data(seed, batch=16, features=24, hidden=(12,), out=10, dtype=dtype)


def test_train_leaves_callers_tensors_alone():
    x, y, weights = small()
    before = [w.clone() for w in weights]
    result = train(x, y, weights, epochs=3, lr=1e-3, backend="torch")
    assert all(torch.equal(a, b) for a, b in zip(before, weights))
    assert not torch.equal(result.weights[0], weights[0])
    assert len(result.losses) == 3 and all(isinstance(v, float) for v in result.losses)


def test_inplace_updates_callers_tensors():
    x, y, weights = small()
    expected = train(x, y, weights, epochs=3, lr=1e-3, backend="torch")
    before = [w.clone() for w in weights]
    result = train(x, y, weights, epochs=3, lr=1e-3, backend="torch", inplace=True)
    assert result.losses == expected.losses
    for w, b, e in zip(weights, before, expected.weights):   # the caller's tensors now hold the trained values
        assert not torch.equal(w, b) and torch.equal(w, e)


def test_result_weights_are_a_snapshot():
    x, y, weights = small()
    trainer = Trainer(x, y, weights, lr=1e-3, backend="torch")
    first = trainer.run(2)
    kept = [w.clone() for w in first.weights]
    trainer.run(3)
    assert all(torch.equal(a, b) for a, b in zip(first.weights, kept))
    assert not torch.equal(first.weights[0], trainer.weights[0])


def test_step_run_and_chunks_agree():
    x, y, weights = small()
    whole = train(x, y, weights, epochs=6, lr=1e-3, backend="torch")
    trainer = Trainer(x, y, weights, lr=1e-3, backend="torch")
    stepped = [trainer.train_epoch() for _ in range(2)]
    assert all(isinstance(s, torch.Tensor) and s.dim() == 0 for s in stepped)
    seen = []
    trainer.run(4, every=3, callback=lambda first, losses: seen.append((first, len(losses))))
    assert seen == [(2, 3), (5, 1)]
    assert trainer.losses == whole.losses and trainer.epoch == 6
    assert all(torch.equal(a, b) for a, b in zip(trainer.weights, whole.weights))


def test_state_dict_round_trip_resumes_exactly():
    x, y, weights = small()
    whole = train(x, y, weights, epochs=8, lr=1e-3, backend="torch")
    first = Trainer(x, y, weights, lr=1e-3, backend="torch")
    first.run(5)
    second = Trainer(x, y, weights, lr=1e-3, backend="torch")
    second.load_state_dict(first.state_dict())
    second.run(3)
    assert second.losses == whole.losses
    assert all(torch.equal(a, b) for a, b in zip(second.weights, whole.weights))


def test_divergence_stops_and_keeps_last_finite_weights():
    x, y, weights = small()
    with pytest.raises(NonFiniteLossError, match=r"loss became .* at epoch \d+.*smaller lr") as info:
        train(x, y, weights, epochs=200, lr=0.5, backend="torch", every=50)
    err = info.value
    result = err.result
    assert all(math.isfinite(v) for v in result.losses)
    assert all(bool(torch.isfinite(w).all()) for w in result.weights)
    assert len(result.losses) in (err.epoch, err.epoch - 1)
    # the kept weights are exactly those an uninterrupted run had after that many epochs
    again = train(x, y, weights, epochs=len(result.losses), lr=0.5, backend="torch")
    assert again.losses == result.losses
    assert all(torch.equal(a, b) for a, b in zip(again.weights, result.weights))


def test_divergence_restores_callers_tensors_when_inplace():
    x, y, weights = small()
    with pytest.raises(NonFiniteLossError) as info:
        train(x, y, weights, epochs=200, lr=0.5, backend="torch", inplace=True)
    assert all(bool(torch.isfinite(w).all()) for w in weights)
    assert all(torch.equal(a, b) for a, b in zip(info.value.result.weights, weights))


def test_model_fit_trains_in_place_and_forward_is_differentiable():
    model = manualnn.MLP([24, 12, 10], seed=4, init="randn")
    again = manualnn.MLP([24, 12, 10], seed=4, init="randn")
    assert torch.equal(model.weights[0], again.weights[0]) and model.biases is not None
    x, y, _ = small()
    before = model.weights[0].detach().clone()
    result = model.fit(x, y, epochs=5, lr=1e-3, optimizer="sgd", reduction="sum", batch_size=None, backend="torch",
                       standardize=False)
    assert not torch.equal(before, model.weights[0]) and bool(model.biases[0].detach().any())
    assert result.losses[-1] < result.losses[0]
    loss = (model(x) - y).pow(2).sum()
    params = dict(biases=[b.detach() for b in model.biases])
    assert abs(loss.item() - train(x, y, [w.detach() for w in model.weights], epochs=1, lr=1e-3, backend="torch",
                                   **params).losses[0]) <= 1e-5 * loss.item()
    loss.backward()
    # the autograd gradients of the fitted model equal the hand-written ones (float64 on the side)
    w64 = [w.detach().double().requires_grad_() for w in model.weights]
    b64 = [b.detach().double().requires_grad_() for b in model.biases]
    ((torch.addmm(b64[1], torch.addmm(b64[0], x.double(), w64[0]).clamp(min=0), w64[1]) - y.double()).pow(2).sum()
     ).backward()
    for w, ref in zip(list(model.weights) + list(model.biases), w64 + b64):
        assert torch.allclose(w.grad.double(), ref.grad, rtol=1e-4, atol=1e-4 * ref.grad.abs().max().item())


def test_two_layer_net_has_seed_shapes():
    net = manualnn.TwoLayerNet(seed=0)
    assert [tuple(w.shape) for w in net.weights] == [(1000, 100), (100, 10)] and net.biases is None


def blobs(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    x = torch.randn(3, 5, generator=g)[labels] * 3 + torch.randn(n, 5, generator=g)
    return x, labels


def test_adam_resume_from_state_dict_is_bitwise_the_uninterrupted_run():
    x, labels = blobs()
    w0 = manualnn.init_weights([5, 8, 3], "kaiming", generator=torch.Generator().manual_seed(1))
    kw = dict(lr=1e-2, loss="ce", reduction="mean", optimizer="adam", bias=True, batch_size=16, backend="torch")
    whole = train(x, labels, w0, epochs=9, **kw)
    first = Trainer(x, labels, w0, **kw)
    first.run(4)
    state = first.state_dict()
    assert state["optimizer"]["step"] == 4 * 4 and state["biases"] is not None
    second = Trainer(x, labels, w0, **kw)
    second.load_state_dict(state)
    second.run(5)
    assert second.losses == whole.losses
    assert all(torch.equal(a, b) for a, b in zip(second.weights + second.biases, whole.weights + whole.biases))
    # the optimizer state matters: without it the resumed run is another run
    third = Trainer(x, labels, w0, **kw)
    third.load_state_dict({**state, "optimizer": {}})
    third.run(5)
    assert third.losses != whole.losses


def test_biases_train_in_place_on_the_callers_tensors():
    x, labels = blobs()
    w0 = [w.clone() for w in manualnn.init_weights([5, 8, 3], "kaiming", generator=torch.Generator().manual_seed(2))]
    b0 = [torch.zeros(8), torch.zeros(3)]
    expected = train(x, labels, w0, biases=b0, epochs=3, lr=1e-2, optimizer="adam", loss="ce", backend="torch")
    train(x, labels, w0, biases=b0, epochs=3, lr=1e-2, optimizer="adam", loss="ce", backend="torch", inplace=True)
    for got, want in zip(w0 + b0, expected.weights + expected.biases):
        assert torch.equal(got, want)


def test_patience_stops_and_keeps_the_best_epochs_weights():
    x, labels = blobs(90)
    w0 = manualnn.init_weights([5, 32, 3], "kaiming", generator=torch.Generator().manual_seed(3))
    kw = dict(lr=0.05, loss="ce", reduction="mean", optimizer="adam", bias=True, batch_size=8, backend="torch",
              val_data=(x[60:] + 2.5, labels[60:]))   # shifted validation rows: it overfits, then gets worse
    trainer = Trainer(x[:60], labels[:60], w0, patience=3, **kw)
    result = trainer.run(300)
    assert result.stopped_early and len(result.losses) < 300
    best = result.best_epoch
    assert result.val_losses[best] == min(result.val_losses)
    assert len(result.losses) == best + 1 + 3           # three epochs without improvement, then stop
    # the weights kept are those after the best epoch: an uninterrupted run of best + 1 epochs has them
    again = train(x[:60], labels[:60], w0, epochs=best + 1, **kw)
    assert all(torch.equal(a, b) for a, b in zip(result.weights, again.weights))
    with pytest.raises(ValueError, match=r"patience: stops on the validation loss; expected val_data"):
        Trainer(x, labels, w0, patience=3, loss="ce")


def test_a_dead_network_is_reported():
    x, labels = blobs()
    w0 = manualnn.init_weights([5, 8, 3], "kaiming", generator=torch.Generator().manual_seed(4))
    dead = [w0[0] * 0 - 1, w0[1]]                     # every hidden unit negative on every row... almost
    x_pos = x.abs()                                   # ...on positive inputs: all of them
    with pytest.warns(RuntimeWarning, match=r"every unit of hidden layer 1 is 0 on every training row"):
        result = train(x_pos, labels, dead, epochs=2, lr=1e-3, backend="torch")
    assert "dead" in result.warning
    alive = train(x, labels, w0, epochs=2, lr=1e-3, backend="torch")
    assert alive.warning is None


def test_a_reallocated_parameter_is_refused():
    x, y, weights = small()
    trainer = Trainer(x, y, weights, lr=1e-3, backend="torch")
    trainer.run(1)
    trainer.params.tensors[0] = trainer.params.tensors[0].clone()   # the steps still hold the old memory
    with pytest.raises(RuntimeError, match=r"params: the tensor of layer 0 was reallocated"):
        trainer.run(1)


def test_unknown_keywords_name_themselves():
    x, y, weights = small()
    with pytest.raises(TypeError, match=r"Trainer: got an unexpected keyword argument 'learning_rate'"):
        Trainer(x, y, weights, learning_rate=1e-3)
    with pytest.raises(ValueError, match=r"loss 'ce' needs class labels \[N\] or rows of probabilities"):
        Trainer(x, y, weights, loss="ce")


def test_fit_defaults_are_the_data_runs():
    # MLP.fit without settings trains as `manualnn train --data` does: Adam, cross-entropy for labels, ...
    x, labels = blobs(120)
    model = manualnn.MLP([5, 16, 3], seed=5)
    result = model.fit(x[:90], labels[:90], epochs=150, val_data=(x[90:], labels[90:]), backend="torch")
    spec = dict(lr=3e-3, optimizer="adam", reduction="mean", loss="ce", batch_size=200)
    again = manualnn.MLP([5, 16, 3], seed=5)
    # ... and standardized features, with the training rows' statistics (kept in the model)
    mean, std = fit_standardizer(x[:90])
    assert model.scaled == {"x": True, "y": False} and model.x_mean.tolist() == mean and model.x_std.tolist() == std
    scaled = lambda t: standardize(t, mean, std)  # noqa: E731
    same = train(scaled(x[:90]), labels[:90], [w.detach() for w in again.weights],
                 biases=[b.detach() for b in again.biases], epochs=150, val_data=(scaled(x[90:]), labels[90:]),
                 patience=patience_for(90, 200), backend="torch", **spec)
    assert result.losses == same.losses and model.loss == "ce" and model.reduction == "mean"
    assert result.val_accuracies[-1] > 0.9
