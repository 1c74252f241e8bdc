"""Trainer API: copies vs in place, step-wise use, state round trip, divergence handling."""
import math

import pytest
import torch

import manualnn
from manualnn import NonFiniteLossError, Trainer, seed_data, train


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
    stepped = [trainer.step() for _ in range(2)]
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
    assert torch.equal(model.weights[0], again.weights[0])
    x, y, _ = small()
    before = model.weights[0].detach().clone()
    result = model.fit(x, y, epochs=5, lr=1e-3, backend="torch")
    assert not torch.equal(before, model.weights[0])
    assert result.losses[-1] < result.losses[0]
    loss = (model(x) - y).pow(2).sum()
    assert abs(loss.item() - train(x, y, [w.detach() for w in model.weights], epochs=1, lr=1e-3,
                                   backend="torch").losses[0]) <= 1e-5 * loss.item()
    loss.backward()
    # the autograd gradients of the fitted model equal the hand-written ones (float64 on the side)
    w64 = [w.detach().double().requires_grad_() for w in model.weights]
    ((x.double().mm(w64[0]).clamp(min=0).mm(w64[1]) - y.double()).pow(2).sum()).backward()
    for w, ref in zip(model.weights, w64):
        assert torch.allclose(w.grad.double(), ref.grad, rtol=1e-4, atol=1e-4 * ref.grad.abs().max().item())


def test_two_layer_net_has_seed_shapes():
    net = manualnn.TwoLayerNet(seed=0)
    assert [tuple(w.shape) for w in net.weights] == [(1000, 100), (100, 10)]


def test_small_cpu_runs_use_one_thread_and_restore_the_count():
    x, y, weights = small()
    before = torch.get_num_threads()
    seen = []
    train(x, y, weights, epochs=2, lr=1e-3, backend="torch", callback=lambda *_: seen.append(torch.get_num_threads()))
    assert seen == [1] and torch.get_num_threads() == before
    big_x, big_y, big_w = seed_data(0)          # the seed's step (60 MFLOP) keeps torch's threads
    train(big_x, big_y, big_w, epochs=1, callback=lambda *_: seen.append(torch.get_num_threads()))
    assert seen[-1] == before
