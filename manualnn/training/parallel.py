"""The data-parallel step: any backend's gradients, all-reduced over the ranks, then its own update."""
import torch
import torch.distributed as dist


class AllReduceStep:
    """Any backend's step, data parallel: this rank's gradients, all-reduced (SUM) over the ranks, then
    the backend's own update, the same on every rank.

    ``backend_step`` is the backend's step on this rank's rows, made with ``grads`` (views of one flat
    buffer, see ``flat_gradients``); on a rank with no rows of a batch it writes zeros and joins the
    same all-reduces. ``overlap=True`` starts each layer's
    all-reduce (async) as soon as its gradient is written, while the layers below are still in
    backward, as DDP's buckets do; ``overlap=False`` all-reduces the flat buffer once at the end.
    The loss written is this rank's part; the Trainer sums the epoch's loss over ranks.
    """

    def __init__(self, backend_step, flat, grads, overlap=True):
        self.inner, self.flat, self.grads, self.overlap = backend_step, flat, grads, overlap
        self.name = backend_step.name

    @property
    def bytes_per_step(self):
        """Bytes each rank contributes to the gradient all-reduce per step."""
        return self.flat.numel() * self.flat.element_size()

    def step(self, loss_out):
        pending = []
        ready = (lambda i: pending.append(dist.all_reduce(self.grads[i], async_op=True))) if self.overlap else None
        self.inner.gradients(loss_out, ready=ready)   # a rank with no rows of a batch writes zeros
        if self.overlap:
            for work in pending:
                work.wait()
        else:
            dist.all_reduce(self.flat)
        self.inner.update()


def flat_gradients(params):
    """One flat buffer for every layer's gradient and its per-layer views."""
    like = params.tensors[0]
    flat = torch.empty(sum(p.numel() for p in params.tensors), dtype=like.dtype, device=like.device)
    grads, offset = [], 0
    for p in params.tensors:
        grads.append(flat[offset:offset + p.numel()].view(p.shape))
        offset += p.numel()
    return flat, grads
