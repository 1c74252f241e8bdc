"""The PyTorch-op backend: the CPU path, and CUDA's when Triton is absent.

The step of ``manualnn.spec`` written for speed, as a list of torch calls built once:
- every buffer is allocated once; activations keep a last column of ones when the network has
  biases (so ``[h, 1] @ p`` is the layer, and ``[h, 1]^T @ e`` holds the bias gradient too);
- the output error ``e`` (``z - y``, or ``softmax(z) - y``) is the only output buffer; after the loss it
  is scaled by the loss's constant and the mean's ``1/rows`` (not the matmuls' alpha: BLAS applies an
  alpha that is not a power of two differently with one thread and with several, see
  manualnn/training/threads.py);
- plain SGD is folded into the weight-gradient matmul (``p.addmm_(a.t(), e, alpha=-lr)``), so no
  gradient tensor exists; momentum and Adam take one gradient buffer per layer and in-place
  updates (``TorchOptimizer``);
- the loss is written into a slot of a device tensor, so nothing waits for the host;
- on CUDA its float32 matmuls are IEEE fp32 whatever the global TF32 setting says.
"""
from functools import partial

import torch

from ..spec import with_ones

threshold_backward = torch.ops.aten.threshold_backward.grad_input


def mask_op(grad_h, h, mode):
    """The ReLU backward, in place on grad_h, as a callable (the one definition for torch ops).

    "relu": autograd's own ReLU backward: grad_h where h > 0 (exactly where the pre-activation was
    > 0), else 0, in one vectorised pass; "tutorial": the seed's clamp of the gradient's values.
    """
    if mode == "relu":
        return partial(threshold_backward, grad_h, h, 0, grad_input=grad_h)
    return partial(grad_h.clamp_, min=0)


def forward(x, weights, biases=None):
    """The network's output for x: ``relu(x @ w + b)`` per hidden layer, then ``h @ w + b``."""
    biases = biases or [None] * len(weights)
    h = x
    for w, b in zip(weights[:-1], biases[:-1]):
        h = (torch.mm(h, w) if b is None else torch.addmm(b, h, w)).clamp_(min=0)
    return torch.mm(h, weights[-1]) if biases[-1] is None else torch.addmm(biases[-1], h, weights[-1])


class TorchOptimizer:
    """The optimizer's update on ``params`` from gradient buffers ``grads`` (one per layer), in place.

    ``begin()`` once per step, before any layer's ``apply(i)``: it advances Adam's step count and its
    bias corrections on the device (so a captured CUDA graph replays them correctly).
    """

    def __init__(self, params, spec, grads):
        self.params, self.spec, self.grads = params, spec, grads
        self.lr, self.decay = spec.lr, spec.weight_decay
        p0 = params.tensors[0]
        if spec.optimizer == "adam":
            self.denoms = [torch.empty_like(p) for p in params.tensors]
            f64 = dict(dtype=torch.float64, device=p0.device)
            self.betas = torch.tensor(spec.betas, **f64)
            self.ones = torch.ones(2, **f64)
            self.corrections = torch.empty(2, **f64)      # 1 - beta^t
            self.step_size = torch.empty(1, **f64)        # lr / (1 - beta1^t)
            self.corr2_sqrt = torch.empty(1, **f64)       # sqrt(1 - beta2^t)
            self.lr_t = torch.tensor([spec.lr], **f64)

    def begin(self):
        if self.spec.optimizer == "adam":
            p = self.params
            p.step.add_(1)
            p.powers.mul_(self.betas)
            torch.sub(self.ones, p.powers, out=self.corrections)
            torch.div(self.lr_t, self.corrections[:1], out=self.step_size)
            torch.sqrt(self.corrections[1:], out=self.corr2_sqrt)

    def apply(self, i):
        p, g = self.params.tensors[i], self.grads[i]
        if self.decay:   # weights only: the bias row (if any) is not decayed
            rows = self.params.decayed_rows(i)
            g[:rows].add_(p[:rows], alpha=self.decay)
        if self.spec.optimizer == "sgd":
            p.add_(g, alpha=-self.lr)
        elif self.spec.optimizer == "momentum":
            m = self.params.state["momentum_buffer"][i]
            m.mul_(self.spec.momentum).add_(g)
            p.add_(m, alpha=-self.lr)
        else:   # torch.optim.Adam's single-tensor update, step size and correction from the device
            b1, b2 = self.spec.betas
            m, v = self.params.state["exp_avg"][i], self.params.state["exp_avg_sq"][i]
            d = self.denoms[i]
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            torch.sqrt(v, out=d)
            d.div_(self.corr2_sqrt).add_(self.spec.eps)
            torch.div(m, d, out=d)
            p.sub_(d.mul_(self.step_size))

    def __call__(self):
        """The whole update from ``grads`` (after an all-reduce, say)."""
        self.begin()
        for i in range(len(self.grads)):
            self.apply(i)


