"""Argument checks shared by the trainer, the model and the CLI.

Every error names the argument, what was expected and what came.
"""
import math
import numbers

import torch

GRAD_MODES = ("relu", "tutorial")
BACKENDS = ("auto", "torch", "triton", "native")
PRECISIONS = ("ieee", "tf32", "bf16")
DTYPES = (torch.float32, torch.float64)
DEVICE_TYPES = ("cpu", "cuda")


def _shape(t):
    return tuple(t.shape)


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_lr(lr):
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise TypeError(f"lr: expected a positive finite number, got {type(lr).__name__} {lr!r}")
    if not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr: expected a positive finite number, got {lr!r}")
    return float(lr)


def check_epochs(epochs, name="epochs"):
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral):
        raise TypeError(f"{name}: expected an integer >= 1, got {type(epochs).__name__} {epochs!r}")
    if epochs < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {epochs}")
    return int(epochs)


def check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected a positive integer, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value}")
    return int(value)


def check_tensors(x, y, weights, names=("x", "y")):
    """Check x [batch, features], y [batch, out] and weights [w1, ..., wL] against each other."""
    xn, yn = names
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{xn}: expected a torch.Tensor, got {type(x).__name__}")
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{yn}: expected a torch.Tensor, got {type(y).__name__}")
    if isinstance(weights, torch.Tensor) or not isinstance(weights, (list, tuple)):
        raise TypeError(f"weights: expected a list of tensors [w1, w2, ...], got {type(weights).__name__}")
    if len(weights) < 1:
        raise ValueError("weights: expected at least one weight tensor, got an empty list")
    for i, w in enumerate(weights):
        if not isinstance(w, torch.Tensor):
            raise TypeError(f"weights[{i}]: expected a torch.Tensor, got {type(w).__name__}")

    named = [(xn, x), (yn, y)] + [(f"weights[{i}]", w) for i, w in enumerate(weights)]
    for name, t in named:
        if t.device.type not in DEVICE_TYPES:
            raise ValueError(f"{name}: expected a CPU or CUDA tensor, got device {t.device}")
        if t.dim() != 2:
            raise ValueError(f"{name}: expected a 2-D tensor, got shape {_shape(t)}")
        if t.dtype not in DTYPES:
            raise TypeError(f"{name}: expected dtype torch.float32 or torch.float64, got {t.dtype}")
    for name, t in named[1:]:
        if t.dtype != x.dtype:
            raise TypeError(f"{name}: expected dtype {x.dtype} (the dtype of {xn}), got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name}: expected device {x.device} (the device of {xn}), got {t.device}")

    if x.shape[0] == 0:
        raise ValueError(f"{xn}: expected a non-empty batch, got shape {_shape(x)}")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{yn}: expected {x.shape[0]} rows (the batch of {xn}), got shape {_shape(y)}")
    width, width_name = x.shape[1], f"{xn}.shape[1]"
    for i, w in enumerate(weights):
        if w.shape[0] != width:
            raise ValueError(f"weights[{i}]: expected {width} rows ({width_name}), got shape {_shape(w)}")
        if w.shape[1] == 0:
            raise ValueError(f"weights[{i}]: expected at least one column, got shape {_shape(w)}")
        width, width_name = w.shape[1], f"weights[{i}].shape[1]"
    if y.shape[1] != width:
        raise ValueError(f"{yn}: expected {width} columns ({width_name}), got shape {_shape(y)}")

    for name, t in named:
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name}: expected finite values, got NaN or Inf")
