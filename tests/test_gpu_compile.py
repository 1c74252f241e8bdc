"""The GPU path, checked without a GPU: every kernel variant compiles for sm_90 (H100) and uses the
matmul instructions its precision asks for. The interpreter cannot show this: it ignores
input_precision and never runs Triton's compiler."""
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def test_every_kernel_compiles_for_sm90():
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton's default today; silences its notice
    proc = subprocess.run([sys.executable, os.path.join(HERE, "compile_sm90.py")], capture_output=True,
                          text=True, env=env, timeout=600)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert " 0 failures" in proc.stdout
    # the two-launch step's kernels are among the variants, and their fast modes use wgmma
    for kernel in ("mlp_rows_kernel[MODE=relu", "mlp_rows_kernel[MODE=tutorial", "mlp_update_kernel["):
        for precision in ("tf32", "bf16"):
            lines = [ln for ln in proc.stdout.splitlines() if kernel in ln and f"PRECISION={precision}" in ln]
            assert lines and all(ln.startswith("ok") and "wgmma.mma_async" in ln and f".{precision}" in ln
                                 for ln in lines), (kernel, precision, lines)
