"""Output layer + loss + output gradient in one pass.

y_pred = h @ w_out is never stored: the epilogue forms diff = y_pred - y, stores
grad_y = 2 * diff and reduces sum(diff^2) into one partial per program. The partials are summed
in a fixed order by one program (no float atomics), so the loss is deterministic; it stays on the
device. When one program covers the whole output, it writes the loss slot directly.
"""
import torch
import triton
import triton.language as tl

from ._common import check_matrix, check_precision, check_scalar_out, check_shape, check_writable, fixed_config, \
    matmul_tile, prepare_launch


@triton.jit
def output_loss_kernel(h_ptr, w_ptr, y_ptr, gy_ptr, partial_ptr, M, N, K,
                       stride_hm, stride_hk, stride_wk, stride_wn, stride_ym, stride_yn, stride_gm, stride_gn,
                       PRECISION: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = matmul_tile(h_ptr, stride_hm, stride_hk, w_ptr, stride_wk, stride_wn, M, N, K, offs_m, offs_n,
                      h_ptr, 0, 0, w_ptr, 0, 0, A_MASK=False, B_MASK=False, PRECISION=PRECISION,
                      BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K)
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
    """grad_y = 2*(h @ w - y) and loss_out = sum((h @ w - y)^2). Returns loss_out.
    See output_loss_launcher for the arguments."""
    output_loss_launcher(h, w, y, grad_y, loss_out, partials=partials, precision=precision, config=config)()
    return loss_out


def output_loss_launcher(h, w, y, grad_y, loss_out, *, partials=None, precision="ieee", config=None):
    """Check once, then return a callable making the one or two launches of output_loss; call it as
    ``run()`` or ``run(loss_out=other)`` (another 0-d float32 tensor on the same device) to put the loss elsewhere.

    Args:
        h: [M, K] float32 last hidden activation.
        w: [K, N] float32 output weight.
        y: [M, N] float32 target.
        grad_y: [M, N] float32 output for 2*(h @ w - y); overlaps no input.
        loss_out: 0-d float32 tensor on h's device; receives the loss.
        partials: float32 scratch of at least num_partials(M, N, config) elements (allocated here if
            None and needed): one partial per program, summed by a second launch when there are several.
        precision: "ieee", "tf32" or "bf16".
        config: a dict of BLOCK_M/BLOCK_N/BLOCK_K (default output_config(M, N, K)); never autotuned.
    """
    check_precision(precision)
    check_matrix("h", h)
    check_matrix("w", w, h.device)
    (M, K), N = h.shape, w.shape[1]
    check_shape("w", w, (K, N))
    check_matrix("y", y, h.device)
    check_shape("y", y, (M, N))
    check_matrix("grad_y", grad_y, h.device)
    check_shape("grad_y", grad_y, (M, N))
    check_writable("grad_y", grad_y, reads=[("h", h), ("w", w), ("y", y)])
    check_scalar_out("loss_out", loss_out, h.device)
    config = dict(config or output_config(M, N, K))
    n = num_partials(M, N, config)
    if n == 1:
        target = loss_out
    else:
        if partials is None:
            partials = torch.empty(n, device=h.device, dtype=torch.float32)
        if not isinstance(partials, torch.Tensor) or partials.dtype != torch.float32 or partials.numel() < n \
                or not partials.is_contiguous() or partials.device != h.device:
            raise ValueError(f"partials: expected a contiguous float32 tensor of at least {n} elements on "
                             f"{h.device}, got {getattr(partials, 'shape', partials)} "
                             f"{getattr(partials, 'dtype', '')}")
        target = partials
    grid = (triton.cdiv(M, config["BLOCK_M"]), triton.cdiv(N, config["BLOCK_N"]))
    output = prepare_launch(
        output_loss_kernel, None, grid, config, (M, N, K),
        h_ptr=h, w_ptr=w, y_ptr=y, gy_ptr=grad_y, partial_ptr=target, M=M, N=N, K=K,
        stride_hm=h.stride(0), stride_hk=h.stride(1), stride_wk=w.stride(0), stride_wn=w.stride(1),
        stride_ym=y.stride(0), stride_yn=y.stride(1), stride_gm=grad_y.stride(0), stride_gn=grad_y.stride(1),
        PRECISION=precision)
    total = None if n == 1 else prepare_launch(
        sum_partials_kernel, None, (1,), dict(BLOCK=min(1024, triton.next_power_of_2(n))), None,
        partial_ptr=partials, n=n, out_ptr=loss_out)
    device = h.device

    def run(loss_out=None):
        if loss_out is None:
            output()
            if total is not None:
                total()
            return
        check_scalar_out("loss_out", loss_out, device)
        if total is None:
            output(partial_ptr=loss_out)     # one program: it writes the loss itself
        else:
            output()
            total(out_ptr=loss_out)
    return run
