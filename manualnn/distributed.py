"""Data-parallel training on torch.distributed: every rank trains on its share of each batch.

The loss is a sum over rows, so the sum of the ranks' gradients is the whole batch's gradient
(a "mean" divides by the whole batch's rows on every rank). A step is: forward and backward on this
rank's rows, all-reduce (SUM) of every gradient, then the same update on every rank
(manualnn/training/parallel.py). Only rounding differs from one process.

Launch with torchrun (it sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)::

    torchrun --nproc-per-node 2 -m manualnn train ...                 # the CLI does the rest
    # or, in your own script run by torchrun:
    device = manualnn.distributed.init()                              # gloo on CPU, NCCL on CUDA
    manualnn.train(x.to(device), y.to(device), weights, distributed=True)

Every rank loads the whole data set and the same initial weights; the Trainer takes each rank's
rows of each global batch (see ``manualnn.training.batches.shard_bounds``), so the batch sequence is the one-process run's.
"""
import datetime
import os
import time

import torch
import torch.distributed as dist

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
