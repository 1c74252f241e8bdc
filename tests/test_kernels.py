"""Each per-layer kernel against its plain-torch twin, judged against float64.

Inputs are random (never zeros) and outputs are poisoned with NaN first, so an unwritten tile
fails. Shapes: the seed's and odd ones (1, 17, 33, 129 rows; widths below 16 such as 10); blocks:
the launcher's fixed config and small 16-blocks that force many tiles and ragged edges. On the
CPU these run under TRITON_INTERPRET=1 (set by conftest.py). The optimizer epilogues: test_optim.py.
"""
import pytest
import torch

from manualnn import kernels
from manualnn.testing import rel_err

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SMALL_BLOCKS = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, GROUP_M=2)
CONFIGS = {"fixed": None, "16-blocks": SMALL_BLOCKS}
# (M, K, N): rows, reduction, columns
SHAPES = [(100, 1000, 100), (100, 101, 10), (1, 33, 17), (17, 10, 10), (33, 129, 33), (129, 33, 129), (7, 3, 1)]
# the interpreter runs the seed shape with the fixed config only
CASES = [(*shape, cfg) for shape in SHAPES for cfg in CONFIGS
         if not (DEVICE == "cpu" and shape == SHAPES[0] and cfg == "16-blocks")]


def rand(*shape, gen):
    return torch.randn(*shape, generator=gen).to(DEVICE)


def poisoned(*shape):
    return torch.full(shape, float("nan"), device=DEVICE)


def assert_matches(name, out, ref64, twin32):
    """out within 4x of the fp32 twin's own error against float64 (or a few ulps when that is 0)."""
    assert bool(torch.isfinite(out).all()), f"{name}: NaN/Inf in the output (an unwritten element?)"
    err, twin_err = rel_err(out, ref64), rel_err(twin32, ref64)
    bound = 4 * max(twin_err, 8 * 2.0 ** -24)
    print(f"{name}: rel err {err:.3g} (fp32 torch twin {twin_err:.3g}, bound {bound:.3g})")
    assert err <= bound, f"{name}: rel err {err:.3g} > {bound:.3g}"


@pytest.mark.parametrize("M,K,N,cfg", CASES)
def test_linear_relu(M, K, N, cfg):
    gen = torch.Generator().manual_seed(M * 1000 + N)
    a, w = rand(M, K, gen=gen), rand(K, N, gen=gen)
    out = kernels.linear_relu(a, w, poisoned(M, N), config=CONFIGS[cfg])
    ref = (a.double() @ w.double()).clamp(min=0)
    assert_matches("linear_relu", out, ref, (a @ w).clamp(min=0))
    assert bool((out[ref == 0] == 0).all()) and bool((out >= 0).all()) and bool((out > 0).any())


def test_linear_relu_transposed_inputs():
    gen = torch.Generator().manual_seed(1)
    a_t, w_t = rand(129, 33, gen=gen), rand(17, 129, gen=gen)   # a = a_t^T [33, 129], w = w_t^T [129, 17]
    a, w = a_t.t(), w_t.t()
    out = kernels.linear_relu(a, w, poisoned(33, 17), config=SMALL_BLOCKS)
    assert_matches("linear_relu (transposed)", out, (a.double() @ w.double()).clamp(min=0), (a @ w).clamp(min=0))


def output_twin(h, w, y, loss, scale):
    """(g = scale * e, the loss's sum) in plain torch, in h's dtype."""
    z = h @ w
    if loss == "sse":
        e = z - y
        return scale * e, e.pow(2).sum()
    return scale * (torch.softmax(z, 1) - y), -(y * torch.log_softmax(z, 1)).sum()


def targets(M, N, loss, gen):
    if loss == "sse":
        return rand(M, N, gen=gen)
    return torch.softmax(3 * rand(M, N, gen=gen), 1)    # rows of probabilities (one-hot is a special case)


