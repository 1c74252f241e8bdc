"""The Triton backend: one training step as fused kernels (manualnn.kernels).

Two ways, picked per network:

- **two launches** (``kernels.TwoLaunchStep``) when every layer's output width fits one tile
  (``kernels.MAX_WIDTH``, 128 columns), at any depth: one row-block kernel for the forward, the
  output gradient, the loss partials and the masked backward to every hidden gradient; one kernel
  taking every layer's gradient with the optimizer in its epilogue, and summing the loss partials in
  a fixed order.
- **per layer** otherwise: L-1 fused linear+clamp forwards, one output+loss+gradient pass (plus
  one fixed-order sum of its partials when the output spans several programs), L-1 masked input
  gradients and L weight-gradient kernels with the optimizer in their epilogue.

Either way the seed's order holds: every weight is read by the backward before its update runs.
The output kernels store the exact output gradient ``g = spec.grad_scale(rows) * e`` (for the
seed's sum of squares, 2 * (z - y), as the seed does), so no later kernel needs the constant. Adam's
step count and beta^t are advanced on the device by program 0 of the output kernel, which runs
before every update of the step. ``update()`` (after ``gradients()`` and an all-reduce) is the
element-wise kernel of kernels/optim.py: the same ``apply_optimizer`` as the epilogues.
"""
import torch

from . import BackendUnavailableError, triton_unavailable_reason
from ..spec import with_ones


