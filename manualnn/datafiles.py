"""Reading a user's data (.npz, .pt, .csv/.tsv, or scikit-learn's digits) into a ``Dataset``.

Files are untrusted: ``safeio`` refuses special files, checks sizes before allocating and never
unpickles. Every problem is a ``DataError`` naming the file and the problem (row and column too).
CSV is read as people write it: comma, tab or semicolon, a UTF-8 byte-order mark, CRLF, blank
lines, spaces, quotes, an optional header, and text labels in a single target column.
Under ``task="auto"`` targets are classes when they are text or true/false, or whole numbers that
look like labels: 2..100 distinct values forming a run 0..K-1 or 1..K, with at least 5 rows per
class. Anything else is values. ``Dataset.task_reason`` says which rule decided.
"""
import array
import collections
import csv
import itertools
import math
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from . import safeio

TASKS = ("auto", "classify", "regress")
FORMATS = (".npz", ".pt", ".csv", ".tsv")
MAX_AUTO_CLASSES = 100           # more distinct whole numbers than this are values (counts, prices, ages)
ROWS_PER_CLASS = 5               # fewer rows than this per class: whole numbers are more likely values
MAX_TEXT_LABELS = 10_000         # distinct text labels kept while reading a CSV (bounds the memory)
SNIFF_LINES = 50                 # lines that decide the delimiter


class DataError(ValueError):
    """A data file is missing, unreadable or unusable; the message names the file and the problem."""


@dataclass
class Dataset:
    """A loaded data set.

    x [N, D] float32 (float64 if the file's x was float64). y: int64 class indices [N] in 0..K-1
    (classify), float values [N, O] (regress), or None (no targets). ``class_names[i]`` is the
    original label of class index i (str for text labels, int for whole numbers).
    """
    x: torch.Tensor
    y: Optional[torch.Tensor]
    source: str
    task: Optional[str] = None
    task_reason: str = ""
    class_names: Optional[list] = None
    feature_names: Optional[list] = None

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


# a target column of labels that are not numbers: ``names`` sorted, ``codes`` (int64 [N]) index them
_Labels = collections.namedtuple("_Labels", "names codes")


def load_data(spec, *, target_cols=1, task="auto", need_y=True, features=None, class_names=None):
    """Load a ``Dataset`` from ``spec``: "digits" or a path to a .npz, .pt, .csv or .tsv file.

    - .npz: arrays ``x`` and ``y`` (``y`` may hold strings); .pt: a dict with tensors ``x`` and
      ``y`` (a zip-format ``torch.save`` file, loaded with ``weights_only=True``).
    - .csv/.tsv: the last ``target_cols`` columns are the targets, the others the features.
      With ``features`` given (the width a trained model expects), a file of exactly that many
      columns has no targets.
    - ``task``: "auto" (see the module's notes), "classify" (classes from one column of whole
      numbers or text) or "regress" (values).
    - ``class_names``: the classes a trained model knows; labels are encoded through exactly this
      list (the task is then classify), and a label not in it is an error.
    - x of more than two dimensions (images) is flattened to [N, D].

    Without ``need_y`` a file without targets is fine (``Dataset.y`` is None).
    """
    if task not in TASKS:
        raise ValueError(f"task: expected one of {', '.join(map(repr, TASKS))}, got {task!r}")
    if isinstance(target_cols, bool) or not isinstance(target_cols, int) or target_cols < 1:
        raise ValueError(f"target_cols: expected a positive integer, got {target_cols!r}")
    if class_names is not None:
        if task == "regress":
            raise ValueError("class_names: given for a classifier, but task is 'regress'")
        class_names = list(class_names)
    feature_names, text, row_name = None, False, "y[{}]".format
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
                x, y, feature_names, row_name = _load_csv(f, size, where, target_cols, features, ext == ".tsv")
                text = True
            else:
                arrays = (safeio.read_npz_arrays if ext == ".npz" else safeio.read_pt_dict)(f, where, DataError)
                x, y = _as_tensor(where, "x", arrays["x"]), _as_tensor(where, "y", arrays.get("y"))
    x = _tidy_x(where, x)
    if y is None:
        if need_y:
            raise DataError(f"{where}: has no targets 'y'")
        return Dataset(x, None, source, None, "the data has no targets", None, feature_names)
    y = _tidy_y(where, x, y)
    y, task, reason, names = _decide(where, y, task, class_names, row_name, text)
    return Dataset(x, y, source, task, reason, names, feature_names)


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
    if value is None or isinstance(value, torch.Tensor) and not (name == "y" and value.dtype == torch.bool):
        return value if value is None else value.detach().cpu()
    try:
        array_ = np.asarray(value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value)
    except (TypeError, ValueError) as e:     # a ragged list, say
        raise DataError(f"{where}: {name!r} is not an array ({safeio._first_line(e)})") from None
    if name == "y" and array_.dtype.kind in "USb":
        array_ = array_[:, 0] if array_.ndim == 2 and array_.shape[1] == 1 else array_
        if array_.ndim != 1:
            raise DataError(f"{where}: 'y' of labels must be one column, got shape {array_.shape}")
        uniq, codes = np.unique(array_, return_inverse=True)
        try:
            names = [v.decode("utf-8") if isinstance(v, bytes) else v for v in uniq.tolist()]
        except UnicodeDecodeError:
            raise DataError(f"{where}: 'y' holds byte strings that are not UTF-8 text") from None
        return _Labels(names, torch.from_numpy(codes.reshape(-1).astype(np.int64)))
    if array_.dtype == object or array_.dtype.kind not in "biuf":
        raise DataError(f"{where}: {name!r} is not a numeric array (dtype {array_.dtype})")
    if array_.dtype.kind == "u" and array_.dtype.itemsize > 1:   # torch has few ops for uint16..uint64
        array_ = array_.astype(np.int64 if array_.dtype.itemsize < 8 else np.float64)
    return torch.from_numpy(np.ascontiguousarray(array_))


