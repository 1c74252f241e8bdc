"""What a training run returns, and how it ends when the loss stops being a number."""
from dataclasses import dataclass, field
from typing import List, Optional

import torch


class NonFiniteLossError(RuntimeError):
    """A run's loss became NaN or Inf. ``.result`` holds the last finite weights and the finite losses."""

    def __init__(self, message, epoch, loss, result):
        super().__init__(message)
        self.epoch, self.loss, self.result = epoch, loss, result


@dataclass
class TrainResult:
    """What a run returns: one loss per epoch of this run, the trained weights and biases (a snapshot:
    later training does not change them) and, with validation data, the validation figures after each
    epoch. Epochs are counted from the start of training, as the printed lines count them: the lists
    begin at ``start_epoch`` (0, or where a resumed run went on). ``best_epoch``: with ``patience``, the
    epoch whose weights were kept (its figures are at index ``best_epoch - start_epoch``)."""
    losses: List[float]
    weights: List[torch.Tensor]
    backend: str
    seconds: float = 0.0
    start_epoch: int = 0
    biases: Optional[List[torch.Tensor]] = None
    val_losses: List[float] = field(default_factory=list)
    val_accuracies: List[float] = field(default_factory=list)
    val_rmse: List[float] = field(default_factory=list)
    val_r2: List[float] = field(default_factory=list)
    best_epoch: Optional[int] = None
    stopped_early: bool = False
    warning: Optional[str] = None

    @property
    def epochs(self):
        return len(self.losses)

    def __repr__(self):
        last = f"{self.losses[-1]:.4f}" if self.losses else "-"
        extra = "".join(f", last_{name}={values[-1]:.4f}" for name, values in (
            ("val_loss", self.val_losses), ("val_accuracy", self.val_accuracies), ("val_r2", self.val_r2)) if values)
        return (f"TrainResult(epochs={self.epochs}, last_loss={last}{extra}, backend={self.backend!r}, "
                f"seconds={self.seconds:.4f}, shapes={[tuple(w.shape) for w in self.weights]})")
