"""The two-launch step (kernels.TwoLaunchStep) against plain-torch twins, judged against float64.

One step is checked piece by piece (every hidden activation, every layer's output gradient, the
loss partials, the loss, every updated parameter and optimizer buffer, or every stored gradient)
with NaN-poisoned buffers. Shapes: the seed's, batch 1, widths 10, 17, 33 and 128, three hidden
layers, no hidden layer; with and without biases (the ones column made in registers), "sse" and
"ce", every optimizer; a width of 129 does not fit and is refused (the backend then uses the
per-layer kernels). Blocks: the launcher's and small ones that force many programs and ragged tiles.
"""
import pytest
import torch

from manualnn import kernels, seed_data
from manualnn.backends.torch_backend import TorchOptimizer
from manualnn.spec import Params, StepSpec
from manualnn.testing import rel_err

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SMALL = dict(rows=dict(BLOCK_M=16, BLOCK_K=16, SPLIT=1), update=dict(BLOCK_R=16, BLOCK_C=16, BLOCK_B=16))
# layer 0's K split between 3 programs per row block: the parts, the atomic count, the fixed-order sum
SPLIT = dict(rows=dict(BLOCK_M=16, BLOCK_K=16, SPLIT=3), update=dict(BLOCK_R=16, BLOCK_C=16, BLOCK_B=16))
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
# what a case trains, in turn: (bias, loss, reduction)
VARIANTS = [(False, "sse", "sum"), (True, "ce", "mean"), (True, "sse", "mean"), (False, "ce", "sum")]


def problem(shape, bias, loss, seed=50):
    """x (with its ones column when bias), y, the parameters [in (+1), out] and the lr. Cross-entropy
    gets kaiming-scaled weights: the seed's unscaled randn gives logits in the hundreds, where any
    fp32 summation order moves the softmax by 1e-6 and the twin's own error says little."""
    batch, features, hidden, out, lr = SHAPES[shape]
    x, y, weights = seed_data(seed, batch=batch, features=features, hidden=hidden, out=out, device=DEVICE,
                              init="kaiming" if loss == "ce" else "randn")
    if loss == "ce":
        y = torch.softmax(3 * y, 1)
    if bias:
        gen = torch.Generator().manual_seed(seed + 1)
        x = torch.cat([x, torch.ones(batch, 1, device=DEVICE)], 1)
        weights = [torch.cat([w, torch.randn(1, w.shape[1], generator=gen).to(DEVICE)]) for w in weights]
    return x, y, [w.contiguous() for w in weights], lr


def twin_step(x, y, params, bias, mode, loss, scale):
    """One step's pieces in plain torch: (loss, hidden activations, every layer's output gradient
    (the last scale * e), every parameter's gradient)."""
    hs = [x]
    with_one = lambda h: torch.cat([h, torch.ones(h.shape[0], 1, dtype=h.dtype, device=h.device)], 1) \
        if bias else h  # noqa: E731
    inputs = [x]
    for p in params[:-1]:
        hs.append((inputs[-1] @ p).clamp(min=0))
        inputs.append(with_one(hs[-1]))
    z = inputs[-1] @ params[-1]
    if loss == "sse":
        e, total = z - y, (z - y).pow(2).sum()
    else:
        e, total = torch.softmax(z, 1) - y, -(y * torch.log_softmax(z, 1)).sum()
    outs = [None] * len(params)
    g = scale * e
    for i in reversed(range(len(params))):
        outs[i] = g
        if i > 0:
            gh = g @ params[i][:hs[i].shape[1]].t()
            g = gh.masked_fill(hs[i] <= 0, 0) if mode == "relu" else gh.clamp(min=0)
    return total, hs[1:], outs, [a.t() @ o for a, o in zip(inputs, outs)]


def check(name, out, ref64, twin32):
    assert bool(torch.isfinite(out).all()), f"{name}: NaN/Inf (an unwritten element?)"
    err, twin_err = rel_err(out, ref64), rel_err(twin32, ref64)
    bound = 4 * max(twin_err, 8 * 2.0 ** -24)
    print(f"{name}: rel err {err:.3g} (fp32 twin {twin_err:.3g}, bound {bound:.3g})")
    assert err <= bound, f"{name}: rel err {err:.3g} > {bound:.3g}"