def _tidy_x(where, x):
    if x.dim() == 0 or x.shape[0] == 0:
        raise DataError(f"{where}: 'x' has no rows (shape {tuple(x.shape)})")
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
    if t.is_floating_point():
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            first = int(bad.reshape(-1).nonzero()[0])
            index = np.unravel_index(first, tuple(t.shape))
            value = float(t.reshape(-1)[first])
            raise DataError(f"{where}: {name!r} has NaN or Inf values: {value} at {name}[{', '.join(map(str, index))}]")


def _preview(names, limit=10):
    shown = ", ".join(map(repr, names[:limit]))
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _values(y, text):
    """Regression targets [N, O]: float64 stays float64 (unless read from text), the rest float32."""
    y = y.reshape(y.shape[0], -1)
    return y if y.dtype == torch.float64 and not text else y.to(torch.float32)


def _decide(where, y, task, class_names, row_name, text):
    """(y, task, reason, class_names): the targets as classes or values, and why."""
    if class_names is not None:
        return _encode(where, y, class_names, row_name)
    if isinstance(y, _Labels):
        if task == "regress":
            raise DataError(f"{where}: task 'regress' needs numbers, but the target column holds labels such as "
                            f"{y.names[-1]!r}")
        kind = "true/false values" if all(isinstance(n, bool) for n in y.names) else "text labels"
        given = "--task classify given: " if task == "classify" else ""
        return y.codes, "classify", (f"{given}target column holds {kind} ({len(y.names)} distinct: "
                                     f"{_preview(y.names)}): classes (labels cannot be values)"), y.names
    if task == "regress":
        return _values(y, text), "regress", "--task regress given: the targets are values", None
    if y.dim() == 2:
        if task == "classify":
            raise DataError(f"{where}: task 'classify' needs one target column of labels, got {y.shape[1]} columns")
        return _values(y, text), "regress", (f"{y.shape[1]} target columns: values, one per output "
                                             f"(classes need a single target column)"), None
    fraction = (y != y.round()) if y.is_floating_point() else None
    if fraction is not None and bool(fraction.any()):
        first = int(fraction.nonzero()[0])
        example = f"{float(y[first]):g} in {row_name(first)}"
        if task == "classify":
            raise DataError(f"{where}: task 'classify' needs whole-number or text labels, but the target column "
                            f"holds {example}")
        return _values(y, text), "regress", (f"target column holds numbers with fractions ({example}): values "
                                             f"(fractions cannot be classes)"), None
    uniq, codes = torch.unique(y, sorted=True, return_inverse=True)
    names = [int(v) for v in uniq.tolist()]
    k, n = len(names), y.shape[0]
    span = f"{names[0]}..{names[-1]}"
    if task == "classify":
        return codes.long(), "classify", f"--task classify given: the {k} distinct values in {span} are classes", names
    failed = None     # the first rule whole numbers break to be read as classes
    if k < 2:
        failed = f"a single value {names[0]}"
    elif k > MAX_AUTO_CLASSES:
        failed = f"{k} distinct whole numbers (more than {MAX_AUTO_CLASSES} classes)"
    elif names[-1] - names[0] + 1 != k:
        failed = f"{k} distinct whole numbers {span} with gaps (classes are a run 0..K-1 or 1..K)"
    elif names[0] not in (0, 1):
        failed = f"whole numbers {span}, not starting at 0 or 1"
    elif n < ROWS_PER_CLASS * k:
        failed = (f"{k} whole-number values {span} but only {n} rows (classes need at least {ROWS_PER_CLASS} "
                  f"rows each, {ROWS_PER_CLASS * k} in all)")
    if failed:
        return _values(y, text), "regress", f"target column holds {failed}: values (--task classify to override)", None
    return codes.long(), "classify", (f"target column holds {k} whole-number values {span} in {n} rows (at least "
                                      f"{ROWS_PER_CLASS} per class): classes (--task regress to override)"), names


