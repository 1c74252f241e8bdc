"""Fused ops as autograd functions, usable inside ordinary autograd models.

``linear_relu(x, w)`` computes ``clamp(x @ w, min=0)`` with the fused Triton kernel where it can
run (float32 CUDA tensors with Triton installed, or CPU tensors under TRITON_INTERPRET=1) and
with plain torch ops elsewhere. Its backward masks the incoming gradient by the saved output
(h > 0 exactly where x @ w > 0) and gives grad_x and grad_w through the masked kernels.
"""
import torch
from torch import nn

from .backends import triton_unavailable_reason


def _use_kernels(*tensors):
    """The fused kernels take 2-D float32 tensors on a device where Triton can run."""
    if any(u.dtype != torch.float32 or u.dim() != 2 for u in tensors):
        return False
    return triton_unavailable_reason(tensors[0].device) is None


class LinearReLUFunction(torch.autograd.Function):
    """h = clamp(x @ w, min=0); x [batch, in], w [in, out]."""

    @staticmethod
    def forward(ctx, x, w):
        if _use_kernels(x, w):
            from . import kernels
            h = kernels.linear_relu(x, w)
        else:
            h = torch.mm(x, w).clamp(min=0)
        ctx.save_for_backward(x, w, h)
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h):
        x, w, h = ctx.saved_tensors
        grad_x = grad_w = None
        if _use_kernels(x, w, grad_h):
            from . import kernels
            if ctx.needs_input_grad[0]:
                grad_x = kernels.input_grad(grad_h, w, mode="none", in_mask=h)
            if ctx.needs_input_grad[1]:
                grad_w = torch.empty_like(w, memory_format=torch.contiguous_format)
                kernels.weight_grad(x, grad_h, grad_out=grad_w, in_mask=h)
        else:
            g = torch.ops.aten.threshold_backward(grad_h, h, 0)  # grad_h where h > 0, else 0
            if ctx.needs_input_grad[0]:
                grad_x = g.mm(w.t())
            if ctx.needs_input_grad[1]:
                grad_w = x.t().mm(g)
        return grad_x, grad_w


def linear_relu(x, w):
    """``clamp(x @ w, min=0)`` as one fused, differentiable op. x [batch, in], w [in, out]."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"w: expected a torch.Tensor, got {type(w).__name__}")
    if x.dim() != 2:
        raise ValueError(f"x: expected a 2-D tensor [batch, in_features], got shape {tuple(x.shape)}")
    if w.dim() != 2 or w.shape[0] != x.shape[1]:
        raise ValueError(f"w: expected shape ({x.shape[1]}, out_features) (the seed's in x out layout), "
                         f"got {tuple(w.shape)}")
    return LinearReLUFunction.apply(x, w)


class LinearReLU(nn.Module):
    """A bias-free linear layer followed by ReLU, fused. ``weight`` is in x out (the seed's layout)."""

    def __init__(self, in_features, out_features, *, generator=None, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.randn(in_features, out_features, generator=generator,
                                               dtype=dtype or torch.get_default_dtype()).to(device))

    def forward(self, x):
        return linear_relu(x, self.weight)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias=False"
