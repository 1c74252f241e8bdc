"""Data parallel on the CPU: one process against 2 gloo ranks, one thread each, same global batch.

    python -m benchmarks.distributed                 # medium shape 4096 x 1024 -> 1024 -> 16 (~1-2 min)
    python -m benchmarks.distributed --steps 3 --rounds 1 --rows 512   # a quick look

Contenders, each timing --steps full-batch steps (one step = one epoch of the whole batch),
round-robin over --rounds rounds so machine drift hits all alike (median per contender):

- 1 process: ``manualnn.Trainer`` on the torch backend (SGD folded into the gradient GEMM);
- 2 ranks, overlap: ``Trainer(distributed=True)``, each layer's gradient all-reduced (async) while
  the backward goes on below it;
- 2 ranks, no overlap: the same, one all-reduce of all gradients after the whole backward;
- 2 ranks, compute only: each rank trains its half of the rows alone, both at once, no all-reduce:
  the ceiling this machine allows (two processes may not run at full speed side by side);
- 2 ranks, all-reduce only: the gradients' bytes all-reduced alone (the communication's cost).

Scaling efficiency = t(1 process) / (2 x t(2 ranks)): 1.0 is a perfect 2x. "Of the ceiling" =
t(compute only) / t(2 ranks): how much of what this machine allows two ranks the all-reduce keeps.
On a shared machine the rounds differ: the best round (the least disturbed) is reported too. Every rank is started
as torchrun starts it (RANK, WORLD_SIZE, MASTER_ADDR=127.0.0.1 ...), with OMP_NUM_THREADS=1.
Prints a table and writes distributed.json and distributed.md under --out.
"""
import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from . import at_least_one, run_main
from .provenance import git_commit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LR = 1e-7


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def problem(rows, features, hidden, out):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, features, generator=g)
    y = torch.randn(rows, out, generator=g)
    weights = [torch.randn(a, b, generator=g) * (2 / a) ** 0.5 for a, b in zip([features, hidden], [hidden, out])]
    return x, y, weights


def timed(fn, steps):
    fn(1)   # warm-up: first-touch of buffers, gloo's connections
    started = time.perf_counter()
    fn(steps)
    return (time.perf_counter() - started) / steps


def worker(args):
    """Runs inside one rank (or the single process); prints one JSON line of seconds per step."""
    import torch.distributed as dist

    import manualnn
    from manualnn import distributed
    from manualnn.training.batches import shard_bounds
    torch.set_num_threads(1)
    x, y, weights = problem(args.rows, args.features, args.hidden, args.out)
    result = {}
    if args.mode == "single":
        trainer = manualnn.Trainer(x, y, weights, lr=LR, backend="torch")
        result["1 process"] = timed(trainer.run, args.steps)
    else:
        distributed.init("cpu", timeout=120)
        trainer = manualnn.Trainer(x, y, weights, lr=LR, distributed=True)
        step = trainer.steps[0]   # the full batch: one data-parallel step (training/parallel.py)
        for overlap in (True, False):
            step.overlap = overlap
            dist.barrier()
            result[f"2 ranks, {'overlap' if overlap else 'no overlap'}"] = timed(trainer.run, args.steps)
        flat = step.flat
        # the machine's own ceiling: both ranks at once on their half of the rows, with no communication
        lo, hi = shard_bounds(args.rows, dist.get_rank(), dist.get_world_size())
        alone = manualnn.Trainer(x[lo:hi], y[lo:hi], weights, lr=LR, backend="torch")
        dist.barrier()
        result["2 ranks, compute only (no all-reduce)"] = timed(alone.run, args.steps)

        def allreduce(n):
            for _ in range(n):
                dist.all_reduce(flat)
        dist.barrier()
        result["2 ranks, all-reduce only"] = timed(allreduce, args.steps)
        result["bytes"] = step.bytes_per_step
        if dist.get_rank() != 0:
            result = None
        distributed.shutdown()
    if result is not None:
        print("RESULT " + json.dumps(result), flush=True)


