"""The contenders: every way of training the same two-layer network, from the same inputs.

Each contender is built once for a problem and a precision, then ``run(epochs, record)`` trains
``epochs`` epochs from the problem's initial weights (the reset is part of every run, for all of
them alike). With ``record=True`` it keeps each epoch's loss, so ``result()`` can be judged
against the float64 reference before any timing. A contender that cannot run in a precision
raises Unsupported at construction.
"""
import contextlib
import os

import numpy as np
import torch
from torch import nn

import manualnn


class Unsupported(Exception):
    pass


@contextlib.contextmanager
def matmul_precision(device, precision):
    """fp32 means TF32 off for every contender; tf32 turns it on for torch's matmuls."""
    if device.type != "cuda":
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


class Contender:
    name = "?"
    grad = "relu"          # the reference mode this contender's math must equal (None: not checked)
    precisions = ("fp32", "tf32")

    def __init__(self, p, precision):
        if precision not in self.precisions:
            raise Unsupported(f"no {precision} mode")
        self.p, self.precision = p, precision
        self.losses = torch.zeros(p.epochs, device=p.device)

    def result(self):
        raise NotImplementedError


class SeedLoop(Contender):
    """The seed's loop verbatim (tutorial gradient), optionally with its per-epoch print.

    For the seed's two layers it runs exactly the seed's ops in the seed's order; deeper networks
    repeat the hidden layer's lines once per layer, as manualnn.reference.tutorial_loop does.
    """
    name, grad = "seed", "tutorial"

    def __init__(self, p, precision, print_epochs=False):
        super().__init__(p, precision)
        self.print_epochs = print_epochs
        if print_epochs:
            self.name = "seed-print"
            self.sink = open(os.devnull, "w")
        self.ws = [w.clone() for w in p.w0]

    def run(self, epochs, record=False):
        x, y, ws, learning_rate = self.p.x, self.p.y, self.ws, self.p.lr
        for w, w0 in zip(ws, self.p.w0):
            w.copy_(w0)
        for epoch in range(epochs):
            hs = [x]
            for w in ws[:-1]:
                h1 = torch.mm(hs[-1], w)
                h1 = h1.clamp(min=0)
                hs.append(h1)
            y_pred = hs[-1].mm(ws[-1])
            loss = (y_pred - y).pow(2).sum()
            if self.print_epochs:
                print("Epoch:{}, Loss:{:.4f}".format(epoch, loss), file=self.sink)
            if record:
                self.losses[epoch] = loss
            grad = 2 * (y_pred - y)
            grads = [None] * len(ws)
            for i in reversed(range(len(ws))):
                grads[i] = torch.mm(hs[i].t(), grad)
                if i > 0:
                    grad_h = grad.clone()
                    grad_h = torch.mm(grad_h, ws[i].t())
                    grad_h.clamp_(min=0)
                    grad = grad_h
            for w, g in zip(ws, grads):
                w -= learning_rate * g

    def result(self):
        return self.losses.tolist(), self.ws


class CudaGraphSeed(SeedLoop):
    """The seed loop (reset included) captured once per epoch count with torch.cuda.graph, replayed."""
    name = "cudagraph"

    def __init__(self, p, precision):
        if p.device.type != "cuda":
            raise Unsupported("CUDA only")
        super().__init__(p, precision)
        self.graphs = {}

    def run(self, epochs, record=False):
        if epochs not in self.graphs:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    super().run(epochs, record=True)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                super().run(epochs, record=True)
            self.graphs[epochs] = graph
        self.graphs[epochs].replay()


