"""The native backend (kernels/native/runner.cpp through manualnn/backends/native_backend.py), built
once per session: judged against the float64 reference in every combination of gradient mode, loss,
reduction, optimizer, biases and batching, compared step by step with the torch backend's step, its
gradients()+update() and run_epochs paths, and its build cache, errors and CLI."""
import itertools
import math
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

import manualnn
from helpers import BuildLog
from manualnn import seed_data
from manualnn.backends import BackendUnavailableError, make_step, resolve
from manualnn.backends import native_build as native
from manualnn.cli import main
from manualnn.spec import Params, StepSpec, with_ones
from manualnn.testing import judge, reference_runs, rel_err
from manualnn.training import batch_order
from seed_script import run_seed_script
from test_reference import autograd_run

NAN = float("nan")


@pytest.fixture
def built(native_build, monkeypatch):
    """Point manualnn at the session's build (only for this test: other modules see an empty cache)."""
    cache = native_build[0]
    monkeypatch.setenv(native.CACHE_ENV, cache)
    return cache


ROWS, FEATURES, HIDDEN, OUT = 37, 20, (17, 9), 3
SHUFFLE_SEED = 5


def problem(dtype=torch.float32, *, bias=False, loss="sse", seed=11):
    """x, targets (class labels for "ce"), kaiming weights and, with ``bias``, small nonzero biases."""
    x, y, weights = seed_data(seed, batch=ROWS, features=FEATURES, hidden=HIDDEN, out=OUT, init="kaiming", dtype=dtype)
    if loss == "ce":
        y = y.argmax(1)
    gen = torch.Generator().manual_seed(seed)
    biases = [0.1 * torch.randn(w.shape[1], generator=gen).to(dtype) for w in weights] if bias else None
    return x, y, weights, biases


def step_inputs(x, y, bias):
    """The step's x (with its column of ones, a padded row stride) and float targets."""
    x_in = x
    if bias:
        x_in = with_ones(x.shape[0], x.shape[1], like=x)
        x_in[:, :-1].copy_(x)
    if not y.is_floating_point():
        y = torch.nn.functional.one_hot(y, OUT).to(x.dtype)
    return x_in, y


def learning_rate(reduction, optimizer):
    if optimizer == "adam":
        return 1e-2
    return {("sum", "sgd"): 2e-3, ("sum", "momentum"): 5e-4, ("mean", "sgd"): 5e-2, ("mean", "momentum"): 1e-2}[
        reduction, optimizer]


CASES = list(itertools.product(("relu", "tutorial"), ("sse", "ce"), ("sum", "mean"), ("sgd", "momentum", "adam"),
                               (False, True), ("full", "mini")))


@pytest.mark.parametrize("grad,loss,reduction,optimizer,bias,batches", CASES,
                         ids=["-".join([g, lo, r, o, "bias" if b else "nobias", ba]) for g, lo, r, o, b, ba in CASES])
def test_native_matches_the_reference(built, grad, loss, reduction, optimizer, bias, batches):
    """float32 judged against the float64 reference; float64 equal to it to 1e-12. Full batch: chunks of
    epochs through run_epochs (every=2); mini-batches: shuffled, of at most 8 rows (8, 8, 7, 7, 7)."""
    lr, wd = learning_rate(reduction, optimizer), 0.05
    full = batches == "full"
    epochs = 3 if full else 2
    step = dict(loss=loss, reduction=reduction, optimizer=optimizer, weight_decay=wd)
    batching = {} if full else dict(batch_size=8, order=lambda e: batch_order(ROWS, e, seed=SHUFFLE_SEED))
    x, y, w0, b0 = problem(bias=bias, loss=loss)
    refs = reference_runs(x, y, w0, epochs=epochs, lr=lr, grad=grad, biases=b0, **step, **batching)
    for dtype in (torch.float32, torch.float64):
        to = lambda t: t.to(dtype) if t.is_floating_point() else t  # noqa: E731
        result = manualnn.train(to(x), to(y), [to(w) for w in w0], biases=None if b0 is None else [to(b) for b in b0],
                                epochs=epochs, every=2 if full else None, lr=lr, grad=grad, backend="native",
                                batch_size=None if full else 8, shuffle_seed=SHUFFLE_SEED, **step)
        if dtype == torch.float32:
            verdict = judge(result.losses, result.weights, x, y, w0, epochs=epochs, lr=lr, grad=grad, refs=refs,
                            biases=result.biases, biases0=b0, **step, **batching)
            print(f"float32: {verdict.summary()}")
            assert verdict.ok, verdict.summary()
        else:
            ref = refs[0]
            errors = [rel_err(result.losses, ref.losses)] + [rel_err(a, b) for a, b in zip(
                result.weights + (result.biases or []), ref.weights + (ref.biases or []))]
            print(f"float64 against the float64 reference: max rel err {max(errors):.3g}")
            assert max(errors) <= 1e-12, errors


