"""Targets as classes or values: the rule ``task="auto"`` follows, and a trained model's classes.

Targets are classes when they are text or true/false, or whole numbers that look like labels: 2..100
distinct values forming a run 0..K-1 or 1..K, with at least 5 rows per class. Anything else is values.
The reason is returned with the decision, for the user to read.
"""
import collections

import numpy as np
import torch

from . import safeio

MAX_AUTO_CLASSES = 100           # more distinct whole numbers than this are values (counts, prices, ages)
ROWS_PER_CLASS = 5               # fewer rows than this per class: whole numbers are more likely values

# a target column of labels that are not numbers: ``names`` sorted, ``codes`` (int64 [N]) index them
Labels = collections.namedtuple("Labels", "names codes")


def _preview(names, limit=10):
    shown = ", ".join(map(repr, names[:limit]))
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _values(y, text):
    """Regression targets [N, O]: float64 stays float64 (unless read from text), the rest float32."""
    y = y.reshape(y.shape[0], -1)
    return y if y.dtype == torch.float64 and not text else y.to(torch.float32)


def _fractions(y):
    """Indexes of the values that are not whole numbers. In numpy for float32/64: torch's intra-op threads
    stalled up to 50 ms an op on the busy 2-core machine (200,000 rows, measured), numpy's one pass did not."""
    if y.dtype in (torch.float32, torch.float64):
        values = y.numpy()
        return np.flatnonzero(values != np.round(values))
    return torch.nonzero(y != y.round()).flatten().numpy() if y.is_floating_point() else []


def decide(where, y, task, class_names, row_name, text, exc):
    """(y, task, reason, class_names): the targets as classes or values, and why."""
    if class_names is not None:
        return _encode(where, y, class_names, row_name, exc)
    if isinstance(y, Labels):
        if task == "regress":
            raise exc(f"{where}: task 'regress' needs numbers, but the target column holds labels such as "
                      f"{y.names[-1]!r}")
        kind = "true/false values" if all(isinstance(n, bool) for n in y.names) else "text labels"
        given = "--task classify given: " if task == "classify" else ""
        return y.codes, "classify", (f"{given}target column holds {kind} ({len(y.names)} distinct: "
                                     f"{_preview(y.names)}): classes (labels cannot be values)"), y.names
    if task == "regress":
        return _values(y, text), "regress", "--task regress given: the targets are values", None
    if y.dim() == 2:
        if task == "classify":
            raise exc(f"{where}: task 'classify' needs one target column of labels, got {y.shape[1]} columns")
        return _values(y, text), "regress", (f"{y.shape[1]} target columns: values, one per output "
                                             f"(classes need a single target column)"), None
    fractions = _fractions(y)
    if len(fractions):
        first = int(fractions[0])
        example = f"{float(y[first]):g} in {row_name(first)}"
        if task == "classify":
            raise exc(f"{where}: task 'classify' needs whole-number or text labels, but the target column "
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


def _encode(where, y, class_names, row_name, exc):
    """Class indices through exactly ``class_names`` (a trained model's classes)."""
    lookup = {}
    for i, name in enumerate(class_names):
        lookup.setdefault(_key(name), i)
    if isinstance(y, Labels):
        labels, codes = y.names, y.codes
    else:
        if y.dim() == 2:
            raise exc(f"{where}: the model classifies, so the data needs one target column, got {y.shape[1]}")
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
            raise exc(f"{where}: label {label!r} ({row}) is not one of the model's {len(class_names)} classes: "
                      f"{_preview(class_names, 20)}")
        mapping.append(index)
    y = torch.tensor(mapping, dtype=torch.int64)[codes.long()]
    return y, "classify", f"the model's {len(class_names)} classes ({_preview(class_names)}) encode the labels", \
        list(class_names)
