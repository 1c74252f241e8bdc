"""Triton kernels for manualnn (installed as manualnn.kernels). One module per fused operation.

Each module holds its @triton.jit kernels and a host launcher that checks shapes, strides,
dtypes and devices and picks blocks (autotuned on the GPU, one fixed config under
TRITON_INTERPRET=1). No autograd, no dispatch, no training loop here.
"""
from ._common import INTERPRET, PRECISIONS
from .linear_relu import linear_relu
from .masked_backward import masked_backward
from .output_loss import num_partials, output_config, output_loss
from .sgd_update import sgd_update

__all__ = ["INTERPRET", "PRECISIONS", "linear_relu", "masked_backward", "output_loss", "output_config",
           "num_partials", "sgd_update"]
