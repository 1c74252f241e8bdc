"""The training loop: a step-wise Trainer, ``train()`` that runs one to the end, and ``evaluate()``.

One epoch walks the training rows in batches of ``batch_size`` (shuffled by a seeded generator,
or in row order); each batch is one step: forward, loss, backward and SGD update. The epoch's
loss is the sum of its batches' losses, each taken before its own update, so with one batch (the
default) an epoch is exactly the seed's full-batch step.
"""
import contextlib
import hashlib
import math
import numbers
import time
from dataclasses import dataclass, field
from typing import Callable, List, NamedTuple, Optional

import torch

from . import _checks
from .backends import make_backend, resolve
from .data import as_targets, is_label_tensor


class NonFiniteLossError(RuntimeError):
    """A run's loss became NaN or Inf. ``.result`` holds the last finite weights and the finite losses."""

    def __init__(self, message, epoch, loss, result):
        super().__init__(message)
        self.epoch = epoch
        self.loss = loss
        self.result = result


@dataclass
class TrainResult:
    """What a run returns: one loss per epoch (the sum of its batches' losses, each before its
    update), the trained weights (a snapshot: later training does not change them) and, with
    validation data, the validation loss (and, for class labels, accuracy) after each epoch."""
    losses: List[float]
    weights: List[torch.Tensor]
    backend: str
    seconds: float = 0.0
    start_epoch: int = 0
    val_losses: List[float] = field(default_factory=list)
    val_accuracies: List[float] = field(default_factory=list)

    @property
    def epochs(self):
        return len(self.losses)

    def __repr__(self):
        last = f"{self.losses[-1]:.4f}" if self.losses else "-"
        val = f", last_val_loss={self.val_losses[-1]:.4f}" if self.val_losses else ""
        acc = f", last_val_accuracy={self.val_accuracies[-1]:.4f}" if self.val_accuracies else ""
        return (f"TrainResult(epochs={self.epochs}, last_loss={last}{val}{acc}, backend={self.backend!r}, "
                f"seconds={self.seconds:.4f}, shapes={[tuple(w.shape) for w in self.weights]})")


class Evaluation(NamedTuple):
    """``loss``: the sum of squares over all rows (the training loss's definition); ``accuracy``:
    the fraction of rows whose largest output is the true class (None without class labels)."""
    loss: float
    accuracy: Optional[float]
    samples: int


def _targets(name, x, y, weights):
    """y as float targets [N, out] on x's device and dtype, and its class labels (or None)."""
    if is_label_tensor(y) and isinstance(x, torch.Tensor) and isinstance(weights, (list, tuple)) and weights \
            and isinstance(weights[-1], torch.Tensor) and weights[-1].dim() == 2:
        if y.device != x.device:
            raise ValueError(f"{name}: expected device {x.device} (the device of x), got {y.device}")
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"{name}: expected {x.shape[0]} labels (the rows of x), got shape {tuple(y.shape)}")
        y, labels = as_targets(y, weights[-1].shape[1], name)
        return y.to(x.dtype), labels
    return y, None


def _forward(x, weights):
    for w in weights[:-1]:
        x = torch.mm(x, w).clamp_(min=0)
    return torch.mm(x, weights[-1])


def _metrics(x, y, labels, weights):
    """(loss, correct) as device tensors: nothing waits for the device."""
    pred = _forward(x, weights)
    diff = pred - y
    loss = torch.dot(diff.view(-1), diff.view(-1))
    correct = (pred.argmax(1) == labels).sum() if labels is not None else None
    return loss, correct


# Below this many FLOPs per step, a CPU run uses one thread: waking a second thread for GEMMs this
# small costs more than it saves (on a busy 2-core machine, twenty times more; see the README).
ONE_THREAD_FLOPS = 4e6


@contextlib.contextmanager
def _cpu_threads(n):
    """torch's intra-op threads set to ``n`` for the block (None: left alone), then restored."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _epoch_seed(seed, epoch):
    """A generator seed for (seed, epoch): every epoch's order can be redrawn alone, on resume too."""
    digest = hashlib.blake2b(f"manualnn-shuffle:{int(seed)}:{int(epoch)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def batch_order(n, epoch, *, shuffle=True, seed=0):
    """The row order of epoch ``epoch`` over ``n`` rows: a seeded permutation, or 0..n-1."""
    if not shuffle:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(_epoch_seed(seed, epoch)))


