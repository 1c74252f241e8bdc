"""manualnn.functional.linear_relu as an autograd.Function, against torch.autograd."""
import pytest
import torch

from manualnn.functional import LinearReLU, LinearReLUFunction, linear_relu
from manualnn.testing import rel_err

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def twin(x, w, b):
    return (torch.mm(x, w) if b is None else torch.addmm(b, x, w)).clamp(min=0)


@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("M,K,N", [(100, 1000, 100), (1, 33, 17), (33, 129, 10)])
def test_fused_forward_and_backward_match_autograd(M, K, N, bias):
    gen = torch.Generator().manual_seed(M + K + N)
    x = torch.randn(M, K, generator=gen).to(DEVICE).requires_grad_()
    w = torch.randn(K, N, generator=gen).to(DEVICE).requires_grad_()
    b = (torch.randn(N, generator=gen) * 3).to(DEVICE).requires_grad_() if bias else None
    up = torch.randn(M, N, generator=gen).to(DEVICE)
    (linear_relu(x, w, b) * up).sum().backward()
    h = linear_relu(x, w, b).detach()
    leaf = lambda t, dt: None if t is None else t.detach().to(dt).cpu().requires_grad_()  # noqa: E731
    x64, w64, b64 = leaf(x, torch.float64), leaf(w, torch.float64), leaf(b, torch.float64)
    h64 = twin(x64, w64, b64)
    (h64 * up.double().cpu()).sum().backward()
    x32, w32, b32 = leaf(x, torch.float32), leaf(w, torch.float32), leaf(b, torch.float32)
    h32 = twin(x32, w32, b32)
    (h32 * up.cpu()).sum().backward()
    pairs = [("h", h, h64.detach(), h32.detach()), ("grad_x", x.grad, x64.grad, x32.grad),
             ("grad_w", w.grad, w64.grad, w32.grad)] + ([("grad_b", b.grad, b64.grad, b32.grad)] if bias else [])
    for name, out, ref, tw in pairs:
        err, bound = rel_err(out, ref), 4 * max(rel_err(tw, ref), 8 * 2.0 ** -24)
        print(f"{name}: rel err {err:.3g} (bound {bound:.3g})")
        assert err <= bound, name


def test_the_forward_runs_the_fused_kernel_where_it_can(monkeypatch):
    pytest.importorskip("triton")
    from manualnn import kernels
    calls = []
    real = kernels.linear_relu
    monkeypatch.setattr(kernels, "linear_relu", lambda *a, **k: calls.append(a[1].shape) or real(*a, **k))
    x = torch.randn(5, 7, device=DEVICE, requires_grad=True)
    w = torch.randn(7, 3, device=DEVICE, requires_grad=True)
    linear_relu(x, w).sum().backward()
    linear_relu(x, w, torch.zeros(3, device=DEVICE)).sum().backward()
    assert calls == [(7, 3), (8, 3)]   # with a bias: the weight with the bias as its last row
    linear_relu(x.double(), w.double())   # float64: plain torch
    assert len(calls) == 2


def test_gradcheck_float64_on_the_torch_path():
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(LinearReLUFunction.apply, (x, w, None))
    b = torch.randn(w.shape[1], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(LinearReLUFunction.apply, (x, w, b))


def test_module_inside_an_autograd_model():
    # every parameter's gradient and the input's, against nn.Linear + nn.ReLU in float64
    torch.manual_seed(0)
    model = torch.nn.Sequential(LinearReLU(12, 9), LinearReLU(9, 5, bias=False), torch.nn.Linear(5, 2)).to(DEVICE)
    with torch.no_grad():
        model[0].bias.normal_()
    x = torch.randn(8, 12, device=DEVICE, requires_grad=True)
    model(x).pow(2).sum().backward()
    ref = torch.nn.Sequential(torch.nn.Linear(12, 9), torch.nn.ReLU(), torch.nn.Linear(9, 5, bias=False),
                              torch.nn.ReLU(), torch.nn.Linear(5, 2)).double()
    with torch.no_grad():
        ref[0].weight.copy_(model[0].weight.t())
        ref[0].bias.copy_(model[0].bias)
        ref[2].weight.copy_(model[1].weight.t())
        ref[4].weight.copy_(model[2].weight)
        ref[4].bias.copy_(model[2].bias)
    x64 = x.detach().double().cpu().requires_grad_()
    ref(x64).pow(2).sum().backward()
    pairs = [("w1", model[0].weight.grad, ref[0].weight.grad.t()), ("b1", model[0].bias.grad, ref[0].bias.grad),
             ("w2", model[1].weight.grad, ref[2].weight.grad.t()),
             ("out weight", model[2].weight.grad, ref[4].weight.grad), ("x", x.grad, x64.grad)]
    for name, got, want in pairs:
        assert got is not None, name
        err = rel_err(got, want)
        print(f"grad {name}: rel err {err:.3g}")
        assert err <= 1e-5, name     # fp32 against float64 through three layers of width <= 12


def test_bad_arguments_name_themselves():
    with pytest.raises(TypeError, match=r"w: expected a torch.Tensor, got NoneType"):
        linear_relu(torch.randn(5, 7), None)
    with pytest.raises(TypeError, match=r"x: expected a torch.Tensor, got list"):
        linear_relu([[1.0]], torch.randn(1, 3))
    with pytest.raises(TypeError, match=r"b: expected a torch.Tensor or None, got float"):
        linear_relu(torch.randn(5, 7), torch.randn(7, 3), 1.0)
    with pytest.raises(ValueError, match=r"w: expected shape \(7, out_features\).*got \(6, 3\)"):
        linear_relu(torch.randn(5, 7), torch.randn(6, 3))
    with pytest.raises(ValueError, match=r"x: expected a 2-D tensor"):
        linear_relu(torch.randn(7), torch.randn(7, 3))
    with pytest.raises(ValueError, match=r"b: expected shape \(3,\) \(the columns of w\), got \(4,\)"):
        linear_relu(torch.randn(5, 7), torch.randn(7, 3), torch.randn(4))
