"""How a network is scored: the loss of ``manualnn.spec`` on given rows, accuracy for classes, and
RMSE and R^2 for values. ``evaluate()`` is the public entry; the Trainer's validation pass uses the
same ``Scorer`` on the device, every epoch, without waiting for it."""
from typing import NamedTuple, Optional

import torch

from ..backends.torch_backend import forward
from ..data import as_targets, is_label_tensor


class Evaluation(NamedTuple):
    """``loss``: the training loss's definition (sum of squares or cross-entropy, summed over the
    rows, or their mean); ``accuracy``: the fraction of rows whose largest output is the true class
    (None for values); ``rmse`` and ``r2``: for values (None for classes; R^2 averaged over outputs,
    as scikit-learn's r2_score does); ``samples``: the rows scored."""
    loss: float
    accuracy: Optional[float]
    rmse: Optional[float]
    r2: Optional[float]
    samples: int


def targets_for(name, x, y, out):
    """y as float targets [N, out] on x's device and dtype, and its class labels (or None).

    Integer labels [N] become one-hot rows; one-hot float rows keep their values and get their argmax
    as labels; anything else is a value target (labels None)."""
    if is_label_tensor(y):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if y.device != x.device:
            raise ValueError(f"{name}: expected device {x.device} (the device of x), got {y.device}")
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"{name}: expected {x.shape[0]} labels (the rows of x), got shape {tuple(y.shape)}")
        y, labels = as_targets(y, out, name)
        return y.to(x.dtype), labels
    return as_targets(y, y.shape[1] if isinstance(y, torch.Tensor) and y.dim() == 2 else out, name)


class Scorer:
    """Scores fixed rows (x, targets) on the device: ``row(weights, biases)`` is a 1-D tensor
    ``[loss, right answers, squared error of each output...]`` that nothing waits for; ``read(row)``
    turns one, on the host, into an Evaluation."""

    def __init__(self, x, y, labels, loss="sse", reduction="sum"):
        self.x, self.y, self.labels = x, y, labels
        self.loss, self.reduction = loss, reduction
        self.rows, self.outputs = x.shape[0], y.shape[1]
        self.values = labels is None   # a regression: RMSE and R^2 (its per-output sums of squares)
        self.width = 2 + (self.outputs if self.values else 0)
        if self.values:
            y64 = y.double()
            self.total_squares = ((y64 - y64.mean(0)) ** 2).sum(0).tolist()   # R^2's denominator, per output

    def row(self, weights, biases=None, out=None):
        z = forward(self.x, weights, biases)
        out = torch.zeros(self.width, dtype=z.dtype, device=z.device) if out is None else out
        if self.loss == "sse":
            diff = z - self.y
            squares = diff * diff
            out[0] = squares.sum()
        else:
            out[0] = -(self.y * torch.log_softmax(z, dim=1)).sum()
            squares = (z - self.y) ** 2 if self.values else None
        if self.values:
            out[2:2 + self.outputs] = squares.sum(0)
        else:
            out[1] = (z.argmax(1) == self.labels).sum()   # a count (exact in float32 up to 2**24)
        return out

    def read(self, row, target_scale=None) -> Evaluation:
        """An Evaluation from a row (a list of floats); ``target_scale``: the std the targets were divided
        by, per output, to report RMSE in the original units."""
        loss = row[0] / self.rows if self.reduction == "mean" else row[0]
        if not self.values:
            return Evaluation(loss, row[1] / self.rows, None, None, self.rows)
        sse = row[2:2 + self.outputs]
        scale = list(target_scale) if target_scale is not None else [1.0] * self.outputs
        rmse = (sum(s * c * c for s, c in zip(sse, scale)) / (self.rows * self.outputs)) ** 0.5
        r2s = [1.0 - s / t if t > 0 else (1.0 if s == 0 else 0.0) for s, t in zip(sse, self.total_squares)]
        return Evaluation(loss, None, rmse, sum(r2s) / len(r2s), self.rows)