@pytest.mark.parametrize("loss", ["sse", "ce"])
@pytest.mark.parametrize("M,K,N,cfg", CASES)
def test_output_loss(M, K, N, cfg, loss):
    gen = torch.Generator().manual_seed(M + 7 * N)
    h, w, y = rand(M, K, gen=gen).clamp(min=0), rand(K, N, gen=gen) / K ** 0.5, targets(M, N, loss, gen)
    g, total = poisoned(M, N), torch.full((), float("nan"), device=DEVICE)
    ce_block = max(16, 1 << (N - 1).bit_length())      # the "ce" tile covers the whole row
    config = None if cfg == "fixed" else dict(BLOCK_M=16, BLOCK_N=16 if loss == "sse" else ce_block, BLOCK_K=16)
    scale = 2.0 / M if loss == "sse" else 1.0 / 3
    kernels.output_loss(h, w, y, g, total, loss=loss, scale=scale, config=config)
    g64, loss64 = output_twin(h.double(), w.double(), y.double(), loss, scale)
    g32, loss32 = output_twin(h, w, y, loss, scale)
    assert_matches(f"g[{loss}]", g, g64, g32)
    assert_matches(f"loss[{loss}]", total.reshape(1), loss64.reshape(1), loss32.reshape(1))


def test_cross_entropy_takes_the_max_subtracted_form():
    # logits near 1e4: exp overflows unless the row's max is subtracted first
    gen = torch.Generator().manual_seed(2)
    h, w = rand(17, 10, gen=gen), rand(10, 10, gen=gen)
    y = torch.softmax(rand(17, 10, gen=gen), 1)
    h = h * 1e3
    g, total = poisoned(17, 10), torch.full((), float("nan"), device=DEVICE)
    kernels.output_loss(h, w, y, g, total, loss="ce", scale=1.0)
    g64, loss64 = output_twin(h.double(), w.double(), y.double(), "ce", 1.0)
    g32, loss32 = output_twin(h, w, y, "ce", 1.0)
    assert_matches("g[ce, large logits]", g, g64, g32)
    assert_matches("loss[ce, large logits]", total.reshape(1), loss64.reshape(1), loss32.reshape(1))


def test_output_loss_partials_are_summed_in_a_fixed_order():
    # 129 rows in 16-row blocks: 9 programs, each writes its own partial (an atomic accumulation into
    # one slot would leave the others NaN); the loss is their sum, bit for bit the same on a rerun
    gen = torch.Generator().manual_seed(3)
    h, w, y = rand(129, 33, gen=gen), rand(33, 10, gen=gen), rand(129, 10, gen=gen)
    config = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16)
    assert kernels.num_partials(129, 10, config) == 9
    diff64 = (h.double() @ w.double() - y.double()).cpu()
    tiles64 = torch.stack([diff64[i:i + 16].pow(2).sum() for i in range(0, 129, 16)])
    tiles32 = torch.stack([(h @ w - y)[i:i + 16].pow(2).sum() for i in range(0, 129, 16)]).cpu()
    losses = []
    for _ in range(2):
        loss, partials = torch.full((), float("nan"), device=DEVICE), poisoned(9)
        kernels.output_loss(h, w, y, poisoned(129, 10), loss, partials=partials, config=config)
        for i in range(9):
            assert_matches(f"partial {i}", partials[i:i + 1], tiles64[i:i + 1], tiles32[i:i + 1])
        assert abs(loss.item() - partials.double().sum().item()) <= 4 * 2.0 ** -24 * loss.item()
        losses.append(loss.item())
    assert losses[0] == losses[1]  # deterministic