def state_of(params):
    return list(params.tensors) + [t for buffers in params.state.values() for t in buffers]


@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("loss,reduction", [("sse", "sum"), ("sse", "mean"), ("ce", "sum"), ("ce", "mean")])
def test_native_step_equals_the_torch_step(built, loss, reduction, optimizer, bias):
    """Two steps in float64 from the same state: loss, parameters (bias rows included: a decayed bias
    or a wrong Adam correction shows at 1e-5), optimizer buffers, step count and beta powers."""
    spec = StepSpec(lr=1e-2, loss=loss, reduction=reduction, optimizer=optimizer, weight_decay=0.1)
    x, y, w0, b0 = problem(torch.float64, bias=bias, loss=loss)
    x_in, y = step_inputs(x, y, bias)
    runs = {}
    for name in ("torch", "native"):
        params = Params.from_weights(w0, b0, spec)
        step = make_step(name, x_in, y, params, spec, rows=ROWS)
        loss_out, losses = torch.full((), NAN, dtype=torch.float64), []
        for _ in range(2):
            step.step(loss_out)
            losses.append(loss_out.item())
        runs[name] = losses, params
    (torch_losses, want), (native_losses, got) = runs["torch"], runs["native"]
    errors = [rel_err(native_losses, torch_losses)] + [rel_err(a, b) for a, b in zip(state_of(got), state_of(want))]
    print(f"native vs torch step: max rel err {max(errors):.3g} over {len(errors)} loss/tensor comparisons")
    assert max(errors) <= 1e-12, errors
    assert int(got.step) == int(want.step) == (2 if optimizer == "adam" else 0)
    assert torch.equal(got.powers, want.powers)


# (rows, features, hidden, out): batches the native runner steps in blocks of rows (network.h's blocks()), from
# a regression network's 2 blocks (a single output: the fused grad_h) to 4 uneven ones and two hidden layers,
# and the most blocks a batch takes (8, of 128 or 129 rows)
BLOCKED = {"2-blocks-out1": (150, 20, (512,), 1), "4-blocks": (301, 33, (40, 17), 3), "2-blocks-ce": (130, 9, (17,), 10),
           "8-blocks": (1030, 5, (9,), 4)}


def blocked_problem(shape, dtype, loss):
    rows, features, hidden, out = BLOCKED[shape]
    x, y, weights = seed_data(3, batch=rows, features=features, hidden=hidden, out=out, init="kaiming", dtype=dtype)
    gen = torch.Generator().manual_seed(4)
    biases = [0.1 * torch.randn(w.shape[1], generator=gen).to(dtype) for w in weights]
    x_in = with_ones(rows, features, like=x)
    x_in[:, :-1].copy_(x)
    if loss == "ce":
        y = torch.nn.functional.one_hot(y.argmax(1), out).to(dtype)
    return x_in, y, weights, biases


@pytest.mark.parametrize("shape,loss,optimizer", [(shape, loss, optimizer) for shape in BLOCKED
                                                   for loss, optimizer in (("sse", "adam"), ("ce", "momentum"),
                                                                           ("sse", "sgd"))
                                                   if not (loss == "ce" and BLOCKED[shape][3] == 1)])
