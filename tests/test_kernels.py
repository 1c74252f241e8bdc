"""Each kernel against its plain-torch twin, judged against float64.

Inputs are random (never zeros) and outputs are poisoned with NaN first, so an unwritten tile
fails. Shapes: the seed's and odd ones (1, 17, 33, 129, an output width of 10); blocks: the
backend's fixed config and small 16-blocks that force many tiles and ragged edges. On the CPU
these run under TRITON_INTERPRET=1 (set by conftest.py).
"""
import pytest
import torch

from manualnn import kernels
from manualnn.testing import rel_err

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SMALL_BLOCKS = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, GROUP_M=2)
CONFIGS = {"fixed": None, "16-blocks": SMALL_BLOCKS}
# (M, K, N): rows, reduction, columns
SHAPES = [(100, 1000, 100), (100, 100, 10), (1, 33, 17), (17, 17, 17), (33, 129, 33), (129, 33, 129), (7, 3, 1)]
# (M, K, N, config); the interpreter runs the seed shape with the fixed config only (16-blocks: ~12 s each)
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
    assert bool((out[ref == 0] == 0).all()) and bool((out >= 0).all())


def test_linear_relu_transposed_inputs_and_no_relu():
    gen = torch.Generator().manual_seed(1)
    a_t, w_t = rand(129, 33, gen=gen), rand(17, 129, gen=gen)   # a = a_t^T [33, 129], w = w_t^T [129, 17]
    a, w = a_t.t(), w_t.t()
    out = kernels.linear_relu(a, w, poisoned(33, 17), relu=False, config=SMALL_BLOCKS)
    assert_matches("linear (transposed)", out, a.double() @ w.double(), a @ w)
    assert bool((out < 0).any())


@pytest.mark.parametrize("M,K,N,cfg", CASES)
def test_output_loss(M, K, N, cfg):
    gen = torch.Generator().manual_seed(M + 7 * N)
    h, w, y = rand(M, K, gen=gen).clamp(min=0), rand(K, N, gen=gen), rand(M, N, gen=gen)
    grad_y, loss = poisoned(M, N), torch.full((), float("nan"), device=DEVICE)
    config = None if cfg == "fixed" else dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16)
    kernels.output_loss(h, w, y, grad_y, loss, config=config)
    diff64 = h.double() @ w.double() - y.double()
    diff32 = h @ w - y
    assert_matches("grad_y", grad_y, 2 * diff64, 2 * diff32)
    assert_matches("loss", loss.reshape(1), diff64.pow(2).sum().reshape(1), diff32.pow(2).sum().reshape(1))


def test_output_loss_partials_are_summed_in_a_fixed_order():
    # 129 rows in 16-row blocks: 9 programs, each writes its own partial (an atomic accumulation into
    # one slot would leave the others NaN); the loss is their sum, bit for bit the same on a rerun
    gen = torch.Generator().manual_seed(3)
    h, w, y = rand(129, 33, gen=gen), rand(33, 10, gen=gen), rand(129, 10, gen=gen)
    config = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16)
    assert kernels.num_partials(129, 10, config) == 9
    diff64 = (h.double() @ w.double() - y.double()).cpu()
    tiles64 = torch.stack([diff64[i:i + 16].pow(2).sum() for i in range(0, 129, 16)])
    tiles32 = torch.stack([(h @ w - y)[i:i + 16].pow(2).sum() for i in range(0, 129, 16)])
    losses = []
    for _ in range(2):
        loss, partials = torch.full((), float("nan"), device=DEVICE), poisoned(9)
        kernels.output_loss(h, w, y, poisoned(129, 10), loss, partials=partials, config=config)
        for i in range(9):
            assert_matches(f"partial {i}", partials[i:i + 1], tiles64[i:i + 1], tiles32[i:i + 1])
        assert_matches("loss", loss.reshape(1), diff64.pow(2).sum().reshape(1), tiles32.sum().reshape(1))
        assert abs(loss.item() - partials.double().sum().item()) <= 4 * 2.0 ** -24 * loss.item()
        losses.append(loss.item())
    assert losses[0] == losses[1]  # deterministic


@pytest.mark.parametrize("mode", ["relu", "tutorial", "none"])
@pytest.mark.parametrize("M,K,N,cfg", CASES)
def test_input_grad(M, K, N, cfg, mode):
    # grad_y [M, K] @ w[N, K]^T -> [M, N], masked by h [M, N]
    gen = torch.Generator().manual_seed(M + 3 * K + 11 * N)
    g, w, h = rand(M, K, gen=gen), rand(N, K, gen=gen), rand(M, N, gen=gen).clamp(min=0)
    out = kernels.input_grad(g, w, poisoned(M, N), mode=mode, h=h if mode == "relu" else None,
                                  config=CONFIGS[cfg])

    def twin(gg, ww, hh):
        r = gg @ ww.t()
        if mode == "relu":
            r = r.masked_fill(hh <= 0, 0)
        elif mode == "tutorial":
            r = r.clamp(min=0)
        return r

    ref = twin(g.double(), w.double(), h.double())
    assert_matches(f"input_grad[{mode}]", out, ref, twin(g, w, h))
    if mode == "relu":
        assert bool((out[h <= 0] == 0).all())


