"""The training loop: a step-wise Trainer, and ``train()`` that runs one to the end."""
import math
import time
from dataclasses import dataclass
from typing import Callable, List, Optional

import torch

from . import _checks
from .backends import make_backend, resolve


class NonFiniteLossError(RuntimeError):
    """A run's loss became NaN or Inf. ``.result`` holds the last finite weights and the finite losses."""

    def __init__(self, message, epoch, loss, result):
        super().__init__(message)
        self.epoch = epoch
        self.loss = loss
        self.result = result


@dataclass
class TrainResult:
    """What a run returns: one loss per epoch (before that epoch's update) and the trained weights."""
    losses: List[float]
    weights: List[torch.Tensor]
    backend: str
    seconds: float = 0.0
    start_epoch: int = 0

    @property
    def epochs(self):
        return len(self.losses)

    def __repr__(self):
        last = f"{self.losses[-1]:.4f}" if self.losses else "-"
        return (f"TrainResult(epochs={self.epochs}, last_loss={last}, backend={self.backend!r}, "
                f"seconds={self.seconds:.4f}, shapes={[tuple(w.shape) for w in self.weights]})")


class Trainer:
    """Trains a bias-free ReLU network with hand-written gradients, one epoch per ``step()``.

    x [batch, features], y [batch, out] and weights [w1, ..., wL] (w_i: in x out, the seed's layout)
    share one float dtype and one device. Unless ``inplace=True`` the trainer works on copies, so
    the caller's tensors are left alone. ``grad`` is "relu" (the correct ReLU backward, equal to
    autograd) or "tutorial" (the seed's clamp of the gradient's values). ``backend`` is "auto"
    (Triton on CUDA when available, the native runner on the CPU once built, else torch), "torch",
    "triton" or "native".
    """

    def __init__(self, x, y, weights, *, lr=1e-6, grad="relu", backend="auto", precision="ieee",
                 inplace=False):
        _checks.check_choice("grad", grad, _checks.GRAD_MODES)
        _checks.check_choice("backend", backend, _checks.BACKENDS)
        _checks.check_choice("precision", precision, _checks.PRECISIONS)
        self.lr = _checks.check_lr(lr)
        weights = list(weights) if isinstance(weights, (list, tuple)) else weights
        _checks.check_tensors(x, y, weights)
        self.grad, self.precision = grad, precision
        self.backend_name = resolve(backend, x.device, x.dtype)
        self.x, self.y = x.detach(), y.detach()
        self.weights = [w.detach() if inplace else w.detach().clone() for w in weights]
        self.backend = make_backend(self.backend_name, self.x, self.y, self.weights,
                                    lr=self.lr, grad=grad, precision=precision)
        self.epoch = 0
        self._losses: List[float] = []
        self._pending: List[torch.Tensor] = []   # losses from step(), still on the device

    @property
    def device(self):
        return self.x.device

    @property
    def losses(self) -> List[float]:
        """Every epoch's loss so far (waits for the device if step() left some there)."""
        self._settle()
        return list(self._losses)

    def _settle(self):
        if self._pending:
            self._losses.extend(torch.stack(self._pending).tolist())
            self._pending.clear()

    def _loss_buffer(self, n):
        dtype = torch.float64 if self.x.dtype == torch.float64 else torch.float32
        return torch.empty(n, dtype=dtype, device=self.device)

    def step(self) -> torch.Tensor:
        """One epoch. Returns its loss (before the update) as a 0-d tensor on the device, unsynchronised.

        It does not check the loss for NaN/Inf: that would wait for the device. ``run()`` does.
        """
        loss = self._loss_buffer(1)
        self.backend.step(loss[0])
        self.epoch += 1
        self._pending.append(loss[0])
        return loss[0]

    def run(self, epochs, *, every: Optional[int] = None,
            callback: Optional[Callable[[int, List[float]], None]] = None) -> TrainResult:
        """Train ``epochs`` more epochs and return the result.

        The host waits for the device once per ``every`` epochs (default: once, at the end), checks
        that chunk's losses and calls ``callback(first_epoch, losses)``. If a loss is NaN or Inf, the
        run stops, the weights go back to the last finite ones, and NonFiniteLossError is raised
        with the partial result attached.
        """
        epochs = _checks.check_epochs(epochs)
        every = epochs if every is None else _checks.check_epochs(every, "every")
        start_epoch = self.epoch
        self._settle()
        started = time.perf_counter()
        done = 0
        while done < epochs:
            n = min(every, epochs - done)
            snapshot = [w.clone() for w in self.weights]
            buf = self._loss_buffer(n)
            if hasattr(self.backend, "run_epochs"):   # the native runner: the whole chunk in one call
                self.backend.run_epochs(buf)
            else:
                for i in range(n):
                    self.backend.step(buf[i])
            chunk = buf.tolist()
            bad = next((i for i, v in enumerate(chunk) if not math.isfinite(v)), None)
            if bad is not None:
                kept = self._rewind(snapshot, bad)
                self._record(chunk[:kept], callback)
                result = self._result(start_epoch, time.perf_counter() - started)
                raise NonFiniteLossError(
                    f"loss became {chunk[bad]} at epoch {self.epoch - kept + bad}; stopped, keeping the "
                    f"weights that entered epoch {self.epoch} (the last finite ones). Try a smaller lr.",
                    epoch=self.epoch - kept + bad, loss=chunk[bad], result=result)
            self._record(chunk, callback)
            done += n
        return self._result(start_epoch, time.perf_counter() - started)

    def _record(self, chunk, callback):
        first = self.epoch
        self._losses.extend(chunk)
        self.epoch += len(chunk)
        if callback is not None and chunk:
            callback(first, chunk)

    @torch.no_grad()
    def _rewind(self, snapshot, bad):
        """Replay the chunk from its snapshot up to the first non-finite loss; return epochs kept.

        The weights entering epoch ``bad`` are kept if they are all finite, else those one epoch
        earlier. The kernels are deterministic, so the replay repeats the same numbers.
        """
        for kept in (bad, bad - 1):
            if kept < 0:
                break
            for w, s in zip(self.weights, snapshot):
                w.copy_(s)
            scratch = self._loss_buffer(max(kept, 1))
            for i in range(kept):
                self.backend.step(scratch[i])
            if all(bool(torch.isfinite(w).all()) for w in self.weights):
                return kept
        for w, s in zip(self.weights, snapshot):
            w.copy_(s)
        return 0

    def _result(self, start_epoch, seconds):
        return TrainResult(losses=self._losses[start_epoch:], weights=self.weights,
                           backend=self.backend_name, seconds=seconds, start_epoch=start_epoch)

    def state_dict(self):
        """Weights (on the CPU), epoch, loss history and settings: what a checkpoint holds."""
        return {"weights": [w.detach().cpu().clone() for w in self.weights], "epoch": self.epoch,
                "losses": self.losses, "lr": self.lr, "grad": self.grad}

    @torch.no_grad()
    def load_state_dict(self, state):
        """Continue from ``state_dict()``: copies its weights in and takes its epoch and losses."""
        weights = state["weights"]
        if len(weights) != len(self.weights):
            raise ValueError(f"state: expected {len(self.weights)} weight tensors, got {len(weights)}")
        for i, (w, s) in enumerate(zip(self.weights, weights)):
            if tuple(s.shape) != tuple(w.shape):
                raise ValueError(f"state['weights'][{i}]: expected shape {tuple(w.shape)}, got {tuple(s.shape)}")
            w.copy_(s)
        self._pending.clear()
        self._losses = [float(v) for v in state["losses"]]
        self.epoch = int(state["epoch"])


def train(x, y, weights, *, epochs=20, lr=1e-6, grad="relu", backend="auto", precision="ieee",
          inplace=False, every=None, callback=None) -> TrainResult:
    """Train the seed's network (any depth) with hand-written gradients and SGD.

    Returns a TrainResult: ``.losses`` (one float per epoch, before that epoch's update) and
    ``.weights`` (the trained tensors). The caller's tensors are left alone unless ``inplace=True``.
    See Trainer for the arguments.
    """
    epochs = _checks.check_epochs(epochs)
    trainer = Trainer(x, y, weights, lr=lr, grad=grad, backend=backend, precision=precision,
                      inplace=inplace)
    return trainer.run(epochs, every=every, callback=callback)
