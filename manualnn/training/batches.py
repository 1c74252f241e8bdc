"""Which rows each step takes: the epoch's row order, its batches, and each rank's share of a batch."""
import hashlib

import torch


def epoch_seed(seed, epoch):
    """A generator seed for (seed, epoch): every epoch's order can be redrawn alone, on resume too."""
    digest = hashlib.blake2b(f"manualnn-shuffle:{int(seed)}:{int(epoch)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def batch_order(n, epoch, *, shuffle=True, seed=0):
    """The row order of epoch ``epoch`` over ``n`` rows: a seeded permutation, or 0..n-1."""
    if not shuffle:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))


def shard_bounds(rows, rank, world):
    """This rank's contiguous part [lo, hi) of a batch of ``rows`` rows: the first ``rows % world``
    ranks take one row more (as torch.tensor_split does); a rank gets none of a batch smaller than the ranks."""
    base, extra = divmod(rows, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


def batch_sizes(n, batch_size):
    """The rows of each of an epoch's batches: the fewest batches of at most ``batch_size`` rows, as even as
    rows allow (the first ``n % count`` take one row more). 225 rows in batches of 200 are 113 and 112, not
    200 and 25: a step on a small remainder is a full optimizer step on a noisy gradient."""
    count = -(-n // batch_size)
    base, extra = divmod(n, count)
    return [base + (i < extra) for i in range(count)]


def batches(n, batch_size, rank=0, world=1):
    """The epoch's batches (batch_sizes) as (first, last, global rows) positions in its row order, this rank's
    share."""
    plan, start = [], 0
    for rows in batch_sizes(n, batch_size):
        lo, hi = shard_bounds(rows, rank, world)
        plan.append((start + lo, start + hi, rows))
        start += rows
    return plan
