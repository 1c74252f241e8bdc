"""The Triton backend: one training step as fused kernels (manualnn.kernels).

Two ways, picked per network:

- **two launches** (``kernels.FusedMLPStep``) when every layer's output width fits one tile
  (``kernels.MAX_WIDTH``, 128 columns), at any depth: one row-block kernel for the forward, loss
  partials, grad_y and the masked backward to every hidden gradient; one kernel updating every
  weight (SGD in its epilogue) and summing the loss partials in a fixed order.
- **per layer** otherwise: L-1 fused linear+clamp forwards, one output+loss+gradient pass (plus
  one fixed-order sum of its partials when the output spans several programs), L-1 masked input
  gradients and L weight-gradient kernels with the SGD update in their epilogue.

Either way the seed's order holds: every weight is read by the backward before its update runs,
and the 2 of grad_y = 2*diff is applied where the output is formed, as the seed does.
"""
import torch

from . import BackendUnavailableError, triton_unavailable_reason


class TritonBackend:
    name = "triton"

    def __init__(self, x, y, weights, *, lr, grad, precision="ieee", fused=None):
        why = triton_unavailable_reason(x.device)
        if why is not None:
            raise BackendUnavailableError(f"backend: 'triton' cannot run on device {x.device}: {why}")
        from .. import kernels
        if x.dtype != torch.float32:
            raise TypeError(f"x: the triton backend trains float32 tensors (precision 'ieee', 'tf32' or 'bf16' "
                            f"picks the matmul precision), got {x.dtype}")
        if precision == "bf16" and x.device.type == "cpu":
            raise BackendUnavailableError("precision: 'bf16' needs a CUDA device (the Triton interpreter has no bf16)")
        fits = kernels.fits(weights)
        if fused and not fits:
            raise ValueError(f"fused: the two-launch step takes layers at most {kernels.MAX_WIDTH} wide, got widths "
                             f"{[w.shape[1] for w in weights]}")
        self.fused = fits if fused is None else bool(fused)
        self.k = kernels
        self.x, self.y, self.weights = x, y, weights
        self.lr, self.mode, self.precision = lr, grad, precision
        if self.fused:
            self.plan = kernels.FusedMLPStep(x, y, weights, lr=lr, mode=grad, precision=precision)
            self.step = self.plan.step     # the step is the plan's own: no extra Python frame per step
            return
        batch = x.shape[0]
        new = lambda cols: torch.empty(batch, cols, dtype=torch.float32, device=x.device)  # noqa: E731
        hidden = [w.shape[1] for w in weights[:-1]]
        self.acts = [new(n) for n in hidden]       # h_l = clamp(h_{l-1} @ w_l, min=0); carries the mask
        self.grad_hs = [new(n) for n in hidden]    # dL/dh_l, masked
        out = weights[-1].shape[1]
        self.grad_y = new(out)                     # 2 * (y_pred - y)
        k_in = hidden[-1] if hidden else x.shape[1]
        n = kernels.num_partials(batch, out, kernels.output_config(batch, out, k_in))
        self.partials = torch.empty(n, dtype=torch.float32, device=x.device)

        # The step as launchers checked once, here (as the torch backend prebuilds its op list):
        # forwards, the output pass (which takes each step's loss slot), then backward last layer first,
        # each layer's input gradient (reading w_i) before w_i's update.
        p = precision
        inputs = [x] + self.acts
        self.forward_plan = [kernels.linear_relu_launcher(a, w, h, precision=p)
                             for a, w, h in zip(inputs, weights[:-1], self.acts)]
        loss_slot = torch.empty((), dtype=torch.float32, device=x.device)   # replaced by each step's
        self.output_launch = kernels.output_loss_launcher(inputs[-1], weights[-1], y, self.grad_y, loss_slot,
                                                          partials=self.partials, precision=p)
        self.backward_plan, g = [], self.grad_y
        for i in reversed(range(len(weights))):
            if i > 0:
                g_prev = self.grad_hs[i - 1]
                self.backward_plan.append(kernels.input_grad_launcher(
                    g, weights[i], g_prev, mode=grad, h=inputs[i] if grad == "relu" else None, precision=p))
            self.backward_plan.append(kernels.weight_grad_launcher(inputs[i], g, w=weights[i], lr=lr, precision=p))
            if i > 0:
                g = g_prev

    def step(self, loss_out):  # the Trainer passes detached tensors: no autograd, no no_grad() cost
        for launch in self.forward_plan:
            launch()
        self.output_launch(loss_out=loss_out)
        for launch in self.backward_plan:
            launch()
