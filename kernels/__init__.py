"""Triton kernels for manualnn (installed as manualnn.kernels). One module per fused operation.

Each module holds its @triton.jit kernels, its autotuned wrapper beside them, and a host launcher
that checks types, shapes, strides, overlaps and devices and picks blocks (autotuned on the GPU,
one fixed config under TRITON_INTERPRET=1). Each ``op(...)`` launches at once; ``op_launcher(...)``
checks once and returns a callable for repeated launches on the same tensors (what a backend keeps).
No autograd, no dispatch, no training loop here.

- linear_relu: h = clamp(a @ w, min=0)                       (forward of a hidden layer)
- output_loss: grad_y = 2*(h @ w - y), loss = sum((h @ w - y)^2)
- input_grad: grad_h = mask(grad_y @ w^T)                    (the gradient into a layer's input)
- weight_grad: a^T @ g, stored and/or applied as w -= lr * a^T @ g in place (SGD in the epilogue)
- fused_mlp.FusedMLPStep: a whole step of a narrow network in two launches
"""
from ._common import AUTOTUNE, INTERPRET, PRECISIONS, triton_device_problem
from .fused_mlp import MAX_WIDTH, FusedMLPStep, fits
from .input_grad import input_grad, input_grad_launcher
from .linear_relu import linear_relu, linear_relu_launcher
from .output_loss import num_partials, output_config, output_loss, output_loss_launcher
from .weight_grad import weight_grad, weight_grad_launcher

__all__ = ["AUTOTUNE", "INTERPRET", "PRECISIONS", "MAX_WIDTH", "FusedMLPStep", "fits", "input_grad",
           "input_grad_launcher", "linear_relu", "linear_relu_launcher", "num_partials", "output_config", "output_loss",
           "output_loss_launcher", "triton_device_problem", "weight_grad", "weight_grad_launcher"]
