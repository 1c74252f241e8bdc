"""The contenders: every way of training the same two-layer network, from the same inputs.

Each contender is built once for a problem and a precision, then ``run(epochs, record)`` trains
``epochs`` epochs from the problem's initial weights (the reset is part of every run, for all of
them alike). With ``record=True`` it keeps each epoch's loss, so ``result()`` can be judged
against the float64 reference before any timing. A contender that cannot run in a precision
raises Unsupported at construction.
"""
import contextlib
import os

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
    """The seed's loop verbatim (tutorial gradient), optionally with its per-epoch print."""
    name, grad = "seed", "tutorial"

    def __init__(self, p, precision, print_epochs=False):
        super().__init__(p, precision)
        self.print_epochs = print_epochs
        if print_epochs:
            self.name = "seed-print"
            self.sink = open(os.devnull, "w")
        self.w1, self.w2 = (w.clone() for w in p.w0)

    def run(self, epochs, record=False):
        x, y, w1, w2, learning_rate = self.p.x, self.p.y, self.w1, self.w2, self.p.lr
        w1.copy_(self.p.w0[0])
        w2.copy_(self.p.w0[1])
        for epoch in range(epochs):
            h1 = torch.mm(x, w1)
            h1 = h1.clamp(min=0)
            y_pred = h1.mm(w2)
            loss = (y_pred - y).pow(2).sum()
            if self.print_epochs:
                print("Epoch:{}, Loss:{:.4f}".format(epoch, loss), file=self.sink)
            if record:
                self.losses[epoch] = loss
            grad_y_pred = 2 * (y_pred - y)
            grad_w2 = torch.mm(h1.t(), grad_y_pred)
            grad_h = grad_y_pred.clone()
            grad_h = torch.mm(grad_h, w2.t())
            grad_h.clamp_(min=0)
            grad_w1 = torch.mm(x.t(), grad_h)
            w1 -= learning_rate * grad_w1
            w2 -= learning_rate * grad_w2

    def result(self):
        return self.losses.tolist(), [self.w1, self.w2]


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
        D, H = p.w0[0].shape
        O = p.w0[1].shape[1]
        self.model = nn.Sequential(nn.Linear(D, H, bias=False), nn.ReLU(), nn.Linear(H, O, bias=False)).to(p.device)
        self.weights = [self.model[0].weight, self.model[2].weight]   # (out, in): the seed's w transposed
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
    """manualnn.Trainer with the torch or triton backend (the path it picks), relu gradient."""
    precisions = ("fp32", "tf32", "bf16")

    def __init__(self, p, precision, backend):
        super().__init__(p, precision)
        self.name = f"manualnn-{backend}"
        if backend == "torch" and precision != "fp32":
            raise Unsupported("the torch backend computes in fp32 only")
        if backend == "triton" and p.device.type != "cuda":
            raise Unsupported("CUDA only (the interpreter is never timed)")
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


class TritonSteps(Contender):
    """The triton backend stepped directly (no Trainer): its per-layer kernels ("layers") or its
    two-launch step ("2launch"), eagerly or with ``epochs`` steps captured as one CUDA graph."""
    precisions = ("fp32", "tf32", "bf16")

    def __init__(self, p, precision, path, graph=False):
        super().__init__(p, precision)
        if graph and p.device.type != "cuda":
            raise Unsupported("CUDA graphs need CUDA")
        from manualnn import kernels
        from manualnn.backends.triton_backend import TritonBackend
        fused = path == "2launch"
        if fused and not kernels.fits(p.w0):
            raise Unsupported(f"layers wider than {kernels.MAX_WIDTH}: the per-layer kernels run instead")
        self.name = f"manualnn-triton-{path}" + ("-graph" if graph else "")
        self.weights = [w.clone() for w in p.w0]
        self.backend = TritonBackend(p.x, p.y, self.weights, lr=p.lr, grad="relu",
                                     precision={"fp32": "ieee"}.get(precision, precision), fused=fused)
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
        B, (D, H), O = p.x.shape[0], p.w0[0].shape, p.w0[1].shape[1]
        gen = torch.Generator().manual_seed(1)
        new = lambda *s: torch.randn(*s, generator=gen).to(p.device, dt)  # noqa: E731
        self.x, self.w1, self.w2, self.g = p.x.to(dt), p.w0[0].to(dt), p.w0[1].to(dt), new(B, O)
        self.h, self.yp, self.gh = new(B, H), new(B, O), new(B, H)
        self.gw1, self.gw2 = new(D, H), new(H, O)

    def run(self, epochs, record=False):
        x, w1, w2, g, h, gh = self.x, self.w1, self.w2, self.g, self.h, self.gh
        for _ in range(epochs):
            torch.mm(x, w1, out=h)
            torch.mm(h, w2, out=self.yp)
            torch.mm(g, w2.t(), out=gh)
            torch.mm(x.t(), gh, out=self.gw1)
            torch.mm(h.t(), g, out=self.gw2)


def all_contenders(device):
    """(name, factory) in the order they run: the baselines first."""
    entries = [
        ("seed", lambda p, pr: SeedLoop(p, pr)),
        ("seed-print", lambda p, pr: SeedLoop(p, pr, print_epochs=True)),
        ("matmul-floor", MatmulFloor),
        ("manualnn-torch", lambda p, pr: Manualnn(p, pr, "torch")),
        ("manualnn-triton", lambda p, pr: Manualnn(p, pr, "triton")),
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
