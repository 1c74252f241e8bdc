"""Whole training runs of the Triton backend against the float64 reference, in both grad modes.

On the CPU these run under the interpreter: the seed shape for a few epochs, small shapes for all 20.
"""
import re

import pytest
import torch

import manualnn
from helpers import run_and_judge
from manualnn import seed_data
from manualnn.testing import judge
from manualnn.backends.triton_backend import TritonBackend
from manualnn.cli import main
from launches import count_launches
from seed_script import run_seed_script
from test_reference import autograd_run
from test_torch_backend import SHAPES

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SEED_EPOCHS = 20 if DEVICE == "cuda" else 3


def per_layer_trainer(x, y, weights, **kw):
    """A Trainer whose triton backend uses the per-layer kernels even where the two-launch step fits."""
    trainer = manualnn.Trainer(x, y, weights, backend="triton", **kw)
    trainer.backend = TritonBackend(trainer.x, trainer.y, trainer.weights, lr=trainer.lr, grad=trainer.grad,
                                    precision=trainer.precision, fused=False)
    return trainer


@pytest.mark.parametrize("grad", ["relu", "tutorial"])
def test_seed_shape(grad):
    x, y, weights = seed_data(40, device=DEVICE)
    run_and_judge(x, y, weights, epochs=SEED_EPOCHS, lr=1e-6, grad=grad, backend="triton")


@pytest.mark.parametrize("grad", ["relu", "tutorial"])
@pytest.mark.parametrize("shape", [s for s in SHAPES if s != "seed"])
def test_per_layer_kernels_small_shapes_all_20_epochs(shape, grad):
    # the two-launch step has its own runs in test_fused_mlp.py; these force the per-layer kernels
    batch, features, hidden, out, lr = SHAPES[shape]
    x, y, weights = seed_data(41, batch=batch, features=features, hidden=hidden, out=out, device=DEVICE)
    trainer = per_layer_trainer(x, y, weights, lr=lr, grad=grad)
    result = trainer.run(20)
    verdict = judge(result.losses, result.weights, x, y, weights, epochs=20, lr=lr, grad=grad)
    print(f"per-layer {shape}/{grad}: {verdict.summary()}")
    assert verdict.ok, verdict.summary()


def step_launches(trainer):
    trainer.step()                       # warm-up: compiles (and autotunes, on the GPU) outside the count
    with count_launches() as launched:
        trainer.step()
    trainer.losses                       # settle
    return launched


@pytest.mark.parametrize("hidden", [(100,), (17, 33, 128), ()])
def test_a_narrow_network_takes_two_launches_per_step(hidden):
    x, y, weights = seed_data(43, batch=100 if hidden == (100,) else 20, features=1000 if hidden == (100,) else 9,
                              hidden=hidden, out=10, device=DEVICE)
    trainer = manualnn.Trainer(x, y, weights, lr=1e-6, backend="triton")
    assert step_launches(trainer) == ["mlp_rows_kernel", "mlp_update_kernel"]


def test_wider_networks_take_the_per_layer_kernels():
    x, y, weights = seed_data(43, batch=8, features=12, hidden=(129, 7), out=3, device=DEVICE)
    trainer = manualnn.Trainer(x, y, weights, lr=1e-6, backend="triton")
    assert not trainer.backend.fused
    assert step_launches(trainer) == ["linear_relu_kernel", "linear_relu_kernel", "output_loss_kernel",
                                      "input_grad_kernel", "weight_grad_kernel",
                                      "input_grad_kernel", "weight_grad_kernel", "weight_grad_kernel"]


def test_several_output_programs_use_the_partial_sum():
    # the per-layer path; batch 129 > the interpreter's 128-row block (the GPU's is 64): the loss comes
    # from several partials and one more launch sums them
    x, y, weights = seed_data(42, batch=129, features=33, hidden=(17,), out=10, device=DEVICE)
    trainer = per_layer_trainer(x, y, weights, lr=1e-5)
    assert trainer.backend.partials.numel() > 1
    assert step_launches(trainer) == ["linear_relu_kernel", "output_loss_kernel", "sum_partials_kernel",
                                      "input_grad_kernel", "weight_grad_kernel", "weight_grad_kernel"]
    trainer = per_layer_trainer(x, y, weights, lr=1e-5)    # fresh: the counted steps trained the first one
    result = trainer.run(20)
    verdict = judge(result.losses, result.weights, x, y, weights, epochs=20, lr=1e-5, grad="relu")
    assert verdict.ok, verdict.summary()


