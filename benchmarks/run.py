"""Side-by-side benchmark: manualnn against the seed loop, autograd, torch.compile, CUDA graphs and,
when jax is installed, JAX (jit + lax.scan of the same loop).

    python -m benchmarks.run --device cpu            # seed, small64, small256, medium; fp32
    python -m benchmarks.run --device cuda           # seed, medium, large; fp32, tf32, bf16
    python -m benchmarks.run --quick --shapes tiny   # a smoke run: one repeat, tiny shape

Every contender trains the same network on the same inputs in this one process. Each is first
checked against the float64 reference (manualnn.testing.judge); one that computes something else
is reported as wrong and not timed. Then: cold time to the first epoch (compilation included),
warm time per run of --epochs epochs (torch.utils.benchmark, median and IQR), time per step,
TFLOP/s, peak memory (CUDA), and two ratios: time over the verbatim seed loop's (no print) and
over the matmul floor's (the bare torch.mm calls a step must do). Writes results.json,
results.md and results.png under --out (default benchmarks/results/<device-slug>/).
"""
import argparse
import gc
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback

import torch
from . import at_least_one, run_main
from torch.utils import benchmark as tbench

import manualnn
from manualnn.testing import judge, reference_runs

from .contenders import Unsupported, all_contenders, matmul_precision
from .emulate import FACTOR as EMULATION_FACTOR
from .emulate import emulated_loop
from .report import write_markdown, write_plot

# name: (batch, features, hidden width or widths, out, lr). lr keeps the loss finite over 20 epochs.
SHAPES = {
    "tiny": (8, 32, 16, 4, 1e-3),
    "seed": (100, 1000, 100, 10, 1e-6),
    "small64": (64, 32, (64, 64), 1, 1e-6),     # small networks: where per-op overhead decides
    "small256": (256, 16, 32, 4, 1e-5),
    "medium": (4096, 1024, 1024, 16, 1e-9),
    "large": (16384, 4096, 4096, 16, 1e-11),
}
EXPENSIVE = ("compile-reduce-overhead", "compile-max-autotune-no-cudagraphs")
PRECISIONS = ("fp32", "tf32", "bf16")  # fp32: TF32 off everywhere; bf16: bf16 operands, fp32 master weights


class Problem:
    """One shape's inputs, shared by every contender: x, y and the initial weights."""

    def __init__(self, name, dims, lr, device, epochs):
        self.name, self.dims, self.lr, self.device, self.epochs = name, dims, lr, device, epochs
        B, D, H, O = dims
        hidden = tuple(H) if isinstance(H, (tuple, list)) else (H,)
        self.x, self.y, self.w0 = manualnn.seed_data(0, batch=B, features=D, hidden=hidden, out=O, device=device)

    @property
    def flops_per_step(self):
        # forward and weight gradient: 4*B*in*out per layer; the input gradient: 2*B*in*out more, but
        # the first layer's input needs none
        B = self.dims[0]
        return sum((4 if i == 0 else 6) * B * w.shape[0] * w.shape[1] for i, w in enumerate(self.w0))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


def git_commit():
    try:
        # "+dirty": tracked files differed from the commit when the numbers were taken
        cmd = ["git", "describe", "--always", "--abbrev=7", "--dirty=+dirty"]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def versions():
    try:
        import triton
        tv = triton.__version__
    except ImportError:
        tv = None
    return {"python": platform.python_version(), "torch": torch.__version__, "triton": tv,
            "manualnn": manualnn.__version__}


def parse_shapes(text, device):
    names = text.split(",") if text else (["seed", "medium", "large"] if device.type == "cuda"
                                          else ["seed", "small64", "small256", "medium"])
    shapes = []
    for name in names:
        name = name.strip()
        if name in SHAPES:
            shapes.append((name, SHAPES[name][:4], SHAPES[name][4]))
            continue
        m = re.fullmatch(r"(\d+)x(\d+)x(\d+)x(\d+)(?:@([0-9.eE+-]+))?", name)
        if not m:
            raise SystemExit(f"--shapes: expected names from {', '.join(SHAPES)} or BxDxHxO[@lr], got {name!r}")
        dims = tuple(int(v) for v in m.groups()[:4])
        shapes.append((name, dims, float(m.group(5) or 1e-9)))
    return shapes


