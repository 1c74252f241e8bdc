#!/usr/bin/env bash
# The prepared check for a lent GPU machine (an H100/H200 with torch 2.11 and Triton 3.6, offline).
#
#   bash benchmarks/gpu_check.sh          # quick, < 5 min on an H200
#   bash benchmarks/gpu_check.sh full     # < 8 min: more shapes, every contender, longer timing
#
# Steps: machine and versions; install from this tree (pip install -e . --no-deps
# --no-build-isolation: offline); the CUDA tests (kernels, two-launch step, Triton backend, autograd
# function, sm_90 compile check; MANUALNN_AUTOTUNE=0 keeps most on one fixed config, and the
# autotune test forces the autotuner itself with config="autotune"); then the benchmark, side by
# side in one process per shape: the seed loop, the seed loop as a CUDA graph, torch.compile
# (reduce-overhead), the matmul floor, and manualnn's paths (torch backend; Triton per-layer
# kernels and the two-launch step, eager and captured as a CUDA graph; the Trainer's pick), in
# fp32, tf32 and bf16 at the seed shape, and bf16 (quick) or all precisions (full) at the large shape.
#
# Writes gpu_check.log, pytest.xml, seed/results.{json,md,png} and large/results.* under $OUT when
# it is set (the device tool's output folder), else under benchmarks/results/gpu-check/. The
# benchmark tables are printed last. Exit status: non-zero if any step failed.
set -uo pipefail
mode=${1:-quick}
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results/gpu-check}
mkdir -p "$out"
exec > >(tee "$out/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1
py=${PYTHON:-python3}
failed=0
started=$(date +%s)
step() { echo; echo "== $(date +%T) (+$(( $(date +%s) - started )) s) $*"; }

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv || failed=1
$py -c 'import sys, torch, triton, numpy; print("python", sys.version.split()[0], "| torch", torch.__version__,
"| triton", triton.__version__, "| numpy", numpy.__version__, "| cuda", torch.version.cuda, "|",
torch.cuda.get_device_name())' || failed=1

step "install from this tree (offline)"
$py -m pip install -q -e . --no-deps --no-build-isolation || failed=1

step "CUDA tests (MANUALNN_AUTOTUNE=0; test_autotuned_in_place_update_applies_once autotunes anyway)"
xdist=$($py -c 'import xdist' 2>/dev/null && echo "-n 8")
MANUALNN_AUTOTUNE=0 timeout 240 $py -m pytest -q -p no:cacheprovider $xdist --junitxml="$out/pytest.xml" -rs \
  tests/test_kernels.py tests/test_fused_mlp.py tests/test_triton_backend.py tests/test_functional.py \
  tests/test_emulate.py tests/test_gpu_compile.py tests/test_graphs.py tests/test_minibatch.py || failed=1

contenders=seed,cudagraph,compile-reduce-overhead,matmul-floor,manualnn-torch,manualnn-triton
contenders=$contenders,manualnn-triton-layers,manualnn-triton-2launch,manualnn-triton-layers-graph
contenders=$contenders,manualnn-triton-2launch-graph
bench() {  # name, timeout, then benchmark arguments
  local name=$1 limit=$2
  shift 2
  step "benchmark $name: $*"
  timeout "$limit" $py -m benchmarks.run --device cuda --out "$out/$name" "$@" || failed=1
}
if [ "$mode" = full ]; then
  bench seed 170 --shapes seed --precision fp32,tf32,bf16 --min-time 1.5 --budget 150 \
    --contenders "$contenders,seed-print,autograd-fused,compile-default"
  bench large 170 --shapes medium,large --precision fp32,tf32,bf16 --min-time 2 --budget 150 --expensive bf16 \
    --contenders "$contenders"
else
  # budgets: contenders left when one is spent are reported as skipped, so the whole call stays < 5 min
  bench seed 110 --shapes seed --precision fp32,tf32,bf16 --min-time 0.5 --budget 90 --expensive fp32,tf32 \
    --contenders "$contenders"
  bench large 50 --shapes large --precision bf16 --min-time 1 --budget 35 \
    --contenders matmul-floor,manualnn-triton-layers,manualnn-triton
fi

step "done in $(( $(date +%s) - started )) s: $([ $failed = 0 ] && echo all steps passed || echo SOME STEP FAILED); files in $out"
for name in seed large; do
  if [ -f "$out/$name/results.md" ]; then echo; echo "### $name"; cat "$out/$name/results.md"; fi
done
exit $failed