def test_output_kernel_advances_adams_step_once():
    # program 0 of the output kernel (several programs here) advances step and beta^t, in float64
    gen = torch.Generator().manual_seed(4)
    h, w, y = rand(40, 9, gen=gen), rand(9, 5, gen=gen), rand(40, 5, gen=gen)
    hyper = kernels.hyper_parameters(lr=1e-3, betas=(0.9, 0.999), device=DEVICE)
    step = torch.tensor(3, dtype=torch.int64, device=DEVICE)
    powers = torch.tensor([0.9 ** 3, 0.999 ** 3], dtype=torch.float64, device=DEVICE)
    run = kernels.output_loss_launcher(h, w, y, poisoned(40, 5), torch.zeros((), device=DEVICE),
                                       adam=(step, powers, hyper), config=dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16))
    run()
    run()
    assert int(step) == 5
    assert powers.tolist() == [0.9 ** 3 * 0.9 * 0.9, 0.999 ** 3 * 0.999 * 0.999]   # float64 products, exact
    kernels.output_loss(h, w, y, poisoned(40, 5), torch.zeros((), device=DEVICE))   # no adam: untouched
    assert int(step) == 5


@pytest.mark.parametrize("mode", ["relu", "tutorial"])
@pytest.mark.parametrize("M,K,N,cfg", CASES)
def test_input_grad(M, K, N, cfg, mode):
    # g [M, K] @ w[N, K]^T -> [M, N], masked by h [M, N]
    gen = torch.Generator().manual_seed(M + 3 * K + 11 * N)
    g, w, h = rand(M, K, gen=gen), rand(N, K, gen=gen), rand(M, N, gen=gen).clamp(min=0)
    out = kernels.input_grad(g, w, poisoned(M, N), grad=mode, h=h if mode == "relu" else None, config=CONFIGS[cfg])

    def twin(gg, ww, hh):
        r = gg @ ww.t()
        return r.masked_fill(hh <= 0, 0) if mode == "relu" else r.clamp(min=0)

    ref = twin(g.double(), w.double(), h.double())
    assert_matches(f"input_grad[{mode}]", out, ref, twin(g, w, h))
    if mode == "relu":
        assert bool((out[h <= 0] == 0).all()) and bool((out < 0).any())


@pytest.mark.parametrize("call,exc,pattern", [
    (lambda: kernels.linear_relu(torch.randn(4, 5).double(), torch.randn(5, 3)), TypeError,
     r"a: expected dtype torch.float32, got torch.float64"),
    (lambda: kernels.linear_relu(torch.randn(4, 5), torch.randn(6, 3)), ValueError,
     r"w: expected shape \(5, 3\), got shape \(6, 3\)"),
    (lambda: kernels.linear_relu(torch.randn(4, 5), torch.randn(5, 3), torch.empty(4, 1).expand(4, 3)),
     ValueError, r"out: expected a writable tensor without broadcast"),
    (lambda: kernels.linear_relu(torch.randn(4, 5), torch.randn(5, 3), precision="fp16"), ValueError,
     r"precision: expected one of 'ieee', 'tf32', 'bf16', got 'fp16'"),
    (lambda: kernels.input_grad(torch.randn(4, 3), torch.randn(5, 3), grad="relu"), ValueError,
     r"h: grad 'relu' masks by the forward activation"),
    (lambda: kernels.input_grad(torch.randn(4, 3), torch.randn(5, 3), grad="none"), ValueError,
     r"grad: expected one of 'relu', 'tutorial', got 'none'"),
    (lambda: kernels.weight_grad(torch.randn(4, 5), torch.randn(4, 3), torch.randn(5, 3)), ValueError,
     r"grad_out: the gradient-only update stores the gradient"),
    (lambda: kernels.weight_grad(torch.randn(4, 5), torch.randn(4, 3), torch.randn(3, 5).t(), optimizer="sgd",
                                 hyper=kernels.hyper_parameters(lr=0.1, device="cpu")), ValueError,
     r"p: expected a contiguous tensor of shape \(5, 3\)"),
    (lambda: kernels.weight_grad(torch.randn(4, 5), torch.randn(4, 3), torch.randn(5, 3), optimizer="sgd",
                                 hyper=torch.tensor([0.1])), ValueError, r"hyper: expected hyper_parameters"),
    (lambda: kernels.weight_grad(torch.randn(4, 5), torch.randn(4, 3), torch.randn(5, 3), optimizer="adam",
                                 hyper=kernels.hyper_parameters(lr=0.1, device="cpu")), ValueError,
     r"state: optimizer 'adam' keeps 2 buffers per parameter, got 0"),
    (lambda: kernels.weight_grad(torch.randn(4, 5), torch.randn(4, 3), torch.randn(5, 3), optimizer="lion"),
     ValueError, r"optimizer: expected one of 'grad', 'sgd', 'momentum', 'adam', got 'lion'"),
    (lambda: kernels.linear_relu(torch.randn(4, 5), None), TypeError, r"w: expected a torch.Tensor, got NoneType"),
    (lambda: kernels.output_loss(torch.randn(4, 5), torch.randn(5, 3), torch.randn(4, 3), torch.empty(4, 3),
                                 torch.empty((), dtype=torch.float64)), TypeError,
     r"loss_out: expected dtype torch.float32, got torch.float64"),
    (lambda: kernels.output_loss(torch.randn(4, 5), torch.randn(5, 3), torch.randn(4, 2), torch.empty(4, 3),
                                 torch.empty(())), ValueError, r"y: expected shape \(4, 3\), got shape \(4, 2\)"),
    (lambda: kernels.output_loss(torch.randn(4, 5), torch.randn(5, 300), torch.randn(4, 300), torch.empty(4, 300),
                                 torch.empty(()), loss="ce"), ValueError,
     r"w: loss 'ce' takes each row's softmax in one program, which covers at most 256 classes; got 300"),
    (lambda: kernels.output_loss(torch.randn(4, 5), torch.randn(5, 30), torch.randn(4, 30), torch.empty(4, 30),
                                 torch.empty(()), loss="ce", config=dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16)),
     ValueError, r"config: loss 'ce' needs BLOCK_N >= the 30 classes"),
])
def test_launchers_reject_bad_arguments(call, exc, pattern):
    if DEVICE == "cuda":
        pytest.skip("the cases build CPU tensors")
    with pytest.raises(exc, match=pattern):
        call()


