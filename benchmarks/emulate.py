"""What honest tf32 and bf16 operand rounding does, emulated on the CPU: the judge for those modes.

The GPU's tf32 matmul (wgmma/mma with fp32 operands) reads only the top 19 bits of each fp32
operand, i.e. it truncates the low 13 mantissa bits (the PTX Triton emits has no cvt.rna.tf32);
bf16 operands are rounded to nearest even by the kernels' ``.to(tl.bfloat16)``. Both accumulate in
fp32. Applying the same rounding to the operands on the CPU and multiplying in fp32 gives the
error those precisions really make; tests and the benchmark's judge bound runs in those modes by a
small factor above it.
"""
import torch

from manualnn.reference import ReferenceRun
from manualnn.testing import rel_err

FACTOR = 3.0   # a kernel in a reduced precision may be this many times worse than the emulation


def round_operand(t, precision):
    """t (float32) as the tensor cores see it in ``precision``."""
    t = t.detach().float()
    if precision == "tf32":
        return (t.contiguous().view(torch.int32) & ~0x1FFF).view(torch.float32)
    if precision == "tf32-rn":  # round to nearest (cvt.rna.tf32): shown beside "tf32" for comparison only
        return ((t.contiguous().view(torch.int32) + 0x1000) & ~0x1FFF).view(torch.float32)
    if precision == "bf16":
        return t.to(torch.bfloat16).float()
    if precision == "ieee":
        return t
    raise ValueError(f"precision: expected 'ieee', 'tf32' or 'bf16', got {precision!r}")


def mm(a, b, precision):
    """a @ b with both operands rounded as ``precision`` does, accumulated in fp32 (IEEE on CUDA too:
    callers there keep TF32 off), on the operands' device."""
    return round_operand(a, precision) @ round_operand(b, precision)


def emulated_loop(x, y, weights, *, epochs, lr, grad, precision, device="cpu"):
    """The reference loop in fp32 with every matmul's operands rounded as ``precision`` does.
    Returns a ReferenceRun (losses, weights), so it can stand where the fp32 reference does."""
    x, y = x.detach().float().to(device), y.detach().float().to(device)
    ws = [w.detach().float().to(device).clone() for w in weights]
    losses = []
    for _ in range(epochs):
        hs = [x]
        for w in ws[:-1]:
            hs.append(mm(hs[-1], w, precision).clamp(min=0))
        diff = mm(hs[-1], ws[-1], precision) - y
        losses.append(diff.double().pow(2).sum())
        g = 2 * diff
        grads = [None] * len(ws)
        for i in reversed(range(len(ws))):
            grads[i] = mm(hs[i].t(), g, precision)
            if i > 0:
                gh = mm(g, ws[i].t(), precision)
                g = gh.masked_fill(hs[i] <= 0, 0) if grad == "relu" else gh.clamp(min=0)
        for w, gw in zip(ws, grads):
            w -= lr * gw
    return ReferenceRun(torch.stack(losses).tolist(), ws)


def bounds_from_emulation(x, y, weights, ref64, *, epochs, lr, grad, precision):
    """Bounds for a run in ``precision``: FACTOR x the emulated run's error against the float64 judge,
    on the worst epoch's loss and on each final weight. Returns (loss_bound, [weight bounds])."""
    losses, ws, _ = emulated_loop(x, y, weights, epochs=epochs, lr=lr, grad=grad, precision=precision)
    loss_err = max(rel_err([a], [b]) for a, b in zip(losses, ref64.losses))
    return FACTOR * loss_err, [FACTOR * rel_err(w, r) for w, r in zip(ws, ref64.weights)]
