"""The native backend: the compiled C++ runner (kernels/native/runner.cpp) on CPU tensors.

The torch backend's step (manualnn/backends/torch_backend.py) with no Python between its ops: the
same buffers (activations with a column of ones when the network has biases, one output error),
the same GEMMs (BLAS called directly, as torch's matmul calls it), the same optimizers (plain SGD
folded into the weight-gradient GEMM; momentum and Adam from gradient buffers, updating
``params.state``, ``params.step`` and ``params.powers`` in place). Two ways in:

- ``NativeStep``: one step on a fixed batch (the step protocol of manualnn.backends), for the
  data-parallel step, which all-reduces between ``gradients()`` and ``update()``;
- ``NativeEpochs``: whole epochs in one call (the Trainer's path on the CPU): each epoch's shuffled
  order, its batches, every step, the epoch's loss, the validation pass and early stopping.

A "sse" loss is BLAS's dot, as torch.dot computes it; a "ce" loss and an epoch's sum over batches are
accumulated in double. Subnormal floats are flushed to zero during the runner's work (see
kernels/native/step_math.h). Built on first use (see manualnn.backends.native_build).
"""
import torch

from ..spec import with_ones
from . import native_build


def _check_cpu(spec, **tensors):
    if spec.precision != "ieee":
        raise ValueError(f"precision: the native backend computes in the tensors' own dtype and supports "
                         f"only 'ieee', got {spec.precision!r}")
    for name, t in tensors.items():
        if t.device.type != "cpu":
            raise ValueError(f"{name}: the native backend runs on the CPU only, got a tensor on {t.device}")


def _step_settings(params, spec):
    """The keyword arguments both native classes take for the step's math and the optimizer's state."""
    state = params.state
    return dict(momentum_buffers=state.get("momentum_buffer", []), exp_avgs=state.get("exp_avg", []),
                exp_avg_sqs=state.get("exp_avg_sq", []), step_count=params.step, powers=params.powers,
                bias=params.bias, fold=spec.folds_sgd(params.bias),
                decayed_rows=[params.decayed_rows(i) for i in range(len(params.tensors))], grad=spec.grad,
                loss=spec.loss, reduction=spec.reduction, optimizer=spec.optimizer, lr=spec.lr,
                weight_decay=spec.weight_decay, momentum=spec.momentum, beta1=spec.betas[0], beta2=spec.betas[1],
                eps=spec.eps)


class NativeStep:
    """One training step on a fixed batch (see manualnn.backends for the protocol), run in C++.

    x [B, in (+1)] (with a last column of ones when ``params.bias``; any row stride), y [B, out]:
    CPU tensors of one dtype, float32 or float64. ``rows``: what a "mean" divides by (default B);
    ``grads``: tensors shaped like ``params.tensors`` for ``gradients()`` (without them plain SGD is
    folded into the GEMMs, and the other optimizers get buffers of their own).
    """
    name = "native"

    def __init__(self, x, y, params, spec, *, rows=None, grads=None):
        _check_cpu(spec, x=x, y=y)
        self.grads, self.layers = grads, len(params.tensors)
        self.runner = native_build.load().Step(x, y, params.tensors, grads or [], rows=float(rows or x.shape[0]),
                                               **_step_settings(params, spec))

    def step(self, loss_out):
        """Forward, loss (the batch's sum, before any reduction) into the 0-d ``loss_out``, backward, update."""
        self.runner.step(loss_out)

    def gradients(self, loss_out, ready=None):
        """Forward and loss, then every layer's gradient into ``grads`` (no update). ``ready(i)`` is called
        for every layer, last first, once the native call has written them all."""
        self.runner.gradients(loss_out)
        if ready is not None:
            for i in reversed(range(self.layers)):
                ready(i)

    def update(self):
        """Apply the optimizer from ``grads`` (after ``gradients()`` and, say, an all-reduce)."""
        self.runner.update()


