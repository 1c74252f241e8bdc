"""Weight gradient, with an optional SGD update in the epilogue: w -= lr * (a^T @ g), in place.

Each program reads its tile of w, subtracts lr times its tile of the gradient and writes it
back, so no weight-gradient tensor exists unless a caller asks for one (``grad_out``: tests and
the autograd function do). ``in_mask`` masks g while it is loaded (g where in_mask > 0).
"""
import triton
import triton.language as tl

from ._common import autotuned, check_matrix, check_precision, check_shape, check_writable, grouped_tile, \
    matmul_tile, prepare_launch


@triton.jit
def weight_grad_kernel(a_ptr, g_ptr, gm_ptr, w_ptr, grad_ptr, lr, M, N, K,
                       stride_ak, stride_am, stride_gk, stride_gn, stride_gmk, stride_gmn,
                       stride_wm, stride_wn, stride_dm, stride_dn,
                       UPDATE: tl.constexpr, STORE_GRAD: tl.constexpr, IN_MASK: tl.constexpr,
                       PRECISION: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       GROUP_M: tl.constexpr):
    # grad[M, N] = a[K, M]^T @ g[K, N]: a^T is read through swapped strides; K is the batch
    offs_m, offs_n = grouped_tile(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    acc = matmul_tile(a_ptr, stride_am, stride_ak, g_ptr, stride_gk, stride_gn, M, N, K, offs_m, offs_n,
                      a_ptr, 0, 0, gm_ptr, stride_gmk, stride_gmn, A_MASK=False, B_MASK=IN_MASK,
                      PRECISION=PRECISION, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K)
    inside = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    if STORE_GRAD:
        tl.store(grad_ptr + offs_m[:, None] * stride_dm + offs_n[None, :] * stride_dn, acc, mask=inside)
    if UPDATE:
        w_ptrs = w_ptr + offs_m[:, None] * stride_wm + offs_n[None, :] * stride_wn
        w = tl.load(w_ptrs, mask=inside, other=0.0)
        tl.store(w_ptrs, w - lr * acc, mask=inside)


# in place: restore_value makes autotuning's trial runs leave w as it was, so the update happens once
weight_grad_autotuned = autotuned(weight_grad_kernel, key=["M", "N", "K", "UPDATE", "STORE_GRAD", "IN_MASK",
                                                           "PRECISION"], restore_value=["w_ptr"])


def weight_grad(a, g, *, w=None, lr=None, grad_out=None, in_mask=None, precision="ieee", config=None):
    """The weight gradient a^T @ g, stored (grad_out) and/or applied as an SGD step to w in place.
    Returns w if given, else grad_out. See weight_grad_launcher for the arguments."""
    weight_grad_launcher(a, g, w=w, lr=lr, grad_out=grad_out, in_mask=in_mask, precision=precision, config=config)()
    return w if w is not None else grad_out


def weight_grad_launcher(a, g, *, w=None, lr=None, grad_out=None, in_mask=None, precision="ieee", config=None):
    """Check once, then return a zero-argument callable launching the weight gradient kernel.

    Args:
        a: [K, M] float32 input of the layer (K is the batch).
        g: [K, N] float32 gradient of the layer's output.
        w: [M, N] float32 weight, updated in place to w - lr * a^T @ g (optional).
        lr: positive learning rate; needed with w.
        grad_out: [M, N] float32, receives a^T @ g (optional; at least one of w, grad_out).
        in_mask: [K, N]; if given, g counts only where in_mask > 0.
        precision: "ieee", "tf32" or "bf16".
        config: None, "autotune" or a dict of blocks (see _common.prepare_launch).
    Neither output may overlap an input or the other output.
    """
    check_precision(precision)
    if w is None and grad_out is None:
        raise ValueError("w, grad_out: expected a weight to update or a gradient output, got neither")
    check_matrix("a", a)
    check_matrix("g", g, a.device)
    (K, M), N = a.shape, g.shape[1]
    check_shape("g", g, (K, N))
    if in_mask is not None:
        check_matrix("in_mask", in_mask, a.device)
        check_shape("in_mask", in_mask, (K, N))
    reads = [("a", a), ("g", g), ("in_mask", in_mask)]
    if w is not None:
        check_matrix("w", w, a.device)
        check_shape("w", w, (M, N))
        check_writable("w", w, reads=reads)
        if lr is None or isinstance(lr, bool) or not lr > 0:
            raise ValueError(f"lr: expected a positive number to update w, got {lr!r}")
    if grad_out is not None:
        check_matrix("grad_out", grad_out, a.device)
        check_shape("grad_out", grad_out, (M, N))
        check_writable("grad_out", grad_out, reads=reads + [("w", w)])
    w_ = w if w is not None else grad_out     # each unread/unwritten when its constexpr is off
    d_ = grad_out if grad_out is not None else w_
    gm = in_mask if in_mask is not None else g
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)  # noqa: E731
    return prepare_launch(
        weight_grad_kernel, weight_grad_autotuned, grid, config, (M, N, K),
        a_ptr=a, g_ptr=g, gm_ptr=gm, w_ptr=w_, grad_ptr=d_, lr=float(lr or 0.0), M=M, N=N, K=K,
        stride_ak=a.stride(0), stride_am=a.stride(1), stride_gk=g.stride(0), stride_gn=g.stride(1),
        stride_gmk=gm.stride(0), stride_gmn=gm.stride(1), stride_wm=w_.stride(0), stride_wn=w_.stride(1),
        stride_dm=d_.stride(0), stride_dn=d_.stride(1),
        UPDATE=w is not None, STORE_GRAD=grad_out is not None, IN_MASK=in_mask is not None, PRECISION=precision)
