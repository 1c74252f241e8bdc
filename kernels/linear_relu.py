"""Fused linear + clamp forward: h = clamp(a @ w, min=0).

The ReLU is applied in the epilogue while the accumulator is still in fp32. h itself carries the
mask the backward needs (h > 0 exactly where a @ w > 0), so nothing else is stored.
"""
import torch
import triton
import triton.language as tl

from ._common import (AUTOTUNE, check_operand, check_output, check_precision, gpu_configs, grouped_tile, launch,
                      matmul_tile)


@triton.jit
def linear_relu_kernel(a_ptr, w_ptr, h_ptr, M, N, K,
                       stride_am, stride_ak, stride_wk, stride_wn, stride_hm, stride_hn,
                       RELU: tl.constexpr, PRECISION: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       GROUP_M: tl.constexpr):
    offs_m, offs_n = grouped_tile(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    acc = matmul_tile(a_ptr, w_ptr, M, N, K, stride_am, stride_ak, stride_wk, stride_wn, offs_m, offs_n,
                      a_ptr, 0, 0, w_ptr, 0, 0, False, False, PRECISION, BLOCK_M, BLOCK_N, BLOCK_K)
    if RELU:
        acc = tl.maximum(acc, 0.0)
    inside = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tl.store(h_ptr + offs_m[:, None] * stride_hm + offs_n[None, :] * stride_hn, acc, mask=inside)


_autotuned = None if not AUTOTUNE else triton.autotune(gpu_configs(), key=["M", "N", "K", "RELU", "PRECISION"])(
    linear_relu_kernel)


def linear_relu(a, w, out=None, *, relu=True, precision="ieee", config=None):
    """h[M, N] = clamp(a[M, K] @ w[K, N], min=0) (or without the clamp if relu=False). Returns h."""
    check_precision(precision)
    check_operand("a", a, None, None)
    M, K = a.shape
    check_operand("w", w, (K, w.shape[1] if w.dim() == 2 else -1), a.device)
    N = w.shape[1]
    if out is None:
        out = torch.empty(M, N, device=a.device, dtype=torch.float32)
    check_output("out", out, (M, N), a.device)
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)  # noqa: E731
    launch(_autotuned, linear_relu_kernel, grid, M, N, K, config,
           (a, w, out, M, N, K, *a.stride(), *w.stride(), *out.stride()), RELU=relu, PRECISION=precision)
    return out
