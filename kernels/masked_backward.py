"""Masked backward: grad_h = mask(grad_y @ w^T), the mask applied in the epilogue.

mode "relu": zero where the forward activation h is not positive (the correct ReLU backward);
mode "tutorial": clamp the gradient's own values at 0 (the seed's flaw, reproduced on purpose);
mode "none": no mask. ``in_mask`` masks grad_y itself while it is loaded (grad_y where in_mask > 0):
the autograd function uses it for the gradient of its own ReLU. This kernel only reads w, so in a
training step it runs before w's update.
"""
import torch
import triton
import triton.language as tl

from ._common import (AUTOTUNE, check_operand, check_output, check_precision, gpu_configs, grouped_tile, launch,
                      matmul_tile)

MODES = ("relu", "tutorial", "none")


@triton.jit
def masked_backward_kernel(g_ptr, w_ptr, h_ptr, gm_ptr, out_ptr, M, N, K,
                           stride_gm, stride_gk, stride_wn, stride_wk, stride_hm, stride_hn,
                           stride_gmm, stride_gmk, stride_om, stride_on,
                           MODE: tl.constexpr, IN_MASK: tl.constexpr, PRECISION: tl.constexpr,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                           GROUP_M: tl.constexpr):
    # out[M, N] = g[M, K] @ w[N, K]^T: w^T is read through swapped strides
    offs_m, offs_n = grouped_tile(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    acc = matmul_tile(g_ptr, w_ptr, M, N, K, stride_gm, stride_gk, stride_wk, stride_wn, offs_m, offs_n,
                      gm_ptr, stride_gmm, stride_gmk, w_ptr, 0, 0, IN_MASK, False, PRECISION,
                      BLOCK_M, BLOCK_N, BLOCK_K)
    inside = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    if MODE == "relu":
        h = tl.load(h_ptr + offs_m[:, None] * stride_hm + offs_n[None, :] * stride_hn, mask=inside, other=0.0)
        acc = tl.where(h > 0, acc, 0.0)
    elif MODE == "tutorial":
        acc = tl.maximum(acc, 0.0)
    tl.store(out_ptr + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on, acc, mask=inside)


_autotuned = None if not AUTOTUNE else triton.autotune(
    gpu_configs(), key=["M", "N", "K", "MODE", "IN_MASK", "PRECISION"])(masked_backward_kernel)


def masked_backward(grad_y, w, out=None, *, mode="relu", h=None, in_mask=None, precision="ieee", config=None):
    """out[M, N] = mask(grad_y[M, K] @ w[N, K]^T); ``h`` [M, N] is the forward activation (mode "relu")."""
    check_precision(precision)
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(map(repr, MODES))}, got {mode!r}")
    check_operand("grad_y", grad_y, None, None)
    M, K = grad_y.shape
    check_operand("w", w, (w.shape[0] if w.dim() == 2 else -1, K), grad_y.device)
    N = w.shape[0]
    if mode == "relu":
        if h is None:
            raise ValueError("h: mode 'relu' masks by the forward activation; expected a tensor, got None")
        check_operand("h", h, (M, N), grad_y.device)
    if in_mask is not None:
        check_operand("in_mask", in_mask, (M, K), grad_y.device)
    if out is None:
        out = torch.empty(M, N, device=grad_y.device, dtype=torch.float32)
    check_output("out", out, (M, N), grad_y.device)
    h_ = h if h is not None else out
    gm = in_mask if in_mask is not None else grad_y
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)  # noqa: E731
    launch(_autotuned, masked_backward_kernel, grid, M, N, K, config,
           (grad_y, w, h_, gm, out, M, N, K, *grad_y.stride(), *w.stride(), *h_.stride(), *gm.stride(),
            *out.stride()),
           MODE=mode, IN_MASK=in_mask is not None, PRECISION=precision)
    return out
