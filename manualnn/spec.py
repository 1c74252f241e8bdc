"""What one training step computes, whatever runs it: the step's specification and the parameters.

- ``StepSpec``: the gradient mode, the loss and its reduction, the optimizer and its settings, and
  the matmul precision. Every backend implements exactly this; ``reference.py`` is the same math
  written plainly, and the tests judge every backend against it.
- ``Params``: the network's parameters as the backends see them: one tensor per layer,
  ``[in, out]`` (the seed's layout), or ``[in + 1, out]`` with the bias as the last row when the
  network has biases. A layer then computes ``[h, 1] @ p``: the bias is a weight on a column of
  ones, so its gradient is that row of ``[h, 1]^T @ grad`` and the optimizer needs no second case.
  ``Params`` also holds the optimizer's state (momentum buffers, Adam's moments and step count).

The loss of a batch of ``rows`` rows, with ``z`` the output layer's values and ``y`` the targets:

- "sse": ``sum((z - y)^2)``; the output error is ``e = z - y`` and ``dL/dz = 2 e``.
- "ce" (softmax cross-entropy, y one-hot or any rows of probabilities): ``sum_rows(logsumexp(z) -
  y . z)``; the output error is ``e = softmax(z) - y`` and ``dL/dz = e``.
- reduction "sum" takes these sums; "mean" divides them (and so every gradient) by ``rows``.

So every weight gradient is ``grad_scale(rows) * a^T @ e``: backends keep ``e`` and put the
constant where it costs least (the seed's ``2 * lr`` folded into one matmul's alpha).
"""
import math
import numbers
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch

# What `manualnn train --data` and MLP.fit use unless told otherwise: chosen by sweeps over real data sets,
# three splits each and seeds 0-9, against scikit-learn's MLP and a linear model, and confirmed on sets
# left out of the sweeps (README, "How the defaults were chosen"). "patience", "val_split" and
# "weight_decay" are None: they follow from the data's rows, by data_settings() below.
DATA_DEFAULTS = {"lr": 3e-3, "optimizer": "adam", "reduction": "mean", "batch_size": 200, "hidden": [512],
                 "patience": None, "epochs": 200, "val_split": None, "weight_decay": None}
# data_settings()' rule: hold out VAL_SPLIT of the rows only where that makes at least VAL_ROWS_MIN rows (a
# smaller validation set is too noisy to stop on, and the rows are worth more to training), and stop after
# PATIENCE_STEPS optimizer steps' worth of epochs without a better validation loss (at least PATIENCE_EPOCHS);
# without a validation split, L2 of WEIGHT_DECAY_ROWS[task] / training rows (it fades as the data grows), and for
# classes above L2_FADE_ROWS training rows that times L2_FADE_ROWS / rows (1500 / rows², fading faster: the
# tuned sets of 750 rows did better with less, the 112-row ones needed 10 / rows; see default_weight_decay).
VAL_SPLIT, VAL_ROWS_MIN, PATIENCE_STEPS, PATIENCE_EPOCHS = 0.2, 200, 100, 5
WEIGHT_DECAY_ROWS = {"classify": 10.0, "regress": 30.0}
L2_FADE_ROWS = {"classify": 150, "regress": None}
# Below CV_ROWS training rows (and with no L2 given) the L2 is C / rows for the C of CV_STRENGTHS that
# CV_FOLDS-fold cross-validation prefers (manualnn/training/selection.py): one C does not suit every set
# of a few dozen rows, and fits of so few rows are quick.
CV_ROWS, CV_FOLDS, CV_STRENGTHS = 50, 3, (3.0, 10.0, 30.0, 100.0)
CV_EPOCHS = DATA_DEFAULTS["epochs"]   # each search fit's epochs, whatever the run's (see selection.py)
# A regression of up to LINEAR["rows"] training rows (one batch of the default 200; no L2 given), where the
# hidden layers, lr and epochs are left to the defaults: the same folds also weigh a network with no hidden
# layer (ridge regression) with L2 C / rows for C in LINEAR["strengths"], trained LINEAR["epochs"] full-batch
# epochs at LINEAR["lr"] (the rate and length it needs to converge on standardized features) against the
# hidden layers (at their searched L2 below CV_ROWS rows, the rule's above), and the lower validation loss
# wins: on a few dozen noisy values a line is often the better model. Not for classes: there the evidence
# was one set better and one worse, at 2-3x the time of every small set (README, "How the defaults were chosen").
LINEAR = {"rows": 200, "lr": 0.1, "epochs": 500, "strengths": (0.1, 1.0, 3.0, 10.0, 30.0)}
# scikit-learn's MLPClassifier/MLPRegressor defaults (--sklearn-defaults): 100 hidden units, Adam lr 1e-3,
# batches of min(200, N), alpha 1e-4 (its L2 on the mean loss is alpha / batch rows), 200 epochs, every row
# trained on. Not reproduced: its stop when the training loss gains less than 1e-4 for 10 epochs, its
# Glorot-uniform initialization, and its unscaled regression targets.
SKLEARN_DEFAULTS = {"lr": 1e-3, "optimizer": "adam", "reduction": "mean", "batch_size": 200, "hidden": [100],
                    "patience": None, "epochs": 200, "val_split": 0.0, "weight_decay": None}