def _key(label):
    return ("text", label) if isinstance(label, str) else ("number", float(label))


def _encode(where, y, class_names, row_name):
    """Class indices through exactly ``class_names`` (a trained model's classes)."""
    lookup = {}
    for i, name in enumerate(class_names):
        lookup.setdefault(_key(name), i)
    if isinstance(y, _Labels):
        labels, codes = y.names, y.codes
    else:
        if y.dim() == 2:
            raise DataError(f"{where}: the model classifies, so the data needs one target column, got {y.shape[1]}")
        uniq, codes = torch.unique(y, sorted=True, return_inverse=True)
        labels = [int(v) if float(v).is_integer() else v for v in uniq.tolist()]
    mapping = []
    for j, label in enumerate(labels):
        index = lookup.get(_key(label))
        if index is None and isinstance(label, str) and safeio.number(label) is not None:
            index = lookup.get(_key(safeio.number(label)))    # "2" in a text column names the class 2
        elif index is None and not isinstance(label, str):
            index = lookup.get(_key(str(label)))         # 2 names the text class "2"
        if index is None:
            row = row_name(int((codes == j).nonzero()[0]))
            raise DataError(f"{where}: label {label!r} ({row}) is not one of the model's {len(class_names)} classes: "
                            f"{_preview(class_names, 20)}")
        mapping.append(index)
    y = torch.tensor(mapping, dtype=torch.int64)[codes.long()]
    return y, "classify", f"the model's {len(class_names)} classes ({_preview(class_names)}) encode the labels", \
        list(class_names)


# ---------------------------------------------------------------------------------------------
# CSV