def new_row(p, precision, name, status="ok", reason=None):
    return {"shape": p.name, "dims": list(p.dims), "precision": precision, "contender": name,
            "epochs": p.epochs, "status": status, "reason": reason, "check": None, "cold_s": None, "run_s": None,
            "step_s": None, "tflops": None, "peak_mem_bytes": None}


def prepare(name, factory, p, precision, args, refs_for, deadline):
    """Build one contender, time its cold first epoch, and judge it. Returns (row, contender or None)."""
    row = new_row(p, precision, name)
    if time.monotonic() > deadline:
        row.update(status="skipped", reason="time budget spent")
        return row, None
    device = p.device
    try:
        with matmul_precision(device, precision):
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            sync(device)
            t0 = time.perf_counter()
            try:
                contender = factory(p, precision)
            except Unsupported as e:
                row.update(status="n/a", reason=str(e))
                return row, None
            contender.run(1)
            sync(device)
            row["cold_s"] = time.perf_counter() - t0
            if contender.grad is None:
                row["check"] = {"ok": None, "reason": "not a trainer: the bare matmuls, timed as the floor"}
                contender.run(1)
            else:
                check_epochs = min(p.epochs, args.check_epochs.get(p.name, p.epochs))
                contender.run(check_epochs, record=True)
                losses, weights = contender.result()
                # fp32: within 4x the fp32 reference's own error; tf32/bf16: within FACTOR x the error of
                # the emulated-rounding run (refs_for gives it in the fp32 reference's place)
                verdict = judge(losses[:check_epochs], weights, p.x, p.y, p.w0, epochs=check_epochs, lr=p.lr,
                                grad=contender.grad, precision="fp32",
                                factor=4.0 if precision == "fp32" else EMULATION_FACTOR,
                                refs=refs_for(contender.grad, check_epochs, precision))
                row["check"] = {"ok": verdict.ok, "epochs": check_epochs, "grad": contender.grad,
                                "max_loss_rel_err": max(verdict.loss_errors),
                                "max_loss_bound": max(verdict.loss_bounds),
                                "weight_rel_errs": verdict.weight_errors, "summary": verdict.summary()}
                if not verdict.ok:
                    row.update(status="wrong", reason=verdict.summary())
                    return row, None
            sync(device)
            if device.type == "cuda":
                # its own footprint: buffers, parameters, gradients, optimizer state, workspaces, peaks
                row["peak_mem_bytes"] = torch.cuda.max_memory_allocated() - base
            return row, contender
    except Exception as e:  # one broken contender must not end the run: report it
        row.update(status="error", reason=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300])
        if args.verbose:
            traceback.print_exc()
        return row, None


def reference_cache(p):
    """refs_for(grad, epochs, precision) for problem ``p``, each reference computed once."""
    device, refs = p.device, {}

    def refs_for(grad, epochs, precision="fp32"):
        """(float64 judge, the run whose error sets the bound): the fp32 reference for fp32, the
        emulated tf32/bf16 rounding for those (benchmarks/emulate.py); TF32 off; on the CPU, or on the
        GPU for big shapes."""
        on = device if p.flops_per_step > 2e10 else torch.device("cpu")
        with matmul_precision(device, "fp32"):
            if (grad, epochs) not in refs:
                refs[(grad, epochs)] = reference_runs(p.x, p.y, p.w0, epochs=epochs, lr=p.lr, grad=grad,
                                                      device=on)
            ref64, ref32 = refs[(grad, epochs)]
            if precision == "fp32":
                return ref64, ref32
            if (grad, epochs, precision) not in refs:
                refs[(grad, epochs, precision)] = emulated_loop(p.x, p.y, p.w0, epochs=epochs, lr=p.lr,
                                                                grad=grad, precision=precision, device=on)
            return ref64, refs[(grad, epochs, precision)]

    return refs_for


