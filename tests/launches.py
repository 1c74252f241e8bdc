"""Count (and record) the Triton kernel launches a piece of code really makes.

Wraps ``run`` of Triton's JITFunction (compiled kernels, also what an autotuner finally calls) and
of InterpretedFunction (TRITON_INTERPRET=1): every ``kernel[grid](...)`` goes through one of them.
Nothing is computed from a formula; the kernels' own names are recorded, in launch order.
``specialization_key`` gives what Triton compiles a launch for (argument types, 16-byte alignment
of pointers, integer divisibility), from Triton's own binder, for sm_90: two launches with different
keys mean two compiles.
"""
import contextlib
import functools

from triton.runtime import jit

try:
    from triton.runtime.interpreter import InterpretedFunction
except ImportError:  # pragma: no cover - every Triton this project supports has it
    InterpretedFunction = None


@contextlib.contextmanager
def record_launches():
    """``with record_launches() as launched:`` ... ``launched`` lists (kernel, args, kwargs) per launch."""
    launched = []
    patched = []
    for cls in (jit.JITFunction, InterpretedFunction):
        if cls is None or "run" not in vars(cls):
            continue
        real = vars(cls)["run"]

        def run(self, *args, _real=real, grid, warmup, **kwargs):
            if not warmup:
                launched.append((self, args, kwargs))
            return _real(self, *args, grid=grid, warmup=warmup, **kwargs)

        setattr(cls, "run", run)
        patched.append((cls, real))
    try:
        yield launched
    finally:
        for cls, real in patched:
            setattr(cls, "run", real)


@contextlib.contextmanager
def count_launches():
    """``with count_launches() as launched:`` ... ``launched`` lists the kernel names launched."""
    names = []
    with record_launches() as launched:
        yield names
    names.extend(kernel_name(kernel) for kernel, _, _ in launched)


def kernel_name(kernel):
    return getattr(kernel, "fn", kernel).__name__


@functools.lru_cache(maxsize=None)
def _binder(kernel):
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import make_backend
    if not isinstance(kernel, jit.JITFunction):    # the interpreter's: the same function and options, compiled
        options = getattr(kernel, "kwargs", {})
        kernel = jit.JITFunction(kernel.fn, do_not_specialize=options.get("do_not_specialize"),
                                 do_not_specialize_on_alignment=options.get("do_not_specialize_on_alignment"))
    return jit.create_function_from_signature(kernel.signature, kernel.params, make_backend(GPUTarget("cuda", 90, 32)))


def specialization_key(kernel, args, kwargs):
    """(kernel name, Triton's specialization of this launch's arguments) for sm_90."""
    _, specialization, _ = _binder(kernel)(*args, **kwargs)
    return kernel_name(kernel), tuple(specialization)
