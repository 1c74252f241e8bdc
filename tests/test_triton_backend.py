"""The Triton backend's step (TritonStep) against the float64 reference, per feature, on both paths.

Each feature combination (gradient mode, loss, reduction, optimizer, weight decay, biases, depth,
mini-batches) trains a few steps on a tiny problem through the two-launch step and through the
per-layer kernels, judged by manualnn.testing.judge against reference_run in float64. Launches
are counted (tests/launches.py), never computed. On the CPU these run under the interpreter.
"""
import re

import pytest
import torch

import manualnn
from launches import count_launches
from manualnn import kernels, seed_data
from manualnn.backends import make_step
from manualnn.backends.triton_backend import TritonStep
from manualnn.cli import main
from manualnn.spec import Params, StepSpec, with_ones
from manualnn.testing import judge
from seed_script import run_seed_script
from test_reference import autograd_run

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SEED_EPOCHS = 20 if DEVICE == "cuda" else 2


@pytest.fixture(params=["two-launch", "per-layer"])
def path(request, monkeypatch):
    """Which way TritonStep takes: the per-layer kernels are forced by making no network fit."""
    if request.param == "per-layer":
        monkeypatch.setattr(kernels, "fits", lambda widths: False)
    return request.param


def train_and_judge(path, *, epochs=3, batch=13, features=9, hidden=(10,), out=4, seed=60, bias=False, labels=False,
                    batch_size=None, **spec_args):
    spec_args.setdefault("lr", 1e-3)
    x, y, weights = seed_data(seed, batch=batch, features=features, hidden=hidden, out=out, device=DEVICE,
                              init="kaiming" if labels else "randn")
    if labels:
        y = y.argmax(1)
    gen = torch.Generator().manual_seed(seed + 1)
    biases = [0.1 * torch.randn(w.shape[1], generator=gen).to(DEVICE) for w in weights] if bias else None
    trainer = manualnn.Trainer(x, y, weights, biases=biases, backend="triton", batch_size=batch_size, shuffle=False,
                               **spec_args)
    assert all(isinstance(s, TritonStep) and s.two_launch == (path == "two-launch") for s in trainer.steps)
    result = trainer.run(epochs)
    lr = spec_args.pop("lr")
    verdict = judge(result.losses, result.weights, x, y, weights, epochs=epochs, lr=lr,
                    grad=spec_args.pop("grad", "relu"), biases=result.biases, biases0=biases, batch_size=batch_size,
                    **spec_args)
    print(f"{path} {spec_args}: {verdict.summary()}")
    assert verdict.ok, verdict.summary()


FEATURES = {
    "seed-math": dict(),
    "tutorial": dict(grad="tutorial"),
    "bias": dict(bias=True),
    "mean": dict(reduction="mean", lr=1e-2),
    "ce": dict(loss="ce", labels=True, lr=0.1),
    "ce-mean-bias": dict(loss="ce", reduction="mean", labels=True, bias=True, lr=0.3),
    "momentum-decay-bias": dict(optimizer="momentum", momentum=0.8, weight_decay=0.5, bias=True),
    "adam": dict(optimizer="adam", lr=1e-2, labels=True, loss="ce"),
    "adam-decay-bias-minibatch": dict(optimizer="adam", betas=(0.8, 0.99), eps=1e-6, weight_decay=0.5, lr=1e-2,
                                      bias=True, batch_size=5),
    "sgd-decay-bias-minibatch": dict(weight_decay=0.5, bias=True, batch_size=4, reduction="mean", lr=1e-2),
    "deep-bias": dict(hidden=(17, 33, 9), bias=True, lr=1e-5),
    "no-hidden": dict(hidden=(), bias=True, loss="ce", labels=True, lr=0.1),
    "batch1": dict(batch=1, hidden=(17,), out=10, optimizer="momentum", bias=True),
}


@pytest.mark.parametrize("feature", list(FEATURES))
def test_each_feature_matches_the_float64_reference(path, feature):
    train_and_judge(path, **dict(FEATURES[feature]))


@pytest.mark.parametrize("grad", ["relu", "tutorial"])
def test_seed_shape(path, grad):
    x, y, weights = seed_data(40, device=DEVICE)
    trainer = manualnn.Trainer(x, y, weights, lr=1e-6, grad=grad, backend="triton")
    result = trainer.run(SEED_EPOCHS)
    verdict = judge(result.losses, result.weights, x, y, weights, epochs=SEED_EPOCHS, lr=1e-6, grad=grad)
    print(f"{path}/{grad}: {verdict.summary()}")
    assert verdict.ok, verdict.summary()


