"""Output layer + loss + output gradient in one pass.

z = h @ w is never stored: the epilogue forms the output error e and stores the exact gradient
g = scale * e (scale: the loss's constant and a mean's 1/rows, manualnn.spec's grad_scale), and
reduces the loss into one partial per program:

- LOSS "sse": e = z - y, loss sum(e^2);
- LOSS "ce" (softmax cross-entropy): softmax in the max-subtracted form, e = softmax(z) - y, loss
  sum(y * (logsumexp(z) - z)); one program covers a whole row of classes (at most CE_MAX_WIDTH).

The partials are summed in a fixed order by one program (no float atomics), so the loss is
deterministic; it stays on the device. When one program covers the whole output, it writes the
loss slot directly. With ``advance``, program 0 also advances Adam's step count and beta^t (this kernel
runs before every update kernel of a step: see optim.py).

Whether a pointer is 16-byte aligned is part of what Triton compiles a kernel for. The loss slot is
a different pointer each step (a slot of the epoch's loss buffer, a captured CUDA graph's own), so
the pointers that may be a loss slot are compiled without that assumption
(do_not_specialize_on_alignment): no slot can call for a new compile, during a graph capture least of
all. ``advance`` is a runtime flag, not a constexpr: a step and a gradient-only pass share one kernel.
"""
import torch
import triton
import triton.language as tl

from ._common import INTERPRET, block_k, check_matrix, check_precision, check_scalar_out, check_shape, \
    check_writable, fixed_config, matmul_tile, pow2_block, prepare_launch
from .optim import advance_adam

LOSSES = ("sse", "ce")
CE_MAX_WIDTH = 256   # classes one program's tile holds
PARTIALS_BLOCK = 256   # sum_partials_kernel's block: one value, so one compiled variant for any count


@triton.jit(do_not_specialize=["advance"], do_not_specialize_on_alignment=["partial_ptr"])
def output_loss_kernel(h_ptr, w_ptr, y_ptr, g_ptr, partial_ptr, step_ptr, powers_ptr, hyper_ptr, scale, M, N, K,
                       advance, stride_hm, stride_hk, stride_wk, stride_wn, stride_ym, stride_yn, stride_gm, stride_gn,
                       LOSS: tl.constexpr, PRECISION: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    if advance != 0:
        if (pid_m == 0) & (pid_n == 0):
            advance_adam(step_ptr, powers_ptr, hyper_ptr)
    offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    z = matmul_tile(h_ptr, stride_hm, stride_hk, w_ptr, stride_wk, stride_wn, M, N, K, offs_m, offs_n,
                    PRECISION=PRECISION, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K)
    inside = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    y = tl.load(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn, mask=inside, other=0.0)
    e, loss = output_error(z, y, inside, offs_n[None, :] < N, LOSS)
    tl.store(g_ptr + offs_m[:, None] * stride_gm + offs_n[None, :] * stride_gn, scale * e, mask=inside)
    tl.store(partial_ptr + pid_m * tl.num_programs(1) + pid_n, tl.sum(tl.sum(loss, axis=1), axis=0))


@triton.jit
def output_error(z, y, inside, cols_in, LOSS: tl.constexpr):
    """The output error e and each element's loss (zero outside the tensor), for a tile of outputs z and
    targets y; "ce" needs the tile to hold the whole row of classes."""
    if LOSS == "sse":
        e = tl.where(inside, z - y, 0.0)
        return e, e * e
    else:
        z_in = tl.where(cols_in, z, -float("inf"))
        z_max = tl.max(z_in, axis=1)
        ex = tl.exp(z_in - z_max[:, None])            # 0 in the columns past the classes
        total = tl.sum(ex, axis=1)
        lse = z_max + tl.log(total)
        e = tl.where(inside, tl.div_rn(ex, total[:, None]) - y, 0.0)
        return e, tl.where(inside, y * (lse[:, None] - z), 0.0)


@triton.jit(do_not_specialize_on_alignment=["out_ptr"])
def sum_partials_kernel(partial_ptr, n, out_ptr, BLOCK: tl.constexpr):
    """out = the partials summed in a fixed order, by one program."""
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, n, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        acc += tl.load(partial_ptr + offs, mask=offs < n, other=0.0)
    tl.store(out_ptr, tl.sum(acc, axis=0))


def output_config(M, N, K, loss="sse", precision="ieee"):
    """Fixed blocks, never autotuned: the host must know how many partials the grid writes. For "ce" the
    tile holds the whole row of classes (fewer rows when it is wide). On the GPU BLOCK_N takes few
    values (16, 64, and 256 for "ce"), so few variants exist to compile (and to check for spills)."""
    if INTERPRET:
        config = fixed_config(M, N, K)
        config.pop("GROUP_M")
        if loss == "ce":
            config["BLOCK_N"] = pow2_block(N, hi=CE_MAX_WIDTH)
        return config
    block_n = 16 if N <= 16 else 64 if N <= 64 or loss == "sse" else CE_MAX_WIDTH
    block_m = 64 if block_n <= 64 else 16
    return dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k(precision),
                num_warps=8 if block_m * block_n >= 4096 else 4, num_stages=3)