def make(x, y, params, spec, bias, config=None, grads=None):
    """A TwoLaunchStep for ``spec`` on a Params of ``params``' tensors (returned too)."""
    pp = Params(params, bias, spec)
    decay = [(p.shape[0] - int(bias)) if spec.weight_decay else 0 for p in params]
    hyper = kernels.hyper_parameters(lr=spec.lr, momentum=spec.momentum, betas=spec.betas, eps=spec.eps,
                                     weight_decay=spec.weight_decay, device=DEVICE)
    step = kernels.TwoLaunchStep(
        x, y, params, bias=bias, grad=spec.grad, loss=spec.loss, scale=spec.grad_scale(x.shape[0]),
        optimizer=spec.optimizer, hyper=hyper, state=[tuple(pp.state[n][i] for n in spec.state_names)
                                                      for i in range(len(params))],
        powers=pp.powers, step=pp.step, decay_rows=decay, grads=grads, config=config)
    for buf in step.acts + step.outs + [step.partials]:
        buf.fill_(float("nan"))
    return step, pp


CONFIGS = {"default": None, "small": SMALL, "split": SPLIT}
CASES = [(shape, mode, blocks, VARIANTS[i % len(VARIANTS)])
         for i, (shape, mode, blocks) in enumerate((s, m, b) for s in SHAPES for m in ("relu", "tutorial")
                                                   for b in ("default", "small", "split"))
         if not (DEVICE == "cpu" and shape == "seed" and blocks != "default")
         and not (blocks == "split" and shape in ("w10", "w128"))]