def steps_for(x, y, weights, spec, *, bias=False, grads=False, rows=None, **options):
    """(params, x with its ones column if bias, a TritonStep and a TorchStep on copies of the same params)."""
    biases = [0.1 * torch.ones(w.shape[1], device=DEVICE) for w in weights] if bias else None
    xin = x
    if bias:
        xin = with_ones(x.shape[0], x.shape[1], like=x)
        xin[:, :-1].copy_(x)
    made = []
    for backend in ("triton", "torch"):
        params = Params.from_weights(weights, biases, spec)
        g = [torch.full_like(p, float("nan")) for p in params.tensors] if grads else None
        made.append((params, make_step(backend, xin, y, params, spec, rows=rows, grads=g,
                                       **(options if backend == "triton" else {}))))
    return made


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_gradients_then_update_equals_the_torch_step(path, optimizer):
    # the distributed step's halves: gradients() (ready(i) last layer first) and update(), three times
    x, y, weights = seed_data(61, batch=11, features=7, hidden=(9, 6), out=3, device=DEVICE)
    spec = StepSpec(lr=1e-3, optimizer=optimizer, weight_decay=0.1)
    (tp, ts), (rp, rs) = steps_for(x, y, weights, spec, bias=True, grads=True)
    for _ in range(3):
        ready, loss, ref = [], torch.full((), float("nan"), device=DEVICE), torch.zeros((), device=DEVICE)
        ts.gradients(loss, ready=ready.append)
        assert ready == [2, 1, 0]
        rs.gradients(ref)
        for g, r in zip(ts.grads, rs.grads):
            torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5 * float(r.abs().max()))
        ts.update()
        rs.update()
        assert abs(loss.item() - ref.item()) <= 1e-5 * ref.item()
    for a, b in zip(tp.tensors, rp.tensors):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert int(tp.step) == int(rp.step) and tp.powers.tolist() == rp.powers.tolist()


def test_a_mean_divides_by_the_rows_over_every_rank(path):
    # a rank's shard of 6 rows of a 15-row batch: its gradients are 1/15 of its rows' sum, as the torch step's
    x, y, weights = seed_data(63, batch=6, features=7, hidden=(9,), out=3, device=DEVICE)
    spec = StepSpec(lr=1e-2, reduction="mean")
    (_, ts), (_, rs) = steps_for(x, y, weights, spec, bias=True, grads=True, rows=15)
    ts.gradients(torch.zeros((), device=DEVICE))
    rs.gradients(torch.zeros((), device=DEVICE))
    for g, r in zip(ts.grads, rs.grads):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6 * float(r.abs().max()))


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_a_batch_of_no_rows(optimizer):
    # a rank's empty share of a batch smaller than the ranks: zero loss and gradients without a kernel launch, and
    # step() applies the same update as the torch backend's (weight decay and Adam still move p)
    x, y, weights = seed_data(62, batch=5, features=7, hidden=(9,), out=3, device=DEVICE)
    spec = StepSpec(lr=1e-2, optimizer=optimizer, weight_decay=0.1)
    (tp, ts), (rp, rs) = steps_for(x[:0], y[:0], weights, spec, bias=True, grads=True)
    p0 = [p.clone() for p in tp.tensors]
    loss, ready = torch.full((), float("nan"), device=DEVICE), []
    with count_launches() as launched:
        ts.gradients(loss, ready=ready.append)
    assert launched == [] and loss.item() == 0.0 and ready == [1, 0]
    assert all(bool((g == 0).all()) for g in ts.grads)
    ts.step(loss)
    rs.step(torch.zeros((), device=DEVICE))
    for a, b in zip(tp.tensors, rp.tensors):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert not torch.equal(tp.tensors[0], p0[0])      # decayed (and moved by Adam's momentum-free step: m = 0)


def step_launches(step, loss_out=None):
    loss_out = torch.zeros((), device=DEVICE) if loss_out is None else loss_out
    step.step(loss_out)                 # warm-up: compiles (and autotunes, on the GPU) outside the count
    with count_launches() as launched:
        step.step(loss_out)
    return launched


