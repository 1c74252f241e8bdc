"""Data: the seed's random problem, weight initialisation, and loading a user's own data.

- ``seed_data``: x, y and the weights drawn with torch.randn in the seed's order.
- ``init_weights``: "randn" (the seed's, unscaled) or "kaiming" (He-normal, std sqrt(2/fan_in)).
- ``load_data``: x and y from a ``.npz``, ``.pt`` or ``.csv`` file, or scikit-learn's bundled
  ``digits``; every problem with the file is a ``DataError`` naming the file.
- ``split``: a seeded train/validation split.
- ``as_targets``: integer class labels become one-hot targets (and then accuracy is reported).
"""
import csv
import hashlib
import math
import os
import zipfile
from dataclasses import dataclass
from typing import Optional

import torch

INITS = ("randn", "kaiming")
TASKS = ("auto", "classify", "regress")
FORMATS = (".npz", ".pt", ".csv")
MAX_AUTO_CLASSES = 1000


class DataError(ValueError):
    """A data file is missing, unreadable or unusable; the message names the file and the problem."""


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
            and bool(((y == 0) | (y == 1)).all()) and bool((y.sum(1) == 1).all()):
        return y, y.argmax(1)
    return y, None


# ---------------------------------------------------------------------------------------------
# Loading


@dataclass
class Dataset:
    """x [N, D] float (float64 if the file's was, else float32); y int64 class labels [N] or float
    targets [N, O]."""
    x: torch.Tensor
    y: Optional[torch.Tensor]
    source: str

    @property
    def classes(self):
        """Number of classes (max label + 1), or None for a regression target."""
        if self.y is None or not is_label_tensor(self.y):
            return None
        return int(self.y.max()) + 1

    @property
    def out(self):
        return self.classes if self.classes is not None else self.y.shape[1]


def load_data(spec, *, target_cols=1, task="auto", need_y=True, features=None):
    """Load ``x`` and ``y`` from ``spec``: "digits" or a path to a .npz, .pt or .csv file.

    - .npz: arrays named ``x`` and ``y``. .pt: a dict with tensors (or arrays) ``x`` and ``y``.
    - .csv: numbers only, one optional header row (all cells non-numeric). The last
      ``target_cols`` columns are the targets, the others the features. With ``features`` given
      (the width a trained model expects), a file of exactly that many columns has no targets.
    - ``task``: "auto" treats a single target column of whole numbers >= 0 (or an integer array)
      as class labels, anything else as values; "classify" and "regress" force one or the other.
    - x of more than two dimensions (images) is flattened to [N, D].

    Without ``need_y``, a file without targets is fine (``Dataset.y`` is None).
    Every problem raises DataError naming the file.
    """
    if task not in TASKS:
        raise ValueError(f"task: expected one of {', '.join(map(repr, TASKS))}, got {task!r}")
    if spec == "digits":
        x, y = _load_digits()
        source = "digits (scikit-learn's bundled 8x8 handwritten digits, pixels / 16)"
        where = "data 'digits'"
    else:
        path = os.fspath(spec)
        where = f"data file {path!r}"
        if not os.path.exists(path):
            raise DataError(f"data file {path!r}: no such file (expected a .npz, .pt or .csv file, or 'digits')")
        if os.path.isdir(path):
            raise DataError(f"data file {path!r}: is a folder, expected a .npz, .pt or .csv file")
        ext = os.path.splitext(path)[1].lower()
        if ext not in FORMATS:
            raise DataError(f"data file {path!r}: unknown format {ext or '(no extension)'!r}; expected "
                            f"{', '.join(FORMATS)} (or 'digits')")
        loader = {".npz": _load_npz, ".pt": _load_pt, ".csv": _load_csv}[ext]
        x, y = loader(path, target_cols, features)
        source = path
    x, y = _tidy(where, x, y, task, need_y)
    return Dataset(x, y, source)


def _load_digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("data 'digits': needs scikit-learn, an optional extra: pip install \"manualnn[data]\"") from None
    digits = load_digits()
    # pixel intensities are 0..16: scaled to [0, 1] so the kaiming init keeps unit-scale activations
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    return x, torch.tensor(digits.target, dtype=torch.int64)


def _as_tensor(where, name, value):
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    import numpy as np
    try:
        array = np.asarray(value)
        if array.dtype == object or array.dtype.kind not in "biuf":
            raise TypeError(f"dtype {array.dtype}")
        return torch.from_numpy(np.ascontiguousarray(array))
    except (TypeError, ValueError) as e:
        raise DataError(f"data file {where}: {name!r} is not a numeric array ({e})") from None


def _load_npz(path, target_cols, features):
    import numpy as np
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            arrays = {k: archive[k] for k in ("x", "y") if k in names}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"data file {path!r}: not a readable .npz file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if "x" not in arrays:
        raise DataError(f"data file {path!r}: expected arrays named 'x' and 'y', found {names}")
    return _as_tensor(repr(path), "x", arrays["x"]), _as_tensor(repr(path), "y", arrays.get("y"))


