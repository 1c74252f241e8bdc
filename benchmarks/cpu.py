"""manualnn's CPU speed at the settings users get, idle and with other busy processes, side by side.

    python -m benchmarks.cpu                  # everything (about 10 minutes on 2 cores)
    python -m benchmarks.cpu --quick          # a smoke run: tiny repeats, not a measurement
    python -m benchmarks.cpu --only steps,default,realdata,csv

Five parts, the first two measured with 0, 1 and 2 other busy processes (``python -c "while True: pass"``,
started by the benchmark) unless said otherwise; ratios come from one run, contenders timed
round-robin so that drift and load hit all alike:

- steps: µs per optimizer step on the digits workload (benchmarks/cpu_contenders.py) at H=512, B=200
  (the --data defaults), H=256, B=32 and H=64, B=200: manualnn's default path (backend auto: the native
  runner, threads chosen by timing), the native runner on 1 and on all threads, the torch backend,
  autograd + torch.optim.Adam, JAX jit + lax.scan (when jax is installed) and the GEMM floor (the
  step's bare torch.mm calls on 1 and on all threads). Each contender is first judged against the
  float64 reference run (3 epochs); a wrong one is reported, not timed.
- default: ``manualnn train --data digits --seed 0`` whole (in this process), its training seconds from
  --json: threads chosen (the default), --threads 1 and --threads <all>.
- realdata: every data set of the real-data suite (benchmarks/suite.py, all five parts), split 0, seeds
  0-2: manualnn's training seconds (--json) beside scikit-learn's fit (1 thread and default threads), idle
  only.
- csv: reading a 96 MB CSV (200,000 rows x 51 columns) beside pandas.read_csv (benchmarks/csv_read.py),
  idle only.
- setup: a whole ``manualnn.train(x, y, [w1, w2], epochs=20)`` call at the seed's shape (the Trainer built
  and run, torch and default backends) beside the seed's own loop (benchmarks/contenders.py's SeedLoop),
  idle only.

Writes cpu.json, cpu.md and cpu.png under --out (default benchmarks/results/<machine slug>/).
"""
import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import manualnn  # noqa: F401  (before torch, as the manualnn command imports it: its OpenMP setting, see there)
import torch

from . import run_main
from . import cpu_contenders as cc
from .provenance import git_commit, loadavg, machine_name, versions

WORKLOADS = [("H=512, B=200 (the defaults)", 512, 200), ("H=256, B=32", 256, 32), ("H=64, B=200", 64, 200)]
PARTS = ("steps", "default", "realdata", "csv", "setup")
OTHERS_TOLERANCE = 1e-4   # the loss error (relative, against float64) allowed to the other frameworks' runs


