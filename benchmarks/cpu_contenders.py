"""The contenders of ``python -m benchmarks.cpu``: one digits workload (64 -> H -> 10 with biases, softmax
cross-entropy averaged over shuffled batches of B rows, Adam lr 3e-3: what ``manualnn train --data digits``
does), trained the same way by each, from the same weights over the same batches.

Each ``make(work)`` returns ``(run, result)``: ``run(epochs)`` trains that many more epochs; ``result()``
gives (losses per epoch, weights [in, out], biases) for the judge.
"""
import numpy as np
import torch
from torch import nn

import manualnn
from manualnn.data import init_weights, load_data, split
from manualnn.training import batch_order, cpu_threads
from manualnn.training.batches import batch_sizes

LR, BETAS, EPS, SEED = 3e-3, (0.9, 0.999), 1e-8, 0
STEP = dict(loss="ce", reduction="mean", optimizer="adam", betas=BETAS, eps=EPS)


class Workload:
    """The digits rows a ``--data digits`` run trains on (its 80% split), the initial weights and biases."""

    def __init__(self, hidden, batch):
        data = load_data("digits")
        self.x, self.labels, _, _ = split(data.x, data.y, 0.2, SEED)
        self.targets = torch.nn.functional.one_hot(self.labels, 10).float()
        self.hidden, self.batch = hidden, batch
        self.w0 = init_weights([64, hidden, 10], "kaiming", generator=torch.Generator().manual_seed(SEED))
        self.b0 = [torch.zeros(w.shape[1]) for w in self.w0]
        self.rows = self.x.shape[0]
        sizes = batch_sizes(self.rows, batch)   # manualnn's even batches
        self.steps_per_epoch, self.step_rows = len(sizes), sizes[0]   # (the first batches are the largest)

    def order(self, epoch):
        return batch_order(self.rows, epoch, seed=SEED)


def manualnn_contender(backend="auto", threads=None):
    def make(work):
        trainer = manualnn.Trainer(work.x, work.labels, work.w0, biases=work.b0, lr=LR, batch_size=work.batch,
                                   shuffle_seed=SEED, backend=backend, threads=threads, **STEP)
        return trainer.run, lambda: (trainer.losses, trainer.weights, trainer.biases)
    return make


def autograd_contender(work, threads=None):
    """A PyTorch user's loop: nn.Sequential, nn.CrossEntropyLoss, torch.optim.Adam (foreach)."""
    model = nn.Sequential(nn.Linear(64, work.hidden), nn.ReLU(), nn.Linear(work.hidden, 10))
    with torch.no_grad():   # nn.Linear stores [out, in]: the transpose of the seed's layout
        for layer, w, b in zip((model[0], model[2]), work.w0, work.b0):
            layer.weight.copy_(w.t())
            layer.bias.copy_(b)
    opt = torch.optim.Adam(model.parameters(), lr=LR, betas=BETAS, eps=EPS, foreach=True)
    loss_fn = nn.CrossEntropyLoss()
    state = {"epoch": 0, "losses": []}

    def run(epochs):
        with cpu_threads(threads):
            for _ in range(epochs):
                order = work.order(state["epoch"])
                total = torch.zeros(())
                for rows in torch.tensor_split(order, work.steps_per_epoch):   # manualnn's even batches
                    loss = loss_fn(model(work.x[rows]), work.labels[rows])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += loss.detach() * len(rows)
                state["losses"].append(total / work.rows)
                state["epoch"] += 1

    def result():
        return ([float(v) for v in state["losses"]], [model[0].weight.detach().t(), model[2].weight.detach().t()],
                [model[0].bias.detach(), model[2].bias.detach()])
    return run, result


