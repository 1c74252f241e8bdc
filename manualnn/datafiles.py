"""Reading a user's data (.npz, .pt, .csv/.tsv, or scikit-learn's digits) into a ``Dataset``.

Files are untrusted: ``safeio`` refuses special files, checks sizes before allocating and never
unpickles. Every problem is a ``DataError`` naming the file and the problem (row and column too).
CSV is read as people write it (``csvread``): comma, tab or semicolon, a UTF-8 byte-order mark, CRLF,
blank lines, spaces, quotes, an optional header, pandas' index column, text labels in a single target
column, columns chosen by name or position (``columns.Columns``), and missing cells under a stated
policy (``missing``). Under ``task="auto"`` targets are classes when they are text or true/false, or
whole numbers that look like labels: 2..100 distinct values forming a run 0..K-1 or 1..K, with at least
5 rows per class. Anything else is values. ``Dataset.task_reason`` says which rule decided.
"""
import dataclasses
import os
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import torch

from . import csvread, missing as missing_cells, safeio
from .columns import Columns
from .spec import TASKS  # noqa: F401  (importable from here, as before)
from .targets import MAX_AUTO_CLASSES, ROWS_PER_CLASS  # noqa: F401  (importable from here, as before)
from .targets import Labels as _Labels
from .targets import decide

FORMATS = (".npz", ".pt", ".csv", ".tsv")
MAX_TEXT_LABELS = 10_000         # distinct text labels a target column may hold


class DataError(ValueError):
    """A data file is missing, unreadable or unusable; the message names the file and the problem."""


@dataclass
class Dataset:
    """A loaded data set.

    x [N, D] float32 (float64 if the file's x was float64). y: int64 class indices [N] in 0..K-1
    (classify), float values [N, O] (regress), or None (no targets). ``class_names[i]`` is the
    original label of class index i (str for text labels, int for whole numbers). From a CSV with a
    header: ``feature_names`` and ``target_names``; with an ID column: ``ids`` (one str per row) and
    ``id_name``. ``notes``: what reading decided that the user should hear (a dropped index column,
    rows left out for missing cells). ``fill_values``: the per-feature values missing cells were filled
    with (``missing="mean"``).
    """
    x: torch.Tensor
    y: Optional[torch.Tensor]
    source: str
    task: Optional[str] = None
    task_reason: str = ""
    class_names: Optional[list] = None
    feature_names: Optional[list] = None
    target_names: Optional[list] = None
    ids: Optional[List[str]] = None
    id_name: Optional[str] = None
    notes: List[str] = field(default_factory=list)
    fill_values: Optional[List[float]] = None

    @property
    def classes(self):
        """Number of classes, or None for values (or no targets)."""
        return None if self.class_names is None else len(self.class_names)

    @property
    def out(self):
        """The network's output width: the classes, or the target columns (None without targets)."""
        if self.classes is not None:
            return self.classes
        return None if self.y is None else self.y.shape[1]