def unused_adam(device):
    """Stand-ins for (step, powers, hyper) where nothing advances Adam: never read, but typed like the
    real ones (int64, float64), so that both uses share one compiled kernel."""
    return (torch.zeros((), dtype=torch.int64, device=device), torch.ones(2, dtype=torch.float64, device=device),
            torch.zeros(6, dtype=torch.float64, device=device))


def num_partials(M, N, config):
    return triton.cdiv(M, config["BLOCK_M"]) * triton.cdiv(N, config["BLOCK_N"])


def output_loss(h, w, y, g, loss_out, **options):
    """g = scale * e and loss_out = the loss's sum over the batch. Returns loss_out.
    See output_loss_launcher for the arguments."""
    output_loss_launcher(h, w, y, g, loss_out, **options)()
    return loss_out


def output_loss_launcher(h, w, y, g, loss_out, *, loss="sse", scale=2.0, partials=None, adam=None,
                         precision="ieee", config=None):
    """Check once, then return a callable making the one or two launches of output_loss; call it as
    ``run()`` or ``run(loss_out=other)`` (another 0-d float32 tensor on the same device) to put the loss elsewhere.

    Args:
        h: [M, K] float32 last hidden activation (with a column of ones for a bias).
        w: [K, N] float32 output weight.
        y: [M, N] float32 target (for "ce", rows of probabilities: one-hot or any).
        g: [M, N] float32 output for the gradient scale * e; overlaps no input.
        loss_out: 0-d float32 tensor on h's device; receives the loss, summed over the rows.
        loss: "sse" or "ce"; scale: the gradient's constant (2 for the seed's sum of squares).
        partials: float32 scratch of at least num_partials(M, N, config) elements (allocated here if
            None and needed): one partial per program, summed by a second launch when there are several.
        adam: None, or (step, powers, hyper) of optim.py: program 0 advances Adam's step and beta^t.
        precision: "ieee", "tf32" or "bf16".
        config: a dict of BLOCK_M/BLOCK_N/BLOCK_K (default output_config(M, N, K, loss)); never autotuned.
    """
    check_precision(precision)
    if loss not in LOSSES:
        raise ValueError(f"loss: expected one of {', '.join(map(repr, LOSSES))}, got {loss!r}")
    check_matrix("h", h)
    check_matrix("w", w, h.device)
    (M, K), N = h.shape, w.shape[1]
    check_shape("w", w, (K, N))
    check_matrix("y", y, h.device)
    check_shape("y", y, (M, N))
    check_matrix("g", g, h.device)
    check_shape("g", g, (M, N))
    check_writable("g", g, reads=[("h", h), ("w", w), ("y", y)])
    check_scalar_out("loss_out", loss_out, h.device)
    if loss == "ce" and N > CE_MAX_WIDTH:
        raise ValueError(f"w: loss 'ce' takes each row's softmax in one program, which covers at most "
                         f"{CE_MAX_WIDTH} classes; got {N} (shape {tuple(w.shape)})")
    config = dict(config or output_config(M, N, K, loss, precision))
    if loss == "ce" and config["BLOCK_N"] < N:
        raise ValueError(f"config: loss 'ce' needs BLOCK_N >= the {N} classes (one program per row), "
                         f"got {config['BLOCK_N']}")
    step, powers, hyper = adam if adam is not None else unused_adam(h.device)
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
        h_ptr=h, w_ptr=w, y_ptr=y, g_ptr=g, partial_ptr=target, step_ptr=step, powers_ptr=powers, hyper_ptr=hyper,
        scale=float(scale), M=M, N=N, K=K, advance=int(adam is not None),
        stride_hm=h.stride(0), stride_hk=h.stride(1), stride_wk=w.stride(0), stride_wn=w.stride(1),
        stride_ym=y.stride(0), stride_yn=y.stride(1), stride_gm=g.stride(0), stride_gn=g.stride(1),
        LOSS=loss, PRECISION=precision)
    total = None if n == 1 else prepare_launch(
        sum_partials_kernel, None, (1,), dict(BLOCK=PARTIALS_BLOCK), None,
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