class Autograd(Contender):
    """nn.Sequential(Linear, ReLU, Linear) without bias, sum-of-squares, loss.backward(), SGD."""
    precisions = ("fp32", "tf32", "bf16")

    def __init__(self, p, precision, optimizer="foreach", compile_mode=None):
        super().__init__(p, precision)
        if optimizer == "fused" and p.device.type not in ("cuda", "cpu"):
            raise Unsupported("fused SGD needs CUDA or CPU")
        self.name = f"compile-{compile_mode}" if compile_mode else f"autograd-{optimizer}"
        layers = []
        for i, w in enumerate(p.w0):
            layers.append(nn.Linear(w.shape[0], w.shape[1], bias=False))
            if i < len(p.w0) - 1:
                layers.append(nn.ReLU())
        self.model = nn.Sequential(*layers).to(p.device)
        self.weights = [m.weight for m in self.model if isinstance(m, nn.Linear)]  # (out, in): w transposed
        kind = {"foreach": dict(foreach=True), "fused": dict(fused=True)}[optimizer]
        self.opt = torch.optim.SGD(self.model.parameters(), lr=p.lr, **kind)
        autocast = precision == "bf16"
        model, opt, x, y = self.model, self.opt, p.x, p.y

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast(p.device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = (model(x) - y).pow(2).sum()
            loss.backward()
            opt.step()
            return loss

        self.step = torch.compile(step, mode=compile_mode, dynamic=False) if compile_mode else step

    def run(self, epochs, record=False):
        with torch.no_grad():
            for w, w0 in zip(self.weights, self.p.w0):
                w.copy_(w0.t())
        for epoch in range(epochs):
            loss = self.step()
            if record:
                self.losses[epoch] = loss.detach()

    def result(self):
        return self.losses.tolist(), [w.detach().t() for w in self.weights]


class Manualnn(Contender):
    """manualnn.Trainer with the torch, triton (the path it picks) or native backend, relu gradient."""
    precisions = ("fp32", "tf32", "bf16")

    def __init__(self, p, precision, backend):
        super().__init__(p, precision)
        self.name = f"manualnn-{backend}"
        if backend in ("torch", "native") and precision != "fp32":
            raise Unsupported(f"the {backend} backend computes in fp32 only")
        if backend == "triton" and p.device.type != "cuda":
            raise Unsupported("CUDA only (the interpreter is never timed)")
        if backend == "native" and p.device.type != "cpu":
            raise Unsupported("CPU only")
        self.trainer = manualnn.Trainer(p.x, p.y, p.w0, lr=p.lr, grad="relu", backend=backend,
                                        precision={"fp32": "ieee"}.get(precision, precision))
        self.last = None

    def run(self, epochs, record=False):
        with torch.no_grad():
            for w, w0 in zip(self.trainer.weights, self.p.w0):
                w.copy_(w0)
        self.last = self.trainer.run(epochs)

    def result(self):
        return self.last.losses, self.last.weights


class JaxScan(Contender):
    """The same hand-written loop in JAX: ``jax.jit`` of ``lax.scan`` over the epochs, relu gradient.

    Optional: Unsupported when jax is not installed. Compiled once per epoch count (cold time).
    """
    name = "jax-jit-scan"
    precisions = ("fp32",)

    def __init__(self, p, precision):
        super().__init__(p, precision)
        try:
            import jax
            import jax.numpy as jnp
        except ImportError:
            raise Unsupported("jax is not installed (pip install jax)") from None
        if p.device.type != "cpu":
            raise Unsupported("run on the CPU only here")
        self.jax, self.jnp = jax, jnp
        self.x, self.y = jnp.asarray(p.x.numpy()), jnp.asarray(p.y.numpy())
        self.w0 = [jnp.asarray(w.numpy()) for w in p.w0]
        self.compiled, self.out = {}, None

    def _train(self, epochs):
        jax, jnp, lr, x, y = self.jax, self.jnp, self.p.lr, self.x, self.y
        mm = lambda a, b: jnp.matmul(a, b, precision="highest")  # noqa: E731

        def epoch(ws, _):
            hs = [x]
            for w in ws[:-1]:
                hs.append(jnp.maximum(mm(hs[-1], w), 0))
            diff = mm(hs[-1], ws[-1]) - y
            loss = jnp.sum(diff * diff)
            g, new = 2 * diff, list(ws)
            for i in reversed(range(len(ws))):
                new[i] = ws[i] - lr * mm(hs[i].T, g)      # the gradient from the old weights
                if i > 0:
                    g = jnp.where(hs[i] > 0, mm(g, ws[i].T), 0)
            return new, loss

        return jax.jit(lambda ws: jax.lax.scan(epoch, ws, None, length=epochs))

    def run(self, epochs, record=False):
        if epochs not in self.compiled:
            self.compiled[epochs] = self._train(epochs)
        self.out = self.jax.block_until_ready(self.compiled[epochs](self.w0))
        if record:
            self.losses[:epochs] = torch.from_numpy(np.asarray(self.out[1]).copy())

    def result(self):
        ws, _ = self.out
        return self.losses.tolist(), [torch.from_numpy(np.asarray(w).copy()) for w in ws]


class TritonSteps(Contender):
    """The triton backend stepped directly (no Trainer): its per-layer kernels ("layers") or its
    two-launch step ("2launch"), eagerly or with ``epochs`` steps captured as one CUDA graph."""
    precisions = ("fp32", "tf32", "bf16")

    def __init__(self, p, precision, path, graph=False):
        super().__init__(p, precision)
        if graph and p.device.type != "cuda":
            raise Unsupported("CUDA graphs need CUDA")
        from manualnn import kernels
        from manualnn.backends import make_step
        from manualnn.spec import Params, StepSpec
        fused = path == "2launch"
        if fused and not kernels.fits([w.shape[1] for w in p.w0]):
            raise Unsupported(f"layers wider than {kernels.MAX_WIDTH}: the per-layer kernels run instead")
        self.name = f"manualnn-triton-{path}" + ("-graph" if graph else "")
        spec = StepSpec(lr=p.lr, grad="relu", precision={"fp32": "ieee"}.get(precision, precision))
        self.params = Params.from_weights(p.w0, None, spec)
        self.weights = self.params.tensors
        self.backend = make_step("triton", p.x, p.y, self.params, spec, two_launch=fused)
        self.graph, self.graphs = graph, {}

    def steps(self, epochs):
        for w, w0 in zip(self.weights, self.p.w0):
            w.copy_(w0)
        for epoch in range(epochs):
            self.backend.step(self.losses[epoch])

    def run(self, epochs, record=False):  # losses always land in the device buffer: no host sync
        if not self.graph:
            self.steps(epochs)
            return
        if epochs not in self.graphs:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):       # compiles (and autotunes) outside the capture
                    self.steps(epochs)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.steps(epochs)
            self.graphs[epochs] = graph
        self.graphs[epochs].replay()

    def result(self):
        return self.losses.tolist(), self.weights


