"""Fused ops as autograd functions, usable inside ordinary autograd models.

``linear_relu(x, w, b=None)`` computes ``clamp(x @ w + b, min=0)`` with the fused Triton kernel
where it can run (float32 CUDA tensors with Triton installed, or CPU tensors under
TRITON_INTERPRET=1) and with plain torch ops elsewhere. A bias rides as the last row of the weight,
on a column of ones (as in training, see manualnn.spec). Its backward masks the incoming gradient
by the saved output (h > 0 exactly where the pre-activation is > 0), then takes grad_x, grad_w and
grad_b with plain matmuls.
"""
import torch
from torch import nn

from .backends import triton_unavailable_reason
from .spec import with_ones


def _use_kernels(*tensors):
    """The fused kernels take 2-D float32 tensors on a device where Triton can run."""
    if any(u.dtype != torch.float32 or u.dim() != 2 for u in tensors):
        return False
    return triton_unavailable_reason(tensors[0].device) is None


class LinearReLUFunction(torch.autograd.Function):
    """h = clamp(x @ w + b, min=0); x [batch, in], w [in, out], b [out] or None."""

    @staticmethod
    def forward(ctx, x, w, b):
        if _use_kernels(x, w):
            from . import kernels
            if b is not None:
                x_in = with_ones(x.shape[0], x.shape[1], like=x)
                x_in[:, :-1].copy_(x)
                h = kernels.linear_relu(x_in, torch.cat([w, b.reshape(1, -1)], 0))
            else:
                h = kernels.linear_relu(x, w)
        else:
            h = (torch.mm(x, w) if b is None else torch.addmm(b, x, w)).clamp(min=0)
        ctx.save_for_backward(x, w, h)
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h):
        x, w, h = ctx.saved_tensors
        g = torch.ops.aten.threshold_backward(grad_h, h, 0)  # grad_h where h > 0, else 0
        grad_x = g.mm(w.t()) if ctx.needs_input_grad[0] else None
        grad_w = x.t().mm(g) if ctx.needs_input_grad[1] else None
        grad_b = g.sum(0) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def linear_relu(x, w, b=None):
    """``clamp(x @ w + b, min=0)`` as one fused, differentiable op. x [batch, in], w [in, out], b [out]."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"w: expected a torch.Tensor, got {type(w).__name__}")
    if b is not None and not isinstance(b, torch.Tensor):
        raise TypeError(f"b: expected a torch.Tensor or None, got {type(b).__name__}")
    if x.dim() != 2:
        raise ValueError(f"x: expected a 2-D tensor [batch, in_features], got shape {tuple(x.shape)}")
    if w.dim() != 2 or w.shape[0] != x.shape[1]:
        raise ValueError(f"w: expected shape ({x.shape[1]}, out_features) (the seed's in x out layout), "
                         f"got {tuple(w.shape)}")
    if b is not None and tuple(b.shape) != (w.shape[1],):
        raise ValueError(f"b: expected shape ({w.shape[1]},) (the columns of w), got {tuple(b.shape)}")
    return LinearReLUFunction.apply(x, w, b)


class LinearReLU(nn.Module):
    """A linear layer followed by ReLU, fused. ``weight`` is in x out (the seed's layout); ``bias``
    (zeros at first) unless ``bias=False``."""

    def __init__(self, in_features, out_features, *, bias=True, generator=None, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        dtype = dtype or torch.get_default_dtype()
        self.weight = nn.Parameter(torch.randn(in_features, out_features, generator=generator, dtype=dtype).to(device))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device)) if bias else None

    def forward(self, x):
        return linear_relu(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
