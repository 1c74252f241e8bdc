"""Weight gradient with the optimizer in the epilogue: grad = a^T @ g, then the update of p in place.

Each program computes its tile of the gradient and hands it to ``optim.apply_optimizer``: it is
stored ("grad": the gradient-only step, for an all-reduce), or applied at once to its tile of p
(and of the optimizer's buffers), so no gradient tensor exists in a plain step. With a bias, a is
the layer's input with a column of ones, ``[h, 1]``: the gradient's last row is the bias gradient,
and ``decay_rows`` (the weight rows) keeps weight decay off it.
"""
import triton
import triton.language as tl

from ._common import autotuned, batch_bucket, check_matrix, check_precision, check_shape, grouped_tile, \
    matmul_tile, prepare_launch
from .optim import apply_optimizer, optimizer_args


@triton.jit(do_not_specialize=["batch_bucket"])   # only the autotuner's key reads it
def weight_grad_kernel(a_ptr, g_ptr, p_ptr, grad_ptr, m_ptr, v_ptr, hyper_ptr, powers_ptr, M, N, K, batch_bucket,
                       decay_rows,
                       stride_ak, stride_am, stride_gk, stride_gn,
                       OPTIMIZER: tl.constexpr, PRECISION: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       GROUP_M: tl.constexpr):
    # grad[M, N] = a[K, M]^T @ g[K, N]: a^T is read through swapped strides; K is the batch
    offs_m, offs_n = grouped_tile(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    acc = matmul_tile(a_ptr, stride_am, stride_ak, g_ptr, stride_gk, stride_gn, M, N, K, offs_m, offs_n,
                      PRECISION=PRECISION, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K)
    inside = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    apply_optimizer(acc, offs_m[:, None] * N + offs_n[None, :], inside, offs_m[:, None] < decay_rows,
                    p_ptr, grad_ptr, m_ptr, v_ptr, hyper_ptr, powers_ptr, OPTIMIZER=OPTIMIZER)


# in place: restore_value makes autotuning's trial runs leave p and its state as they were, so the
# update happens once
weight_grad_autotuned = autotuned(weight_grad_kernel, "update",
                                  key=["M", "N", "batch_bucket", "OPTIMIZER", "PRECISION"],
                                  restore_value=["p_ptr", "m_ptr", "v_ptr"])


def weight_grad(a, g, p, *, optimizer="grad", precision="ieee", config=None, **update):
    """The weight gradient a^T @ g, stored or applied as ``optimizer``'s update to p in place. Returns
    p, or ``grad_out`` for "grad". See weight_grad_launcher for the arguments."""
    weight_grad_launcher(a, g, p, optimizer=optimizer, precision=precision, config=config, **update)()
    return update["grad_out"] if optimizer == "grad" else p


def weight_grad_launcher(a, g, p, *, optimizer="grad", hyper=None, state=(), powers=None, grad_out=None,
                         decay_rows=0, precision="ieee", config=None):
    """Check once, then return a zero-argument callable launching the weight gradient kernel.

    Args:
        a: [K, M] float32 input of the layer (K is the batch; with a bias, its last column is ones).
        g: [K, N] float32 gradient of the layer's output (any constant of the loss already in it).
        p: [M, N] contiguous float32 parameter, updated in place (with "grad", only its shape counts).
        optimizer: "grad" (store a^T @ g into grad_out), "sgd", "momentum" or "adam".
        hyper, state, powers, grad_out, decay_rows: see optim.optimizer_args.
        precision: "ieee", "tf32" or "bf16".
        config: None, "autotune" or a dict of blocks (see _common.prepare_launch).
    No output may overlap an input.
    """
    check_precision(precision)
    check_matrix("a", a)
    check_matrix("g", g, a.device)
    (K, M), N = a.shape, g.shape[1]
    check_shape("g", g, (K, N))
    check_matrix("p", p, a.device)
    check_shape("p", p, (M, N))
    update = optimizer_args(optimizer, p, hyper=hyper, state=state, powers=powers, grad_out=grad_out,
                            decay_rows=decay_rows, reads=[("a", a), ("g", g)])
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)  # noqa: E731
    return prepare_launch(
        weight_grad_kernel, weight_grad_autotuned, grid, config, (M, N, K, "update", precision),
        a_ptr=a, g_ptr=g, M=M, N=N, K=K, batch_bucket=batch_bucket(K), stride_ak=a.stride(0), stride_am=a.stride(1),
        stride_gk=g.stride(0), stride_gn=g.stride(1), PRECISION=precision, **update)