def load_data(spec, *, target_cols=1, task="auto", need_y=True, features=None, class_names=None, columns=None,
              missing="refuse", fill=None, parser="auto"):
    """Load a ``Dataset`` from ``spec``: "digits" or a path to a .npz, .pt, .csv or .tsv file.

    - .npz: arrays ``x`` (or ``X``) and ``y`` (or ``Y``; it may hold strings); .pt: a dict with tensors
      ``x`` and ``y`` (a zip-format ``torch.save`` file, loaded with ``weights_only=True``).
    - .csv/.tsv: the last ``target_cols`` columns are the targets, the others the features, unless
      ``columns`` (a ``Columns``) chooses targets, ignored columns and an ID column by name or position.
      With ``features`` given (the width a trained model expects), a file of exactly that many columns
      has no targets; with ``columns.features`` (its feature names) a file with a header is read by name.
    - ``task``: "auto" (see the module's notes), "classify" (classes from one column of whole
      numbers or text) or "regress" (values).
    - ``class_names``: the classes a trained model knows; labels are encoded through exactly this
      list (the task is then classify), and a label not in it is an error.
    - ``missing``: "refuse" (default: the rows are named), "drop" (rows with a missing cell are left
      out) or "mean" (a feature's missing cells get ``fill`` or else its column's mean). See ``missing``.
    - ``parser``: "auto", "native", "numpy" or "pandas": the C parser for clean CSV files (``csvfast``).
    - x of more than two dimensions (images) is flattened to [N, D].

    Without ``need_y`` a file without targets is fine (``Dataset.y`` is None).
    """
    if task not in TASKS:
        raise ValueError(f"task: expected one of {', '.join(map(repr, TASKS))}, got {task!r}")
    if isinstance(target_cols, bool) or not isinstance(target_cols, int) or target_cols < 1:
        raise ValueError(f"target_cols: expected a positive integer, got {target_cols!r}")
    if missing not in missing_cells.POLICIES:
        raise ValueError(f"missing: expected one of {', '.join(map(repr, missing_cells.POLICIES))}, got {missing!r}")
    if class_names is not None:
        if task == "regress":
            raise ValueError("class_names: given for a classifier, but task is 'regress'")
        class_names = list(class_names)
    columns = dataclasses.replace(columns or Columns(), target_cols=target_cols, width=features)
    meta = {}
    text, row_name = False, "y[{}]".format
    if isinstance(spec, str) and spec == "digits":
        x, y = _load_digits()
        source, where = "digits (scikit-learn's bundled 8x8 handwritten digits, pixels / 16)", "data 'digits'"
    else:
        source = os.fspath(spec)
        where = f"data file {source!r}"
        f, size = safeio.open_regular(source, where, DataError)
        with f:
            ext = os.path.splitext(source)[1].lower()
            if ext not in FORMATS:
                raise DataError(f"{where}: unknown format {ext or '(no extension)'!r}; expected "
                                f"{', '.join(FORMATS)} (or 'digits')")
            if ext in (".csv", ".tsv"):
                x, y, row_name, meta = _load_csv(f, size, where, columns, ext == ".tsv", missing, fill, parser)
                text = True
            elif columns.chosen:
                raise DataError(f"{where}: columns are chosen (target, ignore, id) in CSV and TSV files; a {ext} "
                                f"file holds arrays x and y")
            else:
                x, y, meta = _load_arrays(f, where, ext, missing, fill)
    if y is None:
        if need_y:
            raise DataError(f"{where}: has no targets 'y'")
        return Dataset(x, None, source, None, "the data has no targets", None, **meta)
    y = _tidy_y(where, x, y)
    y, task, reason, names = decide(where, y, task, class_names, row_name, text, DataError)
    return Dataset(x, y, source, task, reason, names, **meta)


def _load_arrays(f, where, ext, missing, fill):
    """x and y of a .npz or .pt file, with the missing-cell policy applied to NaN values."""
    read = safeio.read_npz_arrays if ext == ".npz" else safeio.read_pt_dict
    arrays = _aliases(where, read(f, where, DataError, names=("x", "y", "X", "Y")))
    x, y = _as_tensor(where, "x", arrays.get("x")), _as_tensor(where, "y", arrays.get("y"))
    x = _tidy_x(where, x)
    values = y.numpy() if isinstance(y, torch.Tensor) and y.is_floating_point() and y.dim() else None
    if values is not None and values.shape[0] != x.shape[0]:
        return x, y, {}       # refused with both shapes by _tidy_y
    place = lambda i, j: f"x[{i}, {j}]" if j < x.shape[1] else f"y[{i}]"  # noqa: E731
    kept, _, keep, fill, note = missing_cells.apply(where, x.numpy(), values, missing, fill, place, DataError)
    if note:   # rows left out or cells filled: ``kept`` is the new x
        x, y = torch.from_numpy(kept), y if keep is None else _keep_rows(y, torch.from_numpy(keep))
    return x, y, {"notes": [note] if note else [], "fill_values": fill}


def _aliases(where, arrays):
    """``x``/``y`` as saved, or capitalised (scikit-learn's X): one of each, never both spellings."""
    for name in ("x", "y"):
        if name in arrays and name.upper() in arrays:
            raise DataError(f"{where}: holds both {name!r} and {name.upper()!r}; keep one")
        if name.upper() in arrays:
            arrays[name] = arrays.pop(name.upper())
    return arrays