def validation_scorer(val_data, x, weights, biases, spec):
    """The Scorer of ``val_data=(x_val, y_val)``, checked against the training x and the network."""
    from .. import checks
    if not isinstance(val_data, (list, tuple)) or len(val_data) != 2:
        raise TypeError(f"val_data: expected a pair (x_val, y_val), got {type(val_data).__name__}")
    xv, yv = val_data
    out = weights[-1].shape[1]
    yv, labels = targets_for("val_data[1]", xv, yv, out)
    if isinstance(xv, torch.Tensor) and (xv.dim() != 2 or xv.shape[1] != x.shape[1]):
        raise ValueError(f"val_data[0]: expected a 2-D tensor with {x.shape[1]} columns (like x), got shape "
                         f"{tuple(xv.shape)}")
    if isinstance(xv, torch.Tensor) and (xv.dtype != x.dtype or xv.device != x.device):
        raise ValueError(f"val_data: expected {x.dtype} tensors on {x.device} (like x), got {xv.dtype} on {xv.device}")
    checks.check_tensors(xv, yv, weights, names=("val_data[0]", "val_data[1]"), biases=biases)
    if labels is None and yv.shape[1] >= 2:   # one-hot float targets are scored for accuracy too
        labels = targets_for("val_data[1]", xv, yv, out)[1]
    if spec.loss == "ce":
        check_probabilities("val_data[1]", yv, labels)
    return Scorer(xv.detach(), yv.detach(), labels, spec.loss, spec.reduction)


def check_probabilities(name, y, labels):
    """Cross-entropy needs class labels, or target rows of probabilities (>= 0, summing to 1)."""
    if labels is not None:
        return
    sums = y.double().sum(1)
    if bool((y < 0).any()) or not bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-5)):
        raise ValueError(f"{name}: loss 'ce' needs class labels [N] or rows of probabilities (>= 0, summing to 1); "
                         f"got values (use loss 'sse' for regression)")


@torch.no_grad()
def evaluate(model, x, y, *, loss=None, reduction=None, target_scale=None) -> Evaluation:
    """Score a model (an ``MLP``, or a list of weights) on ``x`` and targets or class labels ``y``.

    ``loss`` / ``reduction``: as trained (default: an MLP's own settings after ``fit``, else "sse" and
    "sum"). Returns Evaluation(loss, accuracy, rmse, r2, samples): accuracy for class labels (integers
    [N] or one-hot rows), RMSE and R^2 for values.
    """
    from .. import checks
    if hasattr(model, "weights"):
        weights = [w.detach() for w in model.weights]
        biases = [b.detach() for b in model.biases] if getattr(model, "biases", None) is not None else None
        loss = loss or getattr(model, "loss", None)
        reduction = reduction or getattr(model, "reduction", None)
    else:
        weights, biases = [w.detach() for w in model], None
    loss, reduction = loss or "sse", reduction or "sum"
    y, labels = targets_for("y", x, y, weights[-1].shape[1] if weights else 0)
    checks.check_tensors(x, y, weights, biases=biases)
    scorer = Scorer(x, y, labels, loss, reduction)
    return scorer.read(scorer.row(weights, biases).tolist(), target_scale)


@torch.no_grad()
def dead_network(x, params):
    """A warning when a trained network is dead: a hidden layer that is 0 on every row of ``x``, or
    outputs that are the same for every row (with no biases a dead ReLU network outputs exactly 0,
    and so trains no further, silently). None when it is alive."""
    h = x
    advice = "try a smaller lr, bias=True, optimizer='adam' or reduction='mean'"
    for i in range(len(params.tensors)):
        b = params.bias_of(i)
        z = h @ params.weight(i) if b is None else torch.addmm(b, h, params.weight(i))
        if i == len(params.tensors) - 1:
            if h.shape[0] > 1 and bool((z == z[:1]).all()):
                return f"the outputs are the same for every training row (the network ignores its input); {advice}"
            return None
        h = z.clamp_(min=0)
        if not bool(h.any()):
            return (f"every unit of hidden layer {i + 1} is 0 on every training row (the network is dead: its output "
                    f"no longer depends on the input); {advice}")
