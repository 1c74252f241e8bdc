"""The optimizers' update, written once: ``apply_optimizer`` is the one definition of SGD, momentum and
Adam (and of the gradient-only store) that every kernel applying an update calls in its epilogue:
the per-layer weight-gradient kernel, the two-launch step's update kernel and ``update_kernel``,
the element-wise update from gradients already in memory (after an all-reduce, say).

The math is torch.optim's, as manualnn.backends.torch_backend.TorchOptimizer writes it:
- weight decay: ``g += weight_decay * p`` on the weight rows only (never a bias row);
- "sgd": ``p -= lr * g``; "momentum": ``m = momentum * m + g; p -= lr * m``;
- "adam": ``m += (1 - b1) (g - m); v = b2 v + (1 - b2) g^2; p -= lr / (1 - b1^t) * m / (sqrt(v) /
  sqrt(1 - b2^t) + eps)``.

The hyper-parameters live in a float64 device buffer (``hyper_parameters``), not in kernel
arguments: Triton passes Python floats as fp32, and Adam's ``1 - beta2^t`` loses four digits when
beta2 is rounded to fp32 first. Adam's step count and ``beta^t`` (Params.step and Params.powers)
are advanced on the device, once per step, by program 0 of a launch that runs before any update
reads them (``advance_adam``): so a CUDA graph that replays the step replays the advance too.
"""
import torch
import triton
import triton.language as tl

from ._common import check_matrix, check_writable

OPTIMIZERS = ("grad", "sgd", "momentum", "adam")   # "grad": store the gradient, update nothing
STATE = {"grad": 0, "sgd": 0, "momentum": 1, "adam": 2}   # optimizer buffers per parameter

# the float64 hyper-parameter buffer's entries
LR = tl.constexpr(0)
MOMENTUM = tl.constexpr(1)
BETA1 = tl.constexpr(2)
BETA2 = tl.constexpr(3)
EPS = tl.constexpr(4)
WEIGHT_DECAY = tl.constexpr(5)


def hyper_parameters(*, lr, momentum=0.0, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, device):
    """The float64 buffer every update kernel reads its hyper-parameters from."""
    return torch.tensor([lr, momentum, betas[0], betas[1], eps, weight_decay], dtype=torch.float64, device=device)


@triton.jit
def advance_adam(step_ptr, powers_ptr, hyper_ptr):
    """Adam's step count += 1 and (beta1^t, beta2^t) *= (beta1, beta2), in float64. One program calls it."""
    tl.store(step_ptr, tl.load(step_ptr) + 1)
    tl.store(powers_ptr, tl.load(powers_ptr) * tl.load(hyper_ptr + BETA1))
    tl.store(powers_ptr + 1, tl.load(powers_ptr + 1) * tl.load(hyper_ptr + BETA2))


@triton.jit
def apply_optimizer(g, offs, inside, decay, p_ptr, grad_ptr, m_ptr, v_ptr, hyper_ptr, powers_ptr,
                    OPTIMIZER: tl.constexpr):
    """Apply the update for gradient tile ``g`` (fp32) at element offsets ``offs`` of the contiguous
    parameter (and of its gradient and state buffers, laid out alike). ``inside``: the tile's elements
    that exist; ``decay``: those that weight decay applies to (none without weight decay: a runtime
    mask, not a constexpr, so one compiled kernel serves both)."""
    if OPTIMIZER == "grad":
        tl.store(grad_ptr + offs, g, mask=inside)
    else:
        p = tl.load(p_ptr + offs, mask=inside, other=0.0)
        g = tl.where(decay, g + tl.load(hyper_ptr + WEIGHT_DECAY).to(tl.float32) * p, g)
        if OPTIMIZER == "sgd":
            p = p - tl.load(hyper_ptr + LR).to(tl.float32) * g
        elif OPTIMIZER == "momentum":
            m = tl.load(m_ptr + offs, mask=inside, other=0.0) * tl.load(hyper_ptr + MOMENTUM).to(tl.float32) + g
            tl.store(m_ptr + offs, m, mask=inside)
            p = p - tl.load(hyper_ptr + LR).to(tl.float32) * m
        else:
            beta1 = tl.load(hyper_ptr + BETA1)
            beta2 = tl.load(hyper_ptr + BETA2)
            m = tl.load(m_ptr + offs, mask=inside, other=0.0)
            v = tl.load(v_ptr + offs, mask=inside, other=0.0)
            m = m + (1.0 - beta1).to(tl.float32) * (g - m)
            v = v * beta2.to(tl.float32) + (1.0 - beta2).to(tl.float32) * g * g
            tl.store(m_ptr + offs, m, mask=inside)
            tl.store(v_ptr + offs, v, mask=inside)
            # the bias corrections in float64 from the device's beta^t (advanced earlier in this step)
            step_size = (tl.load(hyper_ptr + LR) / (1.0 - tl.load(powers_ptr))).to(tl.float32)
            corr2_sqrt = tl.sqrt(1.0 - tl.load(powers_ptr + 1)).to(tl.float32)   # float64: correctly rounded
            # IEEE division and sqrt (Triton's "/" and tl.sqrt on fp32 are approximate on the GPU)
            denom = tl.div_rn(tl.sqrt_rn(v), corr2_sqrt) + tl.load(hyper_ptr + EPS).to(tl.float32)
            p = p - tl.div_rn(m, denom) * step_size
        tl.store(p_ptr + offs, p, mask=inside)