def _keep_rows(y, keep):
    if y is None:
        return None
    if isinstance(y, _Labels):
        return _Labels(y.names, y.codes[keep])
    return y[keep]


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
    """A CPU tensor; ``y`` of text or true/false (str, bytes or bool arrays, a list of str) as ``_Labels``."""
    if isinstance(value, torch.Tensor):
        _check_dense(where, name, value)
    if value is None or isinstance(value, torch.Tensor) and not (name == "y" and value.dtype == torch.bool):
        return value if value is None else value.detach().cpu()
    try:
        array_ = np.asarray(value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value)
    except (TypeError, ValueError) as e:     # a ragged list, say
        raise DataError(f"{where}: {name!r} is not an array ({safeio._first_line(e)})") from None
    if not array_.dtype.isnative:            # saved on a big-endian machine: torch takes native byte order only
        array_ = array_.astype(array_.dtype.newbyteorder("="))
    if name == "y" and array_.dtype.kind in "USb":
        return _labels(where, array_)
    if array_.dtype == object or array_.dtype.kind not in "biuf":
        raise DataError(f"{where}: {name!r} is not a numeric array (dtype {array_.dtype})")
    if array_.dtype.kind == "u" and array_.dtype.itemsize > 1:   # torch has few ops for uint16..uint64
        array_ = array_.astype(np.int64 if array_.dtype.itemsize < 8 else np.float64)
    return torch.from_numpy(np.ascontiguousarray(array_))


def _check_dense(where, name, t):
    """Only plain tensors hold rows of numbers: nested, sparse, quantized and meta ones are refused."""
    kind = ("a nested tensor (rows of different lengths); pad it (torch.nested.to_padded_tensor)" if t.is_nested
            else f"a {str(t.layout).replace('torch.', '')} tensor; save {name}.to_dense()"
            if t.layout != torch.strided else f"a quantized tensor; save {name}.dequantize()" if t.is_quantized
            else "a meta tensor: it has a shape but no values" if t.is_meta else None)
    if kind:
        raise DataError(f"{where}: {name!r} is {kind}")


def _labels(where, array_):
    """``_Labels`` of a text or true/false array; every label must be text that can be written back (UTF-8)."""
    array_ = array_[:, 0] if array_.ndim == 2 and array_.shape[1] == 1 else array_
    if array_.ndim != 1:
        raise DataError(f"{where}: 'y' of labels must be one column, got shape {array_.shape}")
    uniq, codes = np.unique(array_, return_inverse=True)
    try:
        names = [v.decode("utf-8") if isinstance(v, bytes) else v for v in uniq.tolist()]
    except UnicodeDecodeError:
        raise DataError(f"{where}: 'y' holds byte strings that are not UTF-8 text") from None
    for i, label in enumerate(names):
        try:
            label.encode("utf-8") if isinstance(label, str) else None
        except UnicodeEncodeError:   # a lone surrogate: trains, then no file of predictions can hold it
            row = int(np.flatnonzero(codes.reshape(-1) == i)[0])
            raise DataError(f"{where}: label {label!r} (y[{row}]) is not valid text (it holds a lone surrogate, "
                            f"which no UTF-8 file can store)") from None
    return _Labels(names, torch.from_numpy(codes.reshape(-1).astype(np.int64)))


def _tidy_x(where, x):
    if x.dim() == 0 or x.shape[0] == 0:
        raise DataError(f"{where}: 'x' has no rows (shape {tuple(x.shape)})")
    if x.numel() == 0:
        raise DataError(f"{where}: 'x' has no features (shape {tuple(x.shape)}); expected [rows, features]")
    if x.dtype == torch.bool or x.is_complex():
        raise DataError(f"{where}: 'x' must be numeric, got {x.dtype}")
    _check_finite(where, "x", x)
    x = x.reshape(x.shape[0], -1) if x.dim() != 2 else x
    return x if x.dtype in (torch.float32, torch.float64) else x.to(torch.float32)


