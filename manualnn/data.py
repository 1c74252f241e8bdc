"""Data: the seed's random problem, weight initialisation, and loading a user's own data.

- ``seed_data``: x, y and the weights drawn with torch.randn in the seed's order.
- ``init_weights``: "randn" (the seed's, unscaled) or "kaiming" (He-normal, std sqrt(2/fan_in)).
- ``load_data``, ``Dataset``, ``DataError``: re-exported from ``datafiles``, which reads users' files.
- ``split``: a seeded train/validation split.
- ``as_targets``: integer class labels become one-hot targets (and then accuracy is reported).
"""
import hashlib
import math

import torch

# reading users' files lives in datafiles; these names stay importable from here
from .datafiles import FORMATS, TASKS, DataError, Dataset, load_data  # noqa: F401
from .spec import INITS  # noqa: F401  (importable from here, as before)


def init_weights(sizes, init="randn", *, generator=None, dtype=torch.float32):
    """One weight per layer, ``sizes[i] x sizes[i+1]`` (the seed's layout), drawn in layer order.

    "randn" is the seed's unscaled ``torch.randn`` (it only suits the seed's problem); "kaiming"
    is He-normal, ``torch.randn * sqrt(2 / fan_in)``, which keeps activations at unit scale
    through ReLU layers: what any other problem should use.
    """
    if init not in INITS:
        raise ValueError(f"init: expected one of {', '.join(map(repr, INITS))}, got {init!r}")
    weights = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        w = torch.randn(fan_in, fan_out, generator=generator, dtype=dtype)
        if init == "kaiming":
            w.mul_(math.sqrt(2.0 / fan_in))
        weights.append(w)
    return weights


def seed_data(seed=None, *, batch=100, features=1000, hidden=(100,), out=10, device="cpu",
              dtype=torch.float32, init="randn"):
    """Return ``(x, y, [w1, ..., wL])`` drawn as the seed draws them.

    x [batch, features], y [batch, out], then one weight per layer, all ``torch.randn`` in float32
    on the CPU in that order, then moved to ``device`` and ``dtype``. With ``seed=S`` the numbers
    equal those of the seed's code run after ``torch.manual_seed(S)`` (a private generator is
    used, so the global RNG is left alone); with ``seed=None`` they come from the global RNG.
    ``init="kaiming"`` scales each weight by sqrt(2/fan_in) (same draws, so x and y are unchanged).
    """
    if isinstance(hidden, int):
        hidden = (hidden,)
    sizes = [features, *hidden, out]
    for name, n in [("batch", batch), ("features", features), ("out", out)] + [("hidden", h) for h in hidden]:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{name}: expected a positive integer, got {n!r}")
    gen = None
    if seed is not None:
        gen = torch.Generator().manual_seed(int(seed))
    x = torch.randn(batch, features, generator=gen)
    y = torch.randn(batch, out, generator=gen)
    weights = init_weights(sizes, init, generator=gen)
    to = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
    return to(x), to(y), [to(w) for w in weights]


def data_checksum(x, y):
    """A hash of the data's bytes: a resumed run must start from exactly the same rows in the same order."""
    digest = hashlib.blake2b(digest_size=16)
    for t in (x, y):
        t = t.detach().cpu()
        digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.numpy().tobytes())   # C order, whatever the strides
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Targets: labels or values


def is_label_tensor(y):
    return isinstance(y, torch.Tensor) and not y.is_floating_point() and not y.is_complex() \
        and y.dtype != torch.bool and y.dim() == 1


def as_targets(y, out, name="y"):
    """``(targets [N, out] float, labels [N] int64 or None)`` for y given as labels or values.

    Integer class labels ``y[N]`` (0 <= label < out) become one-hot targets. Float targets that
    are already one-hot (every row one 1, the rest 0; at least two columns) keep their values and
    get their argmax as labels. Anything else is a regression target: labels None.
    """
    if is_label_tensor(y):
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= out):
            raise ValueError(f"{name}: expected class labels in [0, {out}) (the network has {out} outputs), "
                             f"got labels from {int(y.min())} to {int(y.max())}")
        return torch.nn.functional.one_hot(y.long(), out), y.long()
    if isinstance(y, torch.Tensor) and y.dim() == 2 and y.shape[1] >= 2 and y.is_floating_point() \
            and y.device.type in ("cpu", "cuda") and bool(((y == 0) | (y == 1)).all()) and bool((y.sum(1) == 1).all()):
        return y, y.argmax(1)
    return y, None


def split(x, y, fraction, seed):
    """``(x_train, y_train, x_val, y_val)``: a seeded random ``fraction`` of the rows for validation.

    ``fraction`` 0 keeps every row for training (validation tensors None). Both parts must keep at
    least one row.
    """
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 <= fraction < 1:
        raise ValueError(f"val_split: expected a fraction in [0, 1), got {fraction!r}")
    n = x.shape[0]
    if not isinstance(y, torch.Tensor) or y.dim() == 0 or y.shape[0] != n:
        got = f"shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"y: expected a tensor with {n} rows (like x), got {got}")
    if fraction == 0:
        return x, y, None, None
    n_val = round(n * fraction)
    if n_val < 1 or n - n_val < 1:
        raise ValueError(f"val_split: {fraction} of {n} rows leaves {n - n_val} for training and {n_val} for "
                         f"validation; each needs at least one row")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]
