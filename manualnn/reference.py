"""The judges: the seed tutorial's loop, the ReLU-correct loop, and the general reference run, kept plain.

All take x [batch, features], y [batch, out] and weights [w1, w2, ...] in the seed's layout
(w_i is in_features x out_features), train on private copies, and return the loss of every epoch
(taken before that epoch's update, as the seed prints it) and the final weights. Tests run them in
float64 on the CPU and judge every backend against them; ``reference_run`` is itself checked
against torch.autograd and torch.optim (tests/test_reference.py).
"""
import itertools
from typing import List, NamedTuple, Optional

import torch

from .spec import StepSpec


class ReferenceRun(NamedTuple):
    losses: List[float]
    weights: List[torch.Tensor]
    biases: Optional[List[torch.Tensor]] = None


def tutorial_loop(x, y, weights, epochs=20, lr=1e-6):
    """The seed's loop, verbatim but generalised to any number of hidden layers.

    Its backward clamps the gradient's *values* (``grad_h.clamp_(min=0)``) instead of masking
    by the forward activation: that is the seed's flaw, reproduced on purpose.
    """
    return _loop(x, y, weights, epochs, lr, relu_backward=False)


def relu_loop(x, y, weights, epochs=20, lr=1e-6):
    """The same loop with the correct ReLU backward: ``grad_h[h_pre <= 0] = 0``."""
    return _loop(x, y, weights, epochs, lr, relu_backward=True)


def reference_loop(x, y, weights, *, epochs=20, lr=1e-6, grad="relu"):
    """Dispatch on the gradient mode: "relu" or "tutorial"."""
    if grad == "relu":
        return relu_loop(x, y, weights, epochs, lr)
    if grad == "tutorial":
        return tutorial_loop(x, y, weights, epochs, lr)
    raise ValueError(f"grad: expected 'relu' or 'tutorial', got {grad!r}")


def _loop(x, y, weights, epoch_n, lr, relu_backward):
    ws = [w.clone() for w in weights]
    losses = [_seed_step(x, y, ws, lr, relu_backward) for _ in range(epoch_n)]
    return ReferenceRun(losses, ws)


def _seed_step(x, y, ws, lr, relu_backward):
    """One step of the seed's loop on (x, y): updates ``ws`` in place, returns the loss before the update."""
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
        w -= lr * g
    return loss.item()


def reference_run(x, y, weights, biases=None, *, epochs=20, spec=None, batch_size=None, order=None, **spec_args):
    """The general reference: any loss, reduction, optimizer and mini-batching, written plainly.

    ``spec`` (or its fields as keywords: ``lr=``, ``loss=``, ``optimizer=``, ...) is a StepSpec;
    ``biases``: one [out] tensor per layer, or None for a network without biases. Every epoch walks
    the rows in ``order(epoch)`` (default row order) in the fewest batches of at most ``batch_size`` rows
    (default all), their sizes as even as the rows allow (225 rows by 200: 113 then 112); each
    batch is one step: forward, loss, backward, update. The epoch's loss is the sum of its batches'
    losses (each before its own update), divided by the rows for reduction "mean". y holds targets
    [N, out] (for "ce" one-hot rows or probabilities).
    """
    spec = spec or StepSpec(**spec_args)
    n = x.shape[0]
    batch_size = batch_size or n
    ws = [w.clone() for w in weights]
    bs = [b.clone() for b in biases] if biases is not None else None
    state = {}
    losses = []
    for epoch in range(epochs):
        rows = order(epoch) if order is not None else torch.arange(n)
        total = 0.0
        # the fewest batches of at most batch_size rows, sizes a row apart at most: written here again, not taken
        # from training/batches.py, so that the judge does not share the code it judges
        count = -(-n // batch_size)
        sizes = [n // count + (i < n % count) for i in range(count)]
        for start, size in zip(itertools.accumulate([0] + sizes), sizes):
            idx = rows[start:start + size]
            total += _step(x[idx], y[idx], ws, bs, spec, state)
        losses.append(total / n if spec.reduction == "mean" else total)
    return ReferenceRun(losses, ws, bs)


def minibatch_reference_loop(x, y, weights, *, epochs=20, lr=1e-6, grad="relu", batch_size=None, order=None):
    """The seed's loss and SGD over mini-batches: ``reference_run`` without biases."""
    return reference_run(x, y, weights, epochs=epochs, lr=lr, grad=grad, batch_size=batch_size, order=order)


def _step(x, y, ws, bs, spec, state):
    """One step on a batch: updates ws and bs in place; returns the batch's summed loss before the update."""
    rows = x.shape[0]
    bias = [None] * len(ws) if bs is None else bs
    hs, h_pres = [x], [None]
    for w, b in zip(ws[:-1], bias[:-1]):
        h_pre = hs[-1] @ w if b is None else hs[-1] @ w + b
        hs.append(h_pre.clamp(min=0))
        h_pres.append(h_pre)
    z = hs[-1] @ ws[-1] if bias[-1] is None else hs[-1] @ ws[-1] + bias[-1]

    if spec.loss == "sse":
        loss = (z - y).pow(2).sum()
        grad = 2 * (z - y)
    else:   # softmax cross-entropy: -sum(y * log softmax(z)), its gradient softmax(z) - y
        log_p = z - torch.logsumexp(z, dim=1, keepdim=True)
        loss = -(y * log_p).sum()
        grad = torch.softmax(z, dim=1) - y
    if spec.reduction == "mean":
        grad = grad / rows

    # backward: every gradient from the old weights, then every update
    grads_w, grads_b = [None] * len(ws), [None] * len(ws)
    for i in reversed(range(len(ws))):
        grads_w[i] = hs[i].t() @ grad
        grads_b[i] = grad.sum(0)
        if i > 0:
            grad_h = grad @ ws[i].t()
            if spec.grad == "relu":
                grad_h[h_pres[i] <= 0] = 0
            else:
                grad_h = grad_h.clamp(min=0)
            grad = grad_h

    params = [(f"w{i}", w, g, True) for i, (w, g) in enumerate(zip(ws, grads_w))]
    if bs is not None:
        params += [(f"b{i}", b, g, False) for i, (b, g) in enumerate(zip(bs, grads_b))]
    state["t"] = state.get("t", 0) + 1
    for name, p, g, decay in params:
        _update(name, p, g, decay, spec, state)
    return loss.item()


def _update(name, p, g, decay, spec, state):
    """The optimizers as torch.optim defines them (weight decay on weights only)."""
    if decay and spec.weight_decay:
        g = g + spec.weight_decay * p
    if spec.optimizer == "sgd":
        p -= spec.lr * g
    elif spec.optimizer == "momentum":
        m = state.get(name)
        m = g.clone() if m is None else spec.momentum * m + g
        state[name] = m
        p -= spec.lr * m
    else:
        b1, b2 = spec.betas
        m, v = state.get(name, (torch.zeros_like(p), torch.zeros_like(p)))
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        state[name] = (m, v)
        t = state["t"]
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        p -= spec.lr * m_hat / (v_hat.sqrt() + spec.eps)
