"""The native backend: the compiled C++ step (kernels/native/runner.cpp) on CPU tensors.

The torch backend's step (manualnn/backends/torch_backend.py) with no Python between its ops: the
same buffers (activations with a column of ones when the network has biases, one output error),
the same GEMMs through ATen, the same optimizers (plain SGD folded into the weight-gradient GEMM;
momentum and Adam from gradient buffers, updating ``params.state``, ``params.step`` and
``params.powers`` in place). ``run_epochs`` runs a whole chunk of full-batch epochs in one call.
The loss is summed in float64 (so in float32 its last digit can differ from the torch backend's).
Built on first use (see manualnn.backends.native_build).
"""
import torch

from ..spec import with_ones
from . import native_build


class NativeStep:
    """One training step on a fixed batch (see manualnn.backends for the protocol), run in C++.

    x [B, in (+1)] (with a last column of ones when ``params.bias``; any row stride), y [B, out]:
    CPU tensors of one dtype, float32 or float64. ``rows``: what a "mean" divides by (default B);
    ``grads``: tensors shaped like ``params.tensors`` for ``gradients()`` (without them plain SGD is
    folded into the GEMMs, and the other optimizers get buffers of their own).
    """
    name = "native"

    def __init__(self, x, y, params, spec, *, rows=None, grads=None):
        if spec.precision != "ieee":
            raise ValueError(f"precision: the native backend computes in the tensors' own dtype and supports "
                             f"only 'ieee', got {spec.precision!r}")
        for name, t in (("x", x), ("y", y)):
            if t.device.type != "cpu":
                raise ValueError(f"{name}: the native backend runs on the CPU only, got a tensor on {t.device}")
        module = native_build.load()
        batch = x.shape[0]
        tensors = params.tensors
        acts = [with_ones(batch, p.shape[1], like=x, bias=params.bias) for p in tensors[:-1]]   # [h_l, 1] (or h_l)
        # a 0-row batch (a rank with none of a small batch) writes zero gradients whatever the scale
        scale = spec.grad_scale(rows or batch or 1)
        fold = spec.optimizer == "sgd" and not (spec.weight_decay and params.bias)
        if grads is None and not fold:
            grads = [torch.empty_like(p) for p in tensors]
        self.grads, self.params, self.layers = grads, params, len(tensors)
        state = params.state
        self.runner = module.Step(
            x, y, tensors, acts, grads or [], state.get("momentum_buffer", []), state.get("exp_avg", []),
            state.get("exp_avg_sq", []), params.step, params.powers, bias=params.bias, relu_mode=spec.grad == "relu",
            cross_entropy=spec.loss == "ce", scale=scale, fold=fold, optimizer=spec.optimizer, lr=spec.lr,
            weight_decay=spec.weight_decay, momentum=spec.momentum, beta1=spec.betas[0], beta2=spec.betas[1],
            eps=spec.eps)

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

    def run_epochs(self, losses):
        """``losses.numel()`` steps on this batch (full-batch epochs) in one native call; step i's loss
        (before its update) into ``losses[i]`` (a 1-D tensor of x's dtype, any stride)."""
        self.runner.run_epochs(losses)