def jax_contender(work):
    """``jax.jit`` of one epoch, ``lax.scan`` over its batches (manualnn's even batches: one scan over those a
    row larger, one over the rest), with the same hand-written backward and Adam (torch.optim.Adam's update),
    float32. Raises ImportError without jax."""
    import jax
    import jax.numpy as jnp

    b1, b2 = BETAS
    x, y = jnp.asarray(work.x.numpy()), jnp.asarray(work.targets.numpy())
    count = work.steps_per_epoch
    base, extra = divmod(work.rows, count)   # the first `extra` batches take base + 1 rows
    split = extra * (base + 1)

    def step(carry, idx):
        params, m, v, t = carry
        w1, c1, w2, c2 = params
        xb, yb = x[idx], y[idx]
        pre = xb @ w1 + c1
        h = jnp.maximum(pre, 0)
        z = h @ w2 + c2
        logp = jax.nn.log_softmax(z, axis=1)
        loss = -(yb * logp).sum()
        g = (jnp.exp(logp) - yb) / idx.shape[0]
        gh = (g @ w2.T) * (pre > 0)
        grads = (xb.T @ gh, gh.sum(0), h.T @ g, g.sum(0))
        t = t + 1
        m = tuple(b1 * mi + (1 - b1) * gi for mi, gi in zip(m, grads))
        v = tuple(b2 * vi + (1 - b2) * gi * gi for vi, gi in zip(v, grads))
        step_size, root = LR / (1 - b1 ** t), jnp.sqrt(1 - b2 ** t)
        params = tuple(p - step_size * mi / (jnp.sqrt(vi) / root + EPS) for p, mi, vi in zip(params, m, v))
        return (params, m, v, t), loss

    @jax.jit
    def epoch(carry, order):
        total = 0.0
        for part, rows in ((order[:split], base + 1), (order[split:], base)):
            if part.shape[0]:
                carry, losses = jax.lax.scan(step, carry, part.reshape(-1, rows))
                total = total + losses.sum()
        return carry, total / work.rows

    params = (jnp.asarray(work.w0[0].numpy()), jnp.zeros(work.hidden), jnp.asarray(work.w0[1].numpy()),
              jnp.zeros(10))
    zeros = tuple(jnp.zeros_like(p) for p in params)
    state = {"carry": (params, zeros, zeros, jnp.float32(0)), "epoch": 0, "losses": []}

    def run(epochs):
        carry = state["carry"]
        for _ in range(epochs):
            carry, loss = epoch(carry, jnp.asarray(work.order(state["epoch"]).numpy()))
            state["losses"].append(loss)
            state["epoch"] += 1
        state["carry"] = jax.block_until_ready(carry)

    def result():
        w1, c1, w2, c2 = (torch.from_numpy(np.asarray(p)) for p in state["carry"][0])
        return [float(v) for v in state["losses"]], [w1, w2], [c1, c2]
    return run, result


def gemm_floor(threads):
    """The bare GEMMs of one step (forward, output, input gradient, both weight gradients) into buffers
    made once, as torch.mm calls, on ``threads`` threads: what no implementation of the step can beat."""
    def make(work):
        b, h = work.step_rows, work.hidden
        gen = torch.Generator().manual_seed(1)
        r = lambda *shape: torch.randn(*shape, generator=gen)  # noqa: E731
        x, w1, a1, w2, g, gh = r(b, 65), r(65, h), r(b, h + 1), r(h + 1, 10), r(b, 10), r(b, h)
        out_h, out_z, out_gh, out_g1, out_g2 = (torch.empty(b, h), torch.empty(b, 10), torch.empty(b, h),
                                                torch.empty(65, h), torch.empty(h + 1, 10))
        w2t = w2[:h].t()

        def run(epochs):
            with cpu_threads(threads):
                for _ in range(epochs * work.steps_per_epoch):
                    torch.mm(x, w1, out=out_h)
                    torch.mm(a1, w2, out=out_z)
                    torch.mm(g, w2t, out=out_gh)
                    torch.mm(a1.t(), g, out=out_g2)
                    torch.mm(x.t(), gh, out=out_g1)
        return run, None
    return make
