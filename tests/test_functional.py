"""manualnn.functional.linear_relu as an autograd.Function, against torch.autograd."""
import pytest
import torch

from manualnn.functional import LinearReLU, LinearReLUFunction, linear_relu
from manualnn.testing import rel_err

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def twin(x, w):
    return torch.mm(x, w).clamp(min=0)


@pytest.mark.parametrize("M,K,N", [(100, 1000, 100), (1, 33, 17), (33, 129, 10), (129, 17, 33)])
def test_fused_forward_and_backward_match_autograd(M, K, N):
    gen = torch.Generator().manual_seed(M + K + N)
    x = torch.randn(M, K, generator=gen).to(DEVICE).requires_grad_()
    w = torch.randn(K, N, generator=gen).to(DEVICE).requires_grad_()
    up = torch.randn(M, N, generator=gen).to(DEVICE)
    h = linear_relu(x, w)
    (h * up).sum().backward()
    x64, w64 = x.detach().double().cpu().requires_grad_(), w.detach().double().cpu().requires_grad_()
    h64 = twin(x64, w64)
    (h64 * up.double().cpu()).sum().backward()
    x32, w32 = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    (twin(x32, w32) * up).sum().backward()
    for name, out, ref, tw in [("h", h.detach(), h64.detach(), twin(x32, w32).detach()),
                               ("grad_x", x.grad, x64.grad, x32.grad), ("grad_w", w.grad, w64.grad, w32.grad)]:
        err, bound = rel_err(out, ref), 4 * max(rel_err(tw, ref), 8 * 2.0 ** -24)
        print(f"{name}: rel err {err:.3g} (bound {bound:.3g})")
        assert err <= bound, name


def test_kernels_are_used_where_they_can_run(monkeypatch):
    from manualnn import kernels
    calls = []
    for name in ("linear_relu", "input_grad", "weight_grad"):
        real = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _real=real, _n=name, **k: calls.append(_n) or _real(*a, **k))
    x = torch.randn(5, 7, device=DEVICE, requires_grad=True)
    w = torch.randn(7, 3, device=DEVICE, requires_grad=True)
    linear_relu(x, w).sum().backward()
    assert calls == ["linear_relu", "input_grad", "weight_grad"]


def test_gradcheck_float64_on_the_torch_path():
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(LinearReLUFunction.apply, (x, w))


def test_module_inside_an_autograd_model():
    # every parameter's gradient and the input's, against nn.Linear + nn.ReLU in float64
    torch.manual_seed(0)
    model = torch.nn.Sequential(LinearReLU(12, 9), LinearReLU(9, 5), torch.nn.Linear(5, 2)).to(DEVICE)
    x = torch.randn(8, 12, device=DEVICE, requires_grad=True)
    model(x).pow(2).sum().backward()
    ref = torch.nn.Sequential(torch.nn.Linear(12, 9, bias=False), torch.nn.ReLU(),
                              torch.nn.Linear(9, 5, bias=False), torch.nn.ReLU(), torch.nn.Linear(5, 2)).double()
    with torch.no_grad():
        ref[0].weight.copy_(model[0].weight.t())
        ref[2].weight.copy_(model[1].weight.t())
        ref[4].weight.copy_(model[2].weight)
        ref[4].bias.copy_(model[2].bias)
    x64 = x.detach().double().cpu().requires_grad_()
    ref(x64).pow(2).sum().backward()
    pairs = [("w1", model[0].weight.grad, ref[0].weight.grad.t()), ("w2", model[1].weight.grad, ref[2].weight.grad.t()),
             ("out weight", model[2].weight.grad, ref[4].weight.grad), ("out bias", model[2].bias.grad, ref[4].bias.grad),
             ("x", x.grad, x64.grad)]
    for name, got, want in pairs:
        assert got is not None, name
        err = rel_err(got, want)
        print(f"grad {name}: rel err {err:.3g}")
        assert err <= 1e-5, name     # fp32 against float64 through three layers of width <= 12


def test_bad_types_are_type_errors():
    with pytest.raises(TypeError, match=r"w: expected a torch.Tensor, got NoneType"):
        linear_relu(torch.randn(5, 7), None)
    with pytest.raises(TypeError, match=r"x: expected a torch.Tensor, got list"):
        linear_relu([[1.0]], torch.randn(1, 3))


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"w: expected shape \(7, out_features\).*got \(6, 3\)"):
        linear_relu(torch.randn(5, 7), torch.randn(6, 3))
    with pytest.raises(ValueError, match=r"x: expected a 2-D tensor"):
        linear_relu(torch.randn(7), torch.randn(7, 3))
