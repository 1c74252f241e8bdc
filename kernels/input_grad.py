"""Input gradient of a layer, masked: grad_h = mask(grad_y @ w^T), the mask applied in the epilogue.

mode "relu": zero where the forward activation h is not positive (the correct ReLU backward);
mode "tutorial": clamp the gradient's own values at 0 (the seed's flaw, reproduced on purpose);
mode "none": no mask. ``in_mask`` masks grad_y itself while it is loaded (grad_y where in_mask > 0):
the autograd function uses it for the gradient of its own ReLU. This kernel only reads w, so in a
training step it runs before w's update.
"""
import torch
import triton
import triton.language as tl

from ._common import autotuned, check_matrix, check_precision, check_shape, check_writable, grouped_tile, \
    matmul_tile, prepare_launch

MODES = ("relu", "tutorial", "none")


@triton.jit
def input_grad_kernel(g_ptr, w_ptr, h_ptr, gm_ptr, out_ptr, M, N, K,
                      stride_gm, stride_gk, stride_wn, stride_wk, stride_hm, stride_hn,
                      stride_gmm, stride_gmk, stride_om, stride_on,
                      MODE: tl.constexpr, IN_MASK: tl.constexpr, PRECISION: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                      GROUP_M: tl.constexpr):
    # out[M, N] = g[M, K] @ w[N, K]^T: w^T is read through swapped strides
    offs_m, offs_n = grouped_tile(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    acc = matmul_tile(g_ptr, stride_gm, stride_gk, w_ptr, stride_wk, stride_wn, M, N, K, offs_m, offs_n,
                      gm_ptr, stride_gmm, stride_gmk, w_ptr, 0, 0, A_MASK=IN_MASK, B_MASK=False,
                      PRECISION=PRECISION, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K)
    inside = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    if MODE == "relu":
        h = tl.load(h_ptr + offs_m[:, None] * stride_hm + offs_n[None, :] * stride_hn, mask=inside, other=0.0)
        acc = tl.where(h > 0, acc, 0.0)
    elif MODE == "tutorial":
        acc = tl.maximum(acc, 0.0)
    tl.store(out_ptr + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on, acc, mask=inside)


input_grad_autotuned = autotuned(input_grad_kernel, key=["M", "N", "K", "MODE", "IN_MASK", "PRECISION"])


def input_grad(grad_y, w, out=None, *, mode="relu", h=None, in_mask=None, precision="ieee", config=None):
    """out = mask(grad_y @ w^T): the gradient flowing into a layer's input, masked. Returns out
    (allocated if None). See input_grad_launcher for the arguments."""
    if out is None:
        check_matrix("grad_y", grad_y)
        check_matrix("w", w, grad_y.device)
        out = torch.empty(grad_y.shape[0], w.shape[0], device=grad_y.device, dtype=torch.float32)
    input_grad_launcher(grad_y, w, out, mode=mode, h=h, in_mask=in_mask, precision=precision, config=config)()
    return out


def input_grad_launcher(grad_y, w, out, *, mode="relu", h=None, in_mask=None, precision="ieee", config=None):
    """Check once, then return a zero-argument callable launching out = mask(grad_y @ w^T).

    Args:
        grad_y: [M, K] float32 gradient of the layer's output.
        w: [N, K] float32 weight of the layer (read, never written).
        out: [M, N] float32 output, overlapping none of the inputs.
        mode: "relu" (zero where h <= 0), "tutorial" (clamp the values at 0) or "none".
        h: [M, N] forward activation of the layer below; needed by mode "relu".
        in_mask: [M, K]; if given, grad_y counts only where in_mask > 0.
        precision: "ieee", "tf32" or "bf16".
        config: None, "autotune" or a dict of blocks (see _common.prepare_launch).
    """
    check_precision(precision)
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(map(repr, MODES))}, got {mode!r}")
    check_matrix("grad_y", grad_y)
    check_matrix("w", w, grad_y.device)
    (M, K), N = grad_y.shape, w.shape[0]
    check_shape("w", w, (N, K))
    if mode == "relu":
        if h is None:
            raise ValueError("h: mode 'relu' masks by the forward activation; expected a tensor, got None")
        check_matrix("h", h, grad_y.device)
        check_shape("h", h, (M, N))
    if in_mask is not None:
        check_matrix("in_mask", in_mask, grad_y.device)
        check_shape("in_mask", in_mask, (M, K))
    check_matrix("out", out, grad_y.device)
    check_shape("out", out, (M, N))
    check_writable("out", out, reads=[("grad_y", grad_y), ("w", w), ("h", h), ("in_mask", in_mask)])
    h_ = h if h is not None else out          # unread unless mode "relu"
    gm = in_mask if in_mask is not None else grad_y
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)  # noqa: E731
    return prepare_launch(
        input_grad_kernel, input_grad_autotuned, grid, config, (M, N, K),
        g_ptr=grad_y, w_ptr=w, h_ptr=h_, gm_ptr=gm, out_ptr=out, M=M, N=N, K=K,
        stride_gm=grad_y.stride(0), stride_gk=grad_y.stride(1), stride_wn=w.stride(0), stride_wk=w.stride(1),
        stride_hm=h_.stride(0), stride_hn=h_.stride(1), stride_gmm=gm.stride(0), stride_gmk=gm.stride(1),
        stride_om=out.stride(0), stride_on=out.stride(1),
        MODE=mode, IN_MASK=in_mask is not None, PRECISION=precision)
