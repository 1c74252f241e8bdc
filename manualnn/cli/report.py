"""What the command line shows and writes about a run: the epoch lines, the progress line, --json."""
import json
import platform
import sys
import time

import torch

from .. import __version__
from ..files import atomic_open


def epoch_line(i, loss, val=None):
    """``Epoch:{i}, Loss:{loss:.4f}`` (the seed's line), then the validation figures of that epoch."""
    line = f"Epoch:{i}, Loss:{loss:.4f}"
    for name, value in (val or {}).items():
        if value is not None:
            line += f", {name}:{value:.4f}"
    return line


def val_figures(trainer, epoch):
    """An epoch's validation figures by their printed names (None where the run has none)."""
    pick = lambda values: values[epoch] if epoch < len(values) else None  # noqa: E731
    loss = pick(trainer.history["val_losses"])
    if loss is not None and loss <= 0:   # a loss is >= 0: rounding's -0.0 is shown as 0.0000, not -0.0000
        loss = 0.0
    return {"Val loss": loss, "Val accuracy": pick(trainer.history["val_accuracies"]),
            "Val RMSE": pick(trainer.history["val_rmse"]), "Val R2": pick(trainer.history["val_r2"])}


def versions():
    out = {"python": platform.python_version(), "torch": torch.__version__, "manualnn": __version__}
    try:
        import triton
        out["triton"] = triton.__version__
    except ImportError:
        out["triton"] = None
    return out


def device_info(device):
    if device.type == "cuda":
        return {"type": "cuda", "name": torch.cuda.get_device_name(device)}
    return {"type": device.type, "name": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads()}


def write_json(path, trainer, config, outcome, seconds, start_epoch, rows, l2_search=None):
    """The run's record: its config, how it ended, every epoch's figures, timing, device, versions; and
    ``l2_search`` where the L2 was chosen by cross-validation (training.selection). timing's "seconds" are
    the training's, that search included ("l2_search_seconds")."""
    epochs_run = trainer.epoch - start_epoch
    searched = l2_search["seconds"] if l2_search else 0.0
    record = {
        "config": {**config, "backend_used": trainer.backend_name, "device": str(trainer.device)},
        "status": outcome.status, "message": outcome.message, "warning": outcome.warning,
        "start_epoch": start_epoch, "epochs_run": epochs_run, "best_epoch": outcome.best_epoch,
        **{key: trainer.history[key] for key in ("losses", "val_losses", "val_accuracies", "val_rmse", "val_r2")},
        "rows": rows, "checkpoint": outcome.saved_to,
        "l2_search": l2_search,
        "timing": {"seconds": seconds + searched, "seconds_per_epoch": seconds / epochs_run if epochs_run else None,
                   "l2_search_seconds": searched},
        "device": device_info(trainer.device), "versions": versions(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with atomic_open(path, "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")


class Progress:
    """One self-rewriting line on stderr; only used when stderr is a terminal."""

    def __init__(self, total):
        self.total, self.started = total, time.perf_counter()

    def show(self, done, loss):
        rate = done / max(time.perf_counter() - self.started, 1e-9)
        sys.stderr.write(f"\r  epoch {done}/{self.total}  loss {loss:.6g}  {rate:.1f} epochs/s")
        sys.stderr.flush()

    def clear(self):
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()
