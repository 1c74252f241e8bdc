import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import proto
from manualnn.training import epoch as E, batches as B
def batches(n, batch_size, rank=0, world=1):
    k = -(-n // batch_size); base, extra = divmod(n, k); plan = []; start = 0
    for i in range(k):
        rows = base + (i < extra)
        lo, hi = B.shard_bounds(rows, rank, world)
        plan.append((start + lo, start + hi, rows)); start += rows
    return plan
E.batches = batches; B.batches = batches
import manualnn.backends.native_backend as NB; NB.batches = batches
proto.main(sys.argv[1].split(','), eval(sys.argv[2]))
