"""µs per step of the native runner on one batch, on one thread and on all of torch's, side by side.

    python -m benchmarks.native_step                                   # star98's: 200 x 20 -> 512 -> 1
    python -m benchmarks.native_step --rows 200 --features 64 --outputs 10 --loss ce   # digits' step

The step is ``--data``'s: biases, Adam (lr 3e-3), the mean of the loss, on random rows (a fixed batch, as
the data-parallel step takes it). The counts are timed in turn, ``--rounds`` times ``--steps`` steps each,
and the fastest round of each is printed: the machine's pauses only ever add time. A batch of 96 rows or
more is stepped in blocks of rows (docs/internals.md, "Blocks of rows").
"""
import argparse
import sys
import time

import torch

from benchmarks import at_least_one, run_main
from manualnn.backends import make_step
from manualnn.spec import Params, StepSpec, with_ones
from manualnn.training import cpu_threads


def make(rows, features, hidden, outputs, loss):
    gen = torch.Generator().manual_seed(0)
    x = with_ones(rows, features, like=torch.empty(0))
    x[:, :-1].copy_(torch.randn(rows, features, generator=gen))
    if loss == "ce":
        y = torch.nn.functional.one_hot(torch.randint(0, outputs, (rows,), generator=gen), outputs).float()
    else:
        y = torch.randn(rows, outputs, generator=gen)
    sizes = [features, *hidden, outputs]
    weights = [torch.randn(a, b, generator=gen) * (2 / a) ** 0.5 for a, b in zip(sizes, sizes[1:])]
    spec = StepSpec(lr=3e-3, loss=loss, reduction="mean", optimizer="adam")
    params = Params.from_weights(weights, [torch.zeros(b) for b in sizes[1:]], spec)
    return make_step("native", x, y, params, spec, rows=rows)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.native_step", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=at_least_one, default=200)
    p.add_argument("--features", type=int, default=20)
    p.add_argument("--hidden", type=int, nargs="+", default=[512])
    p.add_argument("--outputs", type=int, default=1)
    p.add_argument("--loss", choices=("sse", "ce"), default="sse")
    p.add_argument("--steps", type=at_least_one, default=2000, help="steps a round (default 2000)")
    p.add_argument("--rounds", type=at_least_one, default=5, help="rounds per thread count (default 5)")
    args = p.parse_args(argv)
    step = make(args.rows, args.features, args.hidden, args.outputs, args.loss)
    loss = torch.zeros(())
    counts = sorted({1, torch.get_num_threads()})
    best = {n: float("inf") for n in counts}
    for _ in range(args.rounds):
        for n in counts:
            with cpu_threads(n):
                for _ in range(max(1, args.steps // 10)):   # warm: caches, the threads' first use
                    step.step(loss)
                started = time.perf_counter()
                for _ in range(args.steps):
                    step.step(loss)
                best[n] = min(best[n], (time.perf_counter() - started) / args.steps * 1e6)
    shape = f"{args.rows} x {args.features} -> {' -> '.join(map(str, args.hidden))} -> {args.outputs} ({args.loss})"
    print(f"native step, {shape}: " + ", ".join(f"{n} thread{'s' if n > 1 else ''} {us:.1f} us"
                                                  for n, us in best.items()))


if __name__ == "__main__":
    sys.exit(run_main(main))