def test_cpu_tensors_without_interpreter_are_rejected(monkeypatch):
    import manualnn.kernels._common as common
    monkeypatch.setattr(common, "INTERPRET", False)
    with pytest.raises(ValueError, match=r"a: the Triton kernels take CUDA tensors"):
        kernels.linear_relu(torch.randn(4, 5), torch.randn(5, 3))


OVERLAP_CASES = {
    "linear_relu out=a": (lambda a, w, g: kernels.linear_relu(a, w, a), r"out: .*overlap the input a"),
    "linear_relu out=w": (lambda a, w, g: kernels.linear_relu(a, w, w), r"out: .*overlap the input w"),
    "input_grad out=g": (lambda a, w, g: kernels.input_grad(g, w, g, grad="tutorial"), r"out: .*overlap the input g"),
    "input_grad out=h": (lambda a, w, g: kernels.input_grad(g, w, a, grad="relu", h=a), r"out: .*overlap the input h"),
    "weight_grad grad_out=a": (lambda a, w, g: kernels.weight_grad(a, g, w, grad_out=a),
                               r"grad_out: .*overlap the input a"),
    "weight_grad p=a": (lambda a, w, g: kernels.weight_grad(a, g, a, optimizer="sgd",
                                                            hyper=kernels.hyper_parameters(lr=0.1, device=DEVICE)),
                        r"p: .*overlap the input a"),
    "output_loss g=y": (lambda a, w, g: kernels.output_loss(a, w, g, g, torch.empty((), device=DEVICE)),
                        r"g: .*overlap the input y"),
}


@pytest.mark.parametrize("case", list(OVERLAP_CASES))
def test_outputs_that_overlap_inputs_are_refused(case):
    # programs write their tile of the output while others still read the input: a race
    call, pattern = OVERLAP_CASES[case]
    a, w, g = (torch.randn(5, 5, device=DEVICE) for _ in range(3))
    with pytest.raises(ValueError, match=pattern):
        call(a, w, g)