def test_the_seed_network_takes_two_launches_per_step():
    x, y, weights = seed_data(43, device=DEVICE)
    trainer = manualnn.Trainer(x, y, weights, lr=1e-6, backend="triton")
    assert step_launches(trainer.steps[0]) == ["mlp_rows_kernel", "mlp_update_kernel"]


@pytest.mark.parametrize("hidden", [(17, 33, 128), ()])
def test_adam_ce_and_biases_keep_two_launches(hidden):
    x, y, weights = seed_data(43, batch=20, features=9, hidden=hidden, out=10, device=DEVICE, init="kaiming")
    trainer = manualnn.Trainer(x, y.argmax(1), weights, lr=1e-3, backend="triton", bias=True, loss="ce",
                               optimizer="adam")
    assert step_launches(trainer.steps[0]) == ["mlp_rows_kernel", "mlp_update_kernel"]


def test_wider_networks_take_the_per_layer_kernels():
    x, y, weights = seed_data(43, batch=8, features=12, hidden=(129, 7), out=3, device=DEVICE)
    trainer = manualnn.Trainer(x, y, weights, lr=1e-6, backend="triton")
    assert not trainer.steps[0].two_launch
    assert step_launches(trainer.steps[0]) == ["linear_relu_kernel", "linear_relu_kernel", "output_loss_kernel",
                                               "input_grad_kernel", "weight_grad_kernel",
                                               "input_grad_kernel", "weight_grad_kernel", "weight_grad_kernel"]


def test_update_launches():
    x, y, weights = seed_data(44, batch=8, features=12, hidden=(7,), out=3, device=DEVICE)
    for optimizer, expected in (("sgd", ["update_kernel"]), ("adam", ["adam_advance_kernel", "update_kernel"])):
        (_, ts), _ = steps_for(x, y, weights, StepSpec(optimizer=optimizer), grads=True)
        ts.gradients(torch.zeros((), device=DEVICE))
        with count_launches() as launched:
            ts.update()
        assert launched == expected


def test_several_output_programs_use_the_partial_sum(monkeypatch):
    # the per-layer path; batch 129 > the interpreter's 128-row block (the GPU's is 64): the loss comes
    # from several partials and one more launch sums them
    monkeypatch.setattr(kernels, "fits", lambda widths: False)
    x, y, weights = seed_data(42, batch=129, features=33, hidden=(17,), out=10, device=DEVICE)
    trainer = manualnn.Trainer(x, y, weights, lr=1e-5, backend="triton")
    assert trainer.steps[0].partials.numel() > 1
    assert step_launches(trainer.steps[0]) == ["linear_relu_kernel", "output_loss_kernel", "sum_partials_kernel",
                                               "input_grad_kernel", "weight_grad_kernel", "weight_grad_kernel"]
    trainer = manualnn.Trainer(x, y, weights, lr=1e-5, backend="triton")  # fresh: the counted steps trained the first
    result = trainer.run(3)
    verdict = judge(result.losses, result.weights, x, y, weights, epochs=3, lr=1e-5, grad="relu")
    assert verdict.ok, verdict.summary()


def test_refusals():
    x, y, weights = seed_data(44, batch=4, features=5, hidden=(3,), out=2, dtype=torch.float64, device=DEVICE)
    with pytest.raises(TypeError, match=r"x: the triton backend trains float32 tensors.*got torch.float64"):
        manualnn.train(x, y, weights, backend="triton")
    x, y, weights = seed_data(44, batch=4, features=5, hidden=(129,), out=2, device=DEVICE)
    params = Params.from_weights(weights, None, StepSpec())
    with pytest.raises(ValueError, match=r"two_launch: the two-launch step takes layers at most 128 wide, got widths "
                                         r"\[129, 2\]"):
        make_step("triton", x, y, params, StepSpec(), two_launch=True)
    x, y, weights = seed_data(44, batch=4, features=5, hidden=(3,), out=300, device=DEVICE)
    params = Params.from_weights(weights, None, StepSpec(loss="ce"))
    with pytest.raises(ValueError, match=r"w: loss 'ce' takes each row's softmax in one program, which covers at "
                                         r"most 256 classes; got 300"):
        make_step("triton", x, torch.softmax(y, 1), params, StepSpec(loss="ce"))


def test_bf16_under_the_interpreter_is_a_clear_error():
    if DEVICE == "cuda":
        pytest.skip("bf16 runs on CUDA")
    x, y, weights = seed_data(47, batch=4, features=5, hidden=(3,), out=2)
    with pytest.raises(manualnn.BackendUnavailableError, match=r"precision: 'bf16' needs a CUDA device"):
        manualnn.Trainer(x, y, weights, backend="triton", precision="bf16")


