"""Input gradient of a layer, masked: grad_h = mask(g @ w^T), the mask applied in the epilogue.

grad "relu": zero where the forward activation h is not positive (the correct ReLU backward);
grad "tutorial": clamp the gradient's own values at 0 (the seed's flaw, reproduced on purpose).
w is the layer's weight without its bias row (a bias has no input to pass a gradient to). This
kernel only reads w, so in a training step it runs before w's update.
"""
import torch
import triton
import triton.language as tl

from ._common import GRAD_MODES, autotuned, batch_bucket, check_matrix, check_precision, check_shape, \
    check_writable, grouped_tile, matmul_tile, prepare_launch, relu_backward



@triton.jit(do_not_specialize=["batch_bucket"])   # only the autotuner's key reads it
def input_grad_kernel(g_ptr, w_ptr, h_ptr, out_ptr, M, N, K, batch_bucket,
                      stride_gm, stride_gk, stride_wn, stride_wk, stride_hm, stride_hn, stride_om, stride_on,
                      MODE: tl.constexpr, PRECISION: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                      GROUP_M: tl.constexpr):
    # out[M, N] = g[M, K] @ w[N, K]^T: w^T is read through swapped strides
    offs_m, offs_n = grouped_tile(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    acc = matmul_tile(g_ptr, stride_gm, stride_gk, w_ptr, stride_wk, stride_wn, M, N, K, offs_m, offs_n,
                      PRECISION=PRECISION, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K)
    inside = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    h = acc   # unread by "tutorial"
    if MODE == "relu":
        h = tl.load(h_ptr + offs_m[:, None] * stride_hm + offs_n[None, :] * stride_hn, mask=inside, other=0.0)
    acc = relu_backward(acc, h, MODE)
    tl.store(out_ptr + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on, acc, mask=inside)


input_grad_autotuned = autotuned(input_grad_kernel, "matmul",
                                 key=["batch_bucket", "N", "K", "MODE", "PRECISION"])


def input_grad(g, w, out=None, *, grad="relu", h=None, precision="ieee", config=None):
    """out = mask(g @ w^T): the gradient flowing into a layer's input, masked. Returns out
    (allocated if None). See input_grad_launcher for the arguments."""
    if out is None:
        check_matrix("g", g)
        check_matrix("w", w, g.device)
        out = torch.empty(g.shape[0], w.shape[0], device=g.device, dtype=torch.float32)
    input_grad_launcher(g, w, out, grad=grad, h=h, precision=precision, config=config)()
    return out


def input_grad_launcher(g, w, out, *, grad="relu", h=None, precision="ieee", config=None):
    """Check once, then return a zero-argument callable launching out = mask(g @ w^T).

    Args:
        g: [M, K] float32 gradient of the layer's output.
        w: [N, K] float32 weight of the layer without its bias row (read, never written).
        out: [M, N] float32 output, overlapping none of the inputs.
        grad: the gradient mode, "relu" (zero where h <= 0) or "tutorial" (clamp the values at 0).
        h: [M, N] forward activation of the layer below; needed by grad "relu".
        precision: "ieee", "tf32" or "bf16".
        config: None, "autotune" or a dict of blocks (see _common.prepare_launch).
    """
    check_precision(precision)
    if grad not in GRAD_MODES:
        raise ValueError(f"grad: expected one of {', '.join(map(repr, GRAD_MODES))}, got {grad!r}")
    check_matrix("g", g)
    check_matrix("w", w, g.device)
    (M, K), N = g.shape, w.shape[0]
    check_shape("w", w, (N, K))
    if grad == "relu":
        if h is None:
            raise ValueError("h: grad 'relu' masks by the forward activation; expected a tensor, got None")
        check_matrix("h", h, g.device)
        check_shape("h", h, (M, N))
    check_matrix("out", out, g.device)
    check_shape("out", out, (M, N))
    check_writable("out", out, reads=[("g", g), ("w", w), ("h", h)])
    h_ = h if h is not None else out          # unread unless grad "relu"
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)  # noqa: E731
    return prepare_launch(
        input_grad_kernel, input_grad_autotuned, grid, config, (M, N, K, "matmul", precision),
        g_ptr=g, w_ptr=w, h_ptr=h_, out_ptr=out, M=M, N=N, K=K, batch_bucket=batch_bucket(M),
        stride_gm=g.stride(0), stride_gk=g.stride(1), stride_wn=w.stride(0), stride_wk=w.stride(1),
        stride_hm=h_.stride(0), stride_hn=h_.stride(1), stride_om=out.stride(0), stride_on=out.stride(1),
        MODE=grad, PRECISION=precision)
