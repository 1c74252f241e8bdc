"""The GPU path, checked without a GPU: every kernel variant the backends can pick compiles for sm_90
(H100/H200) with no register spill, fits its shared memory and uses the matmul instructions its
precision asks for (tests/compile_sm90.py reads ptxas's own report). The interpreter cannot show
this: it ignores input_precision and never runs Triton's compiler. The same check under the GPU
machine's Triton 3.6 runs from .ci/run (compile_sm90.py --side-env)."""
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def test_every_kernel_variant_compiles_for_sm90_without_spilling(tmp_path):
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    report = tmp_path / "variants.json"
    proc = subprocess.run([sys.executable, os.path.join(HERE, "compile_sm90.py"), "--json", str(report)],
                          capture_output=True, text=True, env=env, timeout=900)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    variants = json.loads(report.read_text())["variants"]
    assert all(v["spill_stores"] == 0 == v["spill_loads"] for v in variants)
    names = {v["label"].split("[")[0] for v in variants}
    assert {"linear_relu_kernel", "input_grad_kernel", "weight_grad_kernel", "output_loss_kernel", "mlp_rows_kernel",
            "mlp_update_kernel", "update_kernel", "adam_advance_kernel", "sum_partials_kernel"} <= names
    # every fused-step width up to the limit, both losses; every optimizer in both update epilogues
    for width in (16, 32, 64, 128):
        for loss in ("sse", "ce"):
            assert any(f"WIDTH={width}" in v["label"] and f"LOSS={loss}" in v["label"] for v in variants)
    for opt in ("grad", "sgd", "momentum", "adam"):
        for kernel in ("weight_grad_kernel[", "mlp_update_kernel["):
            assert any(v["label"].startswith(kernel) and f"OPTIMIZER={opt}" in v["label"] for v in variants)
    # the two-launch step's fast modes use Hopper's warpgroup MMA in the precision asked for
    for kernel in ("mlp_rows_kernel[", "mlp_update_kernel["):
        for precision in ("tf32", "bf16"):
            picked = [v for v in variants if v["label"].startswith(kernel) and f"PRECISION={precision}" in v["label"]]
            assert picked and all(any("wgmma.mma_async" in s and f".{precision}" in s for s in v["mma"])
                                  for v in picked), (kernel, precision)
