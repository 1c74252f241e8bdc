"""Compile every kernel variant the backends can pick for sm_90 (H100/H200) without a GPU; read ptxas.

For each variant (each precision, each autotuned or fixed config, each two-launch width up to
MAX_WIDTH, each loss, gradient mode and optimizer) Triton compiles the kernel here with its own
ptxas, which reports (``ptxas -v``) the registers, the spill stores and loads, and the shared memory.
A variant fails when it does not compile, spills a single byte, needs more shared memory than an
sm_90 block may have, or uses the wrong matmul instructions for its precision (tf32/bf16: tensor
cores; ieee: none of those).

    python tests/compile_sm90.py                  # with the Triton installed here
    python tests/compile_sm90.py --side-env DIR   # builds DIR once: a venv with triton==3.6.0 (the GPU
                                                  # machine's) and torch, and runs this same check there
    options: --jobs N (processes; default: every core), --json FILE (every variant's numbers)

ptxas's reports are kept beside Triton's cache (keyed by Triton's own hash of the source, the
signature, the options and the Triton version), so a second run compiles nothing. Prints one line
per variant and a summary; exits 1 on any failure. Run with TRITON_INTERPRET unset.
"""
import argparse
import concurrent.futures
import contextlib
import hashlib
import importlib
import io
import json
import os
import re
import subprocess
import sys
import time

os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"     # Triton prints ptxas -v's report as it compiles
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
os.environ.pop("TRITON_INTERPRET", None)