@pytest.mark.parametrize("shape,mode,blocks,variant", CASES)
def test_one_sgd_step_piece_by_piece(shape, mode, blocks, variant):
    bias, loss, reduction = variant
    x, y, params, _ = problem(shape, bias, loss)
    p0 = [p.clone() for p in params]
    scale = StepSpec(loss=loss, reduction=reduction).grad_scale(x.shape[0])
    loss64, hs64, outs64, grads64 = twin_step(x.double(), y.double(), [p.double() for p in p0], bias, mode, loss,
                                              scale)
    loss32, hs32, outs32, grads32 = twin_step(x, y, p0, bias, mode, loss, scale)
    # an lr that moves every parameter by about 1%: a wrong gradient then shows in the updated values
    lr = 0.01 * min(float(p.norm() / g.norm()) for p, g in zip(p0, grads64) if g.norm() > 0)
    spec = StepSpec(lr=lr, grad=mode, loss=loss, reduction=reduction)
    step, _ = make(x, y, params, spec, bias, CONFIGS[blocks])
    if blocks == "split":
        step.zsplit.fill_(float("nan"))
    total = torch.full((), float("nan"), device=DEVICE)
    step.step(total)
    assert int(step.counts.abs().sum()) == 0, "a row block's count of K parts was left non-zero"
    for i, (h, r, t) in enumerate(zip(step.acts, hs64, hs32)):
        check(f"h_{i + 1}", h, r, t)
    for i, (g, r, t) in enumerate(zip(step.outs, outs64, outs32)):
        check(f"dL/dz_{i}", g, r, t)
    check("loss", total.reshape(1), loss64.reshape(1), loss32.reshape(1))
    block_m = step.rows_config["BLOCK_M"]
    assert step.partials.numel() == -(-x.shape[0] // block_m)
    assert abs(total.item() - step.partials.double().sum().item()) <= 4 * 2.0 ** -24 * abs(total.item()) + 1e-30
    for i, (p, q, r, t) in enumerate(zip(params, p0, grads64, grads32)):
        check(f"updated p_{i}", p, q.double() - lr * r, q - lr * t)
        assert not torch.equal(p, q), f"p_{i} was not updated"


OPTIMIZER_SPECS = {
    "momentum+decay": dict(optimizer="momentum", momentum=0.8, weight_decay=0.3),
    "adam+decay": dict(optimizer="adam", betas=(0.8, 0.99), weight_decay=0.3),
}


@pytest.mark.parametrize("name", list(OPTIMIZER_SPECS))
@pytest.mark.parametrize("shape", ["w33", "3hidden"])
def test_optimizers_in_the_update_epilogue(shape, name):
    # two steps (Adam's corrections change with t; the momentum buffer carries over), small blocks;
    # the twin: the same gradients through the torch backend's TorchOptimizer, in float64 and float32
    x, y, params, _ = problem(shape, True, "ce")
    spec = StepSpec(lr=1e-2, loss="ce", reduction="mean", **OPTIMIZER_SPECS[name])
    twins = {dt: Params([p.clone().to(dt) for p in params], True, spec) for dt in (torch.float64, torch.float32)}
    step, pp = make(x, y, params, spec, True, SMALL)
    for _ in range(2):
        for dt, tp in twins.items():
            grads = twin_step(x.to(dt), y.to(dt), tp.tensors, True, "relu", "ce", 1 / x.shape[0])[3]
            TorchOptimizer(tp, spec, grads)()
        step.step(torch.zeros((), device=DEVICE))
    assert int(pp.step) == (2 if spec.optimizer == "adam" else 0)
    assert pp.powers.tolist() == twins[torch.float64].powers.tolist()
    for i in range(len(params)):
        check(f"{name}: p_{i}", params[i], twins[torch.float64].tensors[i], twins[torch.float32].tensors[i])
        for state in spec.state_names:
            check(f"{name}: {state}_{i}", pp.state[state][i], twins[torch.float64].state[state][i],
                  twins[torch.float32].state[state][i])


@pytest.mark.parametrize("shape", ["w10", "3hidden"])
def test_gradients_only_store_every_gradient(shape):
    x, y, params, _ = problem(shape, True, "sse")
    spec = StepSpec(lr=0.1, optimizer="adam", weight_decay=0.1)
    p0 = [p.clone() for p in params]
    grads = [torch.full_like(p, float("nan")) for p in params]
    step, pp = make(x, y, params, spec, True, SMALL, grads=grads)
    total = torch.full((), float("nan"), device=DEVICE)
    step.gradients(total)
    _, _, _, g64 = twin_step(x.double(), y.double(), [p.double() for p in p0], True, "relu", "sse", 2.0)
    loss32, _, _, g32 = twin_step(x, y, p0, True, "relu", "sse", 2.0)
    for i, (g, r, t) in enumerate(zip(grads, g64, g32)):
        check(f"grad_{i}", g, r, t)
    assert all(torch.equal(p, q) for p, q in zip(params, p0)), "gradients() changed a parameter"
    assert int(pp.step) == 0 and pp.powers.tolist() == [1.0, 1.0], "gradients() advanced Adam"
    assert abs(total.item() - loss32.item()) <= 1e-5 * loss32.item()


@pytest.mark.parametrize("config", ["small", "split"])
def test_the_loss_is_deterministic_and_partials_are_summed_in_order(config):
    x, y, params, _ = problem("w33", False, "sse")
    losses, results = [], []
    for _ in range(2):
        ps = [p.clone() for p in params]
        step, _ = make(x, y, ps, StepSpec(lr=1e-4), False, CONFIGS[config])
        assert step.split == (3 if config == "split" else 1)
        for _ in range(2):     # the second step finds the counts reset by the first
            total = torch.full((), float("nan"), device=DEVICE)
            step.step(total)
        assert step.partials.numel() == 3
        assert abs(total.item() - step.partials.double().sum().item()) <= 4 * 2.0 ** -24 * total.item()
        losses.append(total.item())
        results.append(ps)
    assert losses[0] == losses[1] and all(torch.equal(a, b) for a, b in zip(*results))


def test_a_layer_wider_than_one_tile_is_refused():
    x, y, params, _ = problem("w10", False, "sse")
    wide = [torch.randn(10, 129, device=DEVICE), torch.randn(129, 10, device=DEVICE)]
    assert kernels.fits([128, 10]) and not kernels.fits([129, 10])
    with pytest.raises(ValueError, match=r"params\[0\]: the two-launch step takes layers at most 128 wide"):
        make(x, y, wide, StepSpec(), False)


@pytest.mark.parametrize("call,exc,pattern", [
    (lambda x, y, p, h: kernels.TwoLaunchStep(x, y, p, grad="clamp", hyper=h), ValueError, r"grad: expected one of"),
    (lambda x, y, p, h: kernels.TwoLaunchStep(x, y, p, loss="mse", hyper=h), ValueError, r"loss: expected one of"),
    (lambda x, y, p, h: kernels.TwoLaunchStep(x, y, p[0], hyper=h), TypeError, r"params: expected a non-empty list"),
    (lambda x, y, p, h: kernels.TwoLaunchStep(x, y[:, :2], p, hyper=h), ValueError, r"y: expected shape \(4, 3\)"),
    (lambda x, y, p, h: kernels.TwoLaunchStep(x, y, p, bias=True, hyper=h), ValueError,
     r"params\[1\]: expected shape \(7, 3\), got shape \(6, 3\)"),
    (lambda x, y, p, h: kernels.TwoLaunchStep(x, y, p, hyper=None), ValueError, r"hyper: expected hyper_parameters"),
    (lambda x, y, p, h: kernels.TwoLaunchStep(x, y, p, optimizer="adam", hyper=h, state=[(q, q) for q in p]),
     ValueError, r"powers: Adam reads"),
    (lambda x, y, p, h: kernels.TwoLaunchStep(x, y, p, hyper=h).step(torch.empty(1)), ValueError,
     r"loss_out: expected a 0-d tensor"),
    (lambda x, y, p, h: kernels.TwoLaunchStep(x, y, p, hyper=h).gradients(torch.empty(())), ValueError,
     r"grads: gradients\(\) stores into the grads given"),
])
def test_bad_arguments(call, exc, pattern):
    x, y, weights = seed_data(55, batch=4, features=5, hidden=(6,), out=3, device=DEVICE)
    hyper = kernels.hyper_parameters(lr=0.1, device=DEVICE)
    with pytest.raises(exc, match=pattern):
        call(x, y, weights, hyper)


def test_parameters_overlapping_each_other_are_refused():
    x, y = torch.randn(4, 6, device=DEVICE), torch.randn(4, 3, device=DEVICE)
    p0 = torch.randn(6, 6, device=DEVICE)
    with pytest.raises(ValueError, match=r"p: .*overlap the input params\[1\]"):
        kernels.TwoLaunchStep(x, y, [p0, p0[:, :3]], hyper=kernels.hyper_parameters(lr=0.1, device=DEVICE))


@pytest.mark.cuda
def test_split_k_on_a_gpu_is_deterministic_replay_after_replay():
    """On a GPU the programs sharing layer 0's K really race for the atomic count: 200 steps captured in a
    CUDA graph and replayed, from the same start twice, give bitwise the same parameters (the last to
    arrive sums the parts in a fixed order and resets the count for the next replay); and they stay
    within float32 rounding of the unsplit step (SPLIT=1). gpu_check.sh runs this."""
    x, y, params, lr = problem("seed", True, "ce")
    config = lambda split: dict(rows=dict(BLOCK_M=16, BLOCK_K=16, SPLIT=split),  # noqa: E731
                                update=dict(BLOCK_R=32, BLOCK_C=32, BLOCK_B=16))
    finals = []
    for split in (7, 7, 1):
        ps = [p.clone() for p in params]
        step, _ = make(x, y, ps, StepSpec(lr=1e-3, loss="ce", reduction="mean", optimizer="adam"), True,
                       config(split))
        assert step.split == split
        loss = torch.zeros((), device=DEVICE)
        step.step(loss)   # warm: compiled before the capture
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.stream(stream):
            graph.capture_begin()
            for _ in range(20):
                step.step(loss)
            graph.capture_end()
        for _ in range(10):
            graph.replay()
        torch.cuda.synchronize()
        finals.append([p.clone() for p in ps])
    assert all(torch.equal(a, b) for a, b in zip(finals[0], finals[1]))
    worst = max(((a - b).norm() / b.norm()).item() for a, b in zip(finals[0], finals[2]))
    print(f"SPLIT=7 against SPLIT=1 after 201 Adam steps: max relative difference {worst:.3g}")
    assert worst <= 1e-4
