"""Backends: the ways of running one training step, behind one protocol.

A backend's step is built once, for fixed tensors, by ``make_step(name, x, y, params, spec, rows=,
grads=)``: x [B, in (+1)] is the batch (with a last column of ones when the network has biases),
y [B, out] its targets, ``params`` a ``manualnn.spec.Params`` (updated in place) and ``spec`` the
``StepSpec`` it computes. A step object has:

- ``step(loss_out)``: forward and loss, backward and the optimizer's update (folded into the
  gradient's kernel or matmul where the backend can). The batch's loss before the update, summed
  over its rows, goes into the 0-d tensor ``loss_out``.
- ``gradients(loss_out, ready=None)``: forward and loss, then every layer's gradient into ``grads``
  (tensors shaped like ``params.tensors``, given when the step is made), no update; ``ready(i)`` is
  called once layer i's gradient is written (last layer first), so its all-reduce can start.
- ``update()``: the optimizer's update from ``grads``: the same math as ``step``'s.

``rows``: the rows a "mean" reduction divides by, the whole batch over every rank (default B).
A step never synchronises with the host and never prints.
"""
import importlib.util
import os
import warnings

import torch

NAMES = ("torch", "triton", "native")


class BackendUnavailableError(RuntimeError):
    """The asked-for backend cannot run on these tensors here."""


TRITON_FLOOR = (3, 6)   # the oldest Triton the kernels are compiled and tested with (setup.py's test extra says so)


def _triton_version():
    """(major, minor) of the installed Triton, read from its metadata (not imported), or None."""
    import importlib.metadata
    try:
        parts = importlib.metadata.version("triton").split(".")[:2]
        return tuple(int("".join(c for c in p if c.isdigit()) or 0) for p in parts)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


class SlowPathWarning(UserWarning):
    """backend="auto" on the CPU could not have the native runner and trains with torch ops (slower)."""


def triton_unavailable_reason(device):
    """Why the Triton kernels cannot run on ``device`` here, or None if they can.

    Triton must be installed (found without importing it); then manualnn.kernels answers, as it
    is the one that knows whether its kernels were decorated for the interpreter.
    """
    device = torch.device(device)
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed (pip install triton; Linux only)"
    version = _triton_version()
    if version is not None and version < TRITON_FLOOR:
        return (f"Triton {'.'.join(map(str, version))} is installed; the kernels need {TRITON_FLOOR[0]}.{TRITON_FLOOR[1]} "
                f"or newer (autotune's cache_results, alignment exemptions; CI compiles them under 3.6): pip install "
                f"-U 'triton>={TRITON_FLOOR[0]}.{TRITON_FLOOR[1]}'")
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0") != "1":
        return ("its kernels run on CPU tensors only under the Triton interpreter (set TRITON_INTERPRET=1, "
                "slow); use backend 'torch' on the CPU")
    from .. import kernels   # it knows whether its kernels were decorated for the interpreter
    return kernels.device_problem(device)


def native_unavailable_reason(device):
    """Why the native backend cannot run on ``device``, or None if it can (built, or buildable here)."""
    device = torch.device(device)
    if device.type != "cpu":
        return f"it runs on the CPU only, not {device.type}"
    from . import native_build
    return native_build.unavailable_reason()


_warned = set()


def resolve(name, device, dtype=torch.float32):
    """Turn "auto" into a concrete backend name and check that the named one can run.

    "auto" is the native runner on the CPU when it is built or can be built here (the first use compiles
    it, once, and says so on stderr), else torch, with a warning (once per process) that says why and how
    to get the fast path; on CUDA, Triton for float32 tensors when Triton is installed, else torch.
    """
    device = torch.device(device)
    if name == "auto":
        if device.type == "cpu":
            why = native_unavailable_reason(device)
            if why is None:
                return "native"
            if why not in _warned:
                _warned.add(why)
                warnings.warn(f"training with torch ops, not the compiled native runner (several times faster on "
                              f"small networks): {why}", SlowPathWarning, stacklevel=3)
            return "torch"
        kernels_run = device.type == "cuda" and dtype == torch.float32 and triton_unavailable_reason(device) is None
        return "triton" if kernels_run else "torch"
    reasons = {"native": native_unavailable_reason, "triton": triton_unavailable_reason}
    if name in reasons:
        why = reasons[name](device)
        if why is not None:
            raise BackendUnavailableError(f"backend: {name!r} cannot run on device {device}: {why}")
    elif name != "torch":
        raise ValueError(f"backend: expected 'auto' or one of {', '.join(map(repr, NAMES))}, got {name!r}")
    return name


def make_step(name, x, y, params, spec, *, rows=None, grads=None, **options):
    """Build the named backend's step ("torch", "triton" or "native"; resolve "auto" first).
    ``options`` go to the triton backend (``two_launch``: None picks, True/False forces the two-launch step)."""
    if name == "torch":
        from .torch_backend import TorchStep as Step
    elif name == "triton":
        from .triton_backend import TritonStep as Step
    elif name == "native":
        from .native_backend import NativeStep as Step
    else:
        raise ValueError(f"backend: expected one of {', '.join(map(repr, NAMES))}, got {name!r}")
    return Step(x, y, params, spec, rows=rows, grads=grads, **options)