def test_blocked_steps_equal_the_torch_step_whatever_the_threads(built, shape, loss, optimizer):
    """A batch stepped as blocks of rows (each block's gradients on one thread, added in block order): three
    steps equal the torch backend's in float64, give the same bits in float32 on 1, 2 and 3 threads, and
    gradients() then update() (the distributed path) equals step()."""
    from manualnn.training.threads import cpu_threads
    spec = StepSpec(lr=1e-2, loss=loss, reduction="mean", optimizer=optimizer, weight_decay=0.05)
    x, y, w0, b0 = blocked_problem(shape, torch.float64, loss)
    runs = {}
    for name in ("torch", "native"):
        params = Params.from_weights(w0, b0, spec)
        step = make_step(name, x, y, params, spec, rows=x.shape[0])
        out = torch.full((), NAN, dtype=torch.float64)
        runs[name] = [(step.step(out), out.item())[1] for _ in range(3)], params
    (want_losses, want), (got_losses, got) = runs["torch"], runs["native"]
    errors = [rel_err(got_losses, want_losses)] + [rel_err(a, b) for a, b in zip(state_of(got), state_of(want))]
    assert max(errors) <= 1e-12, errors

    x, y, w0, b0 = blocked_problem(shape, torch.float32, loss)
    results = []
    for threads in (1, 2, 3):
        with cpu_threads(threads):
            params = Params.from_weights(w0, b0, spec)
            step = make_step("native", x, y, params, spec, rows=x.shape[0])
            out = torch.full((), NAN)
            losses = [(step.step(out), out.item())[1] for _ in range(3)]
        results.append((losses, state_of(params)))
    for losses, state in results[1:]:
        assert losses == results[0][0] and all(torch.equal(a, b) for a, b in zip(state, results[0][1]))

    params = Params.from_weights(w0, b0, spec)
    grads = [torch.full_like(p, NAN) for p in params.tensors]
    parts = make_step("native", x, y, params, spec, rows=x.shape[0], grads=grads)
    for _ in range(3):
        parts.gradients(torch.full((), NAN))
        parts.update()
    assert all(torch.equal(a, b) for a, b in zip(state_of(params), results[0][1]))


@pytest.mark.parametrize("loss", ["sse", "ce"])
def test_a_validation_pass_in_blocks_equals_the_torch_backend_whatever_the_threads(built, loss):
    """300 validation rows, scored in blocks of rows side by side (network.h's outputs()): the same figures as
    the torch backend's in float64, and the same bits on one thread and two in float32."""
    from manualnn.training import cpu_threads
    runs = {}
    for dtype, backends, counts in ((torch.float64, ("torch", "native"), (None,)), (torch.float32, ("native",), (1, 2))):
        x, y, w0 = seed_data(7, batch=300, features=9, hidden=(33,), out=4, init="kaiming", dtype=dtype)
        xv, yv, _ = seed_data(8, batch=300, features=9, hidden=(33,), out=4, dtype=dtype)
        if loss == "ce":
            y, yv = y.argmax(1), yv.argmax(1)
        for backend in backends:
            for threads in counts:
                with cpu_threads(threads):
                    trainer = manualnn.Trainer(x, y, w0, lr=1e-3, bias=True, loss=loss, reduction="mean",
                                               optimizer="adam", batch_size=64, val_data=(xv, yv), backend=backend)
                    runs[dtype, backend, threads] = trainer.run(4)
    for key in ("val_losses", "val_accuracies", "val_rmse", "val_r2"):
        want, got = (getattr(runs[torch.float64, name, None], key) for name in ("torch", "native"))
        assert len(got) == len(want) and (not want or rel_err(got, want) <= 1e-12), key
        assert getattr(runs[torch.float32, "native", 1], key) == getattr(runs[torch.float32, "native", 2], key), key
    assert runs[torch.float64, "native", None].val_losses


FRESH_THREADS = """
import sys, torch, manualnn
x, y, w = manualnn.seed_data(5, batch=2048, features=20, hidden=(2048, 64), out=3, init="kaiming")
runs = [manualnn.train(x, y, w, epochs=2, lr=1e-3, bias=True, reduction="mean", optimizer="adam", batch_size=1024,
                       threads=threads, backend="native") for threads in (2, 1)]   # two first: new team threads
torch.save([[run.losses] + run.weights + run.biases for run in runs], sys.argv[1])
"""


def test_a_fresh_process_steps_blocks_alike_on_any_thread_count(built, tmp_path):
    """A new process's first blocked steps on two threads give one thread's bits: a team thread's first
    parallel loop sets MKL's count for it to torch's, which must not undo the block's one thread (MKL splits
    these products, inner dimensions of 2,049, differently on two). In a process of its own, where the team
    threads are new when the two-thread run starts."""
    out = tmp_path / "runs.pt"
    subprocess.run([sys.executable, "-c", FRESH_THREADS, str(out)], check=True, timeout=120)
    two, one = torch.load(out)
    assert one[0] == two[0] and all(torch.equal(a, b) for a, b in zip(one[1:], two[1:]))


