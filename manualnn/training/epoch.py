"""Epochs of training: the Trainer's work, in runners built once for fixed tensors.

An epoch walks the rows in batches (in its order: a seeded permutation, the rows in order, or the full
batch); each batch is one backend step. The epoch writes one row of its output buffer: the sum of
its batches' losses (over every rank), then the validation scorer's row (see metrics.Scorer).

Two runners, one interface (``row_width``, ``new_rows``, ``step_rows``, ``run_chunk``):
- ``EpochRunner``: any backend's steps called from Python, one batch at a time, on buffers made once
  (so a CUDA graph can capture an epoch whole: ``run(order, out)``); data parallel too;
- ``manualnn.backends.native_backend.NativeEpochs``: whole chunks of epochs in one native call.
``make_runner`` picks.
"""
import math
import time

import torch

from ..backends import make_step
from .batches import batch_order, batches
from .parallel import AllReduceStep, flat_gradients
from .threads import ThreadPolicy

SLOT = 4   # each epoch's row of loss slots starts 16 bytes on (the kernels do not rely on it: see test_gpu_startup)


def make_runner(x, y, params, spec, backend, *, batch_size, shuffle, shuffle_seed, scorer=None, stopper=None,
                threads=None, distributed=False, rank=0, world=1, **step_options):
    """The runner for these tensors: the native whole-epoch runner for backend "native" (one process), else
    an EpochRunner over the backend's steps. ``threads``: (most, adapt) for the CPU's ThreadPolicy."""
    if backend == "native" and not distributed:
        from ..backends.native_backend import NativeEpochs
        return NativeEpochs(x, y, params, spec, batch_size=batch_size, shuffle=shuffle, shuffle_seed=shuffle_seed,
                            scorer=scorer, stopper=stopper, threads=threads or (None, False))
    return EpochRunner(x, y, params, spec, backend, batch_size=batch_size, shuffle=shuffle, shuffle_seed=shuffle_seed,
                       scorer=scorer, stopper=stopper, threads=None if threads is None else ThreadPolicy(*threads),
                       distributed=distributed, rank=rank, world=world, **step_options)


