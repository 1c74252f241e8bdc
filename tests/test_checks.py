"""Every bad input gets a clear error naming the argument, what was expected and what came."""
import math
import os

import pytest
import torch

from manualnn import BackendUnavailableError, Trainer, seed_data, train


def good():
    return seed_data(30, batch=6, features=8, hidden=(5,), out=3)


def call(**override):
    x, y, weights = good()
    args = dict(x=x, y=y, weights=weights)
    kwargs = dict(epochs=2, lr=1e-3, backend="torch")
    for k, v in override.items():
        (args if k in args else kwargs)[k] = v
    return train(args["x"], args["y"], args["weights"], **kwargs)


x0, y0, w0 = good()
CASES = [
    # (override, exception, pattern naming argument / expected / got)
    (dict(x=torch.randn(6, 9)), ValueError, r"weights\[0\]: expected 9 rows \(x.shape\[1\]\), got shape \(8, 5\)"),
    (dict(y=torch.randn(5, 3)), ValueError, r"y: expected 6 rows \(the batch of x\), got shape \(5, 3\)"),
    (dict(y=torch.randn(6, 4)), ValueError, r"y: expected 3 columns \(weights\[1\].shape\[1\]\), got shape \(6, 4\)"),
    (dict(weights=[w0[0], torch.randn(4, 3)]), ValueError, r"weights\[1\]: expected 5 rows \(weights\[0\].shape\[1\]\), got shape \(4, 3\)"),
    (dict(x=torch.randn(6, 8, 1)), ValueError, r"x: expected a 2-D tensor, got shape \(6, 8, 1\)"),
    (dict(weights=[]), ValueError, r"weights: expected at least one weight tensor"),
    (dict(weights=w0[0]), TypeError, r"weights: expected a list of tensors"),
    (dict(x=[[1.0]]), TypeError, r"x: expected a torch.Tensor, got list"),
    (dict(x=x0.long()), TypeError, r"x: expected dtype torch.float32 or torch.float64, got torch.int64"),
    (dict(x=x0.half()), TypeError, r"x: expected dtype torch.float32 or torch.float64, got torch.float16"),
    (dict(y=y0.double()), TypeError, r"y: expected dtype torch.float32 \(the dtype of x\), got torch.float64"),
    (dict(weights=[w0[0], w0[1].double()]), TypeError, r"weights\[1\]: expected dtype torch.float32 \(the dtype of x\), got torch.float64"),
    (dict(x=torch.randn(0, 8), y=torch.randn(0, 3)), ValueError, r"x: expected a non-empty batch, got shape \(0, 8\)"),
    (dict(x=x0.clone().index_fill_(0, torch.tensor([2]), math.nan)), ValueError, r"x: expected finite values, got NaN or Inf"),
    (dict(y=y0.clone().index_fill_(0, torch.tensor([1]), math.inf)), ValueError, r"y: expected finite values, got NaN or Inf"),
    (dict(weights=[w0[0].clone().fill_(math.nan), w0[1]]), ValueError, r"weights\[0\]: expected finite values"),
    (dict(lr=0.0), ValueError, r"lr: expected a positive finite number, got 0.0"),
    (dict(lr=-1e-3), ValueError, r"lr: expected a positive finite number, got -0.001"),
    (dict(lr=math.nan), ValueError, r"lr: expected a positive finite number, got nan"),
    (dict(lr="0.1"), TypeError, r"lr: expected a positive finite number, got str"),
    (dict(epochs=0), ValueError, r"epochs: expected an integer >= 1, got 0"),
    (dict(epochs=-3), ValueError, r"epochs: expected an integer >= 1, got -3"),
    (dict(epochs=2.5), TypeError, r"epochs: expected an integer >= 1, got float 2.5"),
    (dict(grad="clamp"), ValueError, r"grad: expected one of 'relu', 'tutorial', got 'clamp'"),
    (dict(backend="cuda"), ValueError, r"backend: expected one of 'auto', 'torch', 'triton', 'native', got 'cuda'"),
    (dict(precision="fp8"), ValueError, r"precision: expected one of 'ieee', 'tf32', 'bf16', got 'fp8'"),
    (dict(precision="tf32"), ValueError, r"precision: the torch backend .* only 'ieee', got 'tf32'"),
    (dict(loss="mse"), ValueError, r"loss: expected one of 'sse', 'ce', got 'mse'"),
    (dict(reduction="avg"), ValueError, r"reduction: expected one of 'sum', 'mean', got 'avg'"),
    (dict(optimizer="rmsprop"), ValueError, r"optimizer: expected one of 'sgd', 'momentum', 'adam', got 'rmsprop'"),
    (dict(momentum=1.0), ValueError, r"momentum: expected a number in \[0, 1\), got 1.0"),
    (dict(betas=(0.9,)), TypeError, r"betas: expected a pair \(beta1, beta2\), got \(0.9,\)"),
    (dict(betas=(0.9, -0.1)), ValueError, r"betas\[1\]: expected a number in \[0, 1\), got -0.1"),
    (dict(eps=0), ValueError, r"eps: expected a positive finite number, got 0.0"),
    (dict(weight_decay=-1), ValueError, r"weight_decay: expected a number >= 0, got -1.0"),
    (dict(weight_decay="a"), TypeError, r"weight_decay: expected a number >= 0, got str 'a'"),
    (dict(biases=[torch.zeros(5)]), ValueError, r"biases: expected 2 tensors \(one per weight\), got 1"),
    (dict(biases=[torch.zeros(5), torch.zeros(4)]), ValueError,
     r"biases\[1\]: expected shape \(3,\) \(the columns of weights\[1\]\), got shape \(4,\)"),
    (dict(biases=[torch.zeros(5), torch.full((3,), math.inf)]), ValueError, r"biases\[1\]: expected finite values"),
    (dict(patience=0), ValueError, r"patience: expected a positive integer, got 0"),
]


