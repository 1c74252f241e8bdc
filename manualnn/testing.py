"""How "equal to the reference" is judged, for tests and benchmarks.

The judge is the reference loop (manualnn/reference.py) in float64 on the CPU, from the same inputs.
A run passes when, on every epoch's loss and on every final weight, its relative error against that
judge (‖out − ref‖ / ‖ref‖) is within ``factor`` (4) times the error of the float32 reference loop
itself, scaled by the precision's unit roundoff over float32's (tf32: 2**13, bf16: 2**16). Why
this rule: the float32 reference's own error measures how much this problem amplifies rounding
(the seed's loss swings over three decades in 20 epochs), so the bound follows the problem rather
than a fixed number that is too loose for one shape and too tight for another. NaN never passes.
Biases, other losses and optimizers, and mini-batches are judged by ``reference_run`` with the same
settings (``judge(..., loss="ce", optimizer="adam", batch_size=8, order=...)``).

The unit-roundoff scaling for tf32/bf16 is a rough bound, untested on a GPU: the kernel tests and the
benchmark judge those precisions against an emulation of their operand rounding instead
(benchmarks/emulate.py: pass its run as the second of ``refs`` with ``precision="fp32"``).
"""
import math
from dataclasses import dataclass, field
from typing import List

import torch

from .reference import reference_loop, reference_run

# unit roundoff of each precision, relative to float32's (2**-24)
EPS_OVER_FP32 = {"fp64": 2.0 ** -29, "fp32": 1.0, "tf32": 2.0 ** 13, "bf16": 2.0 ** 16}
FLOOR = 8 * 2.0 ** -24   # a float32 error so small that the reference may happen to beat it


def rel_err(out, ref):
    """‖out − ref‖ / ‖ref‖ in float64 (inf when out has NaN/Inf)."""
    out = torch.as_tensor(out, dtype=torch.float64).cpu()
    ref = torch.as_tensor(ref, dtype=torch.float64).cpu()
    if not bool(torch.isfinite(out).all()):
        return math.inf
    return float(torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref).clamp_min(1e-300))


@dataclass
class Verdict:
    ok: bool
    loss_errors: List[float]
    loss_bounds: List[float]
    weight_errors: List[float]
    weight_bounds: List[float]
    failures: List[str] = field(default_factory=list)

    def summary(self):
        worst = max(e / b for e, b in zip(self.loss_errors + self.weight_errors,
                                          self.loss_bounds + self.weight_bounds))
        head = "PASS" if self.ok else "FAIL"
        return (f"{head}: max loss rel err {max(self.loss_errors):.3g} (bound {max(self.loss_bounds):.3g}), "
                f"weights rel err {', '.join(f'{e:.3g}' for e in self.weight_errors)} "
                f"(bounds {', '.join(f'{b:.3g}' for b in self.weight_bounds)}); worst/bound {worst:.3g}"
                + ("" if self.ok else "; " + "; ".join(self.failures[:5])))


def reference_runs(x, y, weights, *, epochs, lr, grad, device="cpu", biases=None, batch_size=None, order=None,
                   **spec_args):
    """The float64 judge and the float32 reference from the same inputs, on the CPU by default.

    The seed's case (full batch, sum of squares, SGD, no biases) runs the seed's own loop
    (reference_loop); anything else the general reference_run with the same settings. Integer class
    labels y become one-hot targets. (The benchmark runs them on the GPU for shapes too big for the
    CPU, with TF32 off.)
    """
    if not y.is_floating_point():
        y = torch.nn.functional.one_hot(y.long(), weights[-1].shape[1])
    to = lambda t, dt: t.detach().to(device, dt)  # noqa: E731
    seed_case = biases is None and batch_size is None and order is None and not spec_args
    runs = {}
    for name, dt in (("fp64", torch.float64), ("fp32", torch.float32)):
        args = (to(x, dt), to(y, dt), [to(w, dt) for w in weights])
        if seed_case:
            runs[name] = reference_loop(*args, epochs=epochs, lr=lr, grad=grad)
        else:
            runs[name] = reference_run(*args, None if biases is None else [to(b, dt) for b in biases], epochs=epochs,
                                       lr=lr, grad=grad, batch_size=batch_size, order=order, **spec_args)
    return runs["fp64"], runs["fp32"]


def judge(losses, weights, x, y, weights0, *, epochs, lr, grad, precision="fp32", factor=4.0, refs=None,
          biases=None, biases0=None, **settings):
    """Judge a run (its per-epoch ``losses`` and final ``weights``, and ``biases``) started from ``x, y,
    weights0`` (and ``biases0``). ``settings``: the rest of the run's step and batches, as
    reference_runs takes them (``loss=``, ``optimizer=``, ``batch_size=``, ``order=``, ...)."""
    ref64, ref32 = refs if refs is not None else reference_runs(x, y, weights0, epochs=epochs, lr=lr, grad=grad,
                                                                biases=biases0, **settings)
    scale = factor * EPS_OVER_FP32[precision]
    failures = []
    if len(losses) != len(ref64.losses):
        failures.append(f"expected {len(ref64.losses)} losses, got {len(losses)}")
    loss_err, loss_bound, running = [], [], FLOOR
    for e, (out, r64, r32) in enumerate(zip(losses, ref64.losses, ref32.losses)):
        running = max(running, rel_err([r32], [r64]))
        err, bound = rel_err([out], [r64]), scale * running
        loss_err.append(err)
        loss_bound.append(bound)
        if not err <= bound:
            failures.append(f"epoch {e}: loss {out!r} vs float64 {r64!r}: rel err {err:.3g} > {bound:.3g}")
    w_err, w_bound = [], []
    if len(weights) != len(ref64.weights):   # zip would judge the common layers only
        failures.append(f"expected {len(ref64.weights)} weight tensors, got {len(weights)}")
    pairs = list(zip(weights, ref64.weights, ref32.weights))
    if biases is not None or ref64.biases is not None:
        if biases is None or ref64.biases is None:
            failures.append("biases: one run has them and the other not")
        elif len(biases) != len(ref64.biases):
            failures.append(f"expected {len(ref64.biases)} bias tensors, got {len(biases)}")
        else:
            pairs += list(zip(biases, ref64.biases, ref32.biases))
    for i, (out, r64, r32) in enumerate(pairs):
        err, bound = rel_err(out, r64), scale * max(running, rel_err(r32, r64))
        w_err.append(err)
        w_bound.append(bound)
        if not err <= bound:
            name = f"weights[{i}]" if i < len(weights) else f"biases[{i - len(weights)}]"
            failures.append(f"{name}: rel err {err:.3g} > {bound:.3g}")
    return Verdict(not failures, loss_err, loss_bound, w_err, w_bound, failures)