def test_seed_shape_per_layer_kernels():
    x, y, weights = seed_data(40, device=DEVICE)
    trainer = per_layer_trainer(x, y, weights, lr=1e-6, grad="tutorial")
    result = trainer.run(SEED_EPOCHS)
    verdict = judge(result.losses, result.weights, x, y, weights, epochs=SEED_EPOCHS, lr=1e-6, grad="tutorial")
    assert verdict.ok, verdict.summary()


def test_triton_backend_rejects_float64():
    x, y, weights = seed_data(44, batch=4, features=5, hidden=(3,), out=2, dtype=torch.float64, device=DEVICE)
    with pytest.raises(TypeError, match=r"x: the triton backend trains float32 tensors.*got torch.float64"):
        manualnn.train(x, y, weights, backend="triton")


LINE = re.compile(r"^Epoch:(\d+), Loss:(-?\d+\.\d{4})$")


def cli_losses(capsys, *argv):
    assert main(["train", *argv]) == 0
    out = capsys.readouterr().out
    return [float(LINE.match(line).group(2)) for line in out.splitlines()]


def test_cli_triton_tutorial_matches_the_seed(capsys):
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
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("precision", ["tf32", "bf16"])
@pytest.mark.parametrize("grad", ["relu", "tutorial"])
def test_precision_modes_on_cuda(precision, grad, fused):
    # bounded a small factor above what honest operand rounding gives on the CPU (tests/emulate.py)
    from emulate import bounds_from_emulation
    from manualnn.testing import reference_runs, rel_err
    x, y, weights = seed_data(45, device="cuda")
    trainer = manualnn.Trainer(x, y, weights, lr=1e-6, grad=grad, backend="triton", precision=precision)
    if not fused:
        trainer = per_layer_trainer(x, y, weights, lr=1e-6, grad=grad, precision=precision)
    assert trainer.backend.fused == fused
    result = trainer.run(20)
    ref64, _ = reference_runs(x, y, weights, epochs=20, lr=1e-6, grad=grad)
    loss_bound, weight_bounds = bounds_from_emulation(x, y, weights, ref64, epochs=20, lr=1e-6, grad=grad,
                                                      precision=precision)
    loss_err = max(rel_err([a], [b]) for a, b in zip(result.losses, ref64.losses))
    weight_errs = [rel_err(w, r) for w, r in zip(result.weights, ref64.weights)]
    print(f"{precision}/{grad}/fused={fused}: loss err {loss_err:.3g} (bound {loss_bound:.3g}), weights "
          f"{[f'{e:.3g}' for e in weight_errs]} (bounds {[f'{b:.3g}' for b in weight_bounds]})")
    assert loss_err <= loss_bound
    assert all(e <= b for e, b in zip(weight_errs, weight_bounds))


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_ieee_means_fp32_even_with_global_tf32_on(backend):
    x, y, weights = seed_data(48, device="cuda")
    torch.set_float32_matmul_precision("high")        # what a user's script may have set; undone by the fixture
    result = manualnn.train(x, y, weights, epochs=20, lr=1e-6, backend=backend)
    assert torch.get_float32_matmul_precision() == "high"   # the backend restored it
    torch.set_float32_matmul_precision("highest")
    verdict = judge(result.losses, result.weights, x, y, weights, epochs=20, lr=1e-6, grad="relu")
    assert verdict.ok, verdict.summary()     # TF32 (errors near 1e-3) would fail the fp32 bound (near 1e-6)


@pytest.mark.cuda
def test_cuda_launch_counts():
    x, y, weights = seed_data(49, device="cuda")
    assert step_launches(manualnn.Trainer(x, y, weights, lr=1e-6, backend="triton")) == \
        ["mlp_rows_kernel", "mlp_update_kernel"]
    # per layer on the GPU: the output kernel's 64-row blocks give the seed's 100 rows two partials
    assert step_launches(per_layer_trainer(x, y, weights, lr=1e-6)) == \
        ["linear_relu_kernel", "output_loss_kernel", "sum_partials_kernel", "input_grad_kernel",
         "weight_grad_kernel", "weight_grad_kernel"]


@pytest.mark.cuda
def test_auto_picks_triton_on_cuda():
    x, y, weights = seed_data(46, batch=8, features=12, hidden=(9,), out=3, device="cuda")
    assert manualnn.train(x, y, weights, epochs=2, lr=1e-3).backend == "triton"


def test_bf16_under_the_interpreter_is_a_clear_error():
    if DEVICE == "cuda":
        pytest.skip("bf16 runs on CUDA")
    x, y, weights = seed_data(47, batch=4, features=5, hidden=(3,), out=2)
    with pytest.raises(manualnn.BackendUnavailableError, match=r"precision: 'bf16' needs a CUDA device"):
        manualnn.Trainer(x, y, weights, backend="triton", precision="bf16")
