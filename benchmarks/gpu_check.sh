#!/usr/bin/env bash
# The prepared check for a lent GPU machine (an H100 with torch 2.11 and Triton 3.6, offline).
#
#   bash benchmarks/gpu_check.sh          # quick, < 5 min: install, CUDA tests, seed-shape timing
#   bash benchmarks/gpu_check.sh full     # < 8 min: install, CUDA tests, the whole benchmark matrix
#
# Writes gpu_check.log, pytest.xml and the benchmark's results.json/.md/.png under $OUT when it is
# set (the device tool's output folder), else under benchmarks/results/gpu-check/. The table
# printed last is the benchmark's. Exit status: non-zero if any step failed.
set -uo pipefail
mode=${1:-quick}
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results/gpu-check}
mkdir -p "$out"
exec > >(tee "$out/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1
py=${PYTHON:-python3}
failed=0
step() { echo; echo "== $(date +%T) $*"; }

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv || failed=1
$py -c 'import sys, torch, triton; print("python", sys.version.split()[0], "| torch", torch.__version__,
"| triton", triton.__version__, "| cuda", torch.version.cuda, "|", torch.cuda.get_device_name())' || failed=1

step "install from this tree (offline)"
$py -m pip install -q -e . --no-deps --no-build-isolation || failed=1

step "CUDA tests: kernels, Triton backend, autograd function (fixed configs: MANUALNN_AUTOTUNE=0)"
xdist=$($py -c 'import xdist' 2>/dev/null && echo "-n 8")
MANUALNN_AUTOTUNE=0 timeout 200 $py -m pytest -q -p no:cacheprovider $xdist --junitxml="$out/pytest.xml" \
  tests/test_kernels.py tests/test_triton_backend.py tests/test_functional.py || failed=1

if [ "$mode" = full ]; then
  step "benchmark: the whole matrix (seed, medium, large x fp32, tf32, bf16), budget 330 s"
  timeout 420 $py -m benchmarks.run --device cuda --budget 330 --expensive fp32 --out "$out" || failed=1
else
  step "benchmark: seed shape, fp32: seed loop, torch backend, Triton backend, matmul floor"
  timeout 150 $py -m benchmarks.run --device cuda --shapes seed --precision fp32,tf32 \
    --contenders seed,seed-print,matmul-floor,manualnn-torch,manualnn-triton,cudagraph --out "$out" || failed=1
fi
step "done: $([ $failed = 0 ] && echo all steps passed || echo SOME STEP FAILED); files in $out"
exit $failed