def test_input_grad_with_input_mask():
    gen = torch.Generator().manual_seed(5)
    g, w, m = rand(33, 17, gen=gen), rand(129, 17, gen=gen), rand(33, 17, gen=gen).clamp(min=0)
    out = kernels.input_grad(g, w, poisoned(33, 129), mode="none", in_mask=m, config=SMALL_BLOCKS)
    twin = lambda gg, ww: gg.masked_fill(m <= 0, 0) @ ww.t()  # noqa: E731
    assert_matches("input_grad[in_mask]", out, twin(g.double(), w.double()), twin(g, w))


@pytest.mark.parametrize("M,K,N,cfg", CASES)
def test_weight_grad_and_sgd_update_in_place(M, K, N, cfg):
    # w[M, N] -= lr * a[K, M]^T @ g[K, N]; K is the batch
    gen = torch.Generator().manual_seed(M + 5 * K + 13 * N)
    a, g, w0 = rand(K, M, gen=gen), rand(K, N, gen=gen), rand(M, N, gen=gen)
    lr = 1e-2
    w, grad = w0.clone(), poisoned(M, N)
    kernels.weight_grad(a, g, w=w, lr=lr, grad_out=grad, config=CONFIGS[cfg])
    ref_grad = a.double().t() @ g.double()
    assert_matches("weight grad", grad, ref_grad, a.t() @ g)
    assert_matches("updated w", w, w0.double() - lr * ref_grad, w0 - lr * (a.t() @ g))


def test_weight_grad_sgd_on_transposed_weight_with_input_mask():
    gen = torch.Generator().manual_seed(9)
    a, g, m = rand(33, 17, gen=gen), rand(33, 10, gen=gen), rand(33, 10, gen=gen).clamp(min=0)
    w_t = rand(10, 17, gen=gen)
    w0 = w_t.t().clone()
    w = w_t.t()                                  # a transposed view, updated in place through strides
    kernels.weight_grad(a, g, w=w, lr=0.1, in_mask=m, config=SMALL_BLOCKS)
    gm = g.masked_fill(m <= 0, 0)
    assert_matches("updated transposed w", w, w0.double() - 0.1 * (a.double().t() @ gm.double()),
                   w0 - 0.1 * (a.t() @ gm))
    assert torch.equal(w_t.t(), w)


def test_weight_grad_without_update_only_stores_the_gradient():
    gen = torch.Generator().manual_seed(10)
    a, g = rand(17, 33, gen=gen), rand(17, 10, gen=gen)
    grad = kernels.weight_grad(a, g, grad_out=poisoned(33, 10))
    assert_matches("grad only", grad, a.double().t() @ g.double(), a.t() @ g)


