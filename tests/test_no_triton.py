"""The package imports and trains on the CPU with Triton absent."""
import subprocess
import sys

SCRIPT = r"""
import sys
sys.modules["triton"] = None          # any 'import triton' now fails, as if not installed
import importlib.util
real_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] == "triton" else real_find_spec(name, *a)
import manualnn
x, y, w = manualnn.seed_data(0)
r = manualnn.train(x, y, w, epochs=3)
assert r.backend in ("torch", "native"), r.backend   # the CPU path needs no Triton
try:
    manualnn.Trainer(x, y, w, backend="triton")
except manualnn.BackendUnavailableError as e:
    assert "Triton is not installed" in str(e), e
else:
    raise AssertionError("backend='triton' without triton must fail")
print("ok", r.losses[-1])
"""


def test_import_and_train_without_triton():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok")