SM90_SMEM = 232448  # bytes a block may opt into on sm_90
SIDE_TRITON = "triton==3.6.0"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the kernels are imported from this checkout as the top-level package "kernels" (they never import
# manualnn): the side environment needs no install of the project, only Triton and torch
sys.path.insert(0, ROOT)


def variants():
    """(kernel, constexprs, options) for everything the backends can launch on the GPU, from the kernels'
    own config functions (so this list follows them)."""
    m = lambda name: importlib.import_module(f"kernels.{name}")  # noqa: E731
    common, fused, optim, out = m("_common"), m("two_launch"), m("optim"), m("output_loss")
    for p in common.PRECISIONS:
        for c in common.gpu_configs("matmul", p):
            yield m("linear_relu").linear_relu_kernel, dict(PRECISION=p, **blocks(c)), options(c)
            for mode in m("input_grad").GRAD_MODES:
                yield m("input_grad").input_grad_kernel, dict(MODE=mode, PRECISION=p, **blocks(c)), options(c)
        for c in common.gpu_configs("update", p):
            for opt in optim.OPTIMIZERS:
                yield m("weight_grad").weight_grad_kernel, dict(OPTIMIZER=opt, PRECISION=p, **blocks(c)), options(c)
        seen = []
        for loss, n in (("sse", 10), ("sse", 100), ("ce", 10), ("ce", 50), ("ce", out.CE_MAX_WIDTH)):
            c = out.output_config(100, n, 101, loss, p)
            if (loss, c) not in seen:
                seen.append((loss, c))
                yield out.output_loss_kernel, dict(LOSS=loss, PRECISION=p, **blocks(c)), options(c)
        config = fused.default_config(100, 1000, p)
        for width in (16, 32, 64, fused.MAX_WIDTH):
            for mode in fused.GRAD_MODES:
                for loss in out.LOSSES:
                    yield fused.mlp_rows_kernel, dict(MODE=mode, LOSS=loss, PRECISION=p, WIDTH=width,
                                                      **blocks(config["rows"])), options(config["rows"])
        for opt in optim.OPTIMIZERS:
            yield fused.mlp_update_kernel, dict(OPTIMIZER=opt, PRECISION=p, PARTIALS_BLOCK=fused.PARTIALS_BLOCK,
                                                **blocks(config["update"])), options(config["update"])
    for opt in optim.OPTIMIZERS[1:]:
        yield optim.update_kernel, dict(OPTIMIZER=opt, BLOCK=optim.UPDATE_BLOCK), dict(num_warps=4)
    yield optim.adam_advance_kernel, {}, dict(num_warps=1)
    yield out.sum_partials_kernel, dict(BLOCK=out.PARTIALS_BLOCK), dict(num_warps=4)


OPTIONS = ("num_warps", "num_stages", "maxnreg")


def blocks(config):
    return {k: v for k, v in config.items() if k not in OPTIONS}


def options(config):
    return {k: v for k, v in config.items() if k in OPTIONS}


POINTER_TYPES = {"table_ptr": "*i64", "tile_ptr": "*i64", "step_ptr": "*i64", "count_ptr": "*i32",
                 "hyper_ptr": "*fp64", "powers_ptr": "*fp64"}


def signature(fn, constexprs):
    """Argument types as a launch gives them; ints as i32 (every size here fits)."""
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = POINTER_TYPES.get(name, "*fp32")
        elif name in ("lr", "scale"):
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    return sig


def attributes(fn, sig):
    """Pointers 16-byte aligned (torch's allocations are), as Triton specialises them at a launch, except
    those the kernel exempts (a loss slot)."""
    exempt = {fn.arg_names[i] if isinstance(i, int) else i for i in getattr(fn, "do_not_specialize_on_alignment", ())}
    return {(i,): [["tt.divisibility", 16]] for i, name in enumerate(fn.arg_names)
            if sig[name].startswith("*") and name not in exempt}


def label(fn, constexprs):
    shown = {k: v for k, v in constexprs.items() if k not in ("GROUP_M", "PARTIALS_BLOCK")}
    return f"{fn.__name__}[{', '.join(f'{k}={v}' for k, v in shown.items())}]"


def report_dir():
    import triton
    base = os.environ.get("TRITON_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".triton", "cache")
    path = os.path.join(base, f"manualnn-ptxas-{triton.__version__}")
    os.makedirs(path, exist_ok=True)
    return path


def compile_one(index):
    """Compile variant ``index``; returns its numbers (from ptxas's report) or its error."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    fn, constexprs, opts = list(variants())[index]
    sig = signature(fn, constexprs)
    src = ASTSource(fn, sig, constexprs, attributes(fn, sig))
    key = hashlib.sha256(f"{src.hash()}-{sorted(opts.items())}-{triton.__version__}".encode()).hexdigest()
    cached = os.path.join(report_dir(), key + ".json")
    if os.path.exists(cached):
        with open(cached) as f:
            return dict(json.load(f), label=label(fn, constexprs), cached=True)
    started = time.perf_counter()
    log = io.StringIO()
    os.environ["TRITON_ALWAYS_COMPILE"] = "1"      # a cached kernel would print no ptxas report
    try:
        with contextlib.redirect_stdout(log):
            k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=opts)
    except Exception as e:  # reported as this variant's failure; the others go on
        return dict(label=label(fn, constexprs), error=f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")
    text = log.getvalue()
    regs = re.findall(r"Used (\d+) registers", text)
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    if not regs or not spills:
        return dict(label=label(fn, constexprs), error=f"no ptxas report in Triton's output: {text[-300:]!r}")
    result = dict(registers=int(regs[-1]), spill_stores=int(spills[-1][0]), spill_loads=int(spills[-1][1]),
                  shared=int(k.metadata.shared), precision=constexprs.get("PRECISION"),
                  mma=sorted(set(re.findall(r"wgmma\.mma_async[\w.]*|mma\.sync[\w.]*", k.asm["ptx"]))),
                  seconds=round(time.perf_counter() - started, 2))
    with open(cached, "w") as f:
        json.dump(result, f)
    return dict(result, label=label(fn, constexprs))


def problems(r):
    if "error" in r:
        return [f"does not compile: {r['error']}"]
    found, mma, precision = [], r["mma"], r["precision"]
    if r["spill_stores"] or r["spill_loads"]:
        found.append(f"spills ({r['spill_stores']} B stores, {r['spill_loads']} B loads)")
    if r["shared"] > SM90_SMEM:
        found.append(f"needs {r['shared']} B of shared memory > {SM90_SMEM}")
    if precision in ("tf32", "bf16") and not any(precision in s for s in mma):
        found.append(f"no {precision} tensor-core instruction (found {mma})")
    if precision == "ieee" and any("tf32" in s or "bf16" in s for s in mma):
        found.append(f"ieee uses a reduced-precision instruction: {mma}")
    return found


def check(jobs, json_path=None):
    import triton
    count = len(list(variants()))
    started = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(compile_one, range(count)))
    failures = 0
    for r in results:
        found = problems(r)
        failures += bool(found)
        numbers = "" if "error" in r else (f"{r['registers']} registers, spills {r['spill_stores']}/"
                                           f"{r['spill_loads']} B, shared {r['shared']} B, "
                                           f"mma {(r['mma'] or ['fma'])[0]}")
        print(f"{'FAIL' if found else 'ok  '} {r['label']}: {numbers}" + (f"; {'; '.join(found)}" if found else ""))
    fresh = sum(not r.get("cached") for r in results)
    print(f"triton {triton.__version__}: {count} variants for sm_90 ({fresh} compiled now, {count - fresh} from the "
          f"report cache) in {time.perf_counter() - started:.0f} s with {jobs} processes: {failures} failures")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(dict(triton=triton.__version__, variants=results), f, indent=1)
    return 1 if failures else 0


def side_env(path, jobs, json_path):
    """Build (once) a virtual environment with the GPU machine's Triton, then run the check there. Loud
    on any failure: every step's exit status counts."""
    py = os.path.join(path, "bin", "python")
    stamp = os.path.join(path, "manualnn-side-env-ready")
    if not os.path.exists(stamp):
        print(f"== building {path}: {SIDE_TRITON} and torch==2.13.0 (CPU; the kernels import torch)", flush=True)
        for cmd in ([sys.executable, "-m", "venv", "--clear", path],
                    [py, "-m", "pip", "install", "-q", "torch==2.13.0", "numpy", SIDE_TRITON]):
            if subprocess.run(cmd).returncode != 0:
                print(f"FAIL: {' '.join(cmd)}", flush=True)
                return 1
        open(stamp, "w").close()
    version = subprocess.run([py, "-c", "import triton; print(triton.__version__)"], capture_output=True, text=True)
    if version.returncode != 0 or version.stdout.strip() != SIDE_TRITON.split("==")[1]:
        print(f"FAIL: {path} has no {SIDE_TRITON}: {version.stdout.strip()} {version.stderr[-500:]}", flush=True)
        return 1
    cmd = [py, os.path.abspath(__file__), "--jobs", str(jobs)] + (["--json", json_path] if json_path else [])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(cmd, env=env, cwd=ROOT).returncode


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side-env", metavar="DIR", help=f"run the check in DIR, a venv with {SIDE_TRITON}")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    if args.side_env:
        return side_env(os.path.abspath(args.side_env), args.jobs, args.json)
    return check(args.jobs, args.json)


if __name__ == "__main__":
    sys.exit(main())