@pytest.mark.parametrize("optimizer,bias", [("sgd", False), ("sgd", True), ("momentum", True), ("adam", True)],
                         ids=["sgd-folded", "sgd-bias", "momentum-bias", "adam-bias"])
def test_gradients_then_update_equals_step(built, optimizer, bias):
    """The distributed path: gradients() (every layer written, ready(i) last layer first), then update()."""
    spec = StepSpec(lr=1e-2, loss="ce", reduction="mean", optimizer=optimizer, weight_decay=0.05)
    x, y, w0, b0 = problem(bias=bias, loss="ce")
    x_in, y = step_inputs(x, y, bias)
    stepped, split = Params.from_weights(w0, b0, spec), Params.from_weights(w0, b0, spec)
    whole = make_step("native", x_in, y, stepped, spec)
    grads = [torch.full_like(p, NAN) for p in split.tensors]   # poisoned: an unwritten gradient stays NaN
    parts = make_step("native", x_in, y, split, spec, grads=grads)
    folded = optimizer == "sgd" and not bias   # step() folds SGD into the GEMM: other rounding
    for _ in range(3):
        a, b, ready = torch.full((), NAN), torch.full((), NAN), []
        whole.step(a)
        parts.gradients(b, ready=ready.append)
        assert ready == [2, 1, 0]
        assert all(bool(torch.isfinite(g).all()) for g in grads)
        parts.update()
        assert a.item() == pytest.approx(b.item(), rel=1e-6) if folded else a.item() == b.item()
    for p, q in zip(state_of(stepped), state_of(split)):
        if folded:
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
        else:
            assert torch.equal(p, q)


def test_a_batch_without_rows_gives_zero_gradients(built):
    """A rank with no rows of a small batch: zero loss and gradients, and the same update as every rank."""
    spec = StepSpec(lr=1e-2, reduction="mean", optimizer="adam", weight_decay=0.05)
    x, y, w0, b0 = problem(bias=True)
    x_in, y = step_inputs(x, y, True)
    params = Params.from_weights(w0, b0, spec)
    grads = [torch.full_like(p, NAN) for p in params.tensors]
    step = make_step("native", x_in[:0], y[:0], params, spec, rows=ROWS, grads=grads)
    loss = torch.full((), NAN)
    step.gradients(loss)
    assert loss.item() == 0.0 and all(bool((g == 0).all()) for g in grads)
    step.update()
    assert int(params.step) == 1 and all(bool(torch.isfinite(p).all()) for p in params.tensors)
    alone = make_step("native", x_in[:0], y[:0], params, spec)   # no rows= either: "mean" must not divide by 0
    alone.step(loss)
    assert loss.item() == 0.0 and int(params.step) == 2


EPOCH_CASES = [("sse", "sum", "sgd", False, None), ("ce", "mean", "adam", True, 8), ("sse", "mean", "momentum", True, 5)]


@pytest.mark.parametrize("loss,reduction,optimizer,bias,batch", EPOCH_CASES,
                         ids=["seed-step-full-batch", "ce-adam-batches-of-8", "sse-momentum-batches-of-5"])
def test_whole_epochs_equal_the_torch_backend(built, loss, reduction, optimizer, bias, batch):
    """The native runner's epochs (its own shuffled orders, gathered batches, validation pass and early
    stopping) against the torch backend's step by step in Python, in float64: the same losses, validation
    figures, stopping epoch, kept epoch and weights."""
    x, y, w0, b0 = problem(torch.float64, bias=bias, loss=loss)
    xv, yv, _, _ = problem(torch.float64, bias=bias, loss=loss, seed=12)
    options = dict(lr=learning_rate(reduction, optimizer), loss=loss, reduction=reduction, optimizer=optimizer,
                   weight_decay=0.05, biases=b0, batch_size=batch, shuffle_seed=SHUFFLE_SEED, val_data=(xv, yv),
                   patience=3)
    runs = {name: manualnn.Trainer(x, y, w0, backend=name, **options) for name in ("torch", "native")}
    results = {name: trainer.run(40, every=7) for name, trainer in runs.items()}
    want, got = results["torch"], results["native"]
    assert (got.stopped_early, got.best_epoch, got.epochs) == (want.stopped_early, want.best_epoch, want.epochs)
    for key in ("losses", "val_losses", "val_accuracies", "val_rmse", "val_r2"):
        a, b = getattr(got, key), getattr(want, key)
        assert len(a) == len(b) and (not b or rel_err(a, b) <= 1e-12), key
    for a, b in zip(got.weights + (got.biases or []), want.weights + (want.biases or [])):
        assert rel_err(a, b) <= 1e-12
    print(f"native = torch: {got.epochs} epochs, stopped {got.stopped_early}, kept epoch {got.best_epoch}")