def new_rows(n, width, dtype, device):
    """An [n, width] output buffer whose rows start 16-byte aligned (its loss slots)."""
    return torch.zeros(n, -(-width // SLOT) * SLOT, dtype=dtype, device=device)


class EpochRunner:
    """x [N, in (+1)] and y [N, out] on the device (x with its column of ones when params.bias).

    ``rank``/``world``: this rank's share of every batch (distributed=True: the steps all-reduce).
    ``scorer``: the validation rows' Scorer, or None; ``stopper``: early stopping's Stopper, or None;
    ``threads``: a ThreadPolicy choosing each step's torch threads (CPU), or None (leave them alone).
    ``row_width``: the floats one epoch writes.
    """

    def __init__(self, x, y, params, spec, backend, *, batch_size, shuffle=True, shuffle_seed=0, scorer=None,
                 stopper=None, threads=None, distributed=False, rank=0, world=1, **step_options):
        self.x, self.y, self.params, self.spec = x, y, params, spec
        self.scorer, self.stopper, self.threads, self.distributed = scorer, stopper, threads, distributed
        self.step_ended = time.perf_counter()   # when the last step ended (see run_chunk)
        self.shuffle, self.shuffle_seed = shuffle, shuffle_seed
        n = x.shape[0]
        self.full = batch_size >= n
        steps = {}

        def make(xb, yb, rows):
            if not self.distributed:
                return make_step(backend, xb, yb, params, spec, rows=rows, **step_options)
            flat, grads = flat_gradients(params)
            return AllReduceStep(make_step(backend, xb, yb, params, spec, rows=rows, grads=grads, **step_options),
                                 flat, grads)

        plan = batches(n, n if self.full else batch_size, rank, world)
        self.step_rows = [rows for _, _, rows in plan]
        if self.full:
            lo, hi, rows = plan[0]
            self.steps = [(lo, hi, make(x[lo:hi], y[lo:hi], rows))]
        else:
            # this rank's rows of each batch are gathered into buffers made once; a batch with fewer rows
            # (a row fewer, or a smaller shard) uses their first rows, with its own step (same params)
            largest = max(hi - lo for lo, hi, _ in plan)
            # with x's row stride when x's rows are padded ([x, 1], a view of a padded buffer: gathered rows
            # stay aligned); a column-major x gathers into contiguous rows
            ld = x.stride(0) if x.stride(1) == 1 and x.stride(0) >= x.shape[1] else x.shape[1]
            self.xb = x.new_zeros(largest, ld)[:, :x.shape[1]]
            self.yb = torch.empty(largest, y.shape[1], dtype=y.dtype, device=y.device)
            self.steps = []
            for lo, hi, rows in plan:
                key = (hi - lo, rows)
                if key not in steps:
                    steps[key] = make(self.xb[:hi - lo], self.yb[:hi - lo], rows)
                self.steps.append((lo, hi, steps[key]))
        self.batch_losses = torch.zeros(len(self.steps), SLOT, dtype=self.loss_dtype, device=x.device)[:, 0]
        self.row_width = 1 + (scorer.width if scorer is not None else 0)

    @property
    def loss_dtype(self):
        return torch.float64 if self.x.dtype == torch.float64 else torch.float32

    def new_rows(self, n):
        """An output buffer for n epochs' rows (see new_rows)."""
        return new_rows(n, self.row_width, self.loss_dtype, self.x.device)

    @property
    def step_objects(self):
        """The distinct backend steps (one per batch size)."""
        return list({id(s): s for _, _, s in self.steps}.values())

    def host_order(self, epoch):
        """Epoch ``epoch``'s row order on the host (None for the full batch)."""
        return None if self.full else batch_order(self.x.shape[0], epoch, shuffle=self.shuffle, seed=self.shuffle_seed)

    def order(self, epoch):
        """Epoch ``epoch``'s row order on the device (None for the full batch)."""
        order = self.host_order(epoch)
        if order is not None and self.x.device.type == "cuda":   # pinned + non_blocking: no wait for the device
            return order.pin_memory().to(self.x.device, non_blocking=True)
        return order

    @property
    def best_threads(self):
        """The thread count the steps run with now (see training.threads), or None."""
        return None if self.threads is None else self.threads.best

    def run(self, order, out):
        """One epoch over the rows in ``order`` (None: the full batch, in place); its row into ``out``."""
        policy = self.threads
        for b, (lo, hi, step) in enumerate(self.steps):
            if policy is not None:
                n = policy.next()
                if n != torch.get_num_threads():
                    torch.set_num_threads(n)
            started = time.perf_counter()
            if self.full:
                step.step(out[0])
            else:
                rows = order[lo:hi]
                torch.index_select(self.x, 0, rows, out=self.xb[:hi - lo])
                torch.index_select(self.y, 0, rows, out=self.yb[:hi - lo])
                step.step(self.batch_losses[b])
            if policy is not None:
                self.step_ended = time.perf_counter()
                policy.record(n, self.step_ended - started, True)   # even batches: every step's time compares
        if policy is not None and policy.best != torch.get_num_threads():
            torch.set_num_threads(policy.best)
        if not self.full:
            torch.sum(self.batch_losses, 0, out=out[0])
        if self.distributed:   # the epoch's loss over all ranks' rows
            import torch.distributed as dist
            dist.all_reduce(out[:1])
        if self.scorer is not None:
            self.scorer.row(self.params.weights, self.params.biases, out=out[1:self.row_width])

    def run_chunk(self, first_epoch, n, out):
        """Epochs first_epoch .. first_epoch + n - 1, their rows into out[:n]. With a stopper the host reads
        every epoch's row (and stops early, or after a loss that is not finite); without one nothing waits
        for the device. Returns (epochs run, stopped early). The caller's torch threads are back after it."""
        before = torch.get_num_threads()
        if self.threads is not None:
            self.threads.resume(time.perf_counter() - self.step_ended)   # the caller's work since the last chunk
        try:
            for i in range(n):
                self.run(self.order(first_epoch + i), out[i])
                if self.stopper is None:
                    continue
                row = out[i, :self.row_width].tolist()
                if not math.isfinite(row[0]):
                    return i + 1, False
                if self.stopper.after_epoch(first_epoch + i, self.scorer.read(row[1:]).loss):
                    return i + 1, True
            return n, False
        finally:
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)
