"""Checkpoints: weights, biases, optimizer state, config, epoch and histories, written atomically and
checked field by field when read (a file from anywhere is untrusted: no pickle, the zip's declared
sizes checked before anything is inflated, every field's type, dtype, shape and finiteness checked
before anything uses it). What is written passes the same checks first: a checkpoint that would not
load is never written, so it never replaces a good one."""
import io
import math
import numbers
import os
import stat
import zipfile
from dataclasses import dataclass, field
from typing import List, Optional

import torch

from .checks import all_finite
from .files import atomic_open
from .safeio import MAX_RATIO, RATIO_FROM, check_budget, human

FORMAT = "manualnn.checkpoint"
VERSION = 2            # 2 adds biases, optimizer state and the regression histories
READABLE = (1, 2)
HISTORIES = ("val_losses", "val_accuracies", "val_rmse", "val_r2")
MAX_STEP = 2 ** 63 - 1   # the optimizer's step counter is an int64 tensor


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, truncated, not a manualnn checkpoint, or inconsistent."""


@dataclass
class Checkpoint:
    weights: List[torch.Tensor]
    epoch: int
    losses: List[float]
    config: dict = field(default_factory=dict)
    val_losses: List[float] = field(default_factory=list)
    val_accuracies: List[float] = field(default_factory=list)
    val_rmse: List[float] = field(default_factory=list)
    val_r2: List[float] = field(default_factory=list)
    biases: Optional[List[torch.Tensor]] = None
    optimizer: dict = field(default_factory=dict)
    best: Optional[dict] = None       # early stopping's kept epoch: epoch, loss, weights, biases, optimizer
    stopped_early: bool = False


def save_checkpoint(path, *, weights, epoch, losses, biases=None, optimizer=None, config=None, best=None,
                    stopped_early=False, **histories):
    """Write a checkpoint to ``path`` atomically (see manualnn.files.atomic_open).

    Refuses (ValueError) weights or biases that are not finite, and anything else ``load_checkpoint``
    would refuse (histories whose lengths disagree with ``epoch``, say): a run's good checkpoint is never
    replaced by a broken one. ``histories``: val_losses, val_accuracies, val_rmse, val_r2. ``best``:
    early stopping's state (a dict: the kept ``epoch`` and its validation ``loss``, its ``weights``,
    ``biases`` and ``optimizer`` state), so that a resumed run stops where the uninterrupted one does.
    """
    unknown = set(histories) - set(HISTORIES)
    if unknown:
        raise TypeError(f"save_checkpoint: unexpected keyword {sorted(unknown)[0]!r}")
    tensors = [("weights", i, w) for i, w in enumerate(weights)] + [("biases", i, b) for i, b in enumerate(biases or [])]
    for name, i, t in tensors:
        if not all_finite(t):
            raise ValueError(f"{name}[{i}]: not finite (NaN or Inf); refusing to write it to {os.fspath(path)!r}")
    state = {
        "format": FORMAT, "version": VERSION, "epoch": int(epoch),
        "losses": [float(v) for v in losses],
        "weights": [w.detach().cpu().clone() for w in weights],
        "biases": None if biases is None else [b.detach().cpu().clone() for b in biases],
        "optimizer": optimizer or {},
        "config": dict(config or {}),
        "stopped_early": bool(stopped_early),
        "best": None if best is None else {
            "epoch": int(best["epoch"]), "loss": float(best["loss"]),
            "weights": [w.detach().cpu().clone() for w in best["weights"]],
            "biases": None if best.get("biases") is None else [b.detach().cpu().clone() for b in best["biases"]],
            "optimizer": best.get("optimizer") or {}},
        **{name: [float(v) for v in histories.get(name, ())] for name in HISTORIES},
    }
    try:
        _checked(f"refusing to write {os.fspath(path)!r}", state)
    except CheckpointError as e:
        raise ValueError(str(e)) from None
    buffer = io.BytesIO()   # serialised first: a failed write is then the OS's OSError (disk full), not torch's
    torch.save(state, buffer)
    with atomic_open(path, "wb") as f:
        f.write(buffer.getbuffer())
    return os.fspath(path)


def load_checkpoint(path) -> Checkpoint:
    """Read and check a checkpoint written by save_checkpoint; anything else is a CheckpointError."""
    path = os.fspath(path)
    where = f"checkpoint {path!r}"
    if not os.path.exists(path):
        raise CheckpointError(f"{where}: no such file")
    if os.path.isdir(path):
        raise CheckpointError(f"{where}: is a folder, expected a file")
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise CheckpointError(f"{where}: not a regular file (a FIFO, socket or device)")
    _check_declared_sizes(where, path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise CheckpointError(f"{where}: cannot read it: {e.strerror or e}") from None
    except Exception:  # torch.load on arbitrary bytes raises many kinds (struct.error among them)
        # torch's own message would advise weights_only=False: never right for a file of unknown origin
        raise CheckpointError(f"{where}: not a readable manualnn checkpoint (truncated, corrupt or another "
                              f"format)") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{where}: not a manualnn checkpoint (expected format {FORMAT!r}, got {got!r})")
    if state.get("version") not in READABLE:
        raise CheckpointError(f"{where}: expected version {' or '.join(map(str, READABLE))}, got "
                              f"{state.get('version')!r} (written by another manualnn version?)")
    return _checked(where, state)


def _check_declared_sizes(where, path):
    """torch.save writes a zip: its directory declares every member's size. Check them before
    torch.load inflates anything (a small file must not take the machine's memory)."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except OSError as e:
        raise CheckpointError(f"{where}: cannot read it: {e.strerror or e}") from None
    except Exception:   # not a zip (torch.save writes zips since PyTorch 1.6), or a damaged one
        raise CheckpointError(f"{where}: not a readable manualnn checkpoint (truncated, corrupt or another "
                              f"format)") from None
    for info in infos:
        if info.file_size > RATIO_FROM and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise CheckpointError(f"{where}: member {info.filename!r} inflates {human(info.compress_size)} to "
                                  f"{human(info.file_size)} (more than {MAX_RATIO}:1): refused as a zip bomb")
    check_budget(where, "its contents", sum(info.file_size for info in infos), CheckpointError)


def _fail(where, name, problem):
    raise CheckpointError(f"{where}: field {name!r}: {problem}")


def _tensors(where, name, values, dims, dtype=None):
    if not isinstance(values, list) or not values or not all(isinstance(t, torch.Tensor) for t in values):
        _fail(where, name, "expected a non-empty list of tensors")
    for i, t in enumerate(values):
        label = f"{name}[{i}]"
        if t.dtype not in (torch.float32, torch.float64):
            _fail(where, label, f"expected dtype float32 or float64, got {t.dtype}")
        if dtype is not None and t.dtype != dtype:
            _fail(where, label, f"expected dtype {dtype} (as weights[0]), got {t.dtype}")
        if t.dim() != dims or t.numel() == 0:
            _fail(where, label, f"expected a non-empty {dims}-D tensor, got shape {tuple(t.shape)}")
        if t.device.type != "cpu" or t.layout != torch.strided or t.is_quantized:
            _fail(where, label, f"expected a dense CPU tensor, got {t.layout} on {t.device}")
        if not all_finite(t):
            _fail(where, label, "holds NaN or Inf")
    return values


def as_float(value):
    """A real number (not a bool) as a float; None when it is not one or does not fit (10**400)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        return float(value)
    except (OverflowError, ValueError, TypeError):
        return None


def _floats(where, name, values, length=None, finite=True):
    numbers_ = [as_float(v) for v in values] if isinstance(values, list) else None
    if numbers_ is None or None in numbers_:
        _fail(where, name, "expected a list of numbers that fit in a float")
    if length is not None and len(values) not in length:
        _fail(where, name, f"expected {' or '.join(map(str, sorted(set(length))))} values, got {len(values)}")
    if finite and not all(math.isfinite(v) for v in numbers_):
        _fail(where, name, "holds NaN or Inf")
    return numbers_


def _plain(value, depth=0):
    """A value JSON can write: None, bool, number, string, or lists and string-keyed dicts of them."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if depth > 16:
        return False
    if isinstance(value, (list, tuple)):
        return all(_plain(v, depth + 1) for v in value)
    return isinstance(value, dict) and all(isinstance(k, str) and _plain(v, depth + 1) for k, v in value.items())


def _checked(where, state):
    weights, biases, optimizer = _parameters(where, "", state)
    epoch = state.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        _fail(where, "epoch", f"expected an integer >= 0, got {epoch!r}")
    losses = _floats(where, "losses", state.get("losses"), (epoch,), finite=False)
    histories = {name: _floats(where, name, state.get(name) or [], (0, epoch), finite=False) for name in HISTORIES}
    config = state.get("config") or {}
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        _fail(where, "config", f"expected a dict with string keys, got {type(config).__name__}")
    for key, value in config.items():   # --json writes the config: plain values only
        if not _plain(value):
            _fail(where, f"config.{key}", f"expected a number, string, true/false, null or a list of them, got "
                                          f"{type(value).__name__}")
    stopped = state.get("stopped_early", False)
    if not isinstance(stopped, bool):
        _fail(where, "stopped_early", f"expected true or false, got {stopped!r}")
    best = state.get("best")
    if best is not None:
        if not isinstance(best, dict):
            _fail(where, "best", f"expected a dict or nothing, got {type(best).__name__}")
        kept = best.get("epoch")
        if isinstance(kept, bool) or not isinstance(kept, int) or not 0 <= kept < epoch:
            _fail(where, "best.epoch", f"expected an integer from 0 to {epoch - 1}, got {kept!r}")
        loss = _floats(where, "best.loss", [best.get("loss")])[0]
        b_weights, b_biases, b_optimizer = _parameters(where, "best.", best)
        if [t.shape for t in b_weights] != [t.shape for t in weights] or (b_biases is None) != (biases is None) \
                or b_weights[0].dtype != weights[0].dtype:
            _fail(where, "best.weights", "expected the shapes and dtype of 'weights' (and biases alike)")
        best = dict(best, weights=b_weights, biases=b_biases, optimizer=b_optimizer, loss=loss)
    return Checkpoint(weights=weights, epoch=epoch, losses=losses, config=dict(config), biases=biases,
                      optimizer=optimizer, best=best, stopped_early=stopped, **histories)


def _parameters(where, prefix, state):
    """(weights, biases, optimizer) of a checkpoint (prefix ""), or of its early stopping's kept epoch
    (prefix "best."), checked."""
    weights = _tensors(where, prefix + "weights", state.get("weights"), 2)
    dtype = weights[0].dtype
    _tensors(where, prefix + "weights", weights, 2, dtype)
    for i, (a, b) in enumerate(zip(weights[:-1], weights[1:])):
        if a.shape[1] != b.shape[0]:
            _fail(where, f"{prefix}weights[{i + 1}]", f"shape {tuple(b.shape)} does not follow weights[{i}] "
                                                      f"{tuple(a.shape)}: they do not chain into a network")
    biases = state.get("biases")
    if biases is not None:
        _tensors(where, prefix + "biases", biases, 1, dtype)
        if len(biases) != len(weights):
            _fail(where, prefix + "biases", f"expected {len(weights)} tensors (one per weight), got {len(biases)}")
        for i, (b, w) in enumerate(zip(biases, weights)):
            if b.shape[0] != w.shape[1]:
                _fail(where, f"{prefix}biases[{i}]", f"expected shape ({w.shape[1]},), got {tuple(b.shape)}")
    optimizer = state.get("optimizer") or {}
    if not isinstance(optimizer, dict):
        _fail(where, prefix + "optimizer", f"expected a dict, got {type(optimizer).__name__}")
    extra = int(biases is not None)   # the optimizer's buffers are shaped like Params' [in (+1), out]
    shapes = [(w.shape[0] + extra, w.shape[1]) for w in weights]
    for name, value in optimizer.items():
        if name == "step":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_STEP:
                _fail(where, f"{prefix}optimizer.step", f"expected an integer from 0 to 2**63-1, got {value!r}")
        elif name == "powers":
            if not isinstance(value, list) or len(value) != 2 or not all(isinstance(v, float) and 0 <= v <= 1
                                                                         for v in value):
                _fail(where, f"{prefix}optimizer.powers", f"expected two numbers in [0, 1], got {value!r}")
        else:
            _tensors(where, f"{prefix}optimizer.{name}", value, 2, dtype)
            if [tuple(t.shape) for t in value] != shapes:
                _fail(where, f"{prefix}optimizer.{name}", "shapes do not match the parameters")
            if name == "exp_avg_sq" and any(bool((t < 0).any()) for t in value):
                _fail(where, f"{prefix}optimizer.exp_avg_sq", "holds negative values (Adam's second moment is a "
                                                              "mean of squares)")
    return weights, biases, optimizer
