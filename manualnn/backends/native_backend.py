"""The native backend: the compiled C++ runner (kernels/native/runner.cpp) on CPU tensors.

(Being rewritten for the step protocol: see manualnn/backends/__init__.py.)
"""


class NativeStep:
    name = "native"

    def __init__(self, x, y, params, spec, *, rows=None, grads=None):
        raise NotImplementedError("native backend: not yet ported to the step protocol")