@pytest.mark.parametrize("call,exc,pattern", [
    (lambda: kernels.linear_relu(torch.randn(4, 5).double(), torch.randn(5, 3)), TypeError,
     r"a: expected dtype torch.float32, got torch.float64"),
    (lambda: kernels.linear_relu(torch.randn(4, 5), torch.randn(6, 3)), ValueError,
     r"w: expected shape \(5, 3\), got shape \(6, 3\)"),
    (lambda: kernels.linear_relu(torch.randn(4, 5), torch.randn(5, 3), torch.empty(4, 1).expand(4, 3)),
     ValueError, r"out: expected a writable tensor without broadcast"),
    (lambda: kernels.linear_relu(torch.randn(4, 5), torch.randn(5, 3), precision="fp16"), ValueError,
     r"precision: expected one of 'ieee', 'tf32', 'bf16', got 'fp16'"),
    (lambda: kernels.input_grad(torch.randn(4, 3), torch.randn(5, 3), mode="relu"), ValueError,
     r"h: mode 'relu' masks by the forward activation"),
    (lambda: kernels.input_grad(torch.randn(4, 3), torch.randn(5, 3), mode="clamp"), ValueError,
     r"mode: expected one of 'relu', 'tutorial', 'none', got 'clamp'"),
    (lambda: kernels.weight_grad(torch.randn(4, 5), torch.randn(4, 3)), ValueError,
     r"w, grad_out: expected a weight to update or a gradient output"),
    (lambda: kernels.weight_grad(torch.randn(4, 5), torch.randn(4, 3), w=torch.randn(5, 3), lr=-1.0), ValueError,
     r"lr: expected a positive number"),
    # types are checked before shapes: no AttributeError, no shape in a dtype message
    (lambda: kernels.linear_relu(torch.randn(4, 5), None), TypeError, r"w: expected a torch.Tensor, got NoneType"),
    (lambda: kernels.input_grad(torch.randn(4, 3), [[1.0]], mode="none"), TypeError,
     r"w: expected a torch.Tensor, got list"),
    (lambda: kernels.output_loss(torch.randn(4, 5), torch.randn(5, 3), torch.randn(4, 3), torch.empty(4, 3),
                                 torch.empty((), dtype=torch.float64)), TypeError,
     r"loss_out: expected dtype torch.float32, got torch.float64"),
    (lambda: kernels.output_loss(torch.randn(4, 5), torch.randn(5, 3), torch.randn(4, 3), torch.empty(4, 3),
                                 torch.empty(1)), ValueError, r"loss_out: expected a 0-d tensor, got shape \(1,\)"),
    (lambda: kernels.output_loss(torch.randn(4, 5), torch.randn(5, 3), torch.randn(4, 2), torch.empty(4, 3),
                                 torch.empty(())), ValueError, r"y: expected shape \(4, 3\), got shape \(4, 2\)"),
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
    "input_grad out=grad_y": (lambda a, w, g: kernels.input_grad(g, w, g, mode="none"),
                              r"out: .*overlap the input grad_y"),
    "input_grad out=h": (lambda a, w, g: kernels.input_grad(g, w, a, mode="relu", h=a), r"out: .*overlap the input h"),
    "weight_grad grad_out=w": (lambda a, w, g: kernels.weight_grad(a, g, w=w, lr=0.1, grad_out=w),
                               r"grad_out: .*overlap the input w"),
    "weight_grad w=a": (lambda a, w, g: kernels.weight_grad(a, g, w=a, lr=0.1), r"w: .*overlap the input a"),
    "output_loss grad_y=y": (lambda a, w, g: kernels.output_loss(a, w, g, g, torch.empty((), device=DEVICE)),
                             r"grad_y: .*overlap the input y"),
}


@pytest.mark.parametrize("case", list(OVERLAP_CASES))
def test_outputs_that_overlap_inputs_are_refused(case):
    # programs write their tile of the output while others still read the input: a race
    call, pattern = OVERLAP_CASES[case]
    a, w, g = (torch.randn(5, 5, device=DEVICE) for _ in range(3))
    with pytest.raises(ValueError, match=pattern):
        call(a, w, g)


def test_overlap_is_judged_by_memory_not_identity():
    buf = torch.randn(5, 10, device=DEVICE)
    w = torch.randn(5, 5, device=DEVICE)
    with pytest.raises(ValueError, match=r"out: .*overlap the input a"):   # interleaved columns of one buffer
        kernels.linear_relu(buf[:, :5], w, buf[:, 5:])
    flat = torch.randn(2, 25, device=DEVICE)    # one allocation, two disjoint halves: accepted
    a, out = flat[0].view(5, 5), flat[1].view(5, 5)
    kernels.linear_relu(a, w, out)
    assert_matches("disjoint halves", out, (a.double() @ w.double()).clamp(min=0), (a @ w).clamp(min=0))


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
    out = kernels.linear_relu(a, w, torch.full((3, 16), float("nan")), relu=False)
    err = float((out.double() - a.double() @ w.double()).abs().max())
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


@pytest.mark.cuda
def test_autotuned_in_place_update_applies_once():
    # autotuning runs the kernel once per config; without restore_value the in-place update would
    # land several times. A shape no other test uses, so the tuner really tunes here.
    gen = torch.Generator().manual_seed(12)
    a, g, w0 = rand(263, 75, gen=gen), rand(263, 37, gen=gen), rand(75, 37, gen=gen)
    lr = 1e-2
    w = w0.clone()
    kernels.weight_grad(a, g, w=w, lr=lr, config="autotune")
    ref = w0.double() - lr * (a.double().t() @ g.double())
    assert_matches("autotuned update", w, ref, w0 - lr * (a.t() @ g))


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
    # the mode is really in effect (not exact fp32).
    from emulate import FACTOR, mm
    gen = torch.Generator().manual_seed(11)
    a, w = rand(M, K, gen=gen), rand(K, N, gen=gen)
    ref = a.double() @ w.double()
    honest = rel_err(mm(a, w, precision), ref)
    for name, call in [("linear", lambda: kernels.linear_relu(a, w, poisoned(M, N), relu=False, precision=precision)),
                       ("input_grad", lambda: kernels.input_grad(a, w.t(), poisoned(M, N), mode="none",
                                                                 precision=precision)),
                       ("weight_grad", lambda: kernels.weight_grad(a.t(), w, grad_out=poisoned(M, N),
                                                                   precision=precision))]:
        err = rel_err(call(), ref)
        rn = f", round-to-nearest emulation {rel_err(mm(a, w, 'tf32-rn'), ref):.3g}" if precision == "tf32" else ""
        print(f"{name} {precision} {M}x{K}x{N}: rel err {err:.3g} (emulated rounding {honest:.3g}, bound "
              f"{FACTOR * honest:.3g}{rn})")
        assert honest / 10 < err <= FACTOR * honest, name
    exact = kernels.linear_relu(a, w, poisoned(M, N), relu=False, precision="ieee")
    assert rel_err(exact, ref) < 1e-6