class Trainer:
    """Trains a bias-free ReLU network with hand-written gradients, one epoch per ``step()``.

    x [N, features], y [N, out] (or integer class labels y [N], which become one-hot targets) and
    weights [w1, ..., wL] (w_i: in x out, the seed's layout) share one float dtype and one device.
    Unless ``inplace=True`` the trainer works on copies, so the caller's tensors are left alone.

    - ``grad``: "relu" (the correct ReLU backward, equal to autograd) or "tutorial" (the seed's
      clamp of the gradient's values).
    - ``backend``: "auto" (Triton on CUDA when available, else torch), "torch", "triton" or
      "native" (the compiled CPU runner; see manualnn/native.py).
    - ``batch_size``: rows per step (default: all of them, the seed's full-batch step); the last
      batch of an epoch may be smaller. ``shuffle`` draws each epoch's order from a generator
      seeded by ``(shuffle_seed, epoch)``; ``shuffle=False`` takes the rows in order. A single
      batch is never shuffled (the order would change only rounding).
    - ``val_data=(x_val, y_val)``: evaluated after every epoch (loss; accuracy for class labels).
    - ``distributed=True``: data-parallel over the ranks of torch.distributed's process group (see
      manualnn.distributed): every rank passes the same x, y and weights and trains on its part of
      each batch; gradients and losses are summed over ranks, so every rank holds the same weights.
      The backend's step is split into gradient, all-reduce and update (distributed.make_step).
    - ``graph``: on CUDA (default there), ``run()`` captures each chunk of epochs as one CUDA graph
      after a first eager epoch and replays it: identical numbers, no per-step launch overhead.
      ``graph=False`` steps eagerly.
    """

    def __init__(self, x, y, weights, *, lr=1e-6, grad="relu", backend="auto", precision="ieee",
                 inplace=False, batch_size=None, shuffle=True, shuffle_seed=0, val_data=None, distributed=False,
                 graph=None):
        _checks.check_choice("grad", grad, _checks.GRAD_MODES)
        _checks.check_choice("backend", backend, _checks.BACKENDS)
        _checks.check_choice("precision", precision, _checks.PRECISIONS)
        self.lr = _checks.check_lr(lr)
        weights = list(weights) if isinstance(weights, (list, tuple)) else weights
        y, labels = _targets("y", x, y, weights)
        _checks.check_tensors(x, y, weights)
        n = x.shape[0]
        self.batch_size = n if batch_size is None else _checks.check_positive_int(batch_size, "batch_size")
        if isinstance(shuffle_seed, bool) or not isinstance(shuffle_seed, numbers.Integral):
            raise TypeError(f"shuffle_seed: expected an integer, got {type(shuffle_seed).__name__} {shuffle_seed!r}")
        self.shuffle, self.shuffle_seed = bool(shuffle), int(shuffle_seed)
        self.grad, self.precision = grad, precision
        self.distributed = bool(distributed)
        rank, world = 0, 1
        if self.distributed:
            from . import distributed as dist_mod
            rank, world = dist_mod.rank_and_world()
            if n < world:
                raise ValueError(f"x: {n} rows cannot be shared by {world} ranks; expected at least one row per "
                                 f"rank (start at most {n} ranks)")
        self.backend_name = resolve(backend, x.device, x.dtype)
        self.x, self.y = x.detach(), y.detach()
        self.weights = [w.detach() if inplace else w.detach().clone() for w in weights]
        self.val = None
        if val_data is not None:
            self.val = self._prepare_val(val_data)

        def make(bx, by):
            if self.distributed:
                return dist_mod.make_step(self.backend_name, bx, by, self.weights, lr=self.lr, grad=grad,
                                          precision=precision)
            return make_backend(self.backend_name, bx, by, self.weights, lr=self.lr, grad=grad, precision=precision)

        def shard(rows):   # this rank's part [lo, hi) of a batch of ``rows`` rows; all of it in one process
            return dist_mod.shard_bounds(rows, rank, world) if self.distributed else (0, rows)

        if self.batch_size >= n:   # the seed's full-batch step, on the tensors themselves
            self.batch_size = n
            lo, hi = shard(n)
            self.backend = make(self.x[lo:hi], self.y[lo:hi])
            self._plan = None
        else:
            # Buffers allocated once: this rank's rows of each batch are gathered into them; a batch
            # with fewer rows (the last one, or a smaller shard) uses their first rows (its own backend,
            # the same weights). Plan entries are positions in the epoch's row order.
            B = self.batch_size
            largest = shard(B)[1] - shard(B)[0]
            self._xb = torch.empty(largest, x.shape[1], dtype=x.dtype, device=x.device)
            self._yb = torch.empty(largest, y.shape[1], dtype=x.dtype, device=x.device)
            backends, self._plan = {}, []
            for start in range(0, n, B):
                lo, hi = shard(min(B, n - start))
                if hi - lo not in backends:
                    backends[hi - lo] = make(self._xb[:hi - lo], self._yb[:hi - lo])
                self._plan.append((start + lo, start + hi, backends[hi - lo]))
            self._batch_losses = self._loss_buffer(len(self._plan))
            self.backend = self._plan[0][2]
        # CUDA graphs (manualnn/graphs.py): on by default on CUDA; graph=False turns them off
        if graph and self.device.type != "cuda":
            raise ValueError(f"graph: CUDA graphs need a CUDA device, got device {self.device}")
        if graph and self.distributed:
            raise ValueError("graph: not with distributed=True (the all-reduces run outside CUDA graphs)")
        self.graph = self.device.type == "cuda" and not self.distributed if graph is None else bool(graph)
        self._graphs, self._capture, self._warm = {}, None, False
        widths = [w.shape for w in self.weights]
        step_flops = 6 * self.batch_size * sum(a * b for a, b in widths)
        self._threads = 1 if self.device.type == "cpu" and step_flops < ONE_THREAD_FLOPS else None
        self.epoch = 0
        self._losses: List[float] = []
        self._val_losses: List[float] = []
        self._val_accuracies: List[float] = []
        self._pending: List[tuple] = []   # (loss, val_loss, val_accuracy) from step(), still on the device

    def _prepare_val(self, val_data):
        if not isinstance(val_data, (list, tuple)) or len(val_data) != 2:
            raise TypeError(f"val_data: expected a pair (x_val, y_val), got {type(val_data).__name__}")
        xv, yv = val_data
        yv, labels = _targets("val_data[1]", xv, yv, self.weights)
        if not isinstance(xv, torch.Tensor) or xv.dim() != 2 or xv.shape[1] != self.x.shape[1]:
            got = f"shape {tuple(xv.shape)}" if isinstance(xv, torch.Tensor) else type(xv).__name__
            raise ValueError(f"val_data[0]: expected a 2-D tensor with {self.x.shape[1]} columns (like x), got {got}")
        if xv.dtype != self.x.dtype or xv.device != self.x.device:
            raise ValueError(f"val_data: expected {self.x.dtype} tensors on {self.x.device} (like x), "
                             f"got {xv.dtype} on {xv.device}")
        _checks.check_tensors(xv, yv, self.weights, names=("val_data[0]", "val_data[1]"))
        if labels is None:   # one-hot float targets are scored for accuracy too
            labels = as_targets(yv, yv.shape[1])[1]
        return xv.detach(), yv.detach(), labels

    @property
    def device(self):
        return self.x.device

    @property
    def losses(self) -> List[float]:
        """Every epoch's loss so far (waits for the device if step() left some there)."""
        self._settle()
        return list(self._losses)

    @property
    def val_losses(self) -> List[float]:
        self._settle()
        return list(self._val_losses)

    @property
    def val_accuracies(self) -> List[float]:
        self._settle()
        return list(self._val_accuracies)

    def _settle(self):
        if self._pending:
            values = torch.stack([torch.stack(p) for p in self._pending]).tolist()
            for loss, val_loss, val_acc in values:
                self._losses.append(loss)
                if self.val is not None:
                    self._val_losses.append(val_loss)
                    if self.val[2] is not None:
                        self._val_accuracies.append(val_acc / self.val[0].shape[0])
            self._pending.clear()

    def _loss_buffer(self, n):
        dtype = torch.float64 if self.x.dtype == torch.float64 else torch.float32
        return torch.empty(n, dtype=dtype, device=self.device)

    def _host_order(self, epoch):
        return batch_order(self.x.shape[0], epoch, shuffle=self.shuffle, seed=self.shuffle_seed)

    def _order(self, epoch):
        order = self._host_order(epoch)
        if self.device.type == "cuda":  # pinned + non_blocking: the copy does not wait for the device
            return order.pin_memory().to(self.device, non_blocking=True)
        return order

    def _epoch(self, epoch, loss_out, val_out):
        """Train one epoch (index ``epoch``), loss into ``loss_out``; validate into ``val_out`` [2]."""
        self._train_epoch(None if self._plan is None else self._order(epoch), loss_out, val_out)
        self._warm = True

    def _train_epoch(self, order, loss_out, val_out):
        """One epoch over the rows in ``order`` (a device tensor; None for the full batch)."""
        if self._plan is None:
            self.backend.step(loss_out)
        else:
            for b, (start, stop, backend) in enumerate(self._plan):
                rows = order[start:stop]
                torch.index_select(self.x, 0, rows, out=self._xb[:stop - start])
                torch.index_select(self.y, 0, rows, out=self._yb[:stop - start])
                backend.step(self._batch_losses[b])
            torch.sum(self._batch_losses, 0, out=loss_out)
        if self.distributed:   # the epoch's loss over all ranks' rows
            import torch.distributed as dist
            dist.all_reduce(loss_out)
        if self.val is not None:
            xv, yv, labels = self.val
            loss, correct = _metrics(xv, yv, labels, self.weights)
            val_out[0].copy_(loss)
            if correct is not None:
                val_out[1].copy_(correct)   # a count (exact in float32 up to 2**24): divided on the host

    def _chunk(self, n):
        """Train the next ``n`` epochs; their [n, 3] (loss, val loss, val right answers) on the device.

        With CUDA graphs on, a chunk after the first eager epoch replays a captured graph of n epochs.
        """
        if self.graph and self._warm:
            from .graphs import ChunkGraph
            if n not in self._graphs:
                if len(self._graphs) >= 2:   # each holds a memory pool: keep the two latest lengths
                    self._graphs.pop(next(iter(self._graphs)))
                self._graphs[n] = ChunkGraph(self, n, capture=self._capture)
            return self._graphs[n].run(self.epoch)
        buf = self._loss_buffer(3 * n).view(n, 3)
        if self._plan is None and self.val is None and hasattr(self.backend, "run_epochs"):
            losses = self._loss_buffer(n)   # the native runner: the whole chunk in one call
            self.backend.run_epochs(losses)
            buf[:, 0].copy_(losses)
            self._warm = True
            return buf
        for i in range(n):
            self._epoch(self.epoch + i, buf[i, 0], buf[i, 1:])
        return buf

    def step(self) -> torch.Tensor:
        """One epoch. Returns its loss (before the updates) as a 0-d tensor on the device, unsynchronised.

        It does not check the loss for NaN/Inf: that would wait for the device. ``run()`` does.
        """
        buf = self._loss_buffer(3)
        self._epoch(self.epoch, buf[0], buf[1:])
        self.epoch += 1
        self._pending.append((buf[0], buf[1], buf[2]))
        return buf[0]

    def run(self, epochs, *, every: Optional[int] = None,
            callback: Optional[Callable[[int, List[float]], None]] = None) -> TrainResult:
        """Train ``epochs`` more epochs and return the result.

        The host waits for the device once per ``every`` epochs (default: once, at the end), checks
        that chunk's losses and calls ``callback(first_epoch, losses)`` (the validation figures of
        those epochs are in ``self.val_losses`` / ``self.val_accuracies`` by then). If a loss is NaN
        or Inf, the run stops, the weights go back to the last finite ones, and NonFiniteLossError
        is raised with the partial result attached.
        """
        epochs = _checks.check_epochs(epochs)
        every = epochs if every is None else _checks.check_epochs(every, "every")
        with _cpu_threads(self._threads):
            return self._run(epochs, every, callback)

    def _run(self, epochs, every, callback):
        start_epoch = self.epoch
        self._settle()
        started = time.perf_counter()
        done = 0
        while done < epochs:
            n = min(every, epochs - done)
            if self.graph and not self._warm:
                n = 1   # one eager epoch first: autotuning and allocations happen before any capture
            snapshot = [w.clone() for w in self.weights]
            chunk = self._chunk(n).tolist()
            bad = next((i for i, row in enumerate(chunk) if not math.isfinite(row[0])), None)
            if bad is not None:
                kept = self._rewind(snapshot, bad)
                self._record(chunk[:kept], callback)
                result = self._result(start_epoch, time.perf_counter() - started)
                raise NonFiniteLossError(
                    f"loss became {chunk[bad][0]} at epoch {self.epoch - kept + bad}; stopped, keeping the "
                    f"weights that entered epoch {self.epoch} (the last finite ones). Try a smaller lr.",
                    epoch=self.epoch - kept + bad, loss=chunk[bad][0], result=result)
            self._record(chunk, callback)
            done += n
        return self._result(start_epoch, time.perf_counter() - started)

    def _record(self, chunk, callback):
        first = self.epoch
        self._losses.extend(row[0] for row in chunk)
        if self.val is not None:
            self._val_losses.extend(row[1] for row in chunk)
            if self.val[2] is not None:
                self._val_accuracies.extend(row[2] / self.val[0].shape[0] for row in chunk)
        self.epoch += len(chunk)
        if callback is not None and chunk:
            callback(first, [row[0] for row in chunk])

    @torch.no_grad()
    def _rewind(self, snapshot, bad):
        """Replay the chunk from its snapshot up to the first non-finite loss; return epochs kept.

        The weights entering epoch ``bad`` are kept if they are all finite, else those one epoch
        earlier. The kernels and the batch order are deterministic, so the replay repeats the
        same numbers.
        """
        for kept in (bad, bad - 1):
            if kept < 0:
                break
            for w, s in zip(self.weights, snapshot):
                w.copy_(s)
            scratch = self._loss_buffer(3)
            for i in range(kept):
                self._epoch(self.epoch + i, scratch[0], scratch[1:])
            if all(bool(torch.isfinite(w).all()) for w in self.weights):
                return kept
        for w, s in zip(self.weights, snapshot):
            w.copy_(s)
        return 0

    def _result(self, start_epoch, seconds):
        return TrainResult(losses=self._losses[start_epoch:], weights=[w.clone() for w in self.weights],
                           backend=self.backend_name, seconds=seconds, start_epoch=start_epoch,
                           val_losses=self._val_losses[start_epoch:],
                           val_accuracies=self._val_accuracies[start_epoch:])

    def state_dict(self):
        """Weights (on the CPU), epoch, loss histories and settings: what a checkpoint holds."""
        return {"weights": [w.detach().cpu().clone() for w in self.weights], "epoch": self.epoch,
                "losses": self.losses, "val_losses": self.val_losses, "val_accuracies": self.val_accuracies,
                "lr": self.lr, "grad": self.grad, "batch_size": self.batch_size, "shuffle": self.shuffle,
                "shuffle_seed": self.shuffle_seed}

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
        self._val_losses = [float(v) for v in state.get("val_losses", [])]
        self._val_accuracies = [float(v) for v in state.get("val_accuracies", [])]
        self.epoch = int(state["epoch"])


