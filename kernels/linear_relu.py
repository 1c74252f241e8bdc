"""Fused linear + clamp forward: h = clamp(a @ w, min=0).

The ReLU is applied in the epilogue while the accumulator is still in fp32. h itself carries the
mask the backward needs (h > 0 exactly where a @ w > 0), so nothing else is stored. A layer with a
bias is the same call on its input with a column of ones, ``[h, 1] @ p`` (see manualnn.spec).
"""
import torch
import triton
import triton.language as tl

from ._common import autotuned, batch_bucket, check_matrix, check_precision, check_shape, check_writable, \
    grouped_tile, matmul_tile, prepare_launch, relu


@triton.jit(do_not_specialize=["batch_bucket"])   # only the autotuner's key reads it
def linear_relu_kernel(a_ptr, w_ptr, h_ptr, M, N, K, batch_bucket,
                       stride_am, stride_ak, stride_wk, stride_wn, stride_hm, stride_hn,
                       PRECISION: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       GROUP_M: tl.constexpr):
    offs_m, offs_n = grouped_tile(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    acc = matmul_tile(a_ptr, stride_am, stride_ak, w_ptr, stride_wk, stride_wn, M, N, K, offs_m, offs_n,
                      PRECISION=PRECISION, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K)
    acc = relu(acc)
    inside = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tl.store(h_ptr + offs_m[:, None] * stride_hm + offs_n[None, :] * stride_hn, acc, mask=inside)


linear_relu_autotuned = autotuned(linear_relu_kernel, "matmul", key=["batch_bucket", "N", "K", "PRECISION"])


def linear_relu(a, w, out=None, *, precision="ieee", config=None):
    """h = clamp(a @ w, min=0). Returns h (``out``, allocated if None). See linear_relu_launcher."""
    if out is None:
        check_matrix("a", a)
        check_matrix("w", w, a.device)
        out = torch.empty(a.shape[0], w.shape[1], device=a.device, dtype=torch.float32)
    linear_relu_launcher(a, w, out, precision=precision, config=config)()
    return out


def linear_relu_launcher(a, w, out, *, precision="ieee", config=None):
    """Check once, then return a zero-argument callable launching h = clamp(a @ w, min=0) into out.

    Args:
        a: [M, K] float32 input (any strides).
        w: [K, N] float32 weight (any strides), on a's device.
        out: [M, N] float32 output, overlapping neither a nor w.
        precision: "ieee", "tf32" or "bf16" (operands rounded to bf16, fp32 accumulation).
        config: None, "autotune" or a dict of BLOCK_M/BLOCK_N/BLOCK_K/GROUP_M (see _common.prepare_launch).
    """
    check_precision(precision)
    check_matrix("a", a)
    check_matrix("w", w, a.device)
    (M, K), N = a.shape, w.shape[1]
    check_shape("w", w, (K, N))
    check_matrix("out", out, a.device)
    check_shape("out", out, (M, N))
    check_writable("out", out, reads=[("a", a), ("w", w)])
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)  # noqa: E731
    return prepare_launch(linear_relu_kernel, linear_relu_autotuned, grid, config,
                          (M, N, K, "matmul", precision), a_ptr=a, w_ptr=w, h_ptr=out, M=M, N=N, K=K,
                          batch_bucket=batch_bucket(M),
                          stride_am=a.stride(0), stride_ak=a.stride(1), stride_wk=w.stride(0), stride_wn=w.stride(1),
                          stride_hm=out.stride(0), stride_hn=out.stride(1), PRECISION=precision)