def time_interleaved(entries, p, precision, min_run_time, deadline):
    """Time every contender's warm run round-robin (one run each per round), so that drift in the
    machine's speed hits them all alike. torch.utils.benchmark times each run (it syncs CUDA)."""
    samples = {id(row): [] for row, _ in entries}
    timers = {id(row): tbench.Timer(stmt="c.run(n)", globals={"c": c, "n": p.epochs},
                                    num_threads=torch.get_num_threads()) for row, c in entries}
    spent, rounds = 0.0, 0
    with matmul_precision(p.device, precision):
        while rounds < 3 or (spent < min_run_time and rounds < 500):
            t0 = time.perf_counter()
            for row, _ in entries:
                samples[id(row)].append(timers[id(row)].timeit(1).median)
            spent += (time.perf_counter() - t0) / max(1, len(entries))
            rounds += 1
            if min_run_time < 1e-6 or time.monotonic() > deadline:
                break
    for row, _ in entries:
        times = sorted(samples[id(row)])
        q = lambda f: times[min(len(times) - 1, int(f * (len(times) - 1) + 0.5))]  # noqa: E731
        median = times[len(times) // 2] if len(times) % 2 else (times[len(times) // 2 - 1] + times[len(times) // 2]) / 2
        row["run_s"] = {"median": median, "q1": q(0.25), "q3": q(0.75), "n": len(times)}
        row["step_s"] = median / p.epochs
        row["tflops"] = p.flops_per_step / row["step_s"] / 1e12


def add_ratios(rows):
    by_key = {}
    for r in rows:
        if r["status"] == "ok":
            by_key[(r["shape"], r["precision"], r["contender"])] = r["run_s"]["median"]
    for r in rows:
        r["vs_seed"] = r["vs_floor"] = None
        if r["status"] != "ok":
            continue
        t = r["run_s"]["median"]
        seed = by_key.get((r["shape"], r["precision"], "seed")) or by_key.get((r["shape"], "fp32", "seed"))
        floor = by_key.get((r["shape"], r["precision"], "matmul-floor"))
        r["vs_seed"] = t / seed if seed else None
        r["vs_floor"] = t / floor if floor else None


def build_parser(prog="python -m benchmarks.run"):
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--shapes", help=f"comma-separated: {', '.join(SHAPES)} or BxDxHxO[@lr] "
                                    "(default: seed,small64,small256,medium on CPU; seed,medium,large on CUDA)")
    p.add_argument("--precision", help="comma-separated from fp32, tf32, bf16 (default: fp32 on CPU, all on CUDA)")
    p.add_argument("--epochs", type=at_least_one, default=20, help="epochs per timed run (default 20)")
    p.add_argument("--contenders", help="comma-separated subset of contender names (default: all for the device)")
    p.add_argument("--quick", action="store_true", help="smoke run: about one timed repeat per contender")
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds of warm runs per contender and shape (default 1.5; medium 5, large 3)")
    p.add_argument("--budget", type=float, default=None, help="seconds; contenders left when it is spent are skipped")
    p.add_argument("--expensive", help="precisions in which the slow-compiling modes (compile-reduce-overhead, "
                                       "compile-max-autotune-no-cudagraphs) run (default: all asked for)")
    p.add_argument("--out", help="output folder (default benchmarks/results/<device-slug>/)")
    p.add_argument("--verbose", action="store_true", help="print tracebacks of contenders that fail")
    return p