def _tidy_y(where, x, y):
    rows = len(y.codes) if isinstance(y, _Labels) else (y.shape[0] if y.dim() else 0)
    if rows != x.shape[0]:
        raise DataError(f"{where}: 'x' has {x.shape[0]} rows but 'y' has {rows}"
                        + ("" if isinstance(y, _Labels) else f" (shape {tuple(y.shape)})") + "; they must match")
    if isinstance(y, _Labels):
        return y
    if y.is_complex():
        raise DataError(f"{where}: 'y' must be numeric, got {y.dtype}")
    if y.dim() == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dim() > 2:
        raise DataError(f"{where}: 'y' must be [N] labels or [N, outputs] targets, got shape {tuple(y.shape)}")
    _check_finite(where, "y", y)
    return y


def _check_finite(where, name, t):
    """Infinite values are refused (NaN is a missing value: the ``missing`` policy's). In numpy for float32/64,
    for the reason targets._fractions gives."""
    if not t.is_floating_point():
        return
    flat = t.reshape(-1)
    bad = np.isinf(flat.numpy()) if t.dtype in (torch.float32, torch.float64) else torch.isinf(flat).numpy()
    if bad.any():
        first = int(bad.argmax())
        index = np.unravel_index(first, tuple(t.shape))
        raise DataError(f"{where}: {name!r} has infinite values: {float(flat[first])} at "
                        f"{name}[{', '.join(map(str, index))}]")


# ---------------------------------------------------------------------------------------------
# CSV


def _load_csv(f, size, where, columns, tsv, missing, fill, parser):
    """(x float32, y float64 [N, T] or _Labels or None, row_name, Dataset fields) of a CSV file."""
    table = csvread.read_csv(f, size, where, DataError, columns, tsv, parser)
    if not len(table.x):
        raise DataError(f"{where}: has a header but no data rows")
    x64, y, keep, fill, note = table.x, table.y, None, fill, None
    as32 = _clean_float32(x64) if (missing != "mean" or fill is not None) and _no_holes(y) else None
    if as32 is None:     # missing cells, infinite or too large values: each found and named (a slower path)
        x64, y, keep, fill, note = missing_cells.apply(where, x64, y, missing, fill, table.place, DataError)
    rows = None if keep is None else np.flatnonzero(keep)
    at = (lambda i: i) if rows is None else (lambda i: int(rows[i]))  # noqa: E731
    if as32 is None:
        as32 = safeio.float32_table(x64, where, lambda i, j: table.place(at(i), j), DataError)
    if isinstance(y, list):
        names = sorted(set(y))
        if len(names) > MAX_TEXT_LABELS:
            raise DataError(f"{where}: the target column holds {len(names)} distinct labels, more than "
                            f"{MAX_TEXT_LABELS}: too many to be classes")
        rank = {label: i for i, label in enumerate(names)}
        y = _Labels(names, torch.tensor([rank[label] for label in y], dtype=torch.int64))
    elif y is not None:
        safeio.float32_table(y, where, lambda i, j: table.place(at(i), x64.shape[1] + j), DataError)
        y = torch.from_numpy(np.array(y, dtype=np.float64))   # a fresh copy: a one-row view may have odd strides
    ids = table.ids if rows is None or table.ids is None else [table.ids[i] for i in rows]
    meta = dict(feature_names=table.feature_names, target_names=table.target_names, ids=ids, id_name=table.id_name,
                notes=table.notes + ([note] if note else []), fill_values=fill)
    return torch.from_numpy(as32), y, lambda i: table.row_name(at(i)), meta


def _no_holes(y):
    if y is None:
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        return "" not in y if isinstance(y, list) else bool(np.isfinite(y.sum()))


def _clean_float32(x64):
    """x as C-ordered float32 when every value is finite and fits float32, else None: one sum of the float32
    copy finds a NaN, an Inf and a value too large alike (each turns the sum non-finite)."""
    with np.errstate(over="ignore", invalid="ignore"):
        as32 = x64.astype(np.float32, order="C")
        return as32 if np.isfinite(as32.sum(dtype=np.float64)) else None
