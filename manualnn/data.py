"""Seed-style data: x, y and the weights drawn with torch.randn in the seed's order."""
import torch


def seed_data(seed=None, *, batch=100, features=1000, hidden=(100,), out=10, device="cpu",
              dtype=torch.float32):
    """Return ``(x, y, [w1, ..., wL])`` drawn as the seed draws them.

    x [batch, features], y [batch, out], then one weight per layer, all ``torch.randn`` in float32
    on the CPU in that order, then moved to ``device`` and ``dtype``. With ``seed=S`` the numbers
    equal those of the seed's code run after ``torch.manual_seed(S)`` (a private generator is
    used, so the global RNG is left alone); with ``seed=None`` they come from the global RNG.
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
    weights = [torch.randn(a, b, generator=gen) for a, b in zip(sizes[:-1], sizes[1:])]
    to = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
    return to(x), to(y), [to(w) for w in weights]


def data_checksum(x, y):
    """Two float64 sums that tell whether regenerated data equals the data a run started from."""
    return [float(x.double().sum()), float(y.double().sum())]