LINE = re.compile(r"^Epoch:(\d+), Loss:(-?\d+\.\d{4})$")


def cli_losses(capsys, *argv):
    assert main(["train", *argv]) == 0
    out = capsys.readouterr().out
    return [float(LINE.match(line).group(2)) for line in out.splitlines()]


def test_cli_triton_tutorial_matches_the_seed(capsys):
    # the output kernel's exact gradient g = 2 * (z - y) for the seed's sum of squares: the seed's numbers
    got = cli_losses(capsys, "--backend", "triton", "--seed", "0", "--grad", "tutorial", "--epochs", "3",
                     "--device", DEVICE)
    expected = [float(LINE.match(s).group(2)) for s in run_seed_script(0, epoch_n=3)]
    assert len(got) == 3
    for g, e in zip(got, expected):
        assert abs(g - e) <= 1e-6 * abs(e), (g, e)


def test_cli_triton_relu_matches_autograd(capsys):
    got = cli_losses(capsys, "--backend", "triton", "--seed", "0", "--grad", "relu", "--epochs", "3",
                     "--device", DEVICE)
    x, y, weights = seed_data(0)
    expected, _ = autograd_run(x, y, weights, 3, 1e-6)
    for g, e in zip(got, expected):
        assert abs(g - e) <= 1e-6 * abs(e), (g, e)


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["tf32", "bf16"])
@pytest.mark.parametrize("grad", ["relu", "tutorial"])
def test_precision_modes_on_cuda(path, precision, grad):
    # bounded a small factor above what honest operand rounding gives on the CPU (tests/emulate.py)
    from emulate import bounds_from_emulation
    from manualnn.testing import reference_runs, rel_err
    x, y, weights = seed_data(45, device="cuda")
    trainer = manualnn.Trainer(x, y, weights, lr=1e-6, grad=grad, backend="triton", precision=precision)
    assert trainer.steps[0].two_launch == (path == "two-launch")
    result = trainer.run(20)
    ref64, _ = reference_runs(x, y, weights, epochs=20, lr=1e-6, grad=grad)
    loss_bound, weight_bounds = bounds_from_emulation(x, y, weights, ref64, epochs=20, lr=1e-6, grad=grad,
                                                      precision=precision)
    loss_err = max(rel_err([a], [b]) for a, b in zip(result.losses, ref64.losses))
    weight_errs = [rel_err(w, r) for w, r in zip(result.weights, ref64.weights)]
    print(f"{precision}/{grad}/{path}: loss err {loss_err:.3g} (bound {loss_bound:.3g}), weights "
          f"{[f'{e:.3g}' for e in weight_errs]} (bounds {[f'{b:.3g}' for b in weight_bounds]})")
    assert loss_err <= loss_bound
    assert all(e <= b for e, b in zip(weight_errs, weight_bounds))


@pytest.mark.cuda
def test_auto_picks_triton_on_cuda():
    x, y, weights = seed_data(46, batch=8, features=12, hidden=(9,), out=3, device="cuda")
    assert manualnn.train(x, y, weights, epochs=2, lr=1e-3).backend == "triton"


@pytest.mark.parametrize("grad", ["relu", "tutorial"])
def test_a_nan_feature_stops_every_backend_alike(path, grad):
    """NaN in the data: every backend's loss becomes NaN and the run stops (NonFiniteLossError), keeping finite
    weights; a ReLU that turned NaN into 0 (tl.maximum) trained on with finite losses and NaN weights."""
    x, y, weights = seed_data(61, batch=12, features=7, hidden=(9,), out=3, device=DEVICE)
    for backend in ("triton", "torch") + (("native",) if DEVICE == "cpu" else ()):
        data = x.clone()
        trainer = manualnn.Trainer(data, y, weights, lr=1e-3, grad=grad, backend=backend)   # checked: finite
        data[3, 2] = float("nan")   # then a NaN in the rows it trains on (they are the caller's tensor here)
        with pytest.raises(manualnn.NonFiniteLossError) as info:
            trainer.run(3)
        assert info.value.epoch == 0 and info.value.result.epochs == 0, backend
        assert all(bool(torch.isfinite(w).all()) for w in info.value.result.weights), backend
