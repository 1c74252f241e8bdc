"""nn.Module wrappers: a bias-free ReLU MLP in the seed's layout that trains itself with manualnn."""
import numbers

import torch
from torch import nn

from .data import init_weights
from .trainer import _forward, evaluate, train


class MLP(nn.Module):
    """Bias-free ReLU network ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``.

    ``weights[i]`` has shape ``(sizes[i], sizes[i+1])`` (in x out, the seed's layout, so the layer
    computes ``x @ w``). ``init`` is "kaiming" (He-normal, std sqrt(2/fan_in): the default, it
    trains on any problem) or "randn" (the seed's unscaled torch.randn). Pass ``generator`` or
    ``seed`` for a reproducible draw. ``forward`` is an ordinary differentiable function; ``fit``
    trains the weights in place with hand-written gradients; ``predict`` is the forward without
    autograd.
    """

    def __init__(self, sizes, *, init="kaiming", generator=None, seed=None, device=None, dtype=None):
        super().__init__()
        if any(isinstance(n, bool) or not isinstance(n, numbers.Integral) for n in sizes):
            raise TypeError(f"sizes: expected integer widths [in, ..., out], got {list(sizes)}")
        sizes = [int(n) for n in sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"sizes: expected at least two positive widths [in, ..., out], got {sizes}")
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(int(seed))
        dtype = dtype or torch.get_default_dtype()
        self.sizes = sizes
        self.init = init
        self.weights = nn.ParameterList(
            nn.Parameter(w.to(device)) for w in init_weights(sizes, init, generator=generator, dtype=dtype))

    def forward(self, x):
        from .functional import linear_relu
        for w in self.weights[:-1]:
            x = linear_relu(x, w)
        return x @ self.weights[-1]

    @torch.no_grad()
    def predict(self, x):
        """The network's outputs for x [N, sizes[0]], without autograd. For classes: ``.argmax(1)``."""
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.sizes[0]:
            got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x: expected a 2-D tensor with {self.sizes[0]} columns, got {got}")
        w0 = self.weights[0]
        if x.dtype != w0.dtype or x.device != w0.device:
            raise ValueError(f"x: expected {w0.dtype} on {w0.device} (the model's), got {x.dtype} on {x.device}")
        return _forward(x, list(self.weights))

    def evaluate(self, x, y):
        """Loss (sum of squares) and, for class labels, accuracy on (x, y): see manualnn.evaluate."""
        return evaluate(self, x, y)

    def fit(self, x, y, *, epochs=20, lr=1e-6, grad="relu", backend="auto", precision="ieee", **kwargs):
        """Train this model's weights in place; returns the TrainResult (losses per epoch).

        Takes train()'s keywords too: ``batch_size``, ``shuffle``, ``shuffle_seed``, ``val_data``.
        """
        with torch.no_grad():
            return train(x, y, list(self.weights), epochs=epochs, lr=lr, grad=grad, backend=backend,
                         precision=precision, inplace=True, **kwargs)

    def extra_repr(self):
        return f"sizes={self.sizes}"


class TwoLayerNet(MLP):
    """The seed's network: 1000 -> 100 (ReLU) -> 10, no bias, the seed's torch.randn init."""

    def __init__(self, in_features=1000, hidden=100, out_features=10, *, init="randn", **kwargs):
        super().__init__([in_features, hidden, out_features], init=init, **kwargs)


def load(path, *, device=None):
    """A ready MLP from a checkpoint written by ``manualnn train --save`` or ``save_checkpoint``.

    The checkpoint's run settings are in ``model.config`` (a dict; empty if it had none).
    Missing, truncated or foreign files raise CheckpointError naming the file.
    """
    from .checkpoint import CheckpointError, load_checkpoint
    checkpoint = load_checkpoint(path)
    weights = checkpoint.weights
    for i, (a, b) in enumerate(zip(weights[:-1], weights[1:])):
        if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
            raise CheckpointError(f"checkpoint {str(path)!r}: weights[{i}] {tuple(a.shape)} and weights[{i + 1}] "
                                  f"{tuple(b.shape)} do not chain into a network")
    sizes = [weights[0].shape[0]] + [w.shape[1] for w in weights]
    model = MLP(sizes, dtype=weights[0].dtype, device="meta")
    model.weights = nn.ParameterList(nn.Parameter(w.to(device) if device is not None else w) for w in weights)
    model.config = dict(checkpoint.config)
    model.epoch = checkpoint.epoch
    return model
