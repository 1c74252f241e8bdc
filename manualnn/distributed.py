"""Data-parallel training on torch.distributed: every rank trains on its share of each batch.

The loss is a sum over rows, so the sum of the ranks' weight gradients is the whole batch's
gradient. A step here is: forward and backward on this rank's rows, all-reduce (SUM) of every
weight gradient, then the same SGD update on every rank. Only rounding differs from one process.

Launch with torchrun (it sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)::

    torchrun --nproc-per-node 2 -m manualnn train ...                 # the CLI does the rest
    # or, in your own script run by torchrun:
    device = manualnn.distributed.init()                              # gloo on CPU, NCCL on CUDA
    manualnn.train(x.to(device), y.to(device), weights, distributed=True)

Every rank loads the whole data set and the same initial weights; the Trainer takes each rank's
rows of each global batch (see ``shard_bounds``), so the batch sequence is the one-process run's.
"""
import datetime
import os
import time

import torch
import torch.distributed as dist

threshold_backward = torch.ops.aten.threshold_backward.grad_input   # autograd's ReLU backward, in place
DEFAULT_TIMEOUT = 300.0   # seconds a rank waits in one collective before it gives up on the others


class DistributedError(RuntimeError):
    """The ranks disagree, or lost contact with each other."""


def launched():
    """True when this process was started by torchrun (or anything else that sets its variables)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def active():
    return dist.is_available() and dist.is_initialized()


def rank_and_world():
    if not active():
        raise DistributedError("distributed=True: no process group; launch with torchrun and call "
                               "manualnn.distributed.init() first")
    return dist.get_rank(), dist.get_world_size()


def init(device="auto", *, timeout=DEFAULT_TIMEOUT):
    """Join the process group described by torchrun's variables; return this rank's device.

    gloo for CPU tensors, NCCL for CUDA with one GPU per rank (``cuda:LOCAL_RANK``). ``timeout``
    (seconds) bounds every collective: a rank that died or hangs makes the others fail, not wait.
    """
    if not launched():
        raise DistributedError("no torchrun environment (RANK and WORLD_SIZE are not set); launch with "
                               "torchrun --nproc-per-node N ...")
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if str(device) == "auto" else device)
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(f"LOCAL_RANK {local_rank}: one GPU per rank is needed, and this machine has "
                                   f"{torch.cuda.device_count()}; start at most that many ranks per node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not active():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout))
    return device


def shutdown():
    if active():
        dist.destroy_process_group()


def shard_bounds(rows, rank, world):
    """This rank's contiguous part [lo, hi) of a batch of ``rows`` rows: the first ``rows % world``
    ranks take one row more (as torch.tensor_split does); a rank may get none of a small last batch."""
    base, extra = divmod(rows, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


def agree(fingerprint, error=None):
    """Compare every rank's ``fingerprint`` (a dict of settings and data checksums) with rank 0's.

    ``error``: this rank's own start-up error (a message), or None. Every rank learns every rank's
    error and every difference, so they all refuse together with the same explanation.
    """
    rank, world = rank_and_world()
    gathered = [None] * world
    dist.all_gather_object(gathered, (fingerprint, error))
    for r, (_, err) in enumerate(gathered):
        if err is not None:
            raise DistributedError(f"rank {r}: {err}")
    reference = gathered[0][0]
    for r, (theirs, _) in enumerate(gathered[1:], start=1):
        differ = [key for key in sorted(set(reference) | set(theirs)) if reference.get(key) != theirs.get(key)]
        if differ:
            what = "; ".join(f"{key}: rank 0 has {reference.get(key)!r}, rank {r} has {theirs.get(key)!r}"
                             for key in differ)
            raise DistributedError(f"the ranks were started with different settings or data ({what}); every "
                                   f"rank must run the same command on the same data")


def barrier():
    dist.barrier()


def missing_ranks(grace=3.0):
    """After a failed collective: the ranks that did not report in within ``grace`` seconds.

    Each surviving rank writes a key in the rendezvous store and looks for the others' keys. Returns
    None when the store itself is gone (it lives with rank 0, or with torchrun's agent).
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        store = dist.distributed_c10d._get_default_store()   # private, but the one handle on the group's store
        store.set(f"manualnn/alive/{rank}", "1")
        deadline = time.monotonic() + grace
        while True:
            missing = [r for r in range(world) if not store.check([f"manualnn/alive/{r}"])]
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(0.1)
    except Exception:   # the store's server is gone too
        return None


def describe_failure(error):
    """A one-line explanation of a failed collective that names the ranks that went away."""
    rank = dist.get_rank()
    missing = missing_ranks()
    if missing is None:
        who = "rank 0 (or the launcher holding the rendezvous store) is unreachable"
    elif missing:
        who = f"rank{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} stopped or stopped answering"
    else:
        who = "every rank is still up, but a collective failed"
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    detail = detail.split(" This is typically caused")[0]   # gloo's generic advice
    return f"rank {rank}: lost contact with the other ranks: {who} ({detail[:200]})"


def make_step(backend, x, y, weights, *, lr, grad, precision="ieee", overlap=True):
    """The distributed step for backend "torch" or "triton" on this rank's rows x, y."""
    if backend == "triton":
        return TritonDistributedStep(x, y, weights, lr=lr, grad=grad, precision=precision, overlap=overlap)
    if backend == "torch" and precision != "ieee":
        raise ValueError(f"precision: the torch backend computes in the tensors' own dtype and supports only "
                         f"'ieee', got {precision!r}")
    return DistributedStep(x, y, weights, lr=lr, grad=grad, overlap=overlap)


def _flat_gradients(weights, like):
    """One flat buffer for all weight gradients (one all-reduce without overlap) and its views."""
    flat = torch.empty(sum(w.numel() for w in weights), dtype=like.dtype, device=like.device)
    grads, offset = [], 0
    for w in weights:
        grads.append(flat[offset:offset + w.numel()].view(w.shape))
        offset += w.numel()
    return flat, grads


def _reduce_and_update(step, pending, scale):
    """Finish the gradients' all-reduce, then apply w -= scale * grad on every layer."""
    if step.overlap:
        for work in pending:
            work.wait()
    else:
        dist.all_reduce(step.flat)
    for w, gw in zip(step.weights, step.grads):
        w.add_(gw, alpha=-scale)


class DistributedStep:
    """One SGD step on this rank's rows x [n, in], y [n, out], with the gradients summed over ranks.

    Forward and backward are the torch backend's (the same buffers, the same in-place ops), but the
    update is not folded into the weight-gradient matmul: each gradient (half of it: the exact
    factor 2 is in the update's scale) goes into one flat buffer, is all-reduced, then applied.
    ``overlap=True`` starts each layer's all-reduce (async) as soon as its gradient exists, so it
    runs while the layers below are still in backward, as DDP's buckets do; ``overlap=False``
    all-reduces the flat buffer once after the whole backward. The loss written is this rank's
    part; the Trainer sums the epoch's loss over ranks.
    """
    name = "torch"

    def __init__(self, x, y, weights, *, lr, grad, overlap=True):
        self.x, self.y, self.weights = x, y, weights
        self.lr, self.grad, self.overlap = lr, grad, overlap
        new = lambda cols: torch.empty(x.shape[0], cols, dtype=x.dtype, device=x.device)  # noqa: E731
        hidden = [w.shape[1] for w in weights[:-1]]
        self.acts = [new(n) for n in hidden]          # h_l = relu(h_{l-1} @ w_l)
        self.grad_hs = [new(n) for n in hidden]       # half of dL/dh_l, masked
        self.diff = new(weights[-1].shape[1])         # y_pred - y
        self.flat, self.grads = _flat_gradients(weights, x)

    @property
    def bytes_per_step(self):
        """Bytes each rank contributes to the gradient all-reduce per step."""
        return self.flat.numel() * self.flat.element_size()

    def step(self, loss_out):
        inputs = [self.x] + self.acts                 # layer i reads inputs[i]
        for a, w, h in zip(inputs, self.weights[:-1], self.acts):
            torch.mm(a, w, out=h).relu_()
        torch.addmm(self.y, inputs[-1], self.weights[-1], beta=-1, out=self.diff)
        flat_diff = self.diff.view(-1)
        torch.dot(flat_diff, flat_diff, out=loss_out)

        pending, g = [], self.diff
        for i in reversed(range(len(self.weights))):
            torch.mm(inputs[i].t(), g, out=self.grads[i])
            if self.overlap:
                pending.append(dist.all_reduce(self.grads[i], async_op=True))
            if i > 0:   # reads w_i before any update (the seed's order)
                g_prev = torch.mm(g, self.weights[i].t(), out=self.grad_hs[i - 1])
                if self.grad == "relu":
                    threshold_backward(g_prev, inputs[i], 0, grad_input=g_prev)   # 0 where h == 0
                else:
                    g_prev.clamp_(min=0)                     # the seed's clamp of the values
                g = g_prev
        _reduce_and_update(self, pending, 2.0 * self.lr)   # the grads are half of dL/dw


class TritonDistributedStep:
    """The Triton backend's kernels, with the update taken out of the weight-gradient kernel.

    Forward, loss and masked backward are the Triton backend's fused kernels; the weight-gradient
    kernel runs in its gradient-only mode (``weight_grad(..., grad_out=...)``, no ``w``), writing
    dL/dw into the flat buffer that is all-reduced; the update follows, as in DistributedStep.
    """
    name = "triton"

    def __init__(self, x, y, weights, *, lr, grad, precision="ieee", overlap=True):
        from .backends.triton_backend import TritonBackend
        self.weights, self.lr, self.overlap = weights, lr, overlap
        # checks and buffers; a rank with no rows in a batch (a small last batch) launches nothing
        # the per-layer kernels (fused=False): the two-launch step updates inside its kernel
        self.fused = (TritonBackend(x, y, weights, lr=lr, grad=grad, precision=precision, fused=False)
                      if x.shape[0] else None)
        self.flat, self.grads = _flat_gradients(weights, x)

    @property
    def bytes_per_step(self):
        return self.flat.numel() * self.flat.element_size()

    def step(self, loss_out):
        f = self.fused
        if f is None:   # no rows: a zero loss and zero gradients, in the same all-reduce calls as the others
            loss_out.zero_()
            self.flat.zero_()
            pending = [dist.all_reduce(g, async_op=True) for g in reversed(self.grads)] if self.overlap else []
            return _reduce_and_update(self, pending, self.lr)
        k, p, weights = f.k, f.precision, self.weights
        a = f.x
        for w, h in zip(weights[:-1], f.acts):
            k.linear_relu(a, w, h, precision=p)
            a = h
        k.output_loss(a, weights[-1], f.y, f.grad_y, loss_out, partials=f.partials, precision=p)
        pending, g = [], f.grad_y                     # grad_y = 2 * (y_pred - y): the full gradient
        for i in reversed(range(len(weights))):
            a_in = f.x if i == 0 else f.acts[i - 1]
            k.weight_grad(a_in, g, grad_out=self.grads[i], precision=p)
            if self.overlap:
                pending.append(dist.all_reduce(self.grads[i], async_op=True))
            if i > 0:
                g_prev = f.grad_hs[i - 1]
                k.input_grad(g, weights[i], g_prev, mode=f.mode, h=a_in if f.mode == "relu" else None,
                             precision=p)
                g = g_prev
        _reduce_and_update(self, pending, self.lr)