SKLEARN_ALPHA = 1e-4


def data_settings(rows, task, *, batch_size=None, val_split=None, weight_decay=None, patience=None, sklearn=False):
    """The held-out fraction, the L2 and the patience a run on ``rows`` rows of data gets; a value given is kept.

    ``task``: "classify" or "regress"; ``batch_size``: the rows per step (default DATA_DEFAULTS'). Returns
    {"val_split", "weight_decay", "patience"}: patience in epochs, None without a validation split. With
    ``sklearn=True``, scikit-learn's MLP defaults (SKLEARN_DEFAULTS) instead of manualnn's. Below CV_ROWS
    training rows the weight decay returned is the rule's, which training.selection replaces with the
    cross-validated choice where it searches.
    """
    if task not in WEIGHT_DECAY_ROWS:
        raise ValueError(f"task: expected 'classify' or 'regress', got {task!r}")
    rows = int(rows)
    defaults = SKLEARN_DEFAULTS if sklearn else DATA_DEFAULTS
    batch = min(int(batch_size or defaults["batch_size"]), max(rows, 1))
    if val_split is None:   # a patience asked for needs a validation split to watch
        big = round(rows * VAL_SPLIT) >= VAL_ROWS_MIN
        val_split = defaults["val_split"] if defaults["val_split"] is not None else VAL_SPLIT if big else 0.0
        if patience is not None and not val_split:
            val_split = VAL_SPLIT
    train_rows = max(rows - round(rows * val_split), 1)
    if weight_decay is None:   # without a validation split to stop on, L2 is what holds overfitting back
        weight_decay = SKLEARN_ALPHA / min(batch, train_rows) if sklearn else \
            0.0 if val_split else default_weight_decay(train_rows, task)
    if patience is None and val_split and not sklearn:
        patience = patience_for(train_rows, batch)
    return {"val_split": val_split, "weight_decay": weight_decay, "patience": patience}


def default_weight_decay(train_rows, task):
    """The L2 of a run without a validation split: WEIGHT_DECAY_ROWS[task] / rows, and for classes above
    L2_FADE_ROWS[task] rows that times L2_FADE_ROWS / rows (10 / rows up to 150 rows, 1500 / rows² above)."""
    rows = max(int(train_rows), 1)
    fade = L2_FADE_ROWS[task]
    return WEIGHT_DECAY_ROWS[task] / rows * (min(1.0, fade / rows) if fade else 1.0)