def train(x, y, weights, *, epochs=20, lr=1e-6, grad="relu", backend="auto", precision="ieee",
          inplace=False, every=None, callback=None, batch_size=None, shuffle=True, shuffle_seed=0,
          val_data=None, distributed=False, graph=None) -> TrainResult:
    """Train a bias-free ReLU network (any depth) with hand-written gradients and SGD.

    Returns a TrainResult: ``.losses`` (one float per epoch: the sum of its batches' losses, each
    before its update), ``.weights`` (the trained tensors) and, with ``val_data=(x_val, y_val)``,
    ``.val_losses`` / ``.val_accuracies``. y may be float targets [N, out] or integer class labels
    [N]. The caller's tensors are left alone unless ``inplace=True``. See Trainer for the arguments.
    """
    epochs = _checks.check_epochs(epochs)
    trainer = Trainer(x, y, weights, lr=lr, grad=grad, backend=backend, precision=precision,
                      inplace=inplace, batch_size=batch_size, shuffle=shuffle, shuffle_seed=shuffle_seed,
                      val_data=val_data, distributed=distributed, graph=graph)
    return trainer.run(epochs, every=every, callback=callback)


@torch.no_grad()
def evaluate(model, x, y) -> Evaluation:
    """Score a model (an ``MLP`` or a list of weights) on ``x`` and targets or class labels ``y``.

    Returns Evaluation(loss, accuracy, samples): the sum-of-squares loss over all rows, and the
    fraction of rows classified right when y holds class labels (integers [N], or one-hot rows).
    """
    weights = [w.detach() for w in (model.weights if hasattr(model, "weights") else model)]
    y, labels = _targets("y", x, y, weights)
    _checks.check_tensors(x, y, weights)
    if labels is None:
        y, labels = as_targets(y, y.shape[1])
    loss, correct = _metrics(x, y, labels, weights)
    accuracy = None if correct is None else float(correct) / x.shape[0]
    return Evaluation(float(loss), accuracy, x.shape[0])
