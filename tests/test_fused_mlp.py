"""The two-launch step (kernels.FusedMLPStep) against plain-torch twins and the float64 reference.

One step is checked piece by piece (every hidden activation, every hidden gradient, grad_y, the
loss partials, the loss and every updated weight) with NaN-poisoned buffers; whole runs are judged
against the float64 reference loop in both gradient modes. Shapes: the seed's, batch 1, widths 10,
17, 33 and 128, three hidden layers; a width of 129 does not fit and is refused (the backend then
uses the per-layer kernels). Blocks: the launcher's and small ones that force many programs and
ragged tiles.
"""
import pytest
import torch

import manualnn
from helpers import run_and_judge
from manualnn import kernels, seed_data
from manualnn.testing import rel_err

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SMALL = dict(rows=dict(BLOCK_M=16, BLOCK_K=16), update=dict(BLOCK_R=16, BLOCK_B=16))
# name: (batch, features, hidden, out, lr)
SHAPES = {
    "seed": (100, 1000, (100,), 10, 1e-6),
    "batch1": (1, 33, (17,), 10, 1e-3),
    "w10": (17, 10, (10,), 10, 1e-3),
    "w33": (33, 129, (33,), 17, 3e-5),
    "w128": (40, 33, (128,), 33, 1e-5),
    "3hidden": (33, 65, (17, 33, 10), 10, 1e-6),
    "no-hidden": (9, 20, (), 5, 1e-3),
}


def twin_step(x, y, weights, lr, mode):
    """One step in plain torch: (loss, hidden activations, [grad_h_1.., grad_y], updated weights)."""
    hs = [x]
    for w in weights[:-1]:
        hs.append((hs[-1] @ w).clamp(min=0))
    diff = hs[-1] @ weights[-1] - y
    grads = [None] * len(weights)
    g = 2 * diff
    for i in reversed(range(len(weights))):
        grads[i] = g
        if i > 0:
            gh = g @ weights[i].t()
            g = gh.masked_fill(hs[i] <= 0, 0) if mode == "relu" else gh.clamp(min=0)
    new = [w - lr * (a.t() @ gw) for w, a, gw in zip(weights, hs, grads)]
    return diff.pow(2).sum(), hs[1:], grads, new


def check(name, out, ref64, twin32):
    assert bool(torch.isfinite(out).all()), f"{name}: NaN/Inf (an unwritten element?)"
    err, twin_err = rel_err(out, ref64), rel_err(twin32, ref64)
    bound = 4 * max(twin_err, 8 * 2.0 ** -24)
    print(f"{name}: rel err {err:.3g} (fp32 twin {twin_err:.3g}, bound {bound:.3g})")
    assert err <= bound, f"{name}: rel err {err:.3g} > {bound:.3g}"


CASES = [(shape, mode, blocks) for shape in SHAPES for mode in ("relu", "tutorial") for blocks in ("default", "small")
         if not (DEVICE == "cpu" and shape == "seed" and blocks == "small")]   # ~10 s each on the interpreter


