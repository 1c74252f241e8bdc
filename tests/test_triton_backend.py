"""Whole training runs of the Triton backend against the float64 reference, in both grad modes.

On the CPU these run under the interpreter: the seed shape for a few epochs, small shapes for all 20.
"""
import re

import pytest
import torch

import manualnn
from helpers import run_and_judge
from manualnn import seed_data
from manualnn.cli import main
from seed_script import run_seed_script
from test_reference import autograd_run
from test_torch_backend import SHAPES

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SEED_EPOCHS = 20 if DEVICE == "cuda" else 3


@pytest.mark.parametrize("grad", ["relu", "tutorial"])
def test_seed_shape(grad):
    x, y, weights = seed_data(40, device=DEVICE)
    run_and_judge(x, y, weights, epochs=SEED_EPOCHS, lr=1e-6, grad=grad, backend="triton")


@pytest.mark.parametrize("grad", ["relu", "tutorial"])
@pytest.mark.parametrize("shape", [s for s in SHAPES if s != "seed"])
def test_small_shapes_all_20_epochs(shape, grad):
    batch, features, hidden, out, lr = SHAPES[shape]
    x, y, weights = seed_data(41, batch=batch, features=features, hidden=hidden, out=out, device=DEVICE)
    run_and_judge(x, y, weights, epochs=20, lr=lr, grad=grad, backend="triton")


def test_several_output_programs_use_the_partial_sum():
    # batch 129 > the interpreter's 128-row block: the loss comes from two partials
    x, y, weights = seed_data(42, batch=129, features=33, hidden=(17,), out=10, device=DEVICE)
    trainer = manualnn.Trainer(x, y, weights, lr=1e-5, backend="triton")
    assert trainer.backend.partials.numel() > 1
    assert trainer.backend.launches_per_step() == 6
    run_and_judge(x, y, weights, epochs=20, lr=1e-5, grad="relu", backend="triton")


def test_launches_per_step():
    x, y, weights = seed_data(43, device=DEVICE)
    assert manualnn.Trainer(x, y, weights, backend="triton").backend.launches_per_step() == 5
    x, y, weights = seed_data(43, batch=8, features=12, hidden=(9, 7, 5), out=3, device=DEVICE)
    assert manualnn.Trainer(x, y, weights, backend="triton").backend.launches_per_step() == 3 + 1 + 3 + 4


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
@pytest.mark.parametrize("precision", ["tf32", "bf16"])
@pytest.mark.parametrize("grad", ["relu", "tutorial"])
def test_precision_modes_on_cuda(precision, grad):
    x, y, weights = seed_data(45, device="cuda")
    run_and_judge(x, y, weights, epochs=20, lr=1e-6, grad=grad, backend="triton", precision=precision)


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
