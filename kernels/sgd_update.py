"""Weight gradient with the SGD update in the epilogue: w -= lr * (a^T @ g), in place.

Each program reads its tile of w, subtracts lr times its tile of the gradient and writes it
back, so no weight-gradient tensor exists unless a caller asks for one (``grad_out``: tests and
the autograd function do). ``in_mask`` masks g while it is loaded (g where in_mask > 0).
"""
import triton
import triton.language as tl

from ._common import (AUTOTUNE, check_operand, check_output, check_precision, gpu_configs, grouped_tile, launch,
                      matmul_tile)


@triton.jit
def sgd_update_kernel(a_ptr, g_ptr, gm_ptr, w_ptr, grad_ptr, lr, M, N, K,
                      stride_ak, stride_am, stride_gk, stride_gn, stride_gmk, stride_gmn,
                      stride_wm, stride_wn, stride_dm, stride_dn,
                      UPDATE: tl.constexpr, STORE_GRAD: tl.constexpr, IN_MASK: tl.constexpr,
                      PRECISION: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                      GROUP_M: tl.constexpr):
    # grad[M, N] = a[K, M]^T @ g[K, N]: a^T is read through swapped strides; K is the batch
    offs_m, offs_n = grouped_tile(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    acc = matmul_tile(a_ptr, g_ptr, M, N, K, stride_am, stride_ak, stride_gk, stride_gn, offs_m, offs_n,
                      a_ptr, 0, 0, gm_ptr, stride_gmk, stride_gmn, False, IN_MASK, PRECISION,
                      BLOCK_M, BLOCK_N, BLOCK_K)
    inside = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    if STORE_GRAD:
        tl.store(grad_ptr + offs_m[:, None] * stride_dm + offs_n[None, :] * stride_dn, acc, mask=inside)
    if UPDATE:
        w_ptrs = w_ptr + offs_m[:, None] * stride_wm + offs_n[None, :] * stride_wn
        w = tl.load(w_ptrs, mask=inside, other=0.0)
        tl.store(w_ptrs, w - lr * acc, mask=inside)


_autotuned = None if not AUTOTUNE else triton.autotune(
    gpu_configs(), key=["M", "N", "K", "UPDATE", "STORE_GRAD", "IN_MASK", "PRECISION"],
    restore_value=["w_ptr"])(sgd_update_kernel)  # in place: autotuning must not apply the update twice


def sgd_update(a, g, w=None, lr=None, *, grad_out=None, in_mask=None, precision="ieee", config=None):
    """w[M, N] -= lr * a[K, M]^T @ g[K, N] in place (if w is given); grad_out gets a^T @ g (if given)."""
    check_precision(precision)
    if w is None and grad_out is None:
        raise ValueError("w, grad_out: expected a weight to update or a gradient output, got neither")
    check_operand("a", a, None, None)
    K, M = a.shape
    check_operand("g", g, (K, g.shape[1] if g.dim() == 2 else -1), a.device)
    N = g.shape[1]
    if w is not None:
        check_output("w", w, (M, N), a.device)
        if lr is None or not lr > 0:
            raise ValueError(f"lr: expected a positive number to update w, got {lr!r}")
    if grad_out is not None:
        check_output("grad_out", grad_out, (M, N), a.device)
    if in_mask is not None:
        check_operand("in_mask", in_mask, (K, N), a.device)
    w_ = w if w is not None else grad_out
    d_ = grad_out if grad_out is not None else w_
    gm = in_mask if in_mask is not None else g
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)  # noqa: E731
    launch(_autotuned, sgd_update_kernel, grid, M, N, K, config,
           (a, g, gm, w_, d_, float(lr or 0.0), M, N, K, *a.stride(), *g.stride(), *gm.stride(), *w_.stride(),
            *d_.stride()),
           UPDATE=w is not None, STORE_GRAD=grad_out is not None, IN_MASK=in_mask is not None,
           PRECISION=precision)
    return w if w is not None else grad_out
