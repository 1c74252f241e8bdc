"""A Trainer's inputs, checked and put in the form the steps take; every error names the argument."""
import torch

from .. import checks
from .metrics import check_probabilities, targets_for


def checked_inputs(x, y, weights, biases, bias, loss):
    """(x, y as float targets [N, out], weights as a list, biases or None): numpy x and y become tensors of the
    weights' dtype (integer labels stay integers, then one-hot rows), ``bias=True`` without ``biases`` gives
    zero biases, and everything is checked against everything else (shapes, dtypes, devices, finiteness;
    for "ce", targets that are labels or probabilities)."""
    weights = list(weights) if isinstance(weights, (list, tuple)) else weights
    tensors = isinstance(weights, list) and bool(weights) and all(isinstance(w, torch.Tensor) for w in weights)
    if bias and biases is None and tensors:
        biases = [torch.zeros(w.shape[1], dtype=w.dtype, device=w.device) for w in weights]
    if tensors:
        x, y = (_from_numpy(a, weights[0], keep_ints=keep) for a, keep in ((x, False), (y, True)))
    out = weights[-1].shape[1] if tensors and weights[-1].dim() == 2 else 0
    y, labels = targets_for("y", x, y, out)
    checks.check_tensors(x, y, weights, biases=biases if bias else None)
    if loss == "ce":
        check_probabilities("y", y, labels)
    return x, y, weights, biases if bias else None


def _from_numpy(a, like, keep_ints):
    """A numpy array as a tensor on ``like``'s device, in its dtype (integers kept as they are if asked)."""
    if type(a).__module__ != "numpy":
        return a
    return torch.as_tensor(a, device=like.device, dtype=None if keep_ints and a.dtype.kind in "iu" else like.dtype)
