"""Mini-batches: every backend against the plain mini-batch loop (float64 judge), shuffled and in
order, with batches of uneven sizes; one batch is exactly the full-batch step; validation and labels."""
import pytest
import torch

import manualnn
from manualnn import Trainer, evaluate, minibatch_reference_loop, seed_data, train
from manualnn.testing import judge
from manualnn.training import batch_order

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def refs(x, y, w0, *, epochs, lr, grad, batch_size, order):
    """The float64 judge and the float32 reference of the mini-batch loop."""
    runs = []
    for dt in (torch.float64, torch.float32):
        runs.append(minibatch_reference_loop(x.to(dt), y.to(dt), [w.to(dt) for w in w0], epochs=epochs, lr=lr,
                                             grad=grad, batch_size=batch_size, order=order))
    return tuple(runs)


@pytest.mark.parametrize("backend,grad,shuffle", [
    ("torch", "relu", True), ("torch", "tutorial", True), ("torch", "relu", False), ("torch", "tutorial", False),
    ("native", "relu", True), ("native", "tutorial", False),   # the native runner's own batch plan
    ("triton", "relu", True), ("triton", "tutorial", False),   # the interpreter is slow: two of its four
], ids=lambda v: {True: "shuffled", False: "in-order"}.get(v, v) if isinstance(v, bool) else v)
def test_minibatch_equals_the_plain_loop(backend, grad, shuffle):
    # 37 rows in batches of at most 8: 8, 8, 7, 7, 7 (as even as the rows allow); two hidden layers
    x, y, w0 = seed_data(11, batch=37, features=20, hidden=(17, 9), out=3, init="kaiming")
    epochs, lr, bs = 6, 2e-3, 8
    order = (lambda e: batch_order(37, e, seed=5)) if shuffle else None
    on = DEVICE if backend == "triton" else "cpu"   # the triton backend runs on CUDA where there is one
    result = train(x.to(on), y.to(on), [w.to(on) for w in w0], epochs=epochs, lr=lr, grad=grad, backend=backend,
                   batch_size=bs, shuffle=shuffle, shuffle_seed=5)
    verdict = judge(result.losses, result.weights, x, y, w0, epochs=epochs, lr=lr, grad=grad,
                    refs=refs(x, y, w0, epochs=epochs, lr=lr, grad=grad, batch_size=bs, order=order))
    assert verdict.ok, verdict.summary()
    # the judge can fail: the wrong order (or full-batch steps) is far outside the bound
    wrong = refs(x, y, w0, epochs=epochs, lr=lr, grad=grad, batch_size=bs,
                 order=None if shuffle else (lambda e: batch_order(37, e, seed=5)))
    assert not judge(result.losses, result.weights, x, y, w0, epochs=epochs, lr=lr, grad=grad, refs=wrong).ok


@pytest.mark.parametrize("n,batch_size,expected", [
    (225, 200, [113, 112]), (37, 8, [8, 8, 7, 7, 7]), (400, 200, [200, 200]), (5, 1, [1] * 5), (7, 100, [7]),
    (1438, 200, [180] * 6 + [179] * 2)])
def test_an_epoch_takes_the_fewest_batches_as_even_as_the_rows_allow(n, batch_size, expected):
    from manualnn.training.batches import batch_sizes, batches
    assert batch_sizes(n, batch_size) == expected
    assert [hi - lo for lo, hi, _ in batches(n, batch_size)] == expected
    # torch.tensor_split's sizes, as the tests' autograd loops take them
    assert [len(t) for t in torch.tensor_split(torch.arange(n), len(expected))] == expected


def test_batch_of_one_row():
    x, y, w0 = seed_data(3, batch=5, features=6, hidden=(4,), out=2, init="kaiming")
    result = train(x, y, w0, epochs=3, lr=1e-2, batch_size=1, shuffle=False, backend="torch")
    ref = minibatch_reference_loop(x.double(), y.double(), [w.double() for w in w0], epochs=3, lr=1e-2,
                                   batch_size=1)
    assert result.losses == pytest.approx(ref.losses, rel=1e-5)


@pytest.mark.parametrize("batch_size", [37, 1000])   # B >= N: the full-batch path, not the gather
def test_one_batch_is_exactly_the_full_batch_step(batch_size):
    x, y, w0 = seed_data(2, batch=37, features=20, hidden=(17,), out=3)
    full = train(x, y, w0, epochs=4, lr=1e-4, backend="torch")
    again = train(x, y, w0, epochs=4, lr=1e-4, backend="torch", batch_size=batch_size, shuffle=True)
    assert again.losses == full.losses       # bit for bit: a single batch is never reordered
    assert all(torch.equal(a, b) for a, b in zip(again.weights, full.weights))


def test_epoch_orders_are_seeded_and_differ():
    a, b = batch_order(50, 0, seed=1), batch_order(50, 1, seed=1)
    assert torch.equal(a, batch_order(50, 0, seed=1)) and not torch.equal(a, b)
    assert not torch.equal(a, batch_order(50, 0, seed=2))
    assert sorted(a.tolist()) == list(range(50))
    assert torch.equal(batch_order(5, 3, shuffle=False), torch.arange(5))


def test_minibatch_resume_is_exact():
    x, y, w0 = seed_data(4, batch=30, features=10, hidden=(8,), out=2, init="kaiming")
    kw = dict(lr=1e-3, backend="torch", batch_size=7, shuffle_seed=9)
    whole = train(x, y, w0, epochs=6, **kw)
    first = Trainer(x, y, w0, **kw)
    first.run(4)
    second = Trainer(x, y, w0, **kw)
    second.load_state_dict(first.state_dict())
    second.run(2)
    assert second.losses == whole.losses
    assert all(torch.equal(a, b) for a, b in zip(second.weights, whole.weights))