INT64_SCRIPT = r"""
import os, sys, tempfile
os.environ["TRITON_INTERPRET"] = "1"
import torch
from manualnn import kernels
n = 2 * 2**30 + 64                      # 2**31 + 64 float32 elements: an 8 GiB sparse file, a few pages touched
with tempfile.NamedTemporaryFile(dir=sys.argv[1]) as f:
    f.truncate(n * 4)
    big = torch.from_file(f.name, shared=False, size=n, dtype=torch.float32)
    a = big.as_strided((3, 16), (2**30, 1))  # row 2 starts at element 2**31: past int32
    gen = torch.Generator().manual_seed(0)
    a.copy_(torch.randn(3, 16, generator=gen))
    w = torch.randn(16, 16, generator=gen)
    out = kernels.linear_relu(a, w, torch.full((3, 16), float("nan")))
    err = float((out.double() - (a.double() @ w.double()).clamp(min=0)).abs().max())
    print("max abs err", err)
    sys.exit(0 if err < 1e-4 else 1)
"""


def test_offsets_past_int32_are_addressed(tmp_path):
    # int32 offsets wrap at 2**31 elements: the kernel then reads elsewhere (garbage or a crash), so
    # this runs in its own process on the interpreter (raw CPU pointers, like the GPU's)
    import subprocess
    import sys
    if DEVICE == "cuda":
        pytest.skip("runs on the interpreter (a CUDA version would need 8 GiB of device memory)")
    proc = subprocess.run([sys.executable, "-c", INT64_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    print(proc.stdout, proc.stderr[-2000:])
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stdout} {proc.stderr[-2000:]}"


def test_autotune_is_refused_under_the_interpreter():
    if DEVICE == "cuda":
        pytest.skip("the GPU autotunes")
    with pytest.raises(ValueError, match=r"config: 'autotune' needs a GPU"):
        kernels.linear_relu(torch.randn(4, 5), torch.randn(5, 3), config="autotune")


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["tf32", "bf16"])
@pytest.mark.parametrize("M,K,N", [(256, 1024, 256), (100, 1000, 100), (33, 129, 33), (1, 33, 17)])
def test_precision_modes_error_bounds_on_cuda(precision, M, K, N):
    # the interpreter ignores input_precision: only the GPU can show these modes' errors. The bound
    # is a small factor above what honest operand rounding gives (tests/emulate.py); the floor shows
    # the mode is really in effect (not exact fp32). Inputs positive: the ReLU then masks nothing.
    from emulate import FACTOR, mm
    gen = torch.Generator().manual_seed(11)
    a, w = rand(M, K, gen=gen).abs(), rand(K, N, gen=gen).abs()
    ref = a.double() @ w.double()
    honest = rel_err(mm(a, w, precision), ref)
    for name, call in [("linear_relu", lambda: kernels.linear_relu(a, w, poisoned(M, N), precision=precision)),
                       ("input_grad", lambda: kernels.input_grad(a, w.t(), poisoned(M, N), grad="tutorial",
                                                                 precision=precision)),
                       ("weight_grad", lambda: kernels.weight_grad(a.t(), w, torch.empty(M, N, device=DEVICE),
                                                                   grad_out=poisoned(M, N), precision=precision))]:
        err = rel_err(call(), ref)
        print(f"{name} {precision} {M}x{K}x{N}: rel err {err:.3g} (emulated rounding {honest:.3g}, bound "
              f"{FACTOR * honest:.3g})")
        assert honest / 10 < err <= FACTOR * honest, name
    exact = kernels.linear_relu(a, w, poisoned(M, N), precision="ieee")
    assert rel_err(exact, ref) < 1e-6


def test_the_kernels_name_the_modes_the_step_names():
    """kernels/ never imports manualnn (tests/compile_sm90.py imports it alone, and manualnn must import with
    Triton absent), so its grad modes and precisions are a twin of manualnn.spec's, held equal here."""
    from manualnn import spec
    from manualnn.kernels import _common
    assert (_common.GRAD_MODES, _common.PRECISIONS) == (spec.GRAD_MODES, spec.PRECISIONS)
