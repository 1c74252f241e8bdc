"""Count the Triton kernel launches a piece of code really makes.

Wraps ``run`` of Triton's JITFunction (compiled kernels, also what an autotuner finally calls) and
of InterpretedFunction (TRITON_INTERPRET=1): every ``kernel[grid](...)`` goes through one of them.
Nothing is computed from a formula; the kernels' own names are recorded, in launch order.
"""
import contextlib

from triton.runtime import jit

try:
    from triton.runtime.interpreter import InterpretedFunction
except ImportError:  # pragma: no cover - every Triton this project supports has it
    InterpretedFunction = None


@contextlib.contextmanager
def count_launches():
    """``with count_launches() as launched:`` ... ``launched`` lists the kernel names launched."""
    launched = []
    patched = []
    for cls in (jit.JITFunction, InterpretedFunction):
        if cls is None or "run" not in vars(cls):
            continue
        real = vars(cls)["run"]

        def run(self, *args, _real=real, **kwargs):
            if not kwargs.get("warmup", False):
                launched.append(getattr(self, "fn", self).__name__)
            return _real(self, *args, **kwargs)

        setattr(cls, "run", run)
        patched.append((cls, real))
    try:
        yield launched
    finally:
        for cls, real in patched:
            setattr(cls, "run", real)
