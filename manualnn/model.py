"""nn.Module wrappers: a bias-free ReLU MLP in the seed's layout that trains itself with manualnn."""
import torch
from torch import nn

from .trainer import train


class MLP(nn.Module):
    """Bias-free ReLU network ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``.

    ``weights[i]`` has shape ``(sizes[i], sizes[i+1])`` (in x out, the seed's layout, so the layer
    computes ``x @ w``). Initialised as the seed does, with ``torch.randn`` (pass ``generator`` or
    ``seed`` for a reproducible draw). ``forward`` is an ordinary differentiable function;
    ``fit`` trains the weights in place with hand-written gradients.
    """

    def __init__(self, sizes, *, generator=None, seed=None, device=None, dtype=None):
        super().__init__()
        sizes = [int(n) for n in sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"sizes: expected at least two positive widths [in, ..., out], got {sizes}")
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(int(seed))
        dtype = dtype or torch.get_default_dtype()
        self.sizes = sizes
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(a, b, generator=generator, dtype=dtype).to(device))
            for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x):
        from .functional import linear_relu
        for w in self.weights[:-1]:
            x = linear_relu(x, w)
        return x @ self.weights[-1]

    def fit(self, x, y, *, epochs=20, lr=1e-6, grad="relu", backend="auto", precision="ieee", **kwargs):
        """Train this model's weights in place; returns the TrainResult (losses per epoch)."""
        with torch.no_grad():
            return train(x, y, list(self.weights), epochs=epochs, lr=lr, grad=grad, backend=backend,
                         precision=precision, inplace=True, **kwargs)

    def extra_repr(self):
        return f"sizes={self.sizes}"


class TwoLayerNet(MLP):
    """The seed's network: 1000 -> 100 (ReLU) -> 10, no bias."""

    def __init__(self, in_features=1000, hidden=100, out_features=10, **kwargs):
        super().__init__([in_features, hidden, out_features], **kwargs)