def _load_pt(path, target_cols, features):
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch.load on arbitrary bytes raises many kinds (struct.error among them)
        raise DataError(f"data file {path!r}: not a readable .pt file (expected a dict with tensors 'x' and 'y', "
                        f"saved with torch.save)") from None
    if not isinstance(state, dict) or "x" not in state:
        got = f"keys {sorted(map(str, state))}" if isinstance(state, dict) else type(state).__name__
        raise DataError(f"data file {path!r}: expected a dict with tensors 'x' and 'y', got {got}")
    return _as_tensor(repr(path), "x", state["x"]), _as_tensor(repr(path), "y", state.get("y"))


def _number(cell):
    try:
        return float(cell)
    except ValueError:
        return None


def _load_csv(path, target_cols, features):
    if isinstance(target_cols, bool) or not isinstance(target_cols, int) or target_cols < 1:
        raise ValueError(f"target_cols: expected a positive integer, got {target_cols!r}")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"data file {path!r}: not a readable CSV text file ({e})") from None
    if not rows:
        raise DataError(f"data file {path!r}: is empty (expected numeric rows)")
    header, first_line = None, 1
    if all(_number(cell) is None for cell in rows[0]):
        header, rows, first_line = rows[0], rows[1:], 2
        if not rows:
            raise DataError(f"data file {path!r}: has a header but no data rows")
    width = len(rows[0])
    values = []
    for r, row in enumerate(rows):
        if len(row) != width:
            raise DataError(f"data file {path!r}: row {r + first_line} has {len(row)} columns, expected {width} "
                            f"(as in the first data row)")
        numbers = []
        for c, cell in enumerate(row):
            v = _number(cell)
            if v is None:
                column = f"column {c + 1}" + (f" ({header[c]!r})" if header and c < len(header) else "")
                raise DataError(f"data file {path!r}: row {r + first_line}, {column}: expected a number, got {cell!r}")
            numbers.append(v)
        values.append(numbers)
    table = torch.tensor(values, dtype=torch.float64)
    if features is not None and width == features:
        return table, None
    if width <= target_cols:
        raise DataError(f"data file {path!r}: has {width} columns; expected at least one feature column before "
                        f"the last {target_cols} target column(s)")
    return table[:, :-target_cols], table[:, -target_cols:]


def _tidy(where, x, y, task, need_y):
    """Shapes, finiteness and the task: labels [N] int64 or values [N, O] float32."""
    if x.dim() == 0 or x.shape[0] == 0:
        raise DataError(f"{where}: 'x' has no rows (shape {tuple(x.shape)})")
    if x.dtype == torch.bool or x.is_complex():
        raise DataError(f"{where}: 'x' must be numeric, got {x.dtype}")
    x = x.reshape(x.shape[0], -1) if x.dim() != 2 else x
    x = x.to(torch.float32) if x.dtype != torch.float64 else x
    _check_finite(where, "x", x)
    if y is None:
        if need_y:
            raise DataError(f"{where}: has no targets 'y'")
        return _real(x), None
    if y.dim() == 0 or y.shape[0] != x.shape[0]:
        raise DataError(f"{where}: 'x' has {x.shape[0]} rows but 'y' has "
                        f"{y.shape[0] if y.dim() else 0} (shape {tuple(y.shape)}); they must match")
    if y.dtype == torch.bool or y.is_complex():
        raise DataError(f"{where}: 'y' must be numeric, got {y.dtype}")
    if y.dim() == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dim() > 2:
        raise DataError(f"{where}: 'y' must be [N] labels or [N, outputs] targets, got shape {tuple(y.shape)}")
    if y.is_floating_point():
        _check_finite(where, "y", y)
    whole = y.dim() == 1 and (not y.is_floating_point() or bool((y == y.round()).all()))
    # auto: whole numbers >= 0 are class labels only while there are fewer classes than MAX_AUTO_CLASSES
    # and than rows (prices or counts in whole numbers are values, not 100,000 classes)
    labels_like = whole and int(y.min()) >= 0 and int(y.max()) + 1 <= min(MAX_AUTO_CLASSES, y.shape[0])
    if task == "classify" or (task == "auto" and labels_like):
        if not whole:
            raise DataError(f"{where}: task 'classify' needs one column of whole-number class labels, "
                            f"got shape {tuple(y.shape)} {y.dtype}")
        if int(y.min()) < 0:
            raise DataError(f"{where}: class labels must be >= 0, got {int(y.min())}")
        return _real(x), y.long()
    return _real(x), _real(y.reshape(y.shape[0], -1))


def _real(t):
    """float64 stays float64 (a float64 run trains on the file's own values), the rest float32."""
    return t if t.dtype == torch.float64 else t.to(torch.float32)


def _check_finite(where, name, t):
    if t.is_floating_point():
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            row = int(bad.reshape(t.shape[0], -1).any(1).nonzero()[0])
            raise DataError(f"{where}: {name!r} has NaN or Inf values (first in row {row}, counting from 0)")


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