def labelled(n=60, n_val=20, classes=3):
    """Blobs around three centres: (x, labels, x_val, labels_val)."""
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(classes, 5, generator=g) * 3
    labels = torch.randint(0, classes, (n + n_val,), generator=g)
    x = centres[labels] + torch.randn(n + n_val, 5, generator=g)
    return x[:n], labels[:n], x[n:], labels[n:]


def test_labels_train_as_one_hot_targets_and_report_accuracy():
    x, labels, xv, lv = labelled()
    w0 = manualnn.init_weights([5, 16, 3], "kaiming", generator=torch.Generator().manual_seed(0))
    kw = dict(epochs=30, lr=1e-3, backend="torch", batch_size=10)
    by_labels = train(x, labels, w0, val_data=(xv, lv), **kw)
    one_hot = torch.nn.functional.one_hot(labels, 3).float()
    by_targets = train(x, one_hot, w0, val_data=(xv, torch.nn.functional.one_hot(lv, 3).float()), **kw)
    assert by_labels.losses == by_targets.losses and by_labels.val_losses == by_targets.val_losses
    assert by_labels.val_accuracies == by_targets.val_accuracies
    assert len(by_labels.val_losses) == len(by_labels.val_accuracies) == 30
    # each epoch's validation figures are those of the weights after that epoch
    again = train(x, labels, w0, **{**kw, "epochs": 30})
    ev = evaluate(again.weights, xv, lv)
    assert ev.loss == pytest.approx(by_labels.val_losses[-1], rel=1e-6)
    assert ev.accuracy == by_labels.val_accuracies[-1]
    # it learns: well separated blobs end near 100% and the loss falls
    assert by_labels.val_accuracies[-1] >= 0.9 and by_labels.losses[-1] < by_labels.losses[0] / 10


def test_regression_validation_has_loss_and_no_accuracy():
    x, y, w0 = seed_data(1, batch=40, features=6, hidden=(8,), out=2, init="kaiming")
    result = train(x[:30], y[:30], w0, epochs=3, lr=1e-3, val_data=(x[30:], y[30:]), backend="torch")
    assert len(result.val_losses) == 3 and result.val_accuracies == []
    ev = evaluate(result.weights, x[30:], y[30:])
    assert ev.accuracy is None and ev.loss == pytest.approx(result.val_losses[-1], rel=1e-6)


def test_evaluate_matches_a_plain_forward_and_counts_right_answers():
    x, labels, _, _ = labelled(n=25)
    model = manualnn.MLP([5, 7, 3], seed=3)
    pred = model.predict(x)
    assert torch.allclose(pred, model(x).detach())
    ev = manualnn.evaluate(model, x, labels)
    target = torch.nn.functional.one_hot(labels, 3).float()
    assert ev.loss == pytest.approx(float((pred - target).pow(2).sum()), rel=1e-6)
    assert ev.accuracy == pytest.approx(float((pred.argmax(1) == labels).float().mean()))
    assert ev.samples == 25


def test_predict_checks_its_input():
    model = manualnn.MLP([5, 7, 3], seed=3)
    with pytest.raises(ValueError, match=r"x: expected a 2-D array with 5 columns \(the model's input width\), got "
                                         r"shape \(4, 6\)"):
        model.predict(torch.randn(4, 6))
    with pytest.raises(ValueError, match=r"x: expected a 2-D array with 5 columns .*got shape \(5,\) \(one sample\? "
                                         r"pass it as one row: x\[None\]\)"):
        model.predict(torch.randn(5))
    with pytest.raises(TypeError, match=r"x: expected numbers, got values such as 'a'"):
        model.predict([["a", 1, 2, 3, 4]])
    # float64, numpy and lists are converted to the model's dtype, not refused
    x = torch.randn(4, 5, dtype=torch.float64)
    expected = model.predict(x.float())
    assert torch.equal(model.predict(x.float().numpy()), expected) and torch.equal(model.predict(x.float().tolist()),
                                                                                 expected)
    assert torch.allclose(model.predict(x), expected) and model.predict(x).dtype == torch.float32


def test_kaiming_init_scale_and_randn_is_the_seeds():
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    randn = manualnn.init_weights([400, 300, 10], "randn", generator=g())
    kaiming = manualnn.init_weights([400, 300, 10], "kaiming", generator=g())
    assert torch.equal(randn[0], torch.randn(400, 300, generator=g()))
    for r, k, fan_in in zip(randn, kaiming, (400, 300)):
        assert torch.allclose(k, r * (2 / fan_in) ** 0.5)
    assert abs(float(kaiming[0].std()) - (2 / 400) ** 0.5) < 0.002
    with pytest.raises(ValueError, match=r"init: expected one of 'randn', 'kaiming', got 'xavier'"):
        manualnn.init_weights([3, 2], "xavier")


@pytest.mark.parametrize("backend", ["torch", "native"])
@pytest.mark.parametrize("bias", [False, True])
def test_column_major_x_trains_as_row_major_x(backend, bias):
    """x as a transposed view (column-major, as numpy's Fortran order gives) with mini-batches: the same
    numbers as the contiguous x (the gathered batch's buffer no longer follows x's strides)."""
    x, y, w = seed_data(8, batch=37, features=6, hidden=(5,), out=3, init="kaiming")
    column_major = x.t().contiguous().t()
    assert column_major.stride() == (1, 37)
    runs = [manualnn.train(data, y, w, epochs=3, lr=1e-3, batch_size=8, bias=bias, backend=backend)
            for data in (x, column_major)]
    assert runs[0].losses == runs[1].losses
    assert all(torch.equal(a, b) for a, b in zip(runs[0].weights, runs[1].weights))
