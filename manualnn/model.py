"""nn.Module wrappers: a ReLU MLP in the seed's layout that trains itself with manualnn."""
import numbers

import torch
from torch import nn

from .backends.torch_backend import forward
from .data import init_weights
from .spec import DATA_DEFAULTS
from .training import evaluate, train


class MLP(nn.Module):
    """ReLU network ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``, with biases unless ``bias=False``.

    ``weights[i]`` has shape ``(sizes[i], sizes[i+1])`` (in x out, the seed's layout, so the layer
    computes ``x @ w + b``); ``biases[i]`` has shape ``(sizes[i+1],)`` and starts at zero (None
    without biases). ``init`` is "kaiming" (He-normal, std sqrt(2/fan_in): the default, it trains
    on any problem) or "randn" (the seed's unscaled torch.randn). Pass ``generator`` or ``seed`` for
    a reproducible draw. ``forward`` is an ordinary differentiable function; ``fit`` trains the
    parameters in place with hand-written gradients; ``predict`` is the forward without autograd.
    """

    def __init__(self, sizes, *, bias=True, init="kaiming", generator=None, seed=None, device=None, dtype=None):
        super().__init__()
        if any(isinstance(n, bool) or not isinstance(n, numbers.Integral) for n in sizes):
            raise TypeError(f"sizes: expected integer widths [in, ..., out], got {list(sizes)}")
        sizes = [int(n) for n in sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"sizes: expected at least two positive widths [in, ..., out], got {sizes}")
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(int(seed))
        dtype = dtype or torch.get_default_dtype()
        self.sizes, self.init = sizes, init
        self.weights = nn.ParameterList(
            nn.Parameter(w.to(device)) for w in init_weights(sizes, init, generator=generator, dtype=dtype))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(n, dtype=dtype, device=device)) for n in sizes[1:]) \
            if bias else None
        self.loss, self.reduction = "sse", "sum"   # fit() records what it trained with (evaluate scores so)

    def forward(self, x):
        from .functional import linear_relu
        biases = list(self.biases) if self.biases is not None else [None] * len(self.weights)
        for w, b in zip(list(self.weights)[:-1], biases[:-1]):
            x = linear_relu(x, w, b)
        x = x @ self.weights[-1]
        return x if biases[-1] is None else x + biases[-1]

    @torch.no_grad()
    def predict(self, x):
        """The network's outputs for x [N, sizes[0]], without autograd. For classes: ``.argmax(1)``."""
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.sizes[0]:
            got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x: expected a 2-D tensor with {self.sizes[0]} columns, got {got}")
        w0 = self.weights[0]
        if x.dtype != w0.dtype or x.device != w0.device:
            raise ValueError(f"x: expected {w0.dtype} on {w0.device} (the model's), got {x.dtype} on {x.device}")
        return forward(x, list(self.weights), list(self.biases) if self.biases is not None else None)

    def evaluate(self, x, y):
        """Loss and accuracy (classes) or RMSE and R^2 (values) on (x, y): see manualnn.evaluate."""
        return evaluate(self, x, y)

    def fit(self, x, y, *, epochs=DATA_DEFAULTS["epochs"], **options):
        """Train this model's parameters in place; returns the TrainResult (losses per epoch).

        Takes train()'s keywords (the step's ``lr``, ``loss``, ``optimizer``, ..., ``batch_size``,
        ``shuffle``, ``val_data``, ``patience``, ``backend``). Those not given follow what ``manualnn
        train --data`` does (manualnn.spec.DATA_DEFAULTS): Adam, lr 3e-3, the mean over batches of 200 rows,
        cross-entropy for class labels and the sum of squares for values, and with ``val_data`` a
        patience of 25 epochs.
        """
        labels = isinstance(y, torch.Tensor) and not y.is_floating_point() and y.dim() == 1
        options.setdefault("loss", "ce" if labels else "sse")
        for key in ("lr", "optimizer", "reduction", "batch_size"):
            options.setdefault(key, DATA_DEFAULTS[key])
        if options.get("val_data") is not None:
            options.setdefault("patience", DATA_DEFAULTS["patience"])
        with torch.no_grad():
            result = train(x, y, list(self.weights), biases=list(self.biases) if self.biases is not None else None,
                           epochs=epochs, inplace=True, **options)
        self.loss, self.reduction = options["loss"], options["reduction"]
        return result

    def extra_repr(self):
        return f"sizes={self.sizes}, bias={self.biases is not None}"


class TwoLayerNet(MLP):
    """The seed's network: 1000 -> 100 (ReLU) -> 10, no bias, the seed's torch.randn init."""

    def __init__(self, in_features=1000, hidden=100, out_features=10, *, init="randn", bias=False, **kwargs):
        super().__init__([in_features, hidden, out_features], init=init, bias=bias, **kwargs)


def load(path, *, device=None):
    """A ready MLP from a checkpoint written by ``manualnn train --save`` or ``save_checkpoint``.

    The checkpoint's run settings are in ``model.config`` (a dict; empty if it had none). Missing,
    truncated, foreign or inconsistent files raise CheckpointError naming the file and the field.
    """
    from .checkpoint import load_checkpoint
    checkpoint = load_checkpoint(path)
    weights, biases = checkpoint.weights, checkpoint.biases
    sizes = [weights[0].shape[0]] + [w.shape[1] for w in weights]
    model = MLP(sizes, bias=biases is not None, dtype=weights[0].dtype, device="meta")
    to = (lambda t: t.to(device)) if device is not None else (lambda t: t)  # noqa: E731
    model.weights = nn.ParameterList(nn.Parameter(to(w)) for w in weights)
    if biases is not None:
        model.biases = nn.ParameterList(nn.Parameter(to(b)) for b in biases)
    model.config = dict(checkpoint.config)
    model.loss = model.config.get("loss", "sse")
    model.reduction = model.config.get("reduction", "sum")
    model.epoch = checkpoint.epoch
    return model