def test_whole_epochs_write_only_their_rows(built):
    """A chunk writes every slot of the epochs it runs (the rows are poisoned first) and nothing after
    them, and stops after an epoch whose loss is not finite."""
    spec = StepSpec(lr=1e-2, reduction="mean", optimizer="momentum", weight_decay=0.05)
    x, y, w0, b0 = problem(bias=True)
    x_in, y = step_inputs(x, y, True)
    from manualnn.backends.native_backend import NativeEpochs
    runner = NativeEpochs(x_in, y, Params.from_weights(w0, b0, spec), spec, batch_size=8, shuffle=True,
                          shuffle_seed=SHUFFLE_SEED)
    rows = torch.full((6, 4), NAN)
    assert runner.run_chunk(0, 4, rows) == (4, False)
    assert bool(torch.isfinite(rows[:4, 0]).all()) and bool(torch.isnan(rows[4:]).all())
    blown = NativeEpochs(x_in * 1e30, y, Params.from_weights(w0, b0, spec), spec, batch_size=8, shuffle=True,
                         shuffle_seed=SHUFFLE_SEED)
    rows = torch.full((6, 4), NAN)
    done, stopped = blown.run_chunk(0, 6, rows)
    assert not stopped and done < 6 and not math.isfinite(rows[done - 1, 0].item())
    with pytest.raises(RuntimeError, match="rows: expected a contiguous"):
        runner.run_chunk(0, 2, torch.zeros(2, 4, dtype=torch.float64))


ODD_SHAPES = {
    # name: (batch, features, hidden, out, lr): the seed's, widths under 16, one row, deeper, no hidden layer,
    # one output (its grad_h is the fused outer product)
    "seed": (100, 1000, (100,), 10, 1e-6),
    "out1": (37, 21, (33, 17), 1, 1e-5),
    "batch1": (1, 33, (17,), 10, 1e-3),
    "w10": (10, 10, (10,), 10, 1e-3),
    "3hidden": (33, 65, (17, 33, 9), 10, 1e-6),
    "no-hidden": (9, 12, (), 5, 1e-3),
}


@pytest.mark.parametrize("grad", ["relu", "tutorial"])
@pytest.mark.parametrize("shape", list(ODD_SHAPES))
def test_odd_shapes_match_the_seed_loop(built, shape, grad):
    """The seed's step (no biases, sum of squares, plain SGD folded into the GEMMs), float32, 20 epochs."""
    batch, features, hidden, out, lr = ODD_SHAPES[shape]
    x, y, weights = seed_data(10, batch=batch, features=features, hidden=hidden, out=out)
    result = manualnn.train(x, y, weights, epochs=20, lr=lr, grad=grad, backend="native", every=7)
    verdict = judge(result.losses, result.weights, x, y, weights, epochs=20, lr=lr, grad=grad)
    print(verdict.summary())
    assert verdict.ok, verdict.summary()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("grad", ["relu", "tutorial"])
