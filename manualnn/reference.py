"""The judges: the seed tutorial's loop and the ReLU-correct loop, kept plain and obvious.

Both take x [batch, features], y [batch, out] and weights [w1, w2, ...] in the seed's layout
(w_i is in_features x out_features, no bias), train on private copies, and return the loss of
every epoch (taken before that epoch's update, as the seed prints it) and the final weights.
Tests run them in float64 on the CPU and judge every backend against them.
"""
from typing import List, NamedTuple

import torch


class ReferenceRun(NamedTuple):
    losses: List[float]
    weights: List[torch.Tensor]


def tutorial_loop(x, y, weights, epochs=20, learning_rate=1e-6):
    """The seed's loop, verbatim but generalised to any number of hidden layers.

    Its backward clamps the gradient's *values* (``grad_h.clamp_(min=0)``) instead of masking
    by the forward activation: that is the seed's flaw, reproduced on purpose.
    """
    return _loop(x, y, weights, epochs, learning_rate, relu_backward=False)


def relu_loop(x, y, weights, epochs=20, learning_rate=1e-6):
    """The same loop with the correct ReLU backward: ``grad_h[h_pre <= 0] = 0``."""
    return _loop(x, y, weights, epochs, learning_rate, relu_backward=True)


def reference_loop(x, y, weights, *, epochs=20, lr=1e-6, grad="relu"):
    """Dispatch on the gradient mode: "relu" or "tutorial"."""
    if grad == "relu":
        return relu_loop(x, y, weights, epochs, lr)
    if grad == "tutorial":
        return tutorial_loop(x, y, weights, epochs, lr)
    raise ValueError(f"grad: expected 'relu' or 'tutorial', got {grad!r}")


def minibatch_reference_loop(x, y, weights, *, epochs=20, lr=1e-6, grad="relu", batch_size=None, order=None):
    """The mini-batch loop: every epoch walks the rows in batches of ``batch_size``; each batch is
    one step of the loop above (forward, loss, backward, update); the epoch's loss is the sum of its
    batches' losses, each before its own update. ``order(epoch)`` gives the epoch's row order
    (default: row order). One batch of all rows is exactly ``reference_loop``.
    """
    if grad not in ("relu", "tutorial"):
        raise ValueError(f"grad: expected 'relu' or 'tutorial', got {grad!r}")
    n = x.shape[0]
    batch_size = batch_size or n
    ws = [w.clone() for w in weights]
    losses = []
    for epoch in range(epochs):
        rows = order(epoch) if order is not None else torch.arange(n)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = rows[start:start + batch_size]
            total += _step(x[idx], y[idx], ws, lr, relu_backward=grad == "relu")
        losses.append(total)
    return ReferenceRun(losses, ws)


def _loop(x, y, weights, epoch_n, learning_rate, relu_backward):
    ws = [w.clone() for w in weights]
    losses = [_step(x, y, ws, learning_rate, relu_backward) for _ in range(epoch_n)]
    return ReferenceRun(losses, ws)


def _step(x, y, ws, learning_rate, relu_backward):
    """One step on (x, y): updates ``ws`` in place, returns the loss before the update."""
    # forward: h = clamp(h_prev @ w, min=0) for every hidden layer, then the output layer
    hs, h_pres = [x], [None]
    for w in ws[:-1]:
        h_pre = torch.mm(hs[-1], w)
        h1 = h_pre.clamp(min=0)
        hs.append(h1)
        h_pres.append(h_pre)
    y_pred = hs[-1].mm(ws[-1])

    loss = (y_pred - y).pow(2).sum()

    # backward: every gradient from the old weights, then every update (the seed's order)
    grad_y_pred = 2 * (y_pred - y)
    grads = [None] * len(ws)
    grad = grad_y_pred
    for i in reversed(range(len(ws))):
        grads[i] = torch.mm(hs[i].t(), grad)
        if i > 0:
            grad_h = grad.clone()
            grad_h = torch.mm(grad_h, ws[i].t())
            if relu_backward:
                grad_h[h_pres[i] <= 0] = 0
            else:
                grad_h.clamp_(min=0)
            grad = grad_h

    for w, g in zip(ws, grads):
        w -= learning_rate * g
    return loss.item()