def _load_csv(f, size, where, target_cols, features, tsv):
    """(x float32, y float64 [N, T] or _Labels or None, header names of x or None, row_name)."""
    # at least 2 bytes per number ("1,"), 8 bytes each as float64
    safeio.check_budget(where, f"a {safeio.human(size)} CSV (up to {size // 2 + 1} numbers)", (size // 2 + 1) * 8,
                        DataError)
    lines = safeio.text_lines(f, where, DataError)
    sample = list(itertools.islice(lines, SNIFF_LINES))
    delimiter = "\t" if tsv else safeio.sniff_delimiter(sample)
    reader = csv.reader(itertools.chain(sample, lines), delimiter=delimiter, skipinitialspace=True)
    feats, targets, line_of, codes = array.array("d"), array.array("d"), array.array("q"), array.array("q")
    first, labels, has_text = None, {}, False
    try:
        for row in reader:
            cells = [c.strip() for c in row]
            if not any(cells):
                continue
            line = reader.line_num
            if first is None:
                first, width = cells, len(cells)
                n_targets = 0 if features is not None and width == features else target_cols
                if width <= n_targets:
                    raise DataError(f"{where}: has {width} columns; expected at least one feature column before "
                                    f"the last {n_targets} target column(s)")
                n_x = width - n_targets
                numbers = [math.nan if v is None else v for v in map(safeio.number, cells)]
                feats.extend(numbers[:n_x])
                targets.extend(numbers[n_x:])
                codes.append(-1)
                line_of.append(line)
                continue
            if len(cells) != width:
                raise DataError(f"{where}: row {line} has {len(cells)} columns, expected {width} (as in the first row)")
            try:
                feats.extend(map(float, cells[:n_x]))
                if n_targets > 1:
                    targets.extend(map(float, cells[n_x:]))
            except ValueError:
                _bad_cell(where, line, cells, first, n_x, n_targets)
            if n_targets == 1:
                cell = cells[-1]
                if not cell:
                    raise DataError(f"{where}: row {line}, column {width}{_name(first, width - 1)}: the target is empty")
                value = safeio.number(cell)
                targets.append(math.nan if value is None else value)
                has_text = has_text or value is None
                if labels is not None:
                    codes.append(labels.setdefault(cell, len(labels)))
                    if len(labels) > MAX_TEXT_LABELS:
                        labels = None    # numbers so far: values, most likely; text from here on is refused
                if labels is None and has_text:
                    raise DataError(f"{where}: the target column holds more than {MAX_TEXT_LABELS} distinct labels "
                                    f"(by row {line}); too many to be classes")
            line_of.append(line)
    except csv.Error as e:
        raise DataError(f"{where}: not a readable CSV text file: row {reader.line_num}: {e}") from None
    if first is None:
        raise DataError(f"{where}: is empty (expected numeric rows)")
    # a header: some column that holds numbers in every other row has a non-number in the first
    header = any(safeio.number(c) is None and not (has_text and i == width - 1) for i, c in enumerate(first))
    n = len(line_of) - header
    if n == 0:
        raise DataError(f"{where}: has a header but no data rows")
    if has_text and not header:
        codes[0] = labels.setdefault(first[-1], len(labels))
    lines = np.frombuffer(line_of, dtype=np.int64)[int(header):]
    x64 = np.frombuffer(feats, dtype=np.float64).reshape(-1, n_x)[int(header):]
    header_row = first if header else None
    x = _float32(where, x64, lines, 0, header_row)
    y = None
    if n_targets and has_text:    # codes count up in the dict's order: remap them to the sorted labels' ranks
        rank = {label: i for i, label in enumerate(sorted(labels))}
        remap = np.array([rank[label] for label in labels], dtype=np.int64)
        y = _Labels(sorted(labels), torch.from_numpy(remap[np.frombuffer(codes, dtype=np.int64)[int(header):]]))
    elif n_targets:
        t64 = np.frombuffer(targets, dtype=np.float64).reshape(-1, n_targets)[int(header):]
        _float32(where, t64, lines, n_x, header_row)
        y = torch.from_numpy(t64.copy())
    return x, y, (first[:n_x] if header else None), lambda i: f"row {int(lines[i])}"


def _name(header, column):
    """`` ('name')`` for a column whose first-row cell is text (a header), else ''."""
    return f" ({header[column]!r})" if header and safeio.number(header[column]) is None else ""


def _bad_cell(where, line, cells, first, n_x, n_targets):
    for column, cell in enumerate(cells[:n_x] + (cells[n_x:] if n_targets > 1 else [])):
        if safeio.number(cell) is None:
            break
    hint = ""
    if column >= n_x:
        hint = " (text labels need a single target column)"
    elif "," in cell and safeio.number(cell.replace(",", ".")) is not None:
        hint = " (decimal commas are not read: write 1.5, not 1,5)"
    elif n_targets:
        hint = " (text is allowed only in the target column, the last)"
    raise DataError(f"{where}: row {line}, column {column + 1}{_name(first, column)}: expected a number, "
                    f"got {cell!r}{hint}")


def _float32(where, table, lines, offset, header):
    def place(i, j):
        return f"row {int(lines[i])}, column {offset + j + 1}{_name(header, offset + j)}"
    return torch.from_numpy(safeio.float32_table(table, where, place, DataError))
