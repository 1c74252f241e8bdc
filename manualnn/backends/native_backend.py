"""The native backend: the compiled C++ runner (kernels/native/runner.cpp) on CPU tensors.

It does what the torch backend does, with no Python between the ops: ATen GEMMs into buffers
made once, hand-written loops for the clamp, the loss and the masked backward, and the SGD update
folded into the weight-gradient GEMM. ``run_epochs`` runs a whole chunk of epochs in one call.
"""


class NativeBackend:
    name = "native"

    def __init__(self, x, y, weights, *, lr, grad, precision="ieee"):
        if precision != "ieee":
            raise ValueError(f"precision: the native backend computes in the tensors' own dtype and supports "
                             f"only 'ieee', got {precision!r}")
        from .. import native
        self.runner = native.load().Runner(x, y, list(weights), float(lr), grad == "relu")

    def step(self, loss_out):
        """One epoch; its loss (before the update) goes into the 0-d tensor ``loss_out``."""
        self.runner.run(loss_out)

    def run_epochs(self, losses_out):
        """``len(losses_out)`` epochs in one native call, epoch i's loss into ``losses_out[i]``."""
        self.runner.run(losses_out)
