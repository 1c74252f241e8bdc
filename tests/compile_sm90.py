"""Compile every kernel variant for an H100 (sm_90) without a GPU, and check the matmul instructions.

Run in a process with TRITON_INTERPRET unset (tests/test_gpu_compile.py does): Triton's bundled
ptxas builds the cubin here. Checks per variant: it compiles, fits the H100's shared memory, and
the PTX uses the precision asked for (tf32/bf16 tensor-core wgmma; ieee: no tf32/bf16 wgmma).
Prints one line per variant; exits 1 on any failure.
"""
import importlib
import re
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

H100_SMEM = 232448  # bytes a block may opt into on sm_90
TARGET = GPUTarget("cuda", 90, 32)
BIG = dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=32, GROUP_M=8)
OPTS_BIG = dict(num_warps=8, num_stages=3)


def variants():
    m = lambda name: importlib.import_module(f"manualnn.kernels.{name}")  # noqa: E731
    fused = m("fused_mlp")
    for p in ("ieee", "tf32", "bf16"):
        yield m("linear_relu").linear_relu_kernel, dict(PRECISION=p, **BIG), OPTS_BIG
        for loss in ("sse", "ce"):
            yield m("output_loss").output_loss_kernel, dict(LOSS=loss, ADVANCE=loss == "ce", PRECISION=p, BLOCK_M=64,
                                                            BLOCK_N=16, BLOCK_K=32), dict(num_warps=4, num_stages=3)
        for mode in ("relu", "tutorial"):
            yield m("input_grad").input_grad_kernel, dict(MODE=mode, PRECISION=p, **BIG), OPTS_BIG
        for opt in ("grad", "sgd", "momentum", "adam"):
            yield m("weight_grad").weight_grad_kernel, dict(OPTIMIZER=opt, DECAY=opt != "grad", PRECISION=p, **BIG), \
                OPTS_BIG
        # the two-launch step, with the blocks its launcher uses on the GPU, at the widest tile
        config = fused.default_config(100, 1000, p)
        for mode in fused.MODES:
            yield fused.mlp_rows_kernel, dict(MODE=mode, LOSS="sse", ADVANCE=False, PRECISION=p, WIDTH=fused.MAX_WIDTH,
                                              **blocks(config["rows"])), options(config["rows"])
        for opt in ("sgd", "adam"):
            yield fused.mlp_update_kernel, dict(OPTIMIZER=opt, DECAY=True, PRECISION=p, WIDTH=fused.MAX_WIDTH,
                                                PARTIALS_BLOCK=8, **blocks(config["update"])), options(config["update"])
    yield m("output_loss").sum_partials_kernel, dict(BLOCK=1024), dict(num_warps=4)


def blocks(config):
    return {k: v for k, v in config.items() if k not in ("num_warps", "num_stages")}


def options(config):
    return {k: v for k, v in config.items() if k in ("num_warps", "num_stages")}


def signature(fn, constexprs):
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in ("table_ptr", "tile_ptr", "step_ptr"):
            sig[name] = "*i64"
        elif name in ("hyper_ptr", "powers_ptr"):
            sig[name] = "*fp64"
        elif name.endswith("_ptr"):
            sig[name] = "*fp32"
        elif name in ("lr", "scale"):
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    return sig


def main():
    failures = 0
    for fn, constexprs, options in variants():
        label = f"{fn.__name__}[{', '.join(f'{k}={v}' for k, v in constexprs.items() if not k.startswith(('BLOCK', 'GROUP', 'PARTIALS')))}]"
        try:
            k = triton.compile(ASTSource(fn, signature(fn, constexprs), constexprs), target=TARGET, options=options)
        except Exception as e:  # report and go on: one line per variant
            print(f"FAIL {label}: does not compile: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
            failures += 1
            continue
        ptx, smem = k.asm["ptx"], k.metadata.shared
        mma = sorted(set(re.findall(r"wgmma\.mma_async[\w.]*|mma\.sync[\w.]*", ptx)))
        precision = constexprs.get("PRECISION")
        problems = []
        if smem > H100_SMEM:
            problems.append(f"needs {smem} B of shared memory > {H100_SMEM}")
        if precision == "tf32" and not any("tf32" in s for s in mma):
            problems.append(f"no tf32 tensor-core instruction (found {mma})")
        if precision == "bf16" and not any("bf16" in s for s in mma):
            problems.append(f"no bf16 tensor-core instruction (found {mma})")
        if precision == "ieee" and any("tf32" in s or "bf16" in s for s in mma):
            problems.append(f"ieee uses a reduced-precision instruction: {mma}")
        status = "FAIL" if problems else "ok  "
        failures += bool(problems)
        print(f"{status} {label}: shared {smem} B, mma {mma[:1] or ['fma']}" + (f"; {'; '.join(problems)}" if problems else ""))
    print(f"triton {triton.__version__}: {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
