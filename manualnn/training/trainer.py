"""The training loop: a step-wise Trainer and ``train()``, which runs one to the end.

One epoch walks the training rows in even batches of at most ``batch_size`` (shuffled by a seeded generator,
or in row order); each batch is one step: forward, loss, backward and the optimizer's update. The
epoch's loss is the sum of its batches' losses, each taken before its own update (divided by the
rows for reduction "mean"), so with one batch (the default) an epoch is exactly the seed's step.
The epochs run in chunks (see epoch.py: on the CPU, the native runner does a whole chunk in one
call); the host waits for the device once per chunk, checks the losses and records them.
"""
import contextlib
import math
import numbers
import time
import warnings
from typing import Callable, List, Optional

import torch

from .. import checks
from ..backends import resolve
from ..spec import Params, StepSpec, with_ones
from . import state
from .epoch import make_runner
from .graphs import ChunkGraph, graph_length
from .inputs import checked_inputs
from .metrics import dead_network, validation_scorer
from .result import NonFiniteLossError, TrainResult
from .stopping import Stopper
from .threads import cpu_threads, thread_rule

CHUNK_SECONDS = 0.25   # with every="auto", the host waits for the device about this often
# and a chunk is at most this many times the last one. On CUDA 4: the first warm chunk sets the CUDA graph's
# length, and a chunk cut short runs its remainder eagerly. On the CPU 16: 1, 16, 256, ... epochs (each chunk
# costs about a millisecond on the host: its rollback copy, its rows, its lines; star98's 200 epochs in 3
# chunks instead of 5 train in 23.9 ms instead of 26.0, measured side by side)
CHUNK_GROWTH, CPU_CHUNK_GROWTH = 4, 16
HISTORIES = ("losses", "val_losses", "val_accuracies", "val_rmse", "val_r2")