class MatmulFloor(Contender):
    """The bare matmuls a step must do (the same torch.mm calls, into preallocated outputs)."""
    name, grad = "matmul-floor", None
    precisions = ("fp32", "tf32", "bf16")

    def __init__(self, p, precision):
        super().__init__(p, precision)
        dt = torch.bfloat16 if precision == "bf16" else torch.float32
        B = p.x.shape[0]
        gen = torch.Generator().manual_seed(1)
        new = lambda *s: torch.randn(*s, generator=gen).to(p.device, dt)  # noqa: E731
        self.x, self.ws = p.x.to(dt), [w.to(dt) for w in p.w0]
        self.outs = [new(B, w.shape[1]) for w in self.ws]     # h_l, then y_pred
        self.gs = [new(B, w.shape[1]) for w in self.ws]       # each layer's output gradient
        self.gws = [new(*w.shape) for w in self.ws]

    def run(self, epochs, record=False):
        ins = [self.x] + self.outs[:-1]
        for _ in range(epochs):
            for a, w, h in zip(ins, self.ws, self.outs):
                torch.mm(a, w, out=h)
            for i in reversed(range(len(self.ws))):
                if i > 0:
                    torch.mm(self.gs[i], self.ws[i].t(), out=self.gs[i - 1])
                torch.mm(ins[i].t(), self.gs[i], out=self.gws[i])


def all_contenders(device):
    """(name, factory) in the order they run: the baselines first."""
    entries = [
        ("seed", lambda p, pr: SeedLoop(p, pr)),
        ("seed-print", lambda p, pr: SeedLoop(p, pr, print_epochs=True)),
        ("matmul-floor", MatmulFloor),
        ("manualnn-torch", lambda p, pr: Manualnn(p, pr, "torch")),
        ("manualnn-triton", lambda p, pr: Manualnn(p, pr, "triton")),
        ("manualnn-native", lambda p, pr: Manualnn(p, pr, "native")),
        ("jax-jit-scan", JaxScan),
        ("manualnn-triton-layers", lambda p, pr: TritonSteps(p, pr, "layers")),
        ("manualnn-triton-2launch", lambda p, pr: TritonSteps(p, pr, "2launch")),
        ("manualnn-triton-layers-graph", lambda p, pr: TritonSteps(p, pr, "layers", graph=True)),
        ("manualnn-triton-2launch-graph", lambda p, pr: TritonSteps(p, pr, "2launch", graph=True)),
        ("autograd-foreach", lambda p, pr: Autograd(p, pr, "foreach")),
        ("autograd-fused", lambda p, pr: Autograd(p, pr, "fused")),
        ("cudagraph", CudaGraphSeed),
        ("compile-default", lambda p, pr: Autograd(p, pr, "foreach", compile_mode="default")),
        ("compile-reduce-overhead", lambda p, pr: Autograd(p, pr, "foreach", compile_mode="reduce-overhead")),
        ("compile-max-autotune-no-cudagraphs",
         lambda p, pr: Autograd(p, pr, "foreach", compile_mode="max-autotune-no-cudagraphs")),
    ]
    cuda_only = {"manualnn-triton", "manualnn-triton-layers", "manualnn-triton-2launch", "manualnn-triton-layers-graph",
                 "manualnn-triton-2launch-graph", "cudagraph", "compile-reduce-overhead",
                 "compile-max-autotune-no-cudagraphs"}
    return [(n, f) for n, f in entries if device.type == "cuda" or n not in cuda_only]