class TritonStep:
    """One training step on a fixed batch (see manualnn.backends for the protocol), float32 only.

    ``two_launch``: None picks the two-launch step when the network fits it, True demands it, False
    takes the per-layer kernels.
    """
    name = "triton"

    def __init__(self, x, y, params, spec, *, rows=None, grads=None, two_launch=None):
        why = triton_unavailable_reason(x.device)
        if why is not None:
            raise BackendUnavailableError(f"backend: 'triton' cannot run on device {x.device}: {why}")
        from .. import kernels
        if x.dtype != torch.float32:
            raise TypeError(f"x: the triton backend trains float32 tensors (precision 'ieee', 'tf32' or 'bf16' "
                            f"picks the matmul precision), got {x.dtype}")
        if spec.precision == "bf16" and x.device.type == "cpu":
            raise BackendUnavailableError("precision: 'bf16' needs a CUDA device (the Triton interpreter has no bf16)")
        tensors = params.tensors
        widths = [p.shape[1] for p in tensors]
        fits = kernels.fits(widths)
        if two_launch and not fits:
            raise ValueError(f"two_launch: the two-launch step takes layers at most {kernels.MAX_WIDTH} wide, got "
                             f"widths {widths}")
        self.two_launch = fits if two_launch is None else bool(two_launch)
        self.x, self.y, self.params, self.spec, self.grads = x, y, params, spec, grads
        batch = x.shape[0]
        self.empty = batch == 0
        adam = spec.optimizer == "adam"
        self.hyper = kernels.hyper_parameters(lr=spec.lr, momentum=spec.momentum, betas=spec.betas, eps=spec.eps,
                                              weight_decay=spec.weight_decay, device=x.device)
        state = [tuple(params.state[name][i] for name in spec.state_names) for i in range(len(tensors))]
        # weight decay on the weight rows only: a bias row (the last) is not decayed
        decay_rows = [params.decayed_rows(i) if spec.weight_decay else 0 for i in range(len(tensors))]
        update = dict(hyper=self.hyper, state=state, powers=params.powers, decay_rows=decay_rows)
        if self.empty and grads is None:
            # a rank with no rows of this batch: zero loss and gradients (no kernel), then the same update
            # as every other rank (weight decay and Adam still move the parameters)
            self.grads = grads = [torch.zeros_like(p) for p in tensors]
        self.update_launch = None if grads is None else \
            kernels.update_launcher(tensors, grads, optimizer=spec.optimizer, step=params.step, **update)
        if self.empty:
            return
        scale = spec.grad_scale(rows or batch)
        p = spec.precision
        if self.two_launch:
            self.plan = kernels.TwoLaunchStep(x, y, tensors, bias=params.bias, grad=spec.grad, loss=spec.loss,
                                             scale=scale, optimizer=spec.optimizer, step=params.step, grads=grads,
                                             precision=p, **update)
            return
        new = lambda cols: torch.empty(batch, cols, dtype=torch.float32, device=x.device)  # noqa: E731
        hidden = widths[:-1]
        acts = [with_ones(batch, n, like=x, bias=params.bias) for n in hidden]   # [h_l, 1] (or h_l)
        self.hs = [a[:, :n] for a, n in zip(acts, hidden)]   # h_l = clamp([h_{l-1}, 1] @ p_l); carries the mask
        self.grad_hs = [new(n) for n in hidden]               # dL/dh_l, masked
        self.grad_z = new(widths[-1])                         # scale * e
        inputs = [x] + acts
        config = kernels.output_config(batch, widths[-1], inputs[-1].shape[1], spec.loss, p)
        self.partials = torch.empty(kernels.num_partials(batch, widths[-1], config), dtype=torch.float32,
                                    device=x.device)

        # The step as launchers checked once, here (as the torch backend prebuilds its op list):
        # forwards, the output pass (which takes each step's loss slot), then backward last layer first,
        # each layer's input gradient (reading w_i) before w_i's update.
        self.forward_plan = [kernels.linear_relu_launcher(a, w, h, precision=p)
                             for a, w, h in zip(inputs, tensors[:-1], self.hs)]
        slot = torch.empty((), dtype=torch.float32, device=x.device)   # replaced by each step's loss slot

        def output(advance):
            return kernels.output_loss_launcher(
                inputs[-1], tensors[-1], y, self.grad_z, slot, loss=spec.loss, scale=scale, partials=self.partials,
                adam=(params.step, params.powers, self.hyper) if advance else None, precision=p, config=config)
        self.output_step = output(adam)
        self.output_gradients = output(False) if adam else self.output_step
        self.backward_plan, self.gradient_plan, g = [], [], self.grad_z
        for i in reversed(range(len(tensors))):
            back = []
            if i > 0:
                w = tensors[i][:widths[i - 1]]        # the weight without its bias row
                back.append(kernels.input_grad_launcher(g, w, self.grad_hs[i - 1], grad=spec.grad,
                                                        h=self.hs[i - 1] if spec.grad == "relu" else None,
                                                        precision=p))
            self.backward_plan += back + [kernels.weight_grad_launcher(
                inputs[i], g, tensors[i], optimizer=spec.optimizer, hyper=self.hyper, state=state[i],
                powers=params.powers, decay_rows=decay_rows[i], precision=p)]
            if grads is not None:
                self.gradient_plan += back + [kernels.weight_grad_launcher(
                    inputs[i], g, tensors[i], optimizer="grad", grad_out=grads[i], precision=p), i]
            if i > 0:
                g = self.grad_hs[i - 1]

    def step(self, loss_out):
        """Forward, loss (the batch's sum, before any reduction) into the 0-d ``loss_out``, backward, update."""
        if self.empty:
            self.gradients(loss_out)
            self.update()
        elif self.two_launch:
            self.plan.step(loss_out)
        else:
            for launch in self.forward_plan:
                launch()
            self.output_step(loss_out=loss_out)
            for launch in self.backward_plan:
                launch()

    def gradients(self, loss_out, ready=None):
        """Forward and loss, then every layer's gradient into ``grads`` (no update); ``ready(i)`` is called
        once layer i's gradient is written (the last layer first)."""
        if self.grads is None:
            raise ValueError("grads: gradients() writes into the grads given when the step was made; got None")
        layers = reversed(range(len(self.grads)))
        if self.empty:
            loss_out.zero_()
            for i in layers:
                self.grads[i].zero_()
                if ready is not None:
                    ready(i)
            return
        if self.two_launch:
            self.plan.gradients(loss_out)
            for i in layers:
                if ready is not None:
                    ready(i)
            return
        for launch in self.forward_plan:
            launch()
        self.output_gradients(loss_out=loss_out)
        for launch in self.gradient_plan:
            if not isinstance(launch, int):
                launch()
            elif ready is not None:
                ready(launch)

    def update(self):
        """Apply the optimizer from ``grads`` (after ``gradients()`` and, say, an all-reduce)."""
        if self.update_launch is None:
            raise ValueError("grads: update() reads the grads given when the step was made; got None")
        self.update_launch()