@contextlib.contextmanager
def busy(n):
    """``n`` other processes spinning on a core each, for the block."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.5 if n else 0)   # let the scheduler see them
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def contenders(most):
    from manualnn.backends import native_unavailable_reason
    native = native_unavailable_reason("cpu")
    made = {"manualnn default (auto)": cc.manualnn_contender(),
            "manualnn native, 1 thread": cc.manualnn_contender("native", 1),
            f"manualnn native, {most} threads": cc.manualnn_contender("native", most),
            "manualnn torch backend": cc.manualnn_contender("torch"),
            "autograd + Adam (foreach)": cc.autograd_contender,
            "JAX jit + lax.scan": cc.jax_contender,
            "GEMM floor, 1 thread": cc.gemm_floor(1),
            f"GEMM floor, {most} threads": cc.gemm_floor(most)}
    unavailable = {name: native for name in made if "native" in name and native}
    return made, unavailable


def judged(name, make, hidden, batch):
    """(run maker or None, verdict text): 3 epochs against the float64 reference run."""
    from manualnn.testing import judge
    work = cc.Workload(hidden, batch)
    try:
        run, result = make(work)
    except ImportError as e:
        return None, f"n/a: {e}"
    if result is None:   # the floor computes nothing to judge
        return make, "floor"
    run(3)
    losses, weights, biases = result()
    verdict = judge(losses, weights, work.x, work.targets, work.w0, epochs=3, lr=cc.LR, grad="relu", biases=biases,
                    biases0=work.b0, batch_size=batch, order=work.order, **cc.STEP)
    if not verdict.ok and not name.startswith("manualnn") and max(verdict.loss_errors) <= OTHERS_TOLERANCE:
        # another framework's float32 (its own order of additions, its exp): judged to 1e-4, not to our bound
        return make, f"ok to {OTHERS_TOLERANCE:g} (not manualnn's bound): " + verdict.summary()
    return (make if verdict.ok else None), verdict.summary()


def time_steps(args, most, log):
    made, unavailable = contenders(most)
    rows = []
    for label, hidden, batch in WORKLOADS:
        usable, verdicts = {}, {}
        for name, make in made.items():
            if name in unavailable:
                verdicts[name] = f"n/a: {unavailable[name]}"
                continue
            usable[name], verdicts[name] = judged(name, make, hidden, batch)
            print(f"  {label} {name}: {verdicts[name]}", file=log)
        steps = cc.Workload(hidden, batch).steps_per_epoch
        for load in args.loads:
            with busy(load):
                runs = {name: make(cc.Workload(hidden, batch))[0] for name, make in usable.items() if make}
                for run in runs.values():
                    run(1)   # warm: allocations, the thread rule's first look, JAX's compile
                epochs = max(1, round(args.seconds / max(1e-9, _timed(runs["manualnn default (auto)"], 1)))) \
                    if "manualnn default (auto)" in runs else 10
                times = {name: [] for name in runs}
                for _ in range(args.repeats):
                    for name, run in runs.items():
                        times[name].append(_timed(run, epochs))
            for name in made:
                row = {"workload": label, "hidden": hidden, "batch": batch, "load": load, "contender": name,
                       "verdict": verdicts[name]}
                if name in times:
                    row.update(us_per_step=statistics.median(times[name]) / (epochs * steps) * 1e6,
                               runs_s=times[name], epochs_per_run=epochs)
                rows.append(row)
                if "us_per_step" in row:
                    print(f"  {label}, {load} busy: {name} {row['us_per_step']:.1f} us/step", file=log)
    return rows


def _timed(run, epochs):
    started = time.perf_counter()
    run(epochs)
    return time.perf_counter() - started


def default_runs(args, most, log):
    """The whole default run, in this process, under each load: its training seconds (--json)."""
    from .manualnn_runs import run_inprocess
    variants = {"threads chosen (default)": [], "--threads 1": ["--threads", "1"],
                f"--threads {most}": ["--threads", str(most)]}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "run.json")
        for load in args.loads:
            with busy(load):
                seconds = {name: [] for name in variants}
                for _ in range(args.repeats):
                    for name, extra in variants.items():
                        res = run_inprocess(["train", "--data", "digits", "--seed", "0", "--json", path, *extra])
                        if res.rc != 0:
                            raise SystemExit(f"manualnn train failed ({res.rc}): {res.stderr[-500:]}")
                        with open(path) as f:
                            seconds[name].append(json.load(f)["timing"]["seconds"])
            for name, values in seconds.items():
                rows.append({"load": load, "variant": name, "seconds": statistics.median(values), "runs_s": values})
                print(f"  default run, {load} busy, {name}: {statistics.median(values):.3f} s", file=log)
    return rows


def realdata_runs(args, log):
    from .manualnn_runs import run_inprocess
    from .sklearn_mlp import fit_and_score
    from .suite import write_suite
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "run.json")
        for entry in write_suite(seeds=range(args.realdata_seeds), splits=[0]):   # every set
            res = run_inprocess(["train", "--data", entry.train, "--seed", str(entry.seed), "--json", path])
            if res.rc != 0:
                raise SystemExit(f"manualnn train --data {entry.train} failed ({res.rc}): {res.stderr[-500:]}")
            with open(path) as f:
                ours = json.load(f)["timing"]["seconds"]
            theirs = fit_and_score(entry)
            rows.append({"dataset": entry.dataset, "seed": entry.seed, "manualnn_s": ours,
                         "sklearn_1_thread_s": theirs["fit_s_1_thread"],
                         "sklearn_default_threads_s": theirs["fit_s_default_threads"]})
            print(f"  {entry.dataset} seed {entry.seed}: manualnn {ours:.3f} s, scikit-learn "
                  f"{theirs['fit_s_1_thread']:.3f} / {theirs['fit_s_default_threads']:.3f} s", file=log)
    return rows


def csv_runs(args, log):
    try:
        from .csv_read import measure
    except ImportError as e:
        return {"status": f"n/a: {e}"}
    result = measure(rows=args.csv_rows, repeats=args.repeats)
    print(f"  csv: {result}", file=log)
    return result


def setup_runs(args, log):
    """Whole train() calls at the seed shape against the seed's loop, round-robin; medians in ms."""
    from .contenders import SeedLoop
    from .run import Problem
    problem = Problem("seed", (100, 1000, 100, 10), 1e-6, torch.device("cpu"), 20)
    x, y, (w1, w2) = problem.x, problem.y, problem.w0
    seed = SeedLoop(problem, "fp32")
    calls = {"the seed's loop": lambda: seed.run(20),
             "manualnn.train, backend torch": lambda: manualnn.train(x, y, [w1, w2], epochs=20, backend="torch"),
             "manualnn.train, default backend": lambda: manualnn.train(x, y, [w1, w2], epochs=20)}
    for call in calls.values():
        call()
    times = {name: [] for name in calls}
    for _ in range(max(10, 6 * args.repeats)):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - started)
    base = statistics.median(times["the seed's loop"])
    rows = [{"call": name, "ms": statistics.median(t) * 1e3, "x_seed": statistics.median(t) / base}
            for name, t in times.items()]
    for row in rows:
        print(f"  setup: {row['call']} {row['ms']:.2f} ms ({row['x_seed']:.2f}x the seed's loop)", file=log)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.cpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(PARTS), help=f"parts to run, of {', '.join(PARTS)}")
    p.add_argument("--loads", default="0,1,2", help="other busy processes to run under (default 0,1,2)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    p.add_argument("--seconds", type=float, default=0.15, help="seconds per timed run of the default path")
    p.add_argument("--realdata-seeds", type=int, default=3, help="seeds 0..N-1 of the real-data suite")
    p.add_argument("--csv-rows", type=int, default=200_000)
    p.add_argument("--quick", action="store_true", help="one repeat, short runs: a smoke test (its files go to "
                                                         "the temporary folder's manualnn-benchmarks-cpu-quick/)")
    p.add_argument("--out", help="output folder (default benchmarks/results/cpu-<machine>/)")
    args = p.parse_args(argv)
    try:
        args.loads = [int(v) for v in args.loads.split(",")]
    except ValueError:
        p.error(f"--loads: expected counts of busy processes such as 0,1,2, got {args.loads!r}")
    if any(load < 0 for load in args.loads):
        p.error(f"--loads: expected counts of 0 or more, got {args.loads}")
    parts = [part.strip() for part in args.only.split(",") if part.strip()]
    unknown = [part for part in parts if part not in PARTS]
    if unknown or not parts:
        p.error(f"--only: expected parts of {', '.join(PARTS)}, got {args.only!r}")
    for option in ("repeats", "realdata_seeds", "csv_rows"):
        if getattr(args, option) < 1:
            p.error(f"--{option.replace('_', '-')}: expected 1 or more, got {getattr(args, option)}")
    if args.seconds <= 0:
        p.error(f"--seconds: expected a positive number, got {args.seconds:g}")
    if args.quick and args.out is None:   # a smoke run does not replace the committed measurements
        args.out = os.path.join(tempfile.gettempdir(), "manualnn-benchmarks-cpu-quick")
    if args.quick:
        args.repeats, args.seconds, args.realdata_seeds, args.csv_rows = 1, 0.01, 1, 2000
    most, log = torch.get_num_threads(), sys.stderr
    from .report_cpu import write_cpu_report
    record = {"meta": {"machine": machine_name(), "threads": most, "versions": versions(), "commit": git_commit(),
                       "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "loadavg_at_start": loadavg(),
                       "command": ["python", "-m", "benchmarks.cpu", *(argv if argv is not None else sys.argv[1:])],
                       "quick": args.quick, "repeats": args.repeats, "loads": args.loads}}
    if "steps" in parts:
        record["steps"] = time_steps(args, most, log)
    if "default" in parts:
        record["default"] = default_runs(args, most, log)
    if "realdata" in parts:
        record["realdata"] = realdata_runs(args, log)
    if "csv" in parts:
        record["csv"] = csv_runs(args, log)
    if "setup" in parts:
        record["setup"] = setup_runs(args, log)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   "cpu-" + "".join(c if c.isalnum() else "-" for c in machine_name().lower())[:50])
    os.makedirs(out, exist_ok=True)
    text, written = write_cpu_report(record, out)
    print(f"wrote {', '.join(os.path.join(out, name) for name in written)}", file=log)
    print(text)   # (after the files: '| head' keeps them)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
