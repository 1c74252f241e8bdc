"""Triton kernels for manualnn (installed as manualnn.kernels). One module per fused operation.

Each module holds its @triton.jit kernels and a host launcher that checks types, shapes, strides,
overlaps and devices and picks blocks (the per-layer matmuls autotuned on the GPU, fixed configs
elsewhere and under TRITON_INTERPRET=1). Each ``op(...)`` launches at once; ``op_launcher(...)``
checks once and returns a callable for repeated launches on the same tensors (what a backend keeps).
No autograd, no dispatch, no training loop here.

- linear_relu: h = clamp(a @ w, min=0)                       (forward of a hidden layer)
- output_loss: g = scale * e and the loss, e = z - y ("sse") or softmax(z) - y ("ce"), z = h @ w
- input_grad: grad_h = mask(g @ w^T)                         (the gradient into a layer's input)
- weight_grad: a^T @ g, stored or applied by the optimizer in the epilogue
- optim: the optimizers' update (one @triton.jit function for every kernel above that applies it),
  and the element-wise update from gradients in memory
- two_launch.TwoLaunchStep: a whole step of a narrow network in two launches
"""
from ._common import AUTOTUNE, INTERPRET, PRECISIONS, device_problem
from .two_launch import MAX_WIDTH, TwoLaunchStep, fits
from .input_grad import input_grad, input_grad_launcher
from .linear_relu import linear_relu, linear_relu_launcher
from .optim import OPTIMIZERS, hyper_parameters, update_launcher
from .output_loss import CE_MAX_WIDTH, num_partials, output_config, output_loss, output_loss_launcher
from .weight_grad import weight_grad, weight_grad_launcher

__all__ = ["AUTOTUNE", "CE_MAX_WIDTH", "INTERPRET", "MAX_WIDTH", "OPTIMIZERS", "PRECISIONS", "TwoLaunchStep",
           "device_problem", "fits", "hyper_parameters", "input_grad", "input_grad_launcher", "linear_relu",
           "linear_relu_launcher", "num_partials", "output_config", "output_loss", "output_loss_launcher",
           "update_launcher", "weight_grad", "weight_grad_launcher"]
