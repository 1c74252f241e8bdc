"""The tf32/bf16 judge (tests/emulate.py) on the CPU: it rounds as the hardware does, honest rounding
passes its bounds, and an error of 5% fails them (the old fixed bounds let 3% through in bf16)."""
import pytest
import torch

from emulate import FACTOR, bounds_from_emulation, emulated_loop, mm, round_operand
from manualnn import seed_data
from manualnn.testing import reference_runs, rel_err


def test_tf32_keeps_the_top_19_bits_and_bf16_rounds_to_nearest_even():
    t = torch.tensor([1.0 + 2.0 ** -10 + 2.0 ** -11, 1.0 + 2.0 ** -23, -3.0 - 2.0 ** -12])
    assert round_operand(t, "tf32").tolist() == [1.0 + 2.0 ** -10, 1.0, -3.0]          # truncated
    assert torch.equal(round_operand(t, "bf16"), t.to(torch.bfloat16).float())
    assert torch.equal(round_operand(t, "ieee"), t)


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_matmul_bound_passes_honest_rounding_and_fails_a_5_percent_error(precision):
    gen = torch.Generator().manual_seed(61)
    a, w = torch.randn(100, 1000, generator=gen), torch.randn(1000, 100, generator=gen)
    ref = a.double() @ w.double()
    honest = rel_err(mm(a, w, precision), ref)
    print(f"{precision}: emulated rel err {honest:.3g}, bound {FACTOR * honest:.3g}")
    assert rel_err(a @ w, ref) < honest / 10 < FACTOR * honest < 1e-2
    assert rel_err(mm(a, w, precision) * 1.05, ref) > FACTOR * honest


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_run_bounds_pass_the_emulated_run_and_fail_weights_5_percent_off(precision):
    x, y, weights = seed_data(60)
    ref64, _ = reference_runs(x, y, weights, epochs=20, lr=1e-6, grad="relu")
    loss_bound, weight_bounds = bounds_from_emulation(x, y, weights, ref64, epochs=20, lr=1e-6, grad="relu",
                                                      precision=precision)
    print(f"{precision}: loss bound {loss_bound:.3g}, weight bounds {[f'{b:.3g}' for b in weight_bounds]}")
    losses, ws, _ = emulated_loop(x, y, weights, epochs=20, lr=1e-6, grad="relu", precision=precision)
    assert max(rel_err([a], [b]) for a, b in zip(losses, ref64.losses)) <= loss_bound
    for w, r, b in zip(ws, ref64.weights, weight_bounds):
        assert rel_err(w, r) <= b < 0.05
        assert rel_err(w * 1.05, r) > b