class NativeEpochs:
    """Whole epochs of training in one native call (an epoch runner, see manualnn.training.epoch).

    x [N, in (+1)] and y [N, out] (float targets) are all the training rows; ``batch_size`` rows per
    step, each epoch's order drawn from ``(shuffle_seed, epoch)`` exactly as ``batches.batch_order``
    draws it; ``scorer``: the validation rows' ``metrics.Scorer`` (or None); ``stopper``: the
    early-stopping rule's ``stopping.Stopper`` (or None), whose tensors the runner updates in place;
    ``threads``: the steps' thread rule, (most, adapt) as ``training.threads.ThreadPolicy`` takes them
    (its twin, ThreadChooser in kernels/native/threads.h, decides inside the epoch loop).
    """
    name = "native"

    def __init__(self, x, y, params, spec, *, batch_size, shuffle, shuffle_seed, scorer=None, stopper=None,
                 threads=(None, False)):
        _check_cpu(spec, x=x, y=y)
        from ..training.batches import batches
        self.x, self.params, self.scorer = x, params, scorer
        self.shuffle_seed = shuffle_seed
        n = x.shape[0]
        self.full = batch_size >= n
        self.shuffled = shuffle and not self.full
        self.step_rows = [hi - lo for lo, hi, _ in batches(n, min(batch_size, n))]
        empty = x.new_empty(0, x.shape[1])
        val_x, val_y, labels = empty, y.new_empty(0, y.shape[1]), torch.empty(0, dtype=torch.int64)
        if scorer is not None:
            val_x = with_ones(scorer.rows, scorer.x.shape[1], like=x, bias=params.bias)
            val_x[:, :scorer.x.shape[1]].copy_(scorer.x)
            val_y = scorer.y
            labels = scorer.labels.contiguous() if scorer.labels is not None else labels
        self.stopper = stopper
        best, snapshot = (stopper.best, stopper.snapshot) if stopper else (torch.zeros(2, dtype=torch.float64), [])
        self.epochs = native_build.load().Epochs(
            x, y, params.tensors, batch_size=min(batch_size, n), shuffle=self.shuffled, val_x=val_x, val_y=val_y,
            val_labels=labels, patience=stopper.patience if stopper else 0, best=best,
            state=params.all_tensors() if stopper else [], snapshot=snapshot,
            most_threads=threads[0] or torch.get_num_threads(), adapt_threads=threads[1], **_step_settings(params, spec))
        self.row_width = self.epochs.row_width
        self.loss_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32

    @property
    def step_objects(self):
        return []

    def new_rows(self, n):
        """An output buffer for n epochs' rows (see training.epoch.new_rows)."""
        from ..training.epoch import new_rows
        return new_rows(n, self.row_width, self.loss_dtype, self.x.device)

    @property
    def best_threads(self):
        """The thread count the steps run with now (see training.threads)."""
        return self.epochs.best_threads

    def run_chunk(self, first_epoch, n, out):
        """Epochs first_epoch .. first_epoch + n - 1, their rows into out[:n]. Returns (epochs run, stopped
        early): fewer than n after a loss that is not finite, or when early stopping ends the run."""
        from ..training.batches import epoch_seed
        seeds = torch.tensor([epoch_seed(self.shuffle_seed, first_epoch + i) if self.shuffled else 0
                              for i in range(n)], dtype=torch.int64)
        return self.epochs.run(first_epoch, seeds, out[:n])


def fold_losses(x, y, params, spec, splits, strengths, *, epochs, threads):
    """The L2 search's fits in one native call (runner.cpp's fold_losses): for each strength C and each fold
    (rows trained on, rows held out) of ``splits``, ``params``' starting values trained ``epochs`` full-batch
    steps with weight decay C / (rows trained on), scored by the loss summed over the held-out rows. Returns
    the losses as a list [strength][fold] (inf for a fit whose training loss stopped being finite).

    x [N, in (+1)] and y [N, out] are the rows as a Trainer holds them (``trainer.runner.x``, ``trainer.y``);
    each fold's rows are laid out as a Trainer of those rows would lay them out, so that a fit's numbers are
    ``train(..., threads=1)``'s. The fits run side by side on up to ``threads`` threads, one thread each."""
    _check_cpu(spec, x=x, y=y)
    features = x.shape[1] - (1 if params.bias else 0)

    def part(index):
        rows = with_ones(len(index), features, like=x, bias=params.bias)
        rows.copy_(x[index])
        return rows, y[index].contiguous()

    trained = [part(rows) for rows, _ in splits]
    held = [part(rows) for _, rows in splits]
    settings = {k: v for k, v in _step_settings(params, spec).items()
                if k not in ("momentum_buffers", "exp_avgs", "exp_avg_sqs", "step_count", "powers", "weight_decay")}
    losses = native_build.load().fold_losses(
        [a for a, _ in trained], [b for _, b in trained], [a for a, _ in held], [b for _, b in held],
        params.tensors, [float(c) for c in strengths], epochs=int(epochs), threads=int(threads), **settings)
    k = len(splits)
    return [losses[i * k:(i + 1) * k] for i in range(len(strengths))]