@pytest.mark.parametrize("rows,cols", [(200, 512), (100, 100), (2, 2), (7, 33), (3, 1000)])
def test_the_fused_one_output_grad_h_equals_its_torch_twin(built, rows, cols, grad, dtype):
    """grad_h = mask(g @ w^T) for a layer with one output: the native runner's one pass against torch.mm and
    the torch backend's mask, to the bit (signs of zeros included), on random values with exact zeros, a NaN
    and strided g and h. Shapes with one row or one column keep the GEMM (there MKL makes -0.0 products +0.0)."""
    from manualnn.backends.torch_backend import mask_op
    gen = torch.Generator().manual_seed(rows * 7 + cols)
    g = torch.randn(rows, 3, generator=gen, dtype=dtype)[:, 1:2]      # a column of a wider buffer: row stride 3
    w = torch.randn(cols, generator=gen, dtype=dtype)
    h = torch.randn(rows, cols + 5, generator=gen, dtype=dtype).clamp(min=0)[:, :cols]   # ReLU outputs, row stride
    h[:, 1::3] = 0.0                              # exact zeros: masked in "relu" mode whatever the product
    g[rows // 2] = -g[rows // 2].abs()            # products of both signs, and -0.0 ones from w's last value
    h[-1, 0], w[-1] = NAN, -0.0
    want = torch.mm(g, w[None])
    mask_op(want, h, grad)()
    got = native.load().outer_relu_backward(g, w, h, grad == "relu")
    assert got.shape == want.shape
    same = (got == want) | (torch.isnan(got) & torch.isnan(want))
    assert bool(same.all()) and torch.equal(torch.signbit(got), torch.signbit(want))


def test_relu_mode_equals_autograd_step_by_step(built):
    x, y, weights = seed_data(22, batch=21, features=40, hidden=(17, 9), out=10, dtype=torch.float64)
    losses, snapshots = autograd_run(x, y, weights, 6, 1e-3)
    trainer = manualnn.Trainer(x, y, weights, lr=1e-3, grad="relu", backend="native")
    for epoch in range(6):
        loss = trainer.train_epoch()
        assert abs(loss.item() - losses[epoch]) <= 1e-12 * abs(losses[epoch])
        for w, a in zip(trainer.params.weights, snapshots[epoch]):
            torch.testing.assert_close(w, a, rtol=1e-11, atol=1e-12)


def test_training_leaves_the_thread_count_alone(built):
    threads = torch.get_num_threads()
    x, y, weights = seed_data(28, batch=8, features=12, hidden=(9,), out=3)   # steps may choose one thread inside
    manualnn.train(x, y, weights, epochs=30, lr=1e-3, backend="native", batch_size=3)
    assert torch.get_num_threads() == threads


SUBNORMALS_AFTER_A_RUN = """
import torch, manualnn
torch.set_num_threads(1)    # no OpenMP thread is started before the run: the run's steps start the second
x, y, weights = manualnn.seed_data(seed=0, batch=400, features=64, hidden=(512,), out=10, init="kaiming")
manualnn.train(x, y, weights, epochs=3, batch_size=200, lr=1e-3, optimizer="adam", backend="native", threads=2)
torch.set_num_threads(2)
tiny = torch.full((1 << 22,), 1e-40)          # subnormal floats, doubled on both threads
print(int((tiny * 2 == 0).sum()))
"""


def test_a_run_leaves_every_thread_s_subnormals_alone(built):
    """The runner flushes subnormals to zero on the threads it uses and gives each its mode back after the
    run, threads that OpenMP started during the run included (they copy the mode of the thread that starts
    them): torch's own ops afterwards keep their subnormals, on every thread."""
    if native.OPENMP == ():
        pytest.skip("torch without OpenMP: one thread")
    out = subprocess.run([sys.executable, "-c", SUBNORMALS_AFTER_A_RUN], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0", f"{out.stdout.strip()} subnormal products flushed to zero after the run"


def test_cli_native_tutorial_prints_the_seeds_losses(built, capsys):
    code = main(["train", "--backend", "native", "--seed", "0", "--grad", "tutorial", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""  # already built: nothing on stderr
    expected = [float(line.rsplit(":", 1)[1]) for line in run_seed_script(0)]
    got = [float(line.rsplit(":", 1)[1]) for line in out.splitlines()]
    assert len(got) == 20
    for g, e in zip(got, expected):  # to float32 rounding
        assert abs(g - e) <= 1e-6 * abs(e), (g, e)


def test_divergence_is_caught_and_rewound(built):
    x, y, weights = seed_data(23, batch=8, features=12, hidden=(9,), out=3)
    with pytest.raises(manualnn.NonFiniteLossError) as info:
        manualnn.train(x, y, weights, epochs=60, lr=10.0, backend="native")
    kept = info.value.result
    assert all(bool(torch.isfinite(w).all()) for w in kept.weights) and len(kept.losses) < 60


def test_first_build_says_so(native_build):
    cache, log, seconds = native_build
    if not log:
        pytest.skip("built before this session (copied from the user's cache, or MANUALNN_TEST_NATIVE_CACHE): no "
                    "first build to check (test_native_build_faults checks what a tiny build says)")
    print(f"first build: {seconds:.1f} s; its message: {log.strip()!r}")
    assert re.search(r"compiling the native CPU runner \(once, about 30 s; 'manualnn build-native' does it ahead of "
                     r"time\) into .*\n.*built the native runner in \d+\.\d s", log)
    assert native.is_built(cache=cache)


def test_build_key_follows_the_sources(native_build, tmp_path, monkeypatch):
    """No recompiling here: an unchanged copy of the sources loads from the cache; a changed byte, or a new
    header, is a new key (a new build); a .cu file is not part of the CPU extension."""
    cache = native_build[0]
    src = tmp_path / "native"
    shutil.copytree(native.source_dir(), src)
    key = native.build_key(str(src))
    assert key == native.build_key()
    assert native.cpu_sources(str(src)) == [str(src / "csv.cpp"), str(src / "runner.cpp")]
    assert native.is_built(str(src), cache)
    monkeypatch.setattr(native, "_loaded", {})   # not this process's memo: the cache's shared library
    monkeypatch.setattr(native, "_build", lambda *a: pytest.fail("an unchanged tree was compiled again"))
    log = BuildLog()
    assert hasattr(native.load(str(src), cache, log=log), "Step") and log.text == ""

    (src / "stray.cu").write_text("__global__ void k() {}\n")
    assert native.build_key(str(src)) == key
    runner = src / "runner.cpp"
    code = runner.read_bytes()
    runner.write_bytes(code.replace(b"native CPU runner", b"native CPU Runner", 1))   # one byte
    assert native.build_key(str(src)) != key and not native.is_built(str(src), cache)
    runner.write_bytes(code)
    assert native.build_key(str(src)) == key
    (src / "helpers.h").write_text("#pragma once\n")
    assert native.build_key(str(src)) != key


def test_missing_compiler_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path / "empty"))
    monkeypatch.setenv("CXX", "no-such-cxx-compiler")
    assert any("no-such-cxx-compiler" in m for m in native.missing_tools())
    with pytest.warns(UserWarning, match="no-such-cxx-compiler"):
        assert resolve("auto", "cpu") == "torch"         # auto falls back, saying why
    x, y, weights = seed_data(25, batch=4, features=5, hidden=(3,), out=2)
    with pytest.raises(BackendUnavailableError, match=r"'native'.*needs a C\+\+ compiler \('no-such-cxx-compiler' "
                                                      r"is not on PATH"):
        manualnn.train(x, y, weights, epochs=2, backend="native")
    with pytest.raises(native.NativeBuildError, match="needs a C\\+\\+ compiler"):
        native.load()
    assert main(["build-native"]) == 2


def test_cli_build_native_when_built(built, capsys):
    assert main(["build-native"]) == 0
    assert "already built in " + built in capsys.readouterr().err


def test_the_thread_rule_checks_the_blocks_the_runner_scores(built, monkeypatch):
    """threads.py lists the validation pass's products as the runner computes them: its block size is the
    runner's, and a last, smaller block is listed too. Products are listed only where BLAS may run them on
    more than one thread: not for a small step or pass or one in blocks of rows (network.h's one_blas_thread,
    where the BLAS is MKL), but for the seed's step (plain SGD folded into its GEMM)."""
    from manualnn.training import threads
    module = native.load()
    assert module.SCORE_BLOCK == threads.SCORE_BLOCK
    if not module.one_blas_thread(200, 1000, False):
        pytest.skip("torch's BLAS here is not MKL: the runner cannot hold it to one thread")
    x, y, weights = seed_data(5, batch=40, features=6, hidden=(7,), out=3)
    xv, yv, _ = seed_data(6, batch=threads.SCORE_BLOCK + 5, features=6, hidden=(7,), out=3)
    seen, real = [], threads.step_products
    monkeypatch.setattr(threads, "step_products",
                        lambda sizes, rows, *rest: seen.append(sorted(set(rows))) or real(sizes, rows, *rest))
    for options, want in ((dict(lr=1e-3, bias=True, optimizer="adam"), set()),      # small, blocks, small
                          (dict(lr=1e-6), {40, threads.SCORE_BLOCK, 5})):        # the seed's: none of them
        trainer = manualnn.Trainer(x, y, weights, backend="native", val_data=(xv, yv), **options)
        seen.clear()
        threads.thread_rule(trainer)
        assert seen == [sorted(want)]


@pytest.mark.parametrize("backend,adapts", [("native", True), ("torch", False)])
def test_a_step_in_blocks_adapts_where_blas_sums_by_the_thread_count(built, monkeypatch, backend, adapts):
    """Where this machine's BLAS gave other sums on two threads for a 200-row batch's products, the torch
    backend keeps one count, the native runner, whose blocks keep BLAS on one thread,
    may still choose; network.h's rule at its edges: blocks from 96 rows, a small pass up to 2^22 rows x
    parameters, neither for SGD folded into its GEMM nor over 2^20 parameters."""
    from manualnn.training import threads
    one_thread = native.load().one_blas_thread
    if not one_thread(200, 1000, False):
        pytest.skip("torch's BLAS here is not MKL: the runner cannot hold it to one thread")
    assert one_thread(96, 44_200, False) and not one_thread(95, 44_200, False)            # blocks
    assert one_thread(95, 44_150, False) and not one_thread(95, 44_151, False)            # small: 2^22
    assert not one_thread(200, 10_000, True) and not one_thread(200, (1 << 20) + 1, False)
    import contextlib
    real_addmm, count = torch.addmm, [0]

    @contextlib.contextmanager
    def counted(n):   # same_results' one and two threads, on a machine of any size
        count[0] = n
        yield

    monkeypatch.setattr(threads, "_same", {})
    monkeypatch.setattr(threads, "cpu_threads", counted)
    monkeypatch.setattr(threads.torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(threads.torch, "addmm", lambda c, a, b, **kw: real_addmm(c, a, b, **kw)
                        + (count[0] - 1) * (a.shape[0] == 200 or b.shape[1] == 200) * 1e-3)
    x, y, weights = seed_data(5, batch=600, features=6, hidden=(64,), out=3)   # three batches of 200
    trainer = manualnn.Trainer(x, y, weights, lr=1e-3, bias=True, optimizer="adam", batch_size=200, backend=backend)
    assert threads.thread_rule(trainer) == (2, adapts)


def test_auto_is_native_on_the_cpu_once_built(built):
    """backend="auto" takes the native runner on the CPU, and the seed's run prints what the torch backend
    prints, digit for digit (the same GEMMs, the same dot for the loss)."""
    assert resolve("auto", "cpu", torch.float32) == "native"
    assert resolve("auto", "cpu", torch.float64) == "native"
    x, y, weights = seed_data(26, batch=4, features=5, hidden=(3,), out=2)
    assert manualnn.train(x, y, weights, epochs=2).backend == "native"
    for seed, grad in ((0, "relu"), (3, "tutorial")):
        x, y, weights = seed_data(seed)
        runs = [manualnn.train(x, y, weights, grad=grad, backend=name).losses for name in ("torch", "auto")]
        assert [f"{v:.4f}" for v in runs[0]] == [f"{v:.4f}" for v in runs[1]]


def test_auto_without_a_compiler_says_so_once(tmp_path, monkeypatch):
    from manualnn import backends
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path / "empty"))
    monkeypatch.setenv("CXX", "no-such-cxx-compiler-2")
    monkeypatch.setattr(backends, "_warned", set())
    x, y, weights = seed_data(25, batch=4, features=5, hidden=(3,), out=2)
    with pytest.warns(backends.SlowPathWarning, match="not the compiled native runner .*'no-such-cxx-compiler-2'"):
        assert manualnn.train(x, y, weights, epochs=2).backend == "torch"
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert manualnn.train(x, y, weights, epochs=2).backend == "torch"   # once per process


def test_native_is_cpu_only_and_ieee_only(built):
    with pytest.raises(BackendUnavailableError, match="'native' cannot run on device cuda.*CPU only"):
        resolve("native", "cuda")
    x, y, weights = seed_data(27, batch=4, features=5, hidden=(3,), out=2)
    with pytest.raises(ValueError, match="precision: the native backend .* only 'ieee', got 'tf32'"):
        manualnn.train(x, y, weights, epochs=2, backend="native", precision="tf32")
    spec = StepSpec()
    meta = [t.to("meta") for t in (x, y)]
    with pytest.raises(ValueError, match="x: the native backend runs on the CPU only, got a tensor on meta"):
        make_step("native", *meta, Params.from_weights([w.to("meta") for w in weights], None, spec), spec)