def main(argv=None, prog="python -m benchmarks.run", default_out=None):
    """``default_out``: the folder that holds the <device-slug>/ results (default benchmarks/results)."""
    args = build_parser(prog).parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device: cuda was asked for but no CUDA device is available")
    if args.epochs < 1:
        raise SystemExit(f"--epochs: expected an integer >= 1, got {args.epochs}")
    precisions = (args.precision or ("fp32,tf32,bf16" if device.type == "cuda" else "fp32")).split(",")
    for pr in precisions:
        if pr not in PRECISIONS:
            raise SystemExit(f"--precision: expected fp32, tf32 or bf16, got {pr!r}")
    if device.type == "cpu" and set(precisions) - {"fp32"}:
        raise SystemExit("--precision: tf32 and bf16 are measured on CUDA only")
    # Fresh compiler caches, so "cold" includes compilation, as a first run on a new machine would.
    scratch = tempfile.mkdtemp(prefix="manualnn-bench-")
    os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(scratch, "triton"))
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(scratch, "inductor"))
    args.check_epochs = {"medium": 3, "large": 2}
    args.min_run_time = {"default": 1.5, "medium": 5.0, "large": 3.0}  # seconds of runs per contender
    if args.min_time is not None:
        args.min_run_time = {"default": args.min_time}
    if args.quick:
        args.min_run_time = {"default": 1e-9}
    deadline = time.monotonic() + (args.budget if args.budget else 1e9)

    name = device_name(device)
    out = args.out or os.path.join(default_out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
                                   slug(f"{device.type}-{name}"))
    os.makedirs(out, exist_ok=True)
    contenders = all_contenders(device)
    if args.contenders:
        wanted = args.contenders.split(",")
        unknown = set(wanted) - {n for n, _ in contenders}
        if unknown:
            raise SystemExit(f"--contenders: unknown for {device.type}: {', '.join(sorted(unknown))}")
        contenders = [(n, f) for n, f in contenders if n in wanted]

    started = time.perf_counter()
    if device.type == "cuda":
        torch.ones(8, 8, device=device) @ torch.ones(8, 8, device=device)  # context and handles outside "cold"
    rows = []
    print(f"# manualnn benchmark on {name}; torch {torch.__version__}", file=sys.stderr)
    for shape_name, dims, lr in parse_shapes(args.shapes, device):
        p = Problem(shape_name, dims, lr, device, args.epochs)
        refs_for = reference_cache(p)

        for precision in precisions:
            entries = []
            for cname, factory in contenders:
                if cname in EXPENSIVE and args.expensive is not None and precision not in args.expensive.split(","):
                    rows.append(new_row(p, precision, cname, "skipped",
                                        f"slow to compile; run only in --expensive {args.expensive}"))
                    continue
                row, contender = prepare(cname, factory, p, precision, args, refs_for, deadline)
                rows.append(row)
                if contender is not None:
                    entries.append((row, contender))
            if entries:
                time_interleaved(entries, p, precision, args.min_run_time.get(shape_name, args.min_run_time["default"]),
                                 deadline)
            for row in rows[-len(contenders):]:
                shown = f"{row['run_s']['median'] * 1e3:.3f} ms/run" if row["run_s"] else row["status"]
                print(f"  {shape_name:7s} {precision:5s} {row['contender']:36s} {shown}"
                      + (f"  ({row['reason']})" if row["reason"] and row["status"] != "ok" else ""), file=sys.stderr)
            del entries
            gc.collect()
        del p
        gc.collect()
    add_ratios(rows)
    record = {
        "meta": {"device": device.type, "device_name": name, "versions": versions(), "git_commit": git_commit(),
                 "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv[1:] if argv is None else argv, "prog": prog,
                 "quick": args.quick, "epochs": args.epochs, "threads": torch.get_num_threads(),
                 "seconds": time.perf_counter() - started,
                 "flops_per_step": "sum over layers of 4*B*in*out (first layer) or 6*B*in*out (the others)",
                 "judge": "rel err vs the float64 reference loop on every checked epoch's loss and the final "
                          "weights; fp32 within 4x the fp32 reference loop's own error; tf32/bf16 within "
                          f"{EMULATION_FACTOR:g}x the error of the loop with its matmul operands rounded as "
                          "tf32 (truncated to 19 bits) / bf16 (nearest even) round them",
                 "ratios": "vs_seed = run time / seed loop's (verbatim, no print; same shape and precision, "
                           "or its fp32 run where the seed loop has no such precision, as for bf16); "
                           "vs_floor = run time / matmul floor's (same shape and precision); same process"},
        "shapes": {n: list(d) + [lr] for n, d, lr in parse_shapes(args.shapes, device)},
        "rows": rows,
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(record, f, indent=1)
    table = write_markdown(record, os.path.join(out, "results.md"))
    write_plot(record, os.path.join(out, "results.png"))
    print(table)
    print(f"wrote {out}/results.json, results.md, results.png in {record['meta']['seconds']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
