"""The PyTorch-op backend: the CPU fallback, and the CUDA path when Triton is absent.

The same math as the reference loop, written for speed:
- every buffer is allocated once per run; the activation is applied in place;
- grad_y = 2*(y_pred - y) is never formed: the exact factor 2 is folded into the update's scale,
  and the SGD update is folded into the weight-gradient matmul (``w.addmm_(a.t(), g, alpha=-2*lr)``),
  so no weight-gradient tensor exists;
- the loss is written into a slot of a device tensor, so nothing waits for the host;
- the step is a prebuilt list of torch calls on those buffers, so Python adds little per epoch;
- on CUDA its float32 matmuls are IEEE fp32 whatever the global TF32 setting says (precision
  "ieee" is the only one this backend offers): TF32 is switched off around the step if it is on.
"""
from functools import partial

import torch

threshold_backward = torch.ops.aten.threshold_backward.grad_input


class TorchBackend:
    name = "torch"

    def __init__(self, x, y, weights, *, lr, grad, precision="ieee"):
        if precision != "ieee":
            raise ValueError(f"precision: the torch backend computes in the tensors' own dtype and supports "
                             f"only 'ieee', got {precision!r}")
        self.x, self.y, self.weights = x, y, weights
        self.guard_tf32 = x.device.type == "cuda" and x.dtype == torch.float32
        batch = x.shape[0]
        new = lambda cols: torch.empty(batch, cols, dtype=x.dtype, device=x.device)  # noqa: E731
        hidden = [w.shape[1] for w in weights[:-1]]
        acts = [new(n) for n in hidden]                   # h_l = clamp(h_{l-1} @ w_l, min=0)
        grad_hs = [new(n) for n in hidden]                # half of dL/dh_l (the 2 is in alpha)
        diff = new(weights[-1].shape[1])                  # y_pred - y
        self.diff_flat = diff.view(-1)
        inputs = [x] + acts                               # layer i reads inputs[i]

        # Forward: h_l = relu(h_{l-1} @ w_l); diff = h_L @ w_out - y (addmm with beta=-1).
        plan = []
        for a, w, h in zip(inputs, weights[:-1], acts):
            plan += [partial(torch.mm, a, w, out=h), h.relu_]  # relu_ = clamp(min=0), a faster kernel
        plan.append(partial(torch.addmm, y, inputs[-1], weights[-1], beta=-1, out=diff))
        self.forward_plan = plan

        # Backward, last layer first: g_{i-1} = mask(g_i @ w_i^T) reads w_i before w_i's update.
        # Transposed views are made once: they share storage, so in-place updates show through.
        plan, g = [], diff
        for i in reversed(range(len(weights))):
            if i > 0:
                g_prev = grad_hs[i - 1]
                plan.append(partial(torch.mm, g, weights[i].t(), out=g_prev))
                if grad == "relu":
                    # autograd's own ReLU backward, in place: g where h > 0 (exactly where h_pre > 0),
                    # else 0; one vectorised pass, ~10x faster on the CPU than a bool mask + masked_fill_
                    plan.append(partial(threshold_backward, g_prev, inputs[i], 0, grad_input=g_prev))
                else:
                    plan.append(partial(g_prev.clamp_, min=0))  # the seed's clamp of the values
            plan.append(partial(weights[i].addmm_, inputs[i].t(), g, alpha=-2.0 * lr))
            if i > 0:
                g = g_prev
        self.backward_plan = plan

    def step(self, loss_out):  # the Trainer passes detached tensors: no autograd, no no_grad() cost
        if self.guard_tf32:
            # the public switch behind allow_tf32 (and the newer fp32_precision) in every torch >= 2.4
            setting = torch.get_float32_matmul_precision()
            if setting != "highest":
                torch.set_float32_matmul_precision("highest")
                try:
                    self._step(loss_out)
                finally:
                    torch.set_float32_matmul_precision(setting)
                return
        self._step(loss_out)

    def _step(self, loss_out):
        for op in self.forward_plan:
            op()
        torch.dot(self.diff_flat, self.diff_flat, out=loss_out)
        for op in self.backward_plan:
            op()