class Trainer:
    """Trains a ReLU network with hand-written gradients: ``run(epochs)``, or one epoch per ``train_epoch()``.

    x [N, features], y [N, out] targets (or integer class labels [N], which become one-hot rows) and
    weights [w1, ..., wL] (w_i: in x out, the seed's layout) share one float dtype and one device
    (numpy arrays for x and y are taken as tensors of the weights' dtype). Unless ``inplace=True`` the
    trainer works on copies, so the caller's tensors are left alone. Defaults are the seed's step
    (plain SGD, lr 1e-6, the sum of squares summed over one full batch, no biases); ``MLP.fit`` and the
    estimators (manualnn.MLPClassifier, MLPRegressor) use the ``--data`` defaults instead.

    - The step: StepSpec's fields as keywords: ``lr``, ``grad`` ("relu" or the seed's "tutorial"),
      ``loss`` ("sse" or "ce"), ``reduction`` ("sum" or "mean"), ``optimizer`` ("sgd", "momentum",
      "adam") with ``momentum``, ``betas``, ``eps``, ``weight_decay``, and ``precision`` (triton).
    - ``bias=True`` gives every layer a bias (zeros, or ``biases=[b1, ..., bL]`` to start from).
    - ``backend``: "auto" (the native runner on the CPU where it is built or can be, Triton on CUDA when
      available, else torch), "torch", "triton" or "native".
    - ``batch_size``: the most rows a step takes (default: all, the seed's full-batch step). An epoch
      takes the fewest batches of at most that many rows, as even as the rows allow (225 rows by 200:
      113 then 112; training/batches.py). ``shuffle`` draws each epoch's order from ``(shuffle_seed, epoch)``;
      ``shuffle=False`` takes the rows in order. A single batch is never shuffled.
    - ``val_data=(x_val, y_val)``: scored after every epoch (loss; accuracy for classes; RMSE and R^2
      for values, RMSE times ``target_scale`` when given). ``patience=N``: stop when the validation
      loss has not improved for N epochs, keeping the best epoch's weights.
    - ``distributed=True``: data parallel over torch.distributed's ranks (see manualnn.distributed):
      every rank passes the same data and weights, trains on its part of each batch, and gradients
      and losses are summed over ranks, so every rank holds the same weights.
    - ``graph``: on CUDA (default there), ``run()`` replays chunks of epochs as one CUDA graph after a
      first eager epoch: identical numbers, no per-step launch overhead. ``graph=False`` steps eagerly.
    - ``threads``: on the CPU, None (default) chooses each step's thread count, one or torch's, by timing
      them (see threads.py), only where the choice cannot change a number; an integer fixes it.
      Callbacks and everything outside the steps keep the caller's setting.
    """

    def __init__(self, x, y, weights, *, biases=None, bias=None, batch_size=None, shuffle=True, shuffle_seed=0,
                 val_data=None, patience=None, target_scale=None, backend="auto", distributed=False, graph=None,
                 threads=None, inplace=False, **step_args):
        try:
            self.spec = spec = StepSpec(**step_args)
        except TypeError as e:
            if "unexpected keyword" in str(e):
                raise TypeError(f"Trainer: {str(e).split('() ', 1)[-1]} (see manualnn.spec.StepSpec)") from None
            raise
        checks.check_choice("backend", backend, checks.BACKENDS)
        bias = biases is not None if bias is None else bool(bias)
        x, y, weights, biases = checked_inputs(x, y, weights, biases, bias, spec.loss)
        n = x.shape[0]
        self.batch_size = n if batch_size is None else min(checks.check_positive_int(batch_size, "batch_size"), n)
        if isinstance(shuffle_seed, bool) or not isinstance(shuffle_seed, numbers.Integral):
            raise TypeError(f"shuffle_seed: expected an integer, got {type(shuffle_seed).__name__} {shuffle_seed!r}")
        self.shuffle, self.shuffle_seed = bool(shuffle), int(shuffle_seed)
        self.patience = None if patience is None else checks.check_positive_int(patience, "patience")
        self.distributed = bool(distributed)
        rank, world = 0, 1
        if self.distributed:
            from .. import distributed as dist_mod
            rank, world = dist_mod.rank_and_world()
            if n < world:
                raise ValueError(f"x: {n} rows cannot be shared by {world} ranks; expected at least one row per "
                                 f"rank (start at most {n} ranks)")
        self.backend_name = resolve(backend, x.device, x.dtype)
        self.x, self.y, self.rows = x.detach(), y.detach(), n
        self.scorer = None if val_data is None else validation_scorer(val_data, self.x, weights, biases, spec)
        if self.patience and self.scorer is None:
            raise ValueError("patience: stops on the validation loss; expected val_data=(x_val, y_val)")
        self.target_scale = target_scale
        self._callers = (weights, biases) if inplace else None
        shared = inplace and not bias and all(w.is_contiguous() for w in weights)   # train the caller's tensors
        self.params = Params.from_weights(weights, biases, spec, copy=not shared)
        if bias:   # [x, 1]: the bias is the last row of each layer's parameter (see manualnn.spec)
            x_in = with_ones(n, x.shape[1], like=x)
            x_in[:, :-1].copy_(self.x)
        else:      # rows of unit column stride, as the runners read them
            x_in = self.x if self.x.stride(1) == 1 or x.shape[1] == 1 else self.x.contiguous()
        self.stopper = Stopper(self.params, self.patience) if self.patience else None
        if threads is not None:
            threads = (checks.check_positive_int(threads, "threads"), False)
        elif self.device.type == "cpu":
            threads = thread_rule(self)
        self.runner = make_runner(x_in, self.y, self.params, spec, self.backend_name, batch_size=self.batch_size,
                                  shuffle=self.shuffle, shuffle_seed=self.shuffle_seed, scorer=self.scorer,
                                  stopper=self.stopper, threads=threads, distributed=self.distributed, rank=rank,
                                  world=world)
        if graph and self.device.type != "cuda":
            raise ValueError(f"graph: CUDA graphs need a CUDA device, got device {self.device}")
        if graph and self.distributed:
            raise ValueError("graph: not with distributed=True (the all-reduces run outside CUDA graphs)")
        self.graph = self.device.type == "cuda" and not self.distributed if graph is None else bool(graph)
        self.stream = torch.cuda.Stream(self.device) if self.graph and self.device.type == "cuda" else None
        self.chunk_graph, self.capture, self._warm = None, None, False
        self.epoch = 0
        self.history = {key: [] for key in HISTORIES}
        self._pending = []   # rows from train_epoch(), still on the device
        self.stopped_early = False

    @property
    def threads(self):
        """The thread count the steps run with now (CPU; None on CUDA): see training/threads.py."""
        return getattr(self.runner, "best_threads", None)

    @property
    def device(self):
        return self.x.device

    @property
    def weights(self):
        """The weights being trained ([in, out] views)."""
        return self.params.weights

    @property
    def biases(self):
        """The biases being trained ([out] views), or None."""
        return self.params.biases

    @property
    def best_epoch(self):
        """With ``patience``: the epoch whose weights are kept (counted from the start), else None."""
        return self.stopper.best_epoch if self.stopper is not None else None

    def _history(key):   # noqa: N805  (a property maker, used in the class body)
        def read(self):
            self._settle()   # waits for the device if train_epoch() left epochs there
            return list(self.history[key])
        return property(read, doc=f"Every epoch's {key.replace('_', ' ')} so far.")

    losses = _history("losses")
    val_losses = _history("val_losses")
    val_accuracies = _history("val_accuracies")
    val_rmse = _history("val_rmse")
    val_r2 = _history("val_r2")

    @property
    def steps(self):
        """The backend's step objects (one per batch size; none for the native whole-epoch runner)."""
        return self.runner.step_objects

    def _settle(self):
        if self._pending:
            rows = torch.stack(self._pending).tolist()
            self._pending.clear()
            self._commit(rows, self.epoch - len(rows))

    def _commit(self, rows, first):
        """Record epochs first, first + 1, ... from their rows. The epoch count is set last, and every
        history is cut back to it on the way in: the record is whole whenever this is interrupted."""
        for key in HISTORIES:
            del self.history[key][first:]
        for row in rows:
            if self.scorer is not None:
                ev = self.scorer.read(row[1:], self.target_scale)
                self.history["val_losses"].append(ev.loss)
                for key, value in (("val_accuracies", ev.accuracy), ("val_rmse", ev.rmse), ("val_r2", ev.r2)):
                    if value is not None:
                        self.history[key].append(value)
            self.history["losses"].append(row[0] / self.rows if self.spec.reduction == "mean" else row[0])
        self.epoch = first + len(rows)

    @contextlib.contextmanager
    def _stream(self):
        """The side stream for the block, after the caller's (it wrote the inputs, [w; b] and [x, 1])."""
        if self.stream is None:
            yield
            return
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            yield

    def _chunk(self, n, out):
        """Train up to ``n`` epochs from self.epoch, their rows into out[:n]; returns (epochs run, stopped
        early). Nothing waits for the device unless early stopping must look."""
        first, done = self.epoch, 0
        if self.graph and self._warm and self.stopper is None:
            length = graph_length(n, len(self.runner.step_rows), 0 if self.runner.full else 8 * self.rows)
            if self.chunk_graph is None and length:
                self.chunk_graph = ChunkGraph(self.runner, length, self.runner.host_order, capture=self.capture,
                                              stream=self.stream)
            g = self.chunk_graph
            while g is not None and n - done >= g.n:
                out[done:done + g.n].copy_(g.run(first + done))
                done += g.n
        ran, stopped = self.runner.run_chunk(first + done, n - done, out[done:]) if n > done else (0, False)
        self._warm = True
        return done + ran, stopped

    def train_epoch(self) -> torch.Tensor:
        """One epoch. Returns its loss sum (before the updates) as a 0-d tensor on the device, unsynchronised.

        It does not check the loss for NaN/Inf: that would wait for the device. ``run()`` does. With
        ``patience`` the host looks at the epoch (and the run may stop: ``stopped_early``).
        """
        self._check_can_train()
        self._settle()
        out = self.runner.new_rows(1)
        with self._stream():
            _, stopped = self._chunk(1, out)
        self._after_device_work()
        self.epoch += 1
        self._pending.append(out[0, :self.runner.row_width])
        self.stopped_early = stopped
        self._copy_to_callers()
        return out[0, 0]

    # the seed's word for it: with one batch (the seed's default) an epoch is one step
    step = train_epoch

    def _check_can_train(self):
        self.params.check_unmoved()   # the steps hold its memory
        if self.stopped_early:
            raise RuntimeError(f"the run stopped early at epoch {self.epoch - 1} (patience {self.patience}) and "
                               f"holds the weights of epoch {self.best_epoch}; to train on, make a new Trainer "
                               f"from these weights")

    def run(self, epochs, *, every=None, callback: Optional[Callable[[int, List[float]], None]] = None,
            align=None) -> TrainResult:
        """Train ``epochs`` more epochs and return the result.

        The host waits for the device once per ``every`` epochs (default: once, at the end; "auto":
        chunks of about a quarter second, in powers of two, ending on multiples of ``align``), checks
        that chunk's losses and calls ``callback(first_epoch, losses)`` (the validation figures of
        those epochs are in ``self.val_losses`` etc. by then). If a loss is NaN or Inf, the run stops,
        the weights go back to the last finite ones, and NonFiniteLossError is raised with the partial
        result attached. With ``patience``, the run may stop early (``result.stopped_early``); a run
        that has stopped does not train on.
        """
        epochs = checks.check_epochs(epochs)
        if every is not None and every != "auto":
            every = checks.check_epochs(every, "every")
        self._check_can_train()
        self._settle()
        started, start_epoch, done, chunk = time.perf_counter(), self.epoch, 0, 1
        try:
            while done < epochs and not self.stopped_early:
                n = epochs - done if every is None else chunk if every == "auto" else every
                n = min(n, epochs - done)
                if align:
                    n = min(n, align - self.epoch % align)
                if self.graph and not self._warm:
                    n = 1   # one eager epoch first: autotuning, compiling and allocating happen before a capture
                tick, first = time.perf_counter(), self.epoch
                try:
                    ran = self._run_chunk(n)
                except NonFiniteLossError:
                    if callback is not None and self.epoch > first:   # the chunk's finite epochs, kept
                        callback(first, self.history["losses"][first:])
                    raise
                if callback is not None and ran:
                    callback(first, self.history["losses"][first:])
                done += ran
                seconds = max(time.perf_counter() - tick, 1e-6)
                growth = CPU_CHUNK_GROWTH if self.device.type == "cpu" else CHUNK_GROWTH
                wanted = max(1, min(growth * chunk, int(n * CHUNK_SECONDS / seconds)))
                chunk = 1 << (wanted.bit_length() - 1)   # powers of two: one graph length serves them all
        finally:
            self._after_device_work()
            self._copy_to_callers()
        return state.result_of(self, start_epoch, time.perf_counter() - started)

    # A chunk's snapshot and its rollback are copies of a few MB at most, on one thread: torch splits a
    # copy over its threads from 32k elements, and waking a second thread while another process keeps the
    # core busy costs milliseconds (with one busy process on 2 cores, a digits run's 89 clones took 0.17 s).
    def _save_state(self):
        with cpu_threads(1):
            return self.params.snapshot(), self.stopper.save() if self.stopper is not None else None

    def _load_state(self, saved):
        self._after_device_work()
        with cpu_threads(1):
            self.params.restore(saved[0])
            if self.stopper is not None:
                self.stopper.load(saved[1])

    def _run_chunk(self, n):
        """Up to n epochs, recorded; returns how many ran. Interrupted (Ctrl-C), it leaves the trainer as it
        was before the chunk; a loss that is not finite rewinds to the last finite epoch and raises."""
        first, saved = self.epoch, self._save_state()
        out = self.runner.new_rows(n)
        try:
            with self._stream():
                done, stopped = self._chunk(n, out)
            rows = out[:done, :self.runner.row_width].tolist()
            bad = next((i for i, row in enumerate(rows) if not math.isfinite(row[0])), None)
            if bad is None:
                self._commit(rows, first)
                self.stopped_early = stopped
                return done
        except BaseException:
            self._load_state(saved)
            self._commit([], first)
            raise
        kept = self._rewind(saved, bad)
        self._commit(rows[:kept], first)
        result = state.result_of(self, first, 0.0)
        raise NonFiniteLossError(
            f"loss became {rows[bad][0]} at epoch {first + bad}; stopped, keeping the weights that entered epoch "
            f"{first + kept} (the last finite ones). Try a smaller lr.", epoch=first + bad, loss=rows[bad][0],
            result=result)

    @torch.no_grad()
    def _rewind(self, saved, bad):
        """Replay the chunk from its saved state up to the first non-finite loss; return epochs kept.

        The weights entering epoch ``bad`` are kept if they are all finite, else those one epoch
        earlier. The steps and the batch order are deterministic (whatever threads they take: see
        threads.py), so the replay repeats the same numbers."""
        for kept in (bad, bad - 1):
            if kept < 0:
                break
            self._load_state(saved)
            if kept:
                with self._stream():
                    self.runner.run_chunk(self.epoch, kept, self.runner.new_rows(kept))
            if all(bool(torch.isfinite(p).all()) for p in self.params.tensors):
                return kept
        self._load_state(saved)
        return 0

    def _after_device_work(self):
        if self.stream is not None:   # callers use the weights on their own stream
            torch.cuda.current_stream(self.device).wait_stream(self.stream)

    @torch.no_grad()
    def _copy_to_callers(self):
        if self._callers is None:
            return
        weights, biases = self._callers
        for i, w in enumerate(weights):
            if w.data_ptr() != self.params.weight(i).data_ptr():
                w.copy_(self.params.weight(i))
        for i, b in enumerate(biases or []):
            b.copy_(self.params.bias_of(i))

    def diagnose(self) -> Optional[str]:
        """A warning when the trained network is dead (see metrics.dead_network), else None."""
        with cpu_threads(self.threads):
            return dead_network(self.x[:4096], self.params)

    def state_dict(self):
        """Weights, biases, optimizer state (on the CPU), epoch, histories, settings and, with ``patience``,
        early stopping's state (the best epoch, its loss and its weights and optimizer state): a checkpoint's."""
        self._settle()
        return state.trainer_state(self)

    def load_state_dict(self, saved):
        """Continue from ``state_dict()``: copies its weights, biases and optimizer state in, takes its
        epoch, histories and early stopping's state."""
        state.load_trainer_state(self, saved)
        self._pending.clear()
        self._copy_to_callers()


def train(x, y, weights, *, epochs=20, every=None, callback=None, **options) -> TrainResult:
    """Train a ReLU network (any depth) with hand-written gradients; returns a TrainResult. The step is
    the seed's unless told otherwise (``MLP.fit`` and the estimators use the ``--data`` defaults).

    ``.losses`` (one float per epoch), ``.weights`` (and ``.biases``) trained, and with
    ``val_data=(x_val, y_val)`` the validation figures per epoch. A network that ends dead (see
    Trainer.diagnose) gives a RuntimeWarning and ``.warning``. y may be float targets [N, out] or
    integer class labels [N]. The caller's tensors are left alone unless ``inplace=True``. Every other
    keyword is Trainer's (the step's ``lr``, ``loss``, ``optimizer``, ..., ``batch_size``, ``bias``, ...).
    """
    epochs = checks.check_epochs(epochs)
    trainer = Trainer(x, y, weights, **options)
    result = trainer.run(epochs, every=every, callback=callback)
    result.warning = trainer.diagnose()
    if result.warning:
        warnings.warn(result.warning, RuntimeWarning, stacklevel=2)
    return result
