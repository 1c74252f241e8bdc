"""The PyTorch-op backend: the CPU fallback, and the CUDA path when Triton is absent.

The same math as the reference loop, written for speed:
- every buffer is allocated once per run; the activation is applied in place;
- grad_y = 2*(y_pred - y) is never formed: the exact factor 2 is folded into the update's scale,
  and the SGD update is folded into the weight-gradient matmul (``w.addmm_(a.t(), g, alpha=-2*lr)``),
  so no weight-gradient tensor exists;
- the loss is written into a slot of a device tensor, so nothing waits for the host.
"""
import torch


class TorchBackend:
    name = "torch"

    def __init__(self, x, y, weights, *, lr, grad, precision="ieee"):
        if precision != "ieee":
            raise ValueError(f"precision: the torch backend computes in the tensors' own dtype and supports "
                             f"only 'ieee', got {precision!r}")
        self.x, self.y, self.weights = x, y, weights
        self.alpha = -2.0 * lr
        self.relu_backward = grad == "relu"
        batch = x.shape[0]
        new = lambda cols, dtype=x.dtype: torch.empty(batch, cols, dtype=dtype, device=x.device)  # noqa: E731
        hidden = [w.shape[1] for w in weights[:-1]]
        self.acts = [new(n) for n in hidden]              # h_l = clamp(h_{l-1} @ w_l, min=0)
        self.grad_hs = [new(n) for n in hidden]           # half of dL/dh_l (the 2 is in alpha)
        self.masks = [new(n, torch.bool) for n in hidden] if self.relu_backward else []
        self.diff = new(weights[-1].shape[1])             # y_pred - y

    @torch.no_grad()
    def step(self, loss_out):
        weights, acts = self.weights, self.acts
        a = self.x
        for w, h in zip(weights[:-1], acts):
            torch.mm(a, w, out=h)
            h.clamp_(min=0)
            a = h
        diff = self.diff
        torch.mm(a, weights[-1], out=diff)
        diff.sub_(self.y)
        torch.dot(diff.view(-1), diff.view(-1), out=loss_out)

        g = diff
        for i in reversed(range(len(weights))):
            a_in = self.x if i == 0 else acts[i - 1]
            g_prev = None
            if i > 0:
                g_prev = self.grad_hs[i - 1]
                torch.mm(g, weights[i].t(), out=g_prev)   # reads w_i before its update
                if self.relu_backward:
                    mask = self.masks[i - 1]
                    torch.le(a_in, 0, out=mask)           # h <= 0 exactly where h_pre <= 0
                    g_prev.masked_fill_(mask, 0)
                else:
                    g_prev.clamp_(min=0)
            weights[i].addmm_(a_in.t(), g, alpha=self.alpha)
            g = g_prev
