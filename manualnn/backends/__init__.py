"""Backends: one module per way of running a training step, behind one small interface.

A backend is built once per run from ``(x, y, weights, lr=..., grad=..., precision=...)`` and
owns whatever buffers the step needs. ``backend.step(loss_out)`` runs one epoch: it writes the
loss (before the update) into the 0-d tensor ``loss_out`` and updates ``weights`` in place. It
never synchronises with the host and never prints.
"""
import importlib.util
import os
import sys

import torch


class BackendUnavailableError(RuntimeError):
    """The asked-for backend cannot run on these tensors here."""


def interpreter_enabled():
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_installed():
    return importlib.util.find_spec("triton") is not None


def triton_unavailable_reason(device):
    """Why the Triton kernels cannot run on ``device`` here, or None if they can.

    The one place that answers "can Triton run here" (the backend, ``resolve`` and the autograd
    function all ask it): Triton must be installed; CUDA devices can; CPU tensors only under the
    interpreter, which needs TRITON_INTERPRET=1 both now and when manualnn.kernels was first
    imported (the kernels read it once, as they are decorated).
    """
    device = torch.device(device)
    if not triton_installed():
        return "Triton is not installed (pip install triton; Linux only)"
    if device.type == "cuda":
        return None
    if device.type == "cpu":
        if not interpreter_enabled():
            return ("its kernels run on CPU tensors only under the Triton interpreter "
                    "(set TRITON_INTERPRET=1, slow) ; use backend='torch' on the CPU")
        kernels = sys.modules.get("manualnn.kernels")
        if kernels is not None and not kernels.INTERPRET:
            return ("TRITON_INTERPRET=1 was set after manualnn.kernels was first imported without it in this "
                    "process; set it before the first import")
        return None
    return f"it supports CUDA devices (and the CPU under TRITON_INTERPRET=1), not {device.type}"


def native_unavailable_reason(device):
    """Why the native backend cannot run on ``device``, or None if it can (built, or buildable here)."""
    device = torch.device(device)
    if device.type != "cpu":
        return f"it runs on the CPU only, not {device.type}"
    from .. import native
    return native.unavailable_reason()


def resolve(name, device, dtype=torch.float32):
    """Turn "auto" into a concrete backend name and check that the named one can run.

    "auto" is Triton for float32 CUDA tensors when Triton is installed, else torch. It never picks
    the native runner, even once built: that sums the loss in float64, so its printed losses can
    differ from the torch backend's in the last digit, and ``manualnn train`` must print the seed's
    lines exactly as before. Ask for backend="native" by name.
    """
    device = torch.device(device)
    if name == "auto":
        fused = device.type == "cuda" and dtype == torch.float32 and triton_unavailable_reason(device) is None
        return "triton" if fused else "torch"
    if name == "native":
        why = native_unavailable_reason(device)
        if why is not None:
            raise BackendUnavailableError(f"backend: 'native' cannot run on device {device}: {why}")
    if name == "triton":
        why = triton_unavailable_reason(device)
        if why is not None:
            raise BackendUnavailableError(f"backend: 'triton' cannot run on device {device}: {why}")
    return name


def make_backend(name, x, y, weights, *, lr, grad, precision="ieee", **options):
    """Build the named backend ("torch", "triton" or "native"; resolve "auto" first). ``options`` go to
    the triton backend (``fused``: None picks, True/False forces the two-launch step)."""
    if name == "torch":
        from .torch_backend import TorchBackend
        return TorchBackend(x, y, weights, lr=lr, grad=grad, precision=precision, **options)
    if name == "triton":
        from .triton_backend import TritonBackend
        return TritonBackend(x, y, weights, lr=lr, grad=grad, precision=precision, **options)
    if name == "native":
        from .native_backend import NativeBackend
        return NativeBackend(x, y, weights, lr=lr, grad=grad, precision=precision)
    raise ValueError(f"backend: expected 'torch', 'triton' or 'native', got {name!r}")
