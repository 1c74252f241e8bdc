"""One epoch of training as plain calls on buffers made once, so a CUDA graph can capture it whole.

An epoch walks the rows in batches (in the order given, a device tensor; None: the full batch);
each batch is one backend step. The epoch writes one row of its output buffer: the sum of its
batches' losses (over every rank), then the validation scorer's row (see train/metrics.py).
"""
import torch

from ..backends import make_step
from .batches import batches
from .parallel import AllReduceStep, flat_gradients

SLOT = 4   # loss slots are 4 floats apart: every slot 16-byte aligned, as Triton's kernels specialise on it


class EpochRunner:
    """x [N, in (+1)] and y [N, out] on the device (x with its column of ones when params.bias).

    ``rank``/``world``: this rank's share of every batch (distributed=True: the steps all-reduce).
    ``scorer``: the validation rows' Scorer, or None. ``row_width``: the floats one epoch writes.
    """

    def __init__(self, x, y, params, spec, backend, *, batch_size, scorer=None, distributed=False, rank=0, world=1,
                 overlap=True, step_options=None):
        self.x, self.y, self.params, self.spec = x, y, params, spec
        self.scorer, self.distributed = scorer, distributed
        n = x.shape[0]
        self.full = batch_size >= n
        options = step_options or {}
        steps = {}

        def make(xb, yb, rows):
            if not self.distributed:
                return make_step(backend, xb, yb, params, spec, rows=rows, **options)
            flat, grads = flat_gradients(params)
            return AllReduceStep(make_step(backend, xb, yb, params, spec, rows=rows, grads=grads, **options),
                                 flat, grads, overlap=overlap)

        plan = batches(n, n if self.full else batch_size, rank, world)
        if self.full:
            lo, hi, rows = plan[0]
            self.steps = [(lo, hi, make(x[lo:hi], y[lo:hi], rows))]
        else:
            # this rank's rows of each batch are gathered into buffers made once; a batch with fewer rows
            # (the last one, or a smaller shard) uses their first rows, with its own step (same params)
            largest = max(hi - lo for lo, hi, _ in plan)
            # with x's row stride: [x, 1] is a view of a padded buffer, and its gathered rows stay aligned
            self.xb = x.new_zeros(largest, x.stride(0))[:, :x.shape[1]]
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

    @property
    def step_objects(self):
        """The distinct backend steps (one per batch size)."""
        return list({id(s): s for _, _, s in self.steps}.values())

    def new_rows(self, n):
        """An [n, width] output buffer whose rows start 16-byte aligned (its loss slots)."""
        width = -(-self.row_width // SLOT) * SLOT
        return torch.zeros(n, width, dtype=self.loss_dtype, device=self.x.device)

    def run(self, order, out):
        """One epoch over the rows in ``order`` (None: the full batch, in place); its row into ``out``."""
        if self.full:
            self.steps[0][2].step(out[0])
        else:
            for b, (lo, hi, step) in enumerate(self.steps):
                rows = order[lo:hi]
                torch.index_select(self.x, 0, rows, out=self.xb[:hi - lo])
                torch.index_select(self.y, 0, rows, out=self.yb[:hi - lo])
                step.step(self.batch_losses[b])
            torch.sum(self.batch_losses, 0, out=out[0])
        if self.distributed:   # the epoch's loss over all ranks' rows
            import torch.distributed as dist
            dist.all_reduce(out[:1])
        if self.scorer is not None:
            self.scorer.row(self.params.weights, self.params.biases, out=out[1:self.row_width])