def optimizer_args(optimizer, p, *, hyper=None, state=(), powers=None, grad_out=None, decay_rows=0, reads=()):
    """Check the tensors an update needs; return the kernel arguments of ``apply_optimizer`` (pointers,
    ``decay_rows`` and the OPTIMIZER constexpr). ``p``: the contiguous parameter [rows, cols]
    (updated in place; with "grad" only its shape counts), ``grad_out`` (for "grad"), ``state``: its
    optimizer buffers (momentum: (m,), adam: (m, v)), ``powers``: Adam's float64 (beta1^t, beta2^t),
    ``decay_rows``: the leading rows that are weights and decay (0: no weight decay)."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {', '.join(map(repr, OPTIMIZERS))}, got {optimizer!r}")
    check_matrix("p", p)
    if optimizer == "grad":
        if grad_out is None:
            raise ValueError("grad_out: the gradient-only update stores the gradient; expected a tensor, got None")
        check_matrix("grad_out", grad_out, p.device)
        _check_like("grad_out", grad_out, p)
        check_writable("grad_out", grad_out, reads=reads)
        return dict(p_ptr=grad_out, grad_ptr=grad_out, m_ptr=grad_out, v_ptr=grad_out, hyper_ptr=grad_out,
                    powers_ptr=grad_out, decay_rows=0, OPTIMIZER=optimizer)
    _check_like("p", p, p)
    check_writable("p", p, reads=reads)
    if not isinstance(hyper, torch.Tensor) or hyper.dtype != torch.float64 or hyper.numel() != 6 \
            or hyper.device != p.device:
        raise ValueError(f"hyper: expected hyper_parameters(...) (6 float64 values on {p.device}), got {hyper!r}")
    if len(state) != STATE[optimizer]:
        raise ValueError(f"state: optimizer {optimizer!r} keeps {STATE[optimizer]} buffers per parameter, "
                         f"got {len(state)}")
    for i, s in enumerate(state):
        check_matrix(f"state[{i}]", s, p.device)
        _check_like(f"state[{i}]", s, p)
    if optimizer == "adam" and (not isinstance(powers, torch.Tensor) or powers.dtype != torch.float64
                                or powers.numel() != 2 or powers.device != p.device):
        raise ValueError(f"powers: Adam reads (beta1^t, beta2^t) as 2 float64 values on {p.device}, got {powers!r}")
    if not 0 <= int(decay_rows) <= p.shape[0]:
        raise ValueError(f"decay_rows: expected 0..{p.shape[0]} (the weight rows), got {decay_rows!r}")
    m = state[0] if state else p
    v = state[1] if len(state) > 1 else p
    return dict(p_ptr=p, grad_ptr=p, m_ptr=m, v_ptr=v, hyper_ptr=hyper,
                powers_ptr=powers if powers is not None else hyper, decay_rows=int(decay_rows), OPTIMIZER=optimizer)


def _check_like(name, t, p):
    """Update tensors are addressed as one contiguous [rows, cols] layout (offset r * cols + c)."""
    if tuple(t.shape) != tuple(p.shape) or not t.is_contiguous():
        raise ValueError(f"{name}: expected a contiguous tensor of shape {tuple(p.shape)} (the parameter's), "
                         f"got shape {tuple(t.shape)} with strides {t.stride()}")


# ---- the element-wise update from gradients in memory ----

P_ADDR = tl.constexpr(0)
GRAD_ADDR = tl.constexpr(1)
M_ADDR = tl.constexpr(2)
V_ADDR = tl.constexpr(3)
NUMEL = tl.constexpr(4)
DECAY_NUMEL = tl.constexpr(5)
UPDATE_FIELDS = tl.constexpr(6)


@triton.jit
def adam_advance_kernel(step_ptr, powers_ptr, hyper_ptr):
    advance_adam(step_ptr, powers_ptr, hyper_ptr)


@triton.jit
def update_kernel(table_ptr, tile_ptr, hyper_ptr, powers_ptr, OPTIMIZER: tl.constexpr, BLOCK: tl.constexpr):
    """One program per BLOCK elements of one parameter (a row of the tile table: layer, first element)."""
    pid = tl.program_id(0)
    layer = tl.load(tile_ptr + 2 * pid)
    offs = tl.load(tile_ptr + 2 * pid + 1) + tl.arange(0, BLOCK).to(tl.int64)
    row = table_ptr + layer * UPDATE_FIELDS
    f32 = tl.pointer_type(tl.float32)
    grad_ptr = tl.load(row + GRAD_ADDR).to(f32)
    inside = offs < tl.load(row + NUMEL)
    g = tl.load(grad_ptr + offs, mask=inside, other=0.0)
    apply_optimizer(g, offs, inside, offs < tl.load(row + DECAY_NUMEL), tl.load(row + P_ADDR).to(f32), grad_ptr,
                    tl.load(row + M_ADDR).to(f32), tl.load(row + V_ADDR).to(f32), hyper_ptr, powers_ptr,
                    OPTIMIZER=OPTIMIZER)


UPDATE_BLOCK = 1024     # elements per program of update_kernel


def update_launcher(params, grads, *, optimizer, hyper, state=None, powers=None, step=None, decay_rows=None,
                    block=UPDATE_BLOCK):
    """Check once, then return a callable applying ``optimizer`` to every parameter from its gradient:
    one launch (two for Adam: its step count and beta^t are advanced first, by one program).

    Args:
        params: the parameters, each a contiguous float32 [rows, cols] tensor, updated in place.
        grads: their gradients, shaped and laid out alike (read only).
        optimizer: "sgd", "momentum" or "adam"; hyper: hyper_parameters(...).
        state: per parameter, its buffers (momentum: (m,), adam: (m, v)).
        powers, step: Adam's float64 (beta1^t, beta2^t) and 0-d int64 step count, advanced on the device.
        decay_rows: per parameter, its leading rows that weight decay applies to (None: none).
    """
    if optimizer == "grad" or optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected 'sgd', 'momentum' or 'adam', got {optimizer!r}")
    if len(grads) != len(params):
        raise ValueError(f"grads: expected {len(params)} tensors (one per parameter), got {len(grads)}")
    state = state or [()] * len(params)
    decay_rows = decay_rows or [0] * len(params)
    table, tiles = [], []
    for i, (p, g) in enumerate(zip(params, grads)):
        check_matrix(f"grads[{i}]", g, p.device)
        _check_like(f"grads[{i}]", g, p)
        args = optimizer_args(optimizer, p, hyper=hyper, state=state[i], powers=powers, decay_rows=decay_rows[i],
                              reads=[(f"grads[{i}]", g)])
        ptr = lambda name: args[name].data_ptr()  # noqa: E731
        table.append([ptr("p_ptr"), g.data_ptr(), ptr("m_ptr"), ptr("v_ptr"), p.numel(), decay_rows[i] * p.shape[1]])
        tiles += [(i, start) for start in range(0, p.numel(), block)]
    device = params[0].device
    table = torch.tensor(table, dtype=torch.int64, device=device)
    tiles = torch.tensor(tiles, dtype=torch.int64, device=device)
    if optimizer == "adam":
        if not isinstance(step, torch.Tensor) or step.dtype != torch.int64 or step.numel() != 1:
            raise ValueError(f"step: Adam counts its steps in a 0-d int64 tensor, got {step!r}")
    powers_ = powers if optimizer == "adam" else hyper

    def run():
        if optimizer == "adam":
            adam_advance_kernel[(1,)](step, powers, hyper)
        if tiles.shape[0]:
            update_kernel[(tiles.shape[0],)](table, tiles, hyper, powers_, OPTIMIZER=optimizer, BLOCK=block)
    run.table, run.tiles = table, tiles     # kept alive with the callable (the kernel reads their addresses)
    return run


