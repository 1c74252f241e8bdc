"""``--save`` for one training run: every write atomic, and a write that fails keeps the run elsewhere.

A failed write leaves the old file as it was and puts the run in one rescue file,
``$TMPDIR/manualnn-rescued-NAME-DATE-PID.pt`` (else ``~/.cache/manualnn/rescued/``), updated by
later failed writes and removed once a write to ``--save`` succeeds again: the exit status says
whether the last write landed where it was asked to.
"""
import contextlib
import os
import tempfile
import time

import torch

from .. import distributed
from ..checkpoint import save_checkpoint
from ..files import describe_os_error
from .signals import say

NAME_MAX = 255   # bytes in a file name on the usual file systems


def rescue_folders():
    return [tempfile.gettempdir(), os.path.join(os.path.expanduser("~"), ".cache", "manualnn", "rescued")]


def rescue_name(path, folder):
    """``manualnn-rescued-NAME-DATE-PID.pt``, NAME cut to keep the whole within the folder's name limit."""
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = NAME_MAX
    fixed = f"manualnn-rescued--{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.pt"
    room = max(limit - len(fixed.encode()), 1)
    name = os.fsencode(os.path.basename(path))[:room].decode("utf-8", "ignore")   # whole characters only
    return fixed.replace("--", f"-{name}-", 1)


class Saver:
    """Writes a run's checkpoints to ``path``; see the module. ``failed`` is true while the last write
    did not land at ``path`` (a rescue copy holds it, or nothing does)."""

    def __init__(self, path, config):
        self.path, self.config = path, config
        self.rescue = None       # the run's rescue file, while it holds a newer epoch than path
        self.failed = False

    def save(self, trainer, outcome, barrier=True, final=False):
        """Write the trainer's state; returns where it went (None: nowhere). In a distributed run rank
        0 writes, after a barrier (every rank has finished those epochs). A failure is told once per
        run of failed periodic writes, and always at the ``final`` write."""
        if distributed.active():
            if barrier:
                distributed.barrier()
            if torch.distributed.get_rank() != 0:
                return None
        state = trainer.state_dict()
        checkpoint = dict(weights=state["weights"], biases=state["biases"], optimizer=state["optimizer"],
                          epoch=state["epoch"], losses=state["losses"], config=self.config, best=state["best"],
                          stopped_early=state["stopped_early"],
                          **{key: state[key] for key in ("val_losses", "val_accuracies", "val_rmse", "val_r2")})
        existed = os.path.exists(self.path)
        try:
            outcome.saved_to = save_checkpoint(self.path, **checkpoint)
        except ValueError as e:   # non-finite weights, or a state that would not load: never written
            say(f"--save: {e}")
            return self._failed(outcome)
        except OSError as e:
            return self._rescue(checkpoint, describe_os_error(e), existed, outcome, final)
        if self.rescue:   # path holds a later epoch now: the rescue copy is stale
            with contextlib.suppress(OSError):
                os.unlink(self.rescue)
            say(f"--save: wrote {self.path!r} (epoch {state['epoch']}) after the failed writes; removed the rescue "
                f"copy {self.rescue}")
            self.rescue = None
        self.failed = False
        return outcome.saved_to

    def _failed(self, outcome):
        self.failed, outcome.saved_to = True, None
        return None

    def _rescue(self, checkpoint, reason, existed, outcome, final):
        kept = "the previous file is untouched" if existed else "nothing was written there"
        epoch = checkpoint["epoch"]
        for folder in rescue_folders():
            target = self.rescue if self.rescue and os.path.dirname(self.rescue) == folder else \
                os.path.join(folder, rescue_name(self.path, folder))
            try:
                os.makedirs(folder, exist_ok=True)
                save_checkpoint(target, **checkpoint)
            except OSError:
                continue
            if final or not self.failed or target != self.rescue:   # not at every epoch of a full disk
                say(f"--save: cannot write {self.path!r}: {reason}; {kept}, and this run (epoch {epoch}) was saved "
                    f"to {target} instead")
            if self.rescue and self.rescue != target:
                with contextlib.suppress(OSError):
                    os.unlink(self.rescue)
            self.rescue, self.failed, outcome.saved_to = target, True, target
            return target
        say(f"--save: cannot write {self.path!r}: {reason}; {kept}, and no rescue copy could be written in "
            f"{' or '.join(rescue_folders())}: the weights of epoch {epoch} could not be kept")
        return self._failed(outcome)