def patience_for(train_rows, batch_size):
    """The default patience in epochs: PATIENCE_STEPS optimizer steps' worth, at least PATIENCE_EPOCHS."""
    steps_per_epoch = -(-int(train_rows) // max(1, min(int(batch_size), int(train_rows))))
    return max(PATIENCE_EPOCHS, -(-PATIENCE_STEPS // steps_per_epoch))


GRAD_MODES = ("relu", "tutorial")
LOSSES = ("sse", "ce")
REDUCTIONS = ("sum", "mean")
OPTIMIZERS = ("sgd", "momentum", "adam")
PRECISIONS = ("ieee", "tf32", "bf16")
# Every other choice a user names, written once (the command line, the estimators, the checks and the
# checkpoint's config check read them from here).
BACKENDS = ("auto", "torch", "triton", "native")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
INITS = ("randn", "kaiming")
TASKS = ("auto", "classify", "regress")
TASKS_USED = TASKS[1:]     # what "auto" became, as a checkpoint keeps it


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_number(name, value, *, low=None, high=None, low_open=False, high_open=False):
    """A finite real number within [low, high] (or the open ends asked for); returns it as a float."""
    ends = {(False, False): "[{}, {}]", (True, False): "({}, {}]", (False, True): "[{}, {})", (True, True): "({}, {})"}
    what = "a finite number" if low is None and high is None else (
        "a positive finite number" if low == 0 and low_open and high is None else
        f"a number > {low}" if high is None and low_open else f"a number >= {low}" if high is None
        else "a number in " + ends[low_open, high_open].format(low, high))
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected {what}, got {type(value).__name__} {value!r}")
    value = float(value)
    bad = not math.isfinite(value) or (low is not None and (value <= low if low_open else value < low)) \
        or (high is not None and (value >= high if high_open else value > high))
    if bad:
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    return value


@dataclass(frozen=True)
class StepSpec:
    """One training step's math. Checked when made; every error names the argument.

    - ``lr``: the learning rate (> 0).
    - ``grad``: "relu" (the correct ReLU backward, equal to autograd) or "tutorial" (the seed's clamp
      of the gradient's values).
    - ``loss``: "sse" (sum of squares) or "ce" (softmax cross-entropy); ``reduction``: "sum" or "mean"
      (over the rows of the batch).
    - ``optimizer``: "sgd" (``w -= lr * g``), "momentum" (torch.optim.SGD's heavy ball: ``m = momentum
      * m + g; w -= lr * m``) or "adam" (torch.optim.Adam: ``betas``, ``eps``, bias-corrected).
    - ``weight_decay``: L2, added to the gradient as ``weight_decay * w`` (as torch.optim does) for the
      weights; biases are not decayed.
    - ``precision``: the matmuls' precision on the Triton backend: "ieee" fp32, "tf32" or "bf16".
    """
    lr: float = 1e-6
    grad: str = "relu"
    loss: str = "sse"
    reduction: str = "sum"
    optimizer: str = "sgd"
    momentum: float = 0.9
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    precision: str = "ieee"

    def __post_init__(self):
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731  (frozen)
        put("lr", check_number("lr", self.lr, low=0, low_open=True))
        check_choice("grad", self.grad, GRAD_MODES)
        check_choice("loss", self.loss, LOSSES)
        check_choice("reduction", self.reduction, REDUCTIONS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("precision", self.precision, PRECISIONS)
        put("momentum", check_number("momentum", self.momentum, low=0, high=1, high_open=True))
        if isinstance(self.betas, (str, bytes)) or not hasattr(self.betas, "__len__") or len(self.betas) != 2:
            raise TypeError(f"betas: expected a pair (beta1, beta2), got {self.betas!r}")
        put("betas", tuple(check_number(f"betas[{i}]", b, low=0, high=1, high_open=True)
                           for i, b in enumerate(self.betas)))
        put("eps", check_number("eps", self.eps, low=0, low_open=True))
        put("weight_decay", check_number("weight_decay", self.weight_decay, low=0))

    @property
    def error_factor(self):
        """dL/dz = error_factor * e (before the reduction): 2 for the sum of squares, 1 for cross-entropy."""
        return 2.0 if self.loss == "sse" else 1.0

    def grad_scale(self, rows):
        """The factor from ``a^T @ e`` to the weight gradient for a batch of ``rows`` rows."""
        return self.error_factor / rows if self.reduction == "mean" else self.error_factor

    def folds_sgd(self, bias):
        """Plain SGD goes into the weight-gradient matmul itself (``p = decay * p - lr * a^T @ g``): no
        gradient buffer, one pass less. Not with weight decay on a network with biases: the bias row must
        not decay, and the fold's decay reaches every row."""
        return self.optimizer == "sgd" and not (self.weight_decay and bias)

    @property
    def state_names(self):
        """The optimizer's buffers per layer, each shaped like the layer's parameter."""
        return {"sgd": (), "momentum": ("momentum_buffer",), "adam": ("exp_avg", "exp_avg_sq")}[self.optimizer]


def with_ones(rows, cols, *, like, bias=True):
    """A new [rows, cols + 1] tensor (``like``'s dtype and device) whose last column is ones, for a layer's
    input ``[h, 1]``; its rows start 16-byte aligned (the buffer is padded), as fast kernels want.
    Without ``bias``, a plain [rows, cols] tensor."""
    if not bias:
        return torch.empty(rows, cols, dtype=like.dtype, device=like.device)
    per_16_bytes = max(1, 16 // like.element_size())
    padded = -(-(cols + 1) // per_16_bytes) * per_16_bytes
    buffer = torch.zeros(rows, padded, dtype=like.dtype, device=like.device)
    buffer[:, cols] = 1.0
    return buffer[:, :cols + 1]


class Params:
    """A network's parameters in the backends' layout, and its optimizer state.

    ``tensors[i]`` is ``[in_i (+1), out_i]``: the weight, and with ``bias`` the bias as its last row.
    ``state[name][i]``: optimizer buffers (zeros at first) and ``step``: a 0-d int64 tensor counting
    the updates made (Adam's bias correction reads it on the device, so a CUDA graph can replay it).
    """

    def __init__(self, tensors: List[torch.Tensor], bias: bool, spec: StepSpec):
        self.tensors, self.bias = tensors, bool(bias)
        self.state = {name: [torch.zeros_like(p) for p in tensors] for name in spec.state_names}
        self.step = torch.zeros((), dtype=torch.int64, device=tensors[0].device)
        # Adam's beta1^t and beta2^t, multiplied up on the device each step (float64: exact enough that
        # 1 - beta^t keeps fp32's precision; a checkpoint keeps them, so a resumed run is bitwise the same)
        self.powers = torch.ones(2, dtype=torch.float64, device=tensors[0].device)
        self.addresses = [t.data_ptr() for t in self.all_tensors()]

    @classmethod
    def from_weights(cls, weights, biases, spec, *, copy=True):
        """Build from weights ``[in, out]`` and biases ``[out]`` (None: a network without biases)."""
        if biases is None:
            tensors = [w.detach().clone() if copy else w.detach() for w in weights]
            return cls([t.contiguous() for t in tensors], False, spec)
        tensors = [torch.cat([w.detach(), b.detach().reshape(1, -1)], 0) for w, b in zip(weights, biases)]
        return cls(tensors, True, spec)

    @property
    def device(self):
        return self.tensors[0].device

    def decayed_rows(self, i):
        """The leading rows of layer i's parameter that weight decay reaches: its weight's, not the bias row."""
        return self.tensors[i].shape[0] - 1 if self.bias else self.tensors[i].shape[0]

    def weight(self, i):
        """Layer i's weight ``[in, out]`` (a view)."""
        p = self.tensors[i]
        return p[:-1] if self.bias else p

    def bias_of(self, i) -> Optional[torch.Tensor]:
        """Layer i's bias ``[out]`` (a view), or None."""
        return self.tensors[i][-1] if self.bias else None

    @property
    def weights(self):
        return [self.weight(i) for i in range(len(self.tensors))]

    @property
    def biases(self):
        return [self.bias_of(i) for i in range(len(self.tensors))] if self.bias else None

    def all_tensors(self):
        """Every tensor a run's state holds, in a fixed order: the parameters, the optimizer's buffers, its
        step count and Adam's beta powers."""
        return self.tensors + [t for buffers in self.state.values() for t in buffers] + [self.step, self.powers]

    def snapshot(self):
        """Copies of the parameters and the optimizer state, for ``restore``."""
        return [t.clone() for t in self.all_tensors()]

    @torch.no_grad()
    def restore(self, snapshot):
        for t, s in zip(self.all_tensors(), snapshot):
            t.copy_(s)

    def check_unmoved(self):
        """The backends' steps hold this memory (the Triton steps by address): refuse a parameter or an
        optimizer buffer that was replaced or reallocated since they were built, before it is silently
        not trained."""
        now = [t.data_ptr() for t in self.all_tensors()]
        if now != self.addresses:
            moved = next(i for i, (a, b) in enumerate(zip(now, self.addresses)) if a != b)
            what = f"the tensor of layer {moved}" if moved < len(self.tensors) else "an optimizer state tensor"
            raise RuntimeError(f"params: {what} was reallocated after the trainer was built (its steps hold the old "
                               f"memory); build a new Trainer instead")

    @torch.no_grad()
    def load_weights(self, weights, biases=None):
        """Copy weights [in, out] (and biases [out], exactly when this network has them) in, checked."""
        if len(weights) != len(self.tensors):
            raise ValueError(f"state: expected {len(self.tensors)} weight tensors, got {len(weights)}")
        if (biases is not None) != self.bias:
            raise ValueError(f"state: expected {'biases' if self.bias else 'no biases'}, got "
                             f"{'biases' if biases is not None else 'none'}")
        for i, s in enumerate(weights):
            w = self.weight(i)
            if tuple(s.shape) != tuple(w.shape):
                raise ValueError(f"state['weights'][{i}]: expected shape {tuple(w.shape)}, got {tuple(s.shape)}")
            w.copy_(s)
            if biases is not None:
                self.bias_of(i).copy_(biases[i])

    def state_dict(self, tensors=None):
        """The optimizer state on the CPU (what a checkpoint keeps); of ``tensors`` (ordered as
        ``all_tensors()``, a snapshot say) instead of this network's own when given."""
        tensors = self.all_tensors() if tensors is None else tensors
        at, buffers = len(self.tensors), {}
        for name, own in self.state.items():
            buffers[name] = [t.detach().cpu().clone() for t in tensors[at:at + len(own)]]
            at += len(own)
        step, powers = tensors[at], tensors[at + 1]
        return {"step": int(step), "powers": powers.tolist(), **buffers}

    def weights_of(self, tensors):
        """(weights [in, out], biases [out] or None) on the CPU of ``tensors`` ordered as ``all_tensors()``."""
        layers = tensors[:len(self.tensors)]
        weights = [(p[:-1] if self.bias else p).detach().cpu().clone() for p in layers]
        return weights, [p[-1].detach().cpu().clone() for p in layers] if self.bias else None

    @torch.no_grad()
    def load_state_dict(self, state):
        self.step.fill_(int(state.get("step", 0)))
        self.powers.copy_(torch.tensor(state.get("powers", [1.0, 1.0]), dtype=torch.float64))
        for name, buffers in self.state.items():
            saved = state.get(name)
            if saved is None:   # a checkpoint of another optimizer: start this one's buffers afresh
                for t in buffers:
                    t.zero_()
                continue
            for t, s in zip(buffers, saved):
                t.copy_(s)