def launch(args, mode):
    """Start the single process, or 2 ranks, as subprocesses; return rank 0's result."""
    world = 1 if mode == "single" else 2
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [sys.executable, "-m", "benchmarks.distributed", "--worker", mode, "--steps", str(args.steps),
            "--rows", str(args.rows), "--features", str(args.features), "--hidden", str(args.hidden),
            "--out-features", str(args.out)]
    procs = []
    for rank in range(world):
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        if mode != "single":
            env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                       MASTER_PORT=str(port))
            if os.path.exists("/sys/class/net/lo"):
                env["GLOO_SOCKET_IFNAME"] = "lo"
        procs.append(subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=1200)[0] for p in procs]
    if any(p.returncode for p in procs):
        sys.exit(f"benchmarks.distributed: a {mode} worker failed (exit {[p.returncode for p in procs]})")
    line = next(line for line in outputs[0].splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.distributed", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=at_least_one, default=4096)
    parser.add_argument("--features", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--out-features", dest="out", type=int, default=16)
    parser.add_argument("--steps", type=at_least_one, default=10, help="timed steps per contender per round (default 10)")
    parser.add_argument("--rounds", type=at_least_one, default=3, help="round-robin rounds (default 3)")
    parser.add_argument("--out", dest="folder", default=os.path.join(ROOT, "benchmarks", "results"),
                        help="folder for distributed.json and distributed.md (default benchmarks/results)")
    parser.add_argument("--worker", choices=["single", "ranks"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.mode = args.worker
        return worker(args)

    samples = {}
    bytes_per_step = None
    for _ in range(args.rounds):
        for mode in ("single", "ranks"):
            for name, value in launch(args, mode).items():
                if name == "bytes":
                    bytes_per_step = value
                else:
                    samples.setdefault(name, []).append(value)
    seconds = {name: statistics.median(values) for name, values in samples.items()}
    one = seconds["1 process"]
    flop = 2 * args.rows * (args.features * args.hidden * 2 + args.hidden * args.out * 3)
    rows = []
    for name, s in seconds.items():
        row = {"contender": name, "ms_per_step": 1e3 * s, "best_ms": 1e3 * min(samples[name]),
               "samples_ms": [1e3 * v for v in samples[name]]}
        if name != "1 process" and "all-reduce only" not in name:
            row["speedup"] = one / s
            row["scaling_efficiency"] = one / (2 * s)
            row["of_ceiling"] = seconds["2 ranks, compute only (no all-reduce)"] / s
            row["best_speedup"] = min(samples["1 process"]) / min(samples[name])
        if "all-reduce only" not in name:
            row["gflops"] = flop / s / 1e9
        rows.append(row)
    record = {
        "shape": {"rows": args.rows, "features": args.features, "hidden": args.hidden, "out": args.out},
        "steps": args.steps, "rounds": args.rounds, "threads_per_rank": 1, "backend": "gloo (loopback)",
        "bytes_allreduced_per_step": bytes_per_step, "flop_per_step": flop, "rows": rows,
        "machine": f"{cpu_name()}, {os.cpu_count()} CPUs", "torch": torch.__version__,
        "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": git_commit(), "command": ["python", "-m", "benchmarks.distributed", *sys.argv[1:]],
    }
    title = (f"{args.rows} x {args.features} -> {args.hidden} -> {args.out}, full batch, one thread per rank; "
             f"{record['machine']}; torch {torch.__version__}; {record['date']}; commit {record['commit']}")
    lines = [f"Data parallel on the CPU: {title}", "", f"`{' '.join(record['command'])}`", "",
             f"gradient bytes all-reduced per step: {bytes_per_step:,} ({bytes_per_step / 2**20:.2f} MiB); "
             f"median of {args.rounds} rounds x {args.steps} steps", "",
             "| contender | ms/step | GFLOP/s | speedup | scaling efficiency | of the ceiling "
             "| best round: ms/step, speedup |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        cell = lambda key, fmt: format(row[key], fmt) if key in row else "-"  # noqa: E731
        lines.append(f"| {row['contender']} | {row['ms_per_step']:.1f} | {cell('gflops', '.1f')} | "
                     f"{cell('speedup', '.2f')} | {cell('scaling_efficiency', '.2f')} | {cell('of_ceiling', '.2f')} | "
                     f"{row['best_ms']:.1f}, {cell('best_speedup', '.2f')} |")
    text = "\n".join(lines) + "\n"
    os.makedirs(args.folder, exist_ok=True)
    for name, content in (("distributed.json", json.dumps(record, indent=2) + "\n"), ("distributed.md", text)):
        fd, tmp = tempfile.mkstemp(dir=args.folder, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(content)
        os.replace(tmp, os.path.join(args.folder, name))
    print(f"wrote {os.path.join(args.folder, 'distributed.json')} and distributed.md", file=sys.stderr)
    print(text)   # (after the files: '| head' keeps them)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