class TorchStep:
    """One training step on a fixed batch (see manualnn.backends for the protocol).

    x [B, in (+1)]: the batch, with a last column of ones when ``params.bias``; y [B, out]: targets
    (one-hot or probabilities for "ce"); ``rows``: what the mean divides by (the whole batch, over
    every rank); ``grads``: tensors shaped like ``params.tensors`` to receive the gradients (needed by
    ``gradients()``; without them plain SGD is folded into the matmuls).
    """
    name = "torch"

    def __init__(self, x, y, params, spec, *, rows=None, grads=None):
        if spec.precision != "ieee":
            raise ValueError(f"precision: the torch backend computes in the tensors' own dtype and supports "
                             f"only 'ieee', got {spec.precision!r}")
        self.x, self.y, self.params, self.spec = x, y, params, spec
        self.guard_tf32 = x.device.type == "cuda" and x.dtype == torch.float32
        batch = x.shape[0]
        new = lambda cols: torch.empty(batch, cols, dtype=x.dtype, device=x.device)  # noqa: E731
        tensors = params.tensors
        widths = [p.shape[1] for p in tensors[:-1]]
        acts = [with_ones(batch, n, like=x, bias=params.bias) for n in widths]   # [h_l, 1] (or h_l)
        hs = [a[:, :n] for a, n in zip(acts, widths)]      # h_l = relu([h_{l-1}, 1] @ p_l)
        grad_hs = [new(n) for n in widths]                # dL/dh_l, up to the constant in alpha
        self.error = new(tensors[-1].shape[1])            # e = z - y, or softmax(z) - y
        inputs = [x] + acts                               # layer i reads inputs[i]
        scale = spec.grad_scale(rows or batch or 1)   # (a 0-row batch: any scale, its gradient is 0)
        fold = spec.folds_sgd(params.bias)
        if grads is None and not fold:
            grads = [torch.empty_like(p) for p in tensors]
        self.grads = grads
        self.optimizer = None if grads is None else TorchOptimizer(params, spec, grads)

        plan = []
        for a, p, h in zip(inputs, tensors[:-1], hs):
            plan += [partial(torch.mm, a, p, out=h), h.relu_]   # relu_ = clamp(min=0), a faster kernel
        e, e_flat = self.error, self.error.view(-1)
        if spec.loss == "sse":
            plan.append(partial(torch.addmm, y, inputs[-1], tensors[-1], beta=-1, out=e))
            loss = partial(torch.dot, e_flat, e_flat)
            self.after_loss = []
        else:
            lse = new(1)
            plan += [partial(torch.mm, inputs[-1], tensors[-1], out=e),
                     partial(torch.logsumexp, e, 1, keepdim=True, out=lse),
                     partial(torch.sub, lse, e, out=e)]          # -log softmax(z), stable
            loss = partial(torch.dot, y.reshape(-1), e_flat)       # sum of y * -log p
            self.after_loss = [e.neg_, e.exp_, partial(e.sub_, y)]  # e = softmax(z) - y
        if scale != 1:   # e becomes dL/dz, after the loss has read it
            self.after_loss.append(partial(e.mul_, scale))
        self.forward_plan, self.loss = plan, loss

        # Backward, last layer first: grad_h_{i-1} = mask(e_i @ w_i^T) reads w_i before w_i's update.
        # Transposed views are made once: they share storage, so in-place updates show through.
        self.backward_plan, self.gradient_plan = [], []
        g = e
        for i in reversed(range(len(tensors))):
            p, a = tensors[i], inputs[i]
            back = []
            if i > 0:
                w_t = p[:widths[i - 1]].t()                 # the weight without its bias row
                back += [partial(torch.mm, g, w_t, out=grad_hs[i - 1]), mask_op(grad_hs[i - 1], hs[i - 1], spec.grad)]
            if grads is not None:
                grad = partial(torch.mm, a.t(), g, out=grads[i])
                self.gradient_plan += back + [grad, partial(self._ready, i)]
            if fold:
                decay = 1.0 - spec.lr * spec.weight_decay
                self.backward_plan += back + [partial(p.addmm_, a.t(), g, beta=decay, alpha=-spec.lr)]
            else:
                self.backward_plan += back + [grad, partial(self.optimizer.apply, i)]
            if i > 0:
                g = grad_hs[i - 1]
        if not fold:
            self.backward_plan.insert(0, self.optimizer.begin)
        self.on_ready = None
        if not self.guard_tf32:
            self.step = self._step   # no TF32 to guard against: one Python frame less per step

    def _ready(self, i):
        if self.on_ready is not None:
            self.on_ready(i)

    def _forward_loss(self, loss_out):
        for op in self.forward_plan:
            op()
        self.loss(out=loss_out)
        for op in self.after_loss:
            op()

    def _tf32_off(self, fn, *args):
        """Run fn with float32 matmuls in IEEE fp32 on CUDA, whatever a script set globally."""
        setting = torch.get_float32_matmul_precision() if self.guard_tf32 else "highest"
        if setting == "highest":
            return fn(*args)
        torch.set_float32_matmul_precision("highest")
        try:
            return fn(*args)
        finally:
            torch.set_float32_matmul_precision(setting)

    def step(self, loss_out):
        """Forward, loss (the batch's sum, before any reduction) into the 0-d ``loss_out``, backward, update."""
        self._tf32_off(self._step, loss_out)

    def _step(self, loss_out):
        self._forward_loss(loss_out)
        for op in self.backward_plan:
            op()

    def gradients(self, loss_out, ready=None):
        """Forward and loss, then every layer's gradient into ``grads`` (no update); ``ready(i)`` is called
        as soon as layer i's gradient is written (the last layer first)."""
        self.on_ready = ready
        try:
            self._tf32_off(self._gradients, loss_out)
        finally:
            self.on_ready = None

    def _gradients(self, loss_out):
        self._forward_loss(loss_out)
        for op in self.gradient_plan:
            op()

    def update(self):
        """Apply the optimizer from ``grads`` (after ``gradients()`` and, say, an all-reduce)."""
        self.optimizer()
