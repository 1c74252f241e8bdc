"""Output layer + loss + output gradient in one pass.

y_pred = h @ w_out is never stored: the epilogue forms diff = y_pred - y, stores
grad_y = 2 * diff and reduces sum(diff^2) into one partial per program. The partials are summed
in a fixed order (no float atomics), so the loss is deterministic; it stays on the device. When
one program covers the whole output (the seed's 100 x 10), it writes the loss slot directly.
"""
import torch
import triton
import triton.language as tl

from ._common import check_operand, check_output, check_precision, fixed_config, matmul_tile


@triton.jit
def output_loss_kernel(h_ptr, w_ptr, y_ptr, gy_ptr, partial_ptr, M, N, K,
                       stride_hm, stride_hk, stride_wk, stride_wn, stride_ym, stride_yn, stride_gm, stride_gn,
                       PRECISION: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = matmul_tile(h_ptr, w_ptr, M, N, K, stride_hm, stride_hk, stride_wk, stride_wn, offs_m, offs_n,
                      h_ptr, 0, 0, w_ptr, 0, 0, False, False, PRECISION, BLOCK_M, BLOCK_N, BLOCK_K)
    inside = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    y = tl.load(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn, mask=inside, other=0.0)
    diff = tl.where(inside, acc - y, 0.0)
    tl.store(gy_ptr + offs_m[:, None] * stride_gm + offs_n[None, :] * stride_gn, 2.0 * diff, mask=inside)
    partial = tl.sum(tl.sum(diff * diff, axis=1), axis=0)
    tl.store(partial_ptr + pid_m * tl.num_programs(1) + pid_n, partial)


@triton.jit
def sum_partials_kernel(partial_ptr, n, out_ptr, BLOCK: tl.constexpr):
    """out = the partials summed in a fixed order, by one program."""
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, n, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        acc += tl.load(partial_ptr + offs, mask=offs < n, other=0.0)
    tl.store(out_ptr, tl.sum(acc, axis=0))


def output_config(M, N, K):
    """Fixed blocks, never autotuned: the host must know how many partials the grid writes."""
    config = fixed_config(M, N, K)
    config.pop("GROUP_M")
    return config


def num_partials(M, N, config):
    return triton.cdiv(M, config["BLOCK_M"]) * triton.cdiv(N, config["BLOCK_N"])


def output_loss(h, w, y, grad_y, loss_out, *, partials=None, precision="ieee", config=None):
    """grad_y[M, N] = 2*(h[M, K] @ w[K, N] - y) and loss_out (0-d) = sum((h @ w - y)^2).

    ``partials`` is a float32 scratch of at least num_partials(M, N, config) elements (allocated
    here if None and needed). Launches one kernel, or two when the output spans several programs.
    """
    check_precision(precision)
    check_operand("h", h, None, None)
    M, K = h.shape
    check_operand("w", w, (K, w.shape[1] if w.dim() == 2 else -1), h.device)
    N = w.shape[1]
    check_operand("y", y, (M, N), h.device)
    check_output("grad_y", grad_y, (M, N), h.device)
    if not isinstance(loss_out, torch.Tensor) or loss_out.dim() != 0 or loss_out.dtype != torch.float32 \
            or loss_out.device != h.device:
        raise ValueError(f"loss_out: expected a 0-d float32 tensor on {h.device}, got "
                         f"{getattr(loss_out, 'shape', loss_out)}")
    config = dict(config or output_config(M, N, K))
    n = num_partials(M, N, config)
    if n == 1:
        target = loss_out
    else:
        if partials is None:
            partials = torch.empty(n, device=h.device, dtype=torch.float32)
        if partials.numel() < n or partials.dtype != torch.float32 or not partials.is_contiguous():
            raise ValueError(f"partials: expected a contiguous float32 tensor of at least {n} elements, "
                             f"got {tuple(partials.shape)} {partials.dtype}")
        target = partials
    num_warps = config.pop("num_warps", 4)
    num_stages = config.pop("num_stages", 2)
    grid = (triton.cdiv(M, config["BLOCK_M"]), triton.cdiv(N, config["BLOCK_N"]))
    output_loss_kernel[grid](h, w, y, grad_y, target, M, N, K, *h.stride(), *w.stride(), *y.stride(),
                             *grad_y.stride(), PRECISION=precision, **config,
                             num_warps=num_warps, num_stages=num_stages)
    if n > 1:
        sum_partials_kernel[(1,)](partials, n, loss_out, BLOCK=min(1024, triton.next_power_of_2(n)))
    return loss_out
