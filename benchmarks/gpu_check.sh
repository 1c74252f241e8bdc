#!/usr/bin/env bash
# The prepared check for a lent GPU machine (an H200 with torch 2.11 and Triton 3.6, offline).
#
#   bash benchmarks/gpu_check.sh          # quick: at most 6 min on an H200, installs included
#   bash benchmarks/gpu_check.sh full     # at most 9 min: more shapes, every contender, longer timing
#
# Every step runs under `timeout` with the budget printed at the start, so the whole stays inside
# its total however a step behaves. The CUDA tests come first (what must be known even if nothing
# else runs), then the timing tables. Writes gpu_check.log (with every table), pytest.xml,
# compile_sm90.json, seed/results.json, large/results.json and digits/digits.json (6 files: the device
# tool brings back 8) under
# $OUT when it is set (the device tool's output folder), else under benchmarks/results/gpu-check/.
# Exit status: non-zero if any step failed; 2 at once, changing nothing, where there is no CUDA device.
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

if [ "$mode" = full ]; then
  budget_install=45; budget_compile=60; budget_tests=220; budget_seed=110; budget_large=70; budget_digits=30
  total=540
  large_what="medium and large shapes, every precision       "
else
  budget_install=45; budget_compile=45; budget_tests=130; budget_seed=70; budget_large=35; budget_digits=25
  total=360
  large_what="large shape, bf16                               "
fi
cat <<EOF
gpu_check.sh $mode: at most $total s in all, each step under timeout:
  1. machine and versions                                     (a few s)
  2. install this tree, offline (pip -e . --no-deps)           ${budget_install} s
  3. every kernel variant compiled for sm_90 by this Triton:
     registers, spills, shared memory (tests/compile_sm90.py)  ${budget_compile} s
  4. CUDA tests: kernels, optimizers, two-launch step, Triton
     step, start-up keys and autotuning, autograd op           ${budget_tests} s
  5. timing, seed shape (fp32, tf32, bf16)                     ${budget_seed} s
  6. timing, $large_what  ${budget_large} s
  7. timing, the digits workload (the --data defaults)         ${budget_digits} s
  files under $out
EOF

step "1. machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv || failed=1
if ! $py -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check.sh: no CUDA device here (torch.cuda.is_available() is false): this check is for the lent GPU"
  echo "machine; on a CPU the tests are 'python -m pytest -q' and the CPU benchmark 'python -m benchmarks.cpu'"
  exit 2   # (before the install of step 2: nothing here is changed)
fi
$py -c 'import sys, torch, triton, numpy; print("python", sys.version.split()[0], "| torch", torch.__version__,
"| triton", triton.__version__, "| numpy", numpy.__version__, "| cuda", torch.version.cuda, "|",
torch.cuda.get_device_name())' || failed=1

step "2. install from this tree (offline)"
timeout "$budget_install" $py -m pip install -q -e . --no-deps --no-build-isolation || failed=1

step "3. compile every variant for sm_90 (ptxas -v: registers, spills, shared memory)"
timeout "$budget_compile" $py tests/compile_sm90.py --json "$out/compile_sm90.json" | tail -3 || failed=1

step "4. CUDA tests (MANUALNN_AUTOTUNE=0 but the autotune tests)"
xdist=$($py -c 'import xdist' 2>/dev/null && echo "-n 8")
# -o addopts: the project's own (-n auto) need pytest-xdist; here it is used only where installed
MANUALNN_AUTOTUNE=0 timeout "$budget_tests" $py -m pytest -q -p no:cacheprovider -o addopts="-ra" $xdist \
  --junitxml="$out/pytest.xml" -rs tests/test_kernels.py tests/test_optim.py tests/test_two_launch.py \
  tests/test_triton_backend.py tests/test_gpu_startup.py tests/test_graphs.py tests/test_minibatch.py \
  tests/test_functional.py tests/test_emulate.py || failed=1

contenders=seed,cudagraph,compile-reduce-overhead,matmul-floor,manualnn-torch,manualnn-triton
contenders=$contenders,manualnn-triton-layers,manualnn-triton-2launch,manualnn-triton-layers-graph
contenders=$contenders,manualnn-triton-2launch-graph
bench() {  # name, seconds, then benchmark arguments; the harness skips contenders past --budget
  local name=$1 limit=$2
  shift 2
  step "benchmark $name: $*"
  timeout "$limit" $py -m benchmarks.run --device cuda --out "$out/$name" --budget $(( limit - 15 )) "$@" || failed=1
}
if [ "$mode" = full ]; then
  bench seed "$budget_seed" --shapes seed --precision fp32,tf32,bf16 --min-time 1 \
    --contenders "$contenders,seed-print,autograd-fused,compile-default"
  bench large "$budget_large" --shapes medium,large --precision fp32,tf32,bf16 --min-time 1 --expensive bf16 \
    --contenders "$contenders"
else
  bench seed "$budget_seed" --shapes seed --precision fp32,tf32,bf16 --min-time 0.3 --expensive fp32 \
    --contenders "$contenders"
  bench large "$budget_large" --shapes large --precision bf16 --min-time 0.5 \
    --contenders matmul-floor,manualnn-triton-layers,manualnn-triton
fi

step "7. the digits workload: manualnn (torch and triton) beside autograd + Adam + CrossEntropyLoss"
timeout "$budget_digits" $py -m benchmarks.digits --device cuda --epochs 5 --repeats 5 --out "$out/digits" || failed=1

# the device tool brings back at most 8 files: the plots can be redrawn from results.json (benchmarks/report.py)
rm -f "$out"/seed/results.png "$out"/large/results.png
step "done in $(( $(date +%s) - started )) s (budget $total s): $([ $failed = 0 ] && echo all steps passed || echo SOME STEP FAILED); files in $out"
for name in seed large digits; do
  for f in "$out/$name/results.md" "$out/$name/digits.md"; do
    if [ -f "$f" ]; then echo; echo "### $name"; cat "$f"; rm -f "$f"; fi   # the tables live on in the log
  done
done
exit $failed
