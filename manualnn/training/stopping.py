"""Early stopping on the validation loss: keep the best epoch's state, stop after ``patience`` worse epochs.

``Stopper`` holds the rule's state in tensors: ``best`` ([epoch, loss] in float64 on the CPU; epoch -1
before the first) and ``snapshot`` (a copy of every parameter and optimizer tensor at the best epoch,
on the parameters' device). The native runner applies the same rule to the same tensors inside its
epoch loop (kernels/native/runner.cpp, ``Epochs::watch``), so a run stops at the same epoch whichever
loop decides, and a checkpoint holds the rule's state (a resumed run stops where the uninterrupted
one does).
"""
import math

import torch


class Stopper:
    """Early stopping for a network's ``Params``: ``after_epoch(epoch, val_loss)`` returns True when the
    run should stop (the best epoch's parameters and optimizer state are back in ``params`` by then)."""

    def __init__(self, params, patience):
        self.params, self.patience = params, int(patience)
        self.state = params.all_tensors()
        self.snapshot = [torch.empty_like(t) for t in self.state]
        self.best = torch.tensor([-1.0, math.inf], dtype=torch.float64)

    @property
    def best_epoch(self):
        """The kept epoch (counted from the start of training), or None before the first epoch."""
        return None if self.best[0] < 0 else int(self.best[0])

    @property
    def best_loss(self):
        return None if self.best[0] < 0 else float(self.best[1])

    @torch.no_grad()
    def after_epoch(self, epoch, loss):
        """The rule, after epoch ``epoch`` (counted from the start) with validation loss ``loss``."""
        if self.best[0] < 0 or loss < self.best[1]:
            self.best[0], self.best[1] = float(epoch), float(loss)
            for s, t in zip(self.snapshot, self.state):
                s.copy_(t)
            return False
        if epoch - self.best[0] >= self.patience:
            for t, s in zip(self.state, self.snapshot):
                t.copy_(s)
            return True
        return False

    def save(self):
        """A copy of the rule's state (for a chunk that may be rolled back)."""
        return self.best.clone(), [s.clone() for s in self.snapshot]

    @torch.no_grad()
    def load(self, saved):
        best, snapshot = saved
        self.best.copy_(best)
        for s, t in zip(self.snapshot, snapshot):
            s.copy_(t)