@pytest.mark.parametrize("override,exc,pattern", CASES, ids=[c[2][:40] for c in CASES])
def test_bad_input_gets_a_clear_error(override, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call(**override)


def test_unsupported_devices_are_refused_clearly():
    x, y, weights = good()
    meta = torch.empty(6, 3, device="meta")
    with pytest.raises(ValueError, match=r"y: expected a CPU or CUDA tensor, got device meta"):
        train(x, meta, weights, epochs=1, lr=1e-3, backend="torch")
    to_meta = lambda t: t.to("meta")  # noqa: E731
    with pytest.raises(ValueError, match=r"x: expected a CPU or CUDA tensor, got device meta"):
        train(to_meta(x), to_meta(y), [to_meta(w) for w in weights], epochs=1, lr=1e-3)


MINIBATCH_CASES = [
    (dict(batch_size=0), ValueError, r"batch_size: expected a positive integer, got 0"),
    (dict(batch_size=2.5), TypeError, r"batch_size: expected a positive integer, got float 2.5"),
    (dict(y=torch.tensor([0, 1, 2, 0, 1, 3])), ValueError, r"y: expected class labels in \[0, 3\) .* got labels from 0 to 3"),
    (dict(y=torch.tensor([0, 1, 2])), ValueError, r"y: expected 6 labels \(the rows of x\), got shape \(3,\)"),
    (dict(val_data=torch.randn(2, 8)), TypeError, r"val_data: expected a pair \(x_val, y_val\), got Tensor"),
    (dict(val_data=(torch.randn(2, 7), torch.randn(2, 3))), ValueError,
     r"val_data\[0\]: expected a 2-D tensor with 8 columns \(like x\), got shape \(2, 7\)"),
    (dict(val_data=(torch.randn(2, 8), torch.randn(3, 3))), ValueError,
     r"val_data\[1\]: expected 2 rows \(the batch of val_data\[0\]\), got shape \(3, 3\)"),
    (dict(val_data=(torch.randn(2, 8).double(), torch.randn(2, 3).double())), ValueError,
     r"val_data: expected torch.float32 tensors on cpu \(like x\), got torch.float64 on cpu"),
    (dict(val_data=(torch.full((2, 8), math.nan), torch.randn(2, 3))), ValueError,
     r"val_data\[0\]: expected finite values, got NaN or Inf"),
]


@pytest.mark.parametrize("override,exc,pattern", MINIBATCH_CASES, ids=[c[2][:40] for c in MINIBATCH_CASES])
def test_bad_minibatch_and_validation_input(override, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call(**override)


def test_triton_backend_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    x, y, weights = good()
    with pytest.raises(BackendUnavailableError, match=r"backend: 'triton' cannot run on device cpu: .*TRITON_INTERPRET=1"):
        Trainer(x, y, weights, backend="triton")


def test_triton_backend_without_triton_is_a_clear_error(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "triton" else real(name, *a))
    x, y, weights = good()
    with pytest.raises(BackendUnavailableError, match=r"backend: 'triton' cannot run on device cpu: Triton is not installed"):
        Trainer(x, y, weights, backend="triton")


def test_auto_picks_triton_only_for_float32_cuda():
    import importlib.util
    from manualnn.backends import native_unavailable_reason, resolve
    assert resolve("auto", "cpu", torch.float32) == ("native" if native_unavailable_reason("cpu") is None else "torch")
    assert resolve("auto", "cuda", torch.float64) == "torch"
    assert resolve("auto", "cuda", torch.float32) == ("triton" if importlib.util.find_spec("triton") else "torch")


def test_a_triton_older_than_the_floor_is_refused_naming_the_versions(monkeypatch):
    import importlib.metadata
    import importlib.util
    from manualnn import backends
    if importlib.util.find_spec("triton") is None:
        pytest.skip("Triton is not installed")
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "3.2.0" if name == "triton" else real(name))
    why = backends.triton_unavailable_reason("cpu")
    assert why.startswith("Triton 3.2 is installed; the kernels need 3.6 or newer"), why
    setup = open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "setup.py")).read()
    assert "triton>=3.6" in setup and backends.TRITON_FLOOR == (3, 6)   # one floor, said in both places