@pytest.mark.parametrize("shape,mode,blocks", CASES)
def test_one_step_piece_by_piece(shape, mode, blocks):
    batch, features, hidden, out, lr = SHAPES[shape]
    x, y, weights = seed_data(50, batch=batch, features=features, hidden=hidden, out=out, device=DEVICE)
    w0 = [w.clone() for w in weights]
    step = kernels.FusedMLPStep(x, y, weights, lr=lr, mode=mode, config=SMALL if blocks == "small" else None)
    for buf in step.acts + step.grads + [step.partials]:
        buf.fill_(float("nan"))
    loss = torch.full((), float("nan"), device=DEVICE)
    step.step(loss)
    loss64, hs64, gs64, new64 = twin_step(x.double(), y.double(), [w.double() for w in w0], lr, mode)
    loss32, hs32, gs32, new32 = twin_step(x, y, w0, lr, mode)
    for i, (h, r, t) in enumerate(zip(step.acts, hs64, hs32)):
        check(f"h_{i + 1}", h, r, t)
    for i, (g, r, t) in enumerate(zip(step.grads, gs64, gs32)):
        check("grad_y" if i == len(weights) - 1 else f"grad_h_{i + 1}", g, r, t)
    check("loss", loss.reshape(1), loss64.reshape(1), loss32.reshape(1))
    block_m = step.rows_config["BLOCK_M"]
    assert step.partials.numel() == -(-batch // block_m)
    diff64 = (gs64[-1] / 2).pow(2).sum(dim=1)
    diff32 = (gs32[-1] / 2).pow(2).sum(dim=1)
    for p in range(step.partials.numel()):
        rows = slice(p * block_m, (p + 1) * block_m)
        check(f"partial {p}", step.partials[p:p + 1], diff64[rows].sum().reshape(1), diff32[rows].sum().reshape(1))
    for i, (w, r, t) in enumerate(zip(weights, new64, new32)):
        check(f"updated w_{i}", w, r, t)
        assert not torch.equal(w, w0[i]), f"w_{i} was not updated"


@pytest.mark.parametrize("grad", ["relu", "tutorial"])
@pytest.mark.parametrize("shape", [s for s in SHAPES if s != "seed"])
def test_whole_runs_match_the_reference(shape, grad):
    batch, features, hidden, out, lr = SHAPES[shape]
    x, y, weights = seed_data(51, batch=batch, features=features, hidden=hidden, out=out, device=DEVICE)
    trainer = manualnn.Trainer(x, y, weights, lr=lr, grad=grad, backend="triton")
    assert trainer.backend.fused
    run_and_judge(x, y, weights, epochs=20, lr=lr, grad=grad, backend="triton")


@pytest.mark.parametrize("grad", ["relu", "tutorial"])
def test_seed_shape_run(grad):
    x, y, weights = seed_data(52, device=DEVICE)
    run_and_judge(x, y, weights, epochs=20 if DEVICE == "cuda" else 3, lr=1e-6, grad=grad, backend="triton")


def test_the_loss_is_deterministic_and_partials_are_summed_in_order():
    x, y, weights = seed_data(53, batch=70, features=20, hidden=(17,), out=10, device=DEVICE)
    losses = []
    for _ in range(2):
        ws = [w.clone() for w in weights]
        step = kernels.FusedMLPStep(x, y, ws, lr=1e-4, mode="relu", config=SMALL)
        loss = torch.full((), float("nan"), device=DEVICE)
        step.step(loss)
        assert step.partials.numel() == 5
        assert abs(loss.item() - step.partials.double().sum().item()) <= 4 * 2.0 ** -24 * loss.item()
        losses.append(loss.item())
    assert losses[0] == losses[1]


def test_a_layer_wider_than_one_tile_is_refused():
    x, y, weights = seed_data(54, batch=4, features=5, hidden=(129,), out=3, device=DEVICE)
    assert not kernels.fits(weights)
    with pytest.raises(ValueError, match=r"weights\[0\]: the two-launch step takes layers at most 128 wide"):
        kernels.FusedMLPStep(x, y, weights, lr=1e-3)
    x, y, weights = seed_data(54, batch=4, features=5, hidden=(128,), out=129, device=DEVICE)
    with pytest.raises(ValueError, match=r"weights\[1\]: the two-launch step takes layers at most 128 wide"):
        kernels.FusedMLPStep(x, y, weights, lr=1e-3)


@pytest.mark.parametrize("call,exc,pattern", [
    (lambda x, y, w: kernels.FusedMLPStep(x, y, w, lr=1e-3, mode="clamp"), ValueError, r"mode: expected one of"),
    (lambda x, y, w: kernels.FusedMLPStep(x, y, w, lr=0.0), ValueError, r"lr: expected a positive number"),
    (lambda x, y, w: kernels.FusedMLPStep(x, y, w[0], lr=1e-3), TypeError, r"weights: expected a non-empty list"),
    (lambda x, y, w: kernels.FusedMLPStep(x, y[:, :2], w, lr=1e-3), ValueError, r"y: expected shape \(4, 3\)"),
    (lambda x, y, w: kernels.FusedMLPStep(x, y, [w[0], w[0]], lr=1e-3), ValueError,
     r"weights\[1\]: expected shape \(6, 6\), got shape \(5, 6\)"),
    (lambda x, y, w: kernels.FusedMLPStep(x, y, [w[0], w[0][:, :3]], lr=1e-3), ValueError,
     r"weights\[0\]: .*overlap the input weights\[1\]"),
    (lambda x, y, w: kernels.FusedMLPStep(x, y, w, lr=1e-3).step(torch.empty(1)), ValueError,
     r"loss_out: expected a 0-d tensor"),
])
def test_bad_arguments(call, exc, pattern):
    x, y, weights = seed_data(55, batch=4, features=5, hidden=(6,), out=3, device=DEVICE)
    if "overlap" in pattern:
        x = torch.randn(4, 6, device=DEVICE)
        w0 = torch.randn(6, 6, device=DEVICE)
        weights, y = [w0], torch.randn(4, 3, device=DEVICE)
    with pytest.raises(exc, match=pattern):
        call(x, y, weights)
