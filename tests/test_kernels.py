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
    gen = torch.Generator().manual_seed(3)
    h, w, y = rand(129, 33, gen=gen), rand(33, 10, gen=gen), rand(129, 10, gen=gen)
    config = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16)
    assert kernels.num_partials(129, 10, config) == 9
    losses = []
    for _ in range(2):
        loss = torch.full((), float("nan"), device=DEVICE)
        kernels.output_loss(h, w, y, poisoned(129, 10), loss, config=config)
        losses.append(loss.item())
    assert losses[0] == losses[1]  # deterministic: no atomics


@pytest.mark.parametrize("mode", ["relu", "tutorial", "none"])
@pytest.mark.parametrize("M,K,N,cfg", CASES)
def test_masked_backward(M, K, N, cfg, mode):
    # grad_y [M, K] @ w[N, K]^T -> [M, N], masked by h [M, N]
    gen = torch.Generator().manual_seed(M + 3 * K + 11 * N)
    g, w, h = rand(M, K, gen=gen), rand(N, K, gen=gen), rand(M, N, gen=gen).clamp(min=0)
    out = kernels.masked_backward(g, w, poisoned(M, N), mode=mode, h=h if mode == "relu" else None,
                                  config=CONFIGS[cfg])

    def twin(gg, ww, hh):
        r = gg @ ww.t()
        if mode == "relu":
            r = r.masked_fill(hh <= 0, 0)
        elif mode == "tutorial":
            r = r.clamp(min=0)
        return r

    ref = twin(g.double(), w.double(), h.double())
    assert_matches(f"masked_backward[{mode}]", out, ref, twin(g, w, h))
    if mode == "relu":
        assert bool((out[h <= 0] == 0).all())


def test_masked_backward_with_input_mask():
    gen = torch.Generator().manual_seed(5)
    g, w, m = rand(33, 17, gen=gen), rand(129, 17, gen=gen), rand(33, 17, gen=gen).clamp(min=0)
    out = kernels.masked_backward(g, w, poisoned(33, 129), mode="none", in_mask=m, config=SMALL_BLOCKS)
    twin = lambda gg, ww: gg.masked_fill(m <= 0, 0) @ ww.t()  # noqa: E731
    assert_matches("masked_backward[in_mask]", out, twin(g.double(), w.double()), twin(g, w))


@pytest.mark.parametrize("M,K,N,cfg", CASES)
def test_sgd_update_in_place(M, K, N, cfg):
    # w[M, N] -= lr * a[K, M]^T @ g[K, N]; K is the batch
    gen = torch.Generator().manual_seed(M + 5 * K + 13 * N)
    a, g, w0 = rand(K, M, gen=gen), rand(K, N, gen=gen), rand(M, N, gen=gen)
    lr = 1e-2
    w, grad = w0.clone(), poisoned(M, N)
    kernels.sgd_update(a, g, w, lr, grad_out=grad, config=CONFIGS[cfg])
    ref_grad = a.double().t() @ g.double()
    assert_matches("weight grad", grad, ref_grad, a.t() @ g)
    assert_matches("updated w", w, w0.double() - lr * ref_grad, w0 - lr * (a.t() @ g))


def test_sgd_update_transposed_weight_and_input_mask():
    gen = torch.Generator().manual_seed(9)
    a, g, m = rand(33, 17, gen=gen), rand(33, 10, gen=gen), rand(33, 10, gen=gen).clamp(min=0)
    w_t = rand(10, 17, gen=gen)
    w0 = w_t.t().clone()
    w = w_t.t()                                  # a transposed view, updated in place through strides
    kernels.sgd_update(a, g, w, 0.1, in_mask=m, config=SMALL_BLOCKS)
    gm = g.masked_fill(m <= 0, 0)
    assert_matches("updated transposed w", w, w0.double() - 0.1 * (a.double().t() @ gm.double()),
                   w0 - 0.1 * (a.t() @ gm))
    assert torch.equal(w_t.t(), w)


def test_sgd_update_without_update_only_stores_the_gradient():
    gen = torch.Generator().manual_seed(10)
    a, g = rand(17, 33, gen=gen), rand(17, 10, gen=gen)
    grad = kernels.sgd_update(a, g, grad_out=poisoned(33, 10))
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
    (lambda: kernels.masked_backward(torch.randn(4, 3), torch.randn(5, 3), mode="relu"), ValueError,
     r"h: mode 'relu' masks by the forward activation"),
    (lambda: kernels.masked_backward(torch.randn(4, 3), torch.randn(5, 3), mode="clamp"), ValueError,
     r"mode: expected one of 'relu', 'tutorial', 'none', got 'clamp'"),
    (lambda: kernels.sgd_update(torch.randn(4, 5), torch.randn(4, 3)), ValueError,
     r"w, grad_out: expected a weight to update or a gradient output"),
    (lambda: kernels.sgd_update(torch.randn(4, 5), torch.randn(4, 3), torch.randn(5, 3), -1.0), ValueError,
     r"lr: expected a positive number"),
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


@pytest.mark.cuda
@pytest.mark.parametrize("precision,bound", [("tf32", 5e-3), ("bf16", 3e-2)])
def test_precision_modes_error_bounds_on_cuda(precision, bound):
    # the interpreter ignores input_precision: only the GPU can show these modes' errors
    gen = torch.Generator().manual_seed(11)
    a, w = rand(256, 1024, gen=gen), rand(1024, 256, gen=gen)
    ref = a.double() @ w.double()
    out = kernels.linear_relu(a, w, poisoned(256, 256), relu=False, precision=precision)
    err = rel_err(out, ref)
    print(f"linear {precision}: rel err {err:.3g}")
    assert 1e-7 < err <= bound  # the mode is really in effect (not exact fp32) and within its bound
    exact = kernels.linear_relu(a, w, poisoned(256, 256), relu=False, precision="ieee")
    assert rel_err(exact, ref) < 1e-6
