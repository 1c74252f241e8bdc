"""Checkpoints: weights, config, epoch and loss history, written atomically."""
import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from typing import List

import torch

FORMAT = "manualnn.checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, truncated or not a manualnn checkpoint."""


@dataclass
class Checkpoint:
    weights: List[torch.Tensor]
    epoch: int
    losses: List[float]
    config: dict = field(default_factory=dict)
    val_losses: List[float] = field(default_factory=list)
    val_accuracies: List[float] = field(default_factory=list)


@contextlib.contextmanager
def atomic_open(path, mode="wb"):
    """Write ``path`` all at once or not at all: a temp file in the same folder, fsynced, renamed.

    A crash or an exception mid-write leaves the previous file at ``path`` untouched and no temp
    file behind. Every file manualnn writes for the user goes through here.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def save_checkpoint(path, *, weights, epoch, losses, config=None, val_losses=(), val_accuracies=()):
    """Write a checkpoint to ``path`` atomically: a temp file in the same folder, then a rename.

    A crash mid-write leaves the previous file at ``path`` untouched.
    """
    path = os.fspath(path)
    state = {
        "format": FORMAT, "version": VERSION, "epoch": int(epoch),
        "losses": [float(v) for v in losses],
        "weights": [w.detach().cpu().clone() for w in weights],
        "config": dict(config or {}),
        "val_losses": [float(v) for v in val_losses],
        "val_accuracies": [float(v) for v in val_accuracies],
    }
    with atomic_open(path, "wb") as f:
        torch.save(state, f)
    return path


def load_checkpoint(path) -> Checkpoint:
    """Read a checkpoint written by save_checkpoint; any other file gets a CheckpointError."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path!r}: no such file")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path!r}: is a folder, expected a file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise CheckpointError(f"checkpoint {path!r}: cannot read it: {e.strerror or e}") from None
    except Exception:  # torch.load on arbitrary bytes raises many kinds (struct.error among them)
        # torch's own message would advise weights_only=False: never right for a file of unknown origin
        raise CheckpointError(f"checkpoint {path!r}: not a readable manualnn checkpoint "
                              f"(truncated, corrupt or another format)") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path!r}: not a manualnn checkpoint (expected format "
                              f"{FORMAT!r}, got {state.get('format') if isinstance(state, dict) else type(state).__name__!r})")
    if state.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path!r}: expected version {VERSION}, got {state.get('version')!r}")
    weights = state.get("weights")
    if not isinstance(weights, list) or not weights or not all(isinstance(w, torch.Tensor) for w in weights):
        raise CheckpointError(f"checkpoint {path!r}: expected a non-empty list of weight tensors")
    losses = state.get("losses")
    epoch = state.get("epoch")
    if not isinstance(epoch, int) or not isinstance(losses, list) or len(losses) != epoch:
        raise CheckpointError(f"checkpoint {path!r}: expected one loss per completed epoch, "
                              f"got epoch={epoch!r} and {len(losses) if isinstance(losses, list) else losses!r} losses")
    val_losses, val_accuracies = state.get("val_losses") or [], state.get("val_accuracies") or []
    for name, values in (("val_losses", val_losses), ("val_accuracies", val_accuracies)):
        if not isinstance(values, list) or len(values) not in (0, epoch):
            raise CheckpointError(f"checkpoint {path!r}: expected {name} to hold none or one value per epoch")
    return Checkpoint(weights=weights, epoch=epoch, losses=[float(v) for v in losses],
                      config=dict(state.get("config") or {}), val_losses=[float(v) for v in val_losses],
                      val_accuracies=[float(v) for v in val_accuracies])
