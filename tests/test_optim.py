"""The optimizers' update (kernels/optim.py's apply_optimizer) in every kernel that applies it: the
weight-gradient kernel's epilogue and the element-wise update from gradients in memory (the fused
step's update epilogue: test_two_launch.py). The twin is the torch backend's own TorchOptimizer, run
in float64 and in float32, from non-zero optimizer state; the last parameter row is a bias row, which
weight decay must leave alone.
"""
import pytest
import torch

from manualnn import kernels
from manualnn.backends.torch_backend import TorchOptimizer
from manualnn.spec import Params, StepSpec
from test_kernels import CONFIGS, DEVICE, SMALL_BLOCKS, assert_matches, poisoned, rand


def optimizer_twin(spec, p0, state0, grad64, grad32, bias, steps_before=0):
    """The torch backend's TorchOptimizer from p0, its state and the gradient, in float64 and float32:
    the updated Params per dtype."""
    out = []
    for dt, grad in ((torch.float64, grad64), (torch.float32, grad32)):
        params = Params([p0.cpu().to(dt).clone()], bias, spec)
        params.step.fill_(steps_before)
        params.powers.copy_(torch.tensor(spec.betas, dtype=torch.float64) ** steps_before)
        for name in spec.state_names:
            params.state[name][0].copy_(state0)
        TorchOptimizer(params, spec, [grad.cpu().to(dt).clone()])()
        out.append(params)
    return out


def start_state(params, p0):
    """Non-zero optimizer state, so a kernel that ignores it fails."""
    state0 = p0.abs() * 0.1
    for buffers in params.state.values():
        for b in buffers:
            b.copy_(state0)
    return state0


UPDATE_SPECS = {
    "sgd": StepSpec(lr=0.1),
    "sgd+decay": StepSpec(lr=0.1, weight_decay=0.3),
    "momentum+decay": StepSpec(lr=0.1, optimizer="momentum", momentum=0.8, weight_decay=0.3),
    "adam": StepSpec(lr=0.05, optimizer="adam"),
    "adam+decay": StepSpec(lr=0.05, optimizer="adam", betas=(0.8, 0.99), weight_decay=0.3),
}


def update_args(spec, params, bias):
    decay = (params.tensors[0].shape[0] - int(bias)) if spec.weight_decay else 0
    hyper = kernels.hyper_parameters(lr=spec.lr, momentum=spec.momentum, betas=spec.betas, eps=spec.eps,
                                     weight_decay=spec.weight_decay, device=DEVICE)
    return dict(hyper=hyper, state=tuple(params.state[n][0] for n in spec.state_names), powers=params.powers,
                decay_rows=decay)


def check_update(name, params, ref64, ref32):
    for a, r, t in zip(params.tensors + [s[0] for s in params.state.values()],
                       ref64.tensors + [s[0] for s in ref64.state.values()],
                       ref32.tensors + [s[0] for s in ref32.state.values()]):
        assert_matches(name, a, r, t)


@pytest.mark.parametrize("update", list(UPDATE_SPECS))
@pytest.mark.parametrize("M,K,N,cfg", [(33, 129, 33, "16-blocks"), (17, 10, 10, "fixed"), (1, 7, 17, "fixed")])
def test_weight_grad_with_the_optimizer_in_the_epilogue(M, K, N, cfg, update):
    # p[M, N] updated from a[K, M]^T @ g[K, N]; K is the batch; the last row is a bias row (not decayed)
    spec = UPDATE_SPECS[update]
    gen = torch.Generator().manual_seed(M + 5 * K + 13 * N)
    a, g, p0 = rand(K, M, gen=gen), rand(K, N, gen=gen), rand(M, N, gen=gen)
    params = Params([p0.clone()], True, spec)
    state0 = start_state(params, p0)
    steps_before = 2 if spec.optimizer == "adam" else 0
    ref64, ref32 = optimizer_twin(spec, p0, state0, a.double().t() @ g.double(), a.t() @ g, True, steps_before)
    params.powers.copy_(torch.tensor(spec.betas, dtype=torch.float64) ** (steps_before + 1))  # advanced already
    kernels.weight_grad(a, g, params.tensors[0], optimizer=spec.optimizer, config=CONFIGS[cfg],
                        **update_args(spec, params, bias=True))
    check_update(f"weight_grad[{update}]", params, ref64, ref32)


def test_weight_grad_gradient_only_store():
    gen = torch.Generator().manual_seed(10)
    a, g, p = rand(17, 33, gen=gen), rand(17, 10, gen=gen), rand(33, 10, gen=gen)
    p0 = p.clone()
    grad = kernels.weight_grad(a, g, p, optimizer="grad", grad_out=poisoned(33, 10), config=SMALL_BLOCKS)
    assert_matches("gradient only", grad, a.double().t() @ g.double(), a.t() @ g)
    assert torch.equal(p, p0)


@pytest.mark.parametrize("update", list(UPDATE_SPECS))
def test_elementwise_update_from_gradients(update):
    # several parameters (one of 1 x 10, one longer than a block), blocks of 64 elements
    spec = UPDATE_SPECS[update]
    gen = torch.Generator().manual_seed(20)
    shapes = [(11, 17), (1, 10), (33, 3)]
    p0 = [rand(*s, gen=gen) for s in shapes]
    grads = [rand(*s, gen=gen) for s in shapes]
    params = Params([p.clone() for p in p0], True, spec)
    state0 = [p.abs() * 0.1 for p in p0]
    for buffers in params.state.values():
        for b, s0 in zip(buffers, state0):
            b.copy_(s0)
    hyper = update_args(spec, Params([p0[0]], True, spec), True)["hyper"]
    decay = [s[0] - 1 if spec.weight_decay else 0 for s in shapes]
    run = kernels.update_launcher(params.tensors, grads, optimizer=spec.optimizer, hyper=hyper, powers=params.powers,
                                  step=params.step, decay_rows=decay, block=64,
                                  state=[tuple(params.state[n][i] for n in spec.state_names) for i in range(3)])
    run()
    for i in range(3):
        ref64, ref32 = optimizer_twin(spec, p0[i], state0[i], grads[i].double(), grads[i], True)
        one = Params([params.tensors[i]], True, spec)
        one.state = {n: [params.state[n][i]] for n in spec.state_names}
        check_update(f"update[{update}] {i}", one, ref64, ref32)
    assert int(params.step) == (1 if spec.optimizer == "adam" else 0)


@pytest.mark.cuda
def test_autotuned_in_place_update_applies_once():
    # autotuning runs the kernel once per config; without restore_value the in-place update (and the
    # momentum buffer's) would land several times. A shape no other test uses, so the tuner really tunes.
    spec = UPDATE_SPECS["momentum+decay"]
    gen = torch.Generator().manual_seed(12)
    a, g, p0 = rand(263, 75, gen=gen), rand(263, 37, gen=gen), rand(75, 37, gen=gen)
    params = Params([p0.clone()], True, spec)
    state0 = start_state(params, p0)
    ref64, ref32 = optimizer_twin(spec, p0, state0, a.double().t() @ g.double(), a.t() @ g, True)
    kernels.weight_grad(a, g, params.tensors[0], optimizer="momentum", config="autotune",
                        **update_args(spec, params, bias=True))
    check_update("autotuned momentum update", params, ref64, ref32)
