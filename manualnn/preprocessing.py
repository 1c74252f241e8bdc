"""What a run learns about its data, kept with the model: feature statistics, target scale, class labels
and feature names.

The command line (``problem.py`` standardizes the training rows, ``manualnn predict`` applies a model)
and the API (``MLP.fit``, ``MLP.predict``, the scikit-learn estimators) use these same functions, so a
loaded model predicts from raw rows exactly as ``manualnn predict`` does. A checkpoint keeps them in its
config (``x_mean``, ``x_std``, ``y_mean``, ``y_std``, ``task_used``, ``class_names``, ``feature_names``);
``read_config`` checks them field by field, as a checkpoint is an untrusted file.
"""
import math
import numbers

import numpy as np
import torch

from .checks import all_finite
from .spec import TASKS_USED


def fit_standardizer(x):
    """Per-column mean and std of the training rows (a constant column's std is 1: it is only shifted)."""
    mean, std = x.double().mean(0), x.double().std(0, unbiased=False)
    if not bool(torch.isfinite(mean).all() and torch.isfinite(std).all()):
        # values near float64's limit (1e300) overflow the sums: the same statistics on columns scaled to [-1, 1]
        scale = x.double().abs().amax(0).clamp(min=torch.finfo(torch.float64).tiny)
        mean, std = (x.double() / scale).mean(0) * scale, (x.double() / scale).std(0, unbiased=False) * scale
    std = torch.where(std > 0, std, torch.ones_like(std))
    return mean.tolist(), std.tolist()


def standardize(x, mean, std):
    """(x - mean) / std, column by column, in x's dtype (mean, std: lists or tensors)."""
    as_x = lambda v: torch.as_tensor(v, dtype=x.dtype, device=x.device)  # noqa: E731
    return (x - as_x(mean)) / as_x(std)


def apply_features(x, config):
    """x with the training rows' feature statistics applied, as stored in a run's config."""
    return standardize(x, config["x_mean"], config["x_std"]) if x is not None and config.get("x_mean") else x


def unstandardize_targets(outputs, config):
    """A regression network's outputs in the targets' own units."""
    if not config.get("y_mean"):
        return outputs
    as_out = lambda v: torch.as_tensor(v, dtype=outputs.dtype, device=outputs.device)  # noqa: E731
    return outputs * as_out(config["y_std"]) + as_out(config["y_mean"])


# ---------------------------------------------------------------------------------------------
# Inputs as people pass them: torch tensors, numpy arrays, pandas frames, lists


def as_tensor(name, value, *, rows=None):
    """``value`` (tensor, numpy array, pandas DataFrame/Series or nested list of numbers) as a float tensor.

    float64 stays float64 (it is cast to the model's dtype after standardizing, as ``manualnn predict``
    does); other numbers (and true/false) become float32. Text or other non-numeric values are an error
    naming ``name``."""
    if isinstance(value, torch.Tensor):
        t = value.detach() if value.requires_grad else value
    else:
        array = np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value)
        if array.dtype.kind in "OUS":   # text that may hold numbers ("1.5"), or Python objects
            try:
                array = array.astype(np.float64)
            except (TypeError, ValueError):
                raise TypeError(f"{name}: expected numbers, got values such as {_first_non_number(array)!r}") from None
        if array.dtype.kind not in "biuf":
            raise TypeError(f"{name}: expected numbers, got an array of dtype {array.dtype}")
        array = np.ascontiguousarray(array)
        # a read-only array (np.load(..., mmap_mode="r"), a frozen buffer): copied, as torch cannot share memory
        # it may not write (it warns, and an op in place on it would fault)
        t = torch.from_numpy(array if array.flags.writeable else array.copy())
    if t.dtype not in (torch.float32, torch.float64):
        if t.is_complex():
            raise TypeError(f"{name}: expected real numbers, got dtype {t.dtype}")
        t = t.to(torch.float32)
    if rows is not None and (t.dim() == 0 or t.shape[0] != rows):
        raise ValueError(f"{name}: expected {rows} rows, got shape {tuple(t.shape)}")
    return t


def _first_non_number(array):
    for v in array.reshape(-1).tolist():
        try:
            float(v)
        except (TypeError, ValueError):
            return v
    return None


def column_names(x):
    """A pandas DataFrame's column names when they are all text, else None."""
    columns = getattr(x, "columns", None)
    if columns is None or not all(isinstance(c, str) for c in columns):
        return None
    return [str(c) for c in columns]


def check_width(name, t, width, kind="array"):
    """ValueError unless the tensor ``t`` is 2-D with ``width`` columns (rows of the model's input)."""
    if t.dim() != 2 or t.shape[1] != width:
        raise ValueError(f"{name}: expected a 2-D {kind} with {width} columns (the model's input width), got shape "
                         f"{tuple(t.shape)}" + (" (one sample? pass it as one row: x[None])" if t.dim() == 1 else ""))


def as_features(name, x, width):
    """x as a 2-D float tensor of ``width`` columns (a single row of ``width`` values is refused: say x[None])."""
    t = as_tensor(name, x)
    check_width(name, t, width)
    if t.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one row, got shape {tuple(t.shape)}")
    if not all_finite(t):
        raise ValueError(f"{name}: expected finite values, got NaN or Inf")
    return t


# ---------------------------------------------------------------------------------------------
# Class labels: the user's labels <-> class indices 0..K-1


def label_key(label):
    """A label's identity: 2, 2.0 and numpy's int64(2) are one class; the text "2" is another."""
    if isinstance(label, (str, np.str_)):
        return ("text", str(label))
    if isinstance(label, bytes):
        return ("text", label.decode("utf-8", "replace"))
    if isinstance(label, numbers.Number):
        return ("number", float(label))
    raise TypeError(f"expected class labels that are numbers or text, got {type(label).__name__} {label!r}")


def plain_label(label):
    """A label as a plain Python value a checkpoint can hold: str, bool or int (a whole float becomes an int)."""
    if isinstance(label, (str, np.str_, bytes)):
        return label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
    if isinstance(label, (bool, np.bool_)):
        return bool(label)
    if isinstance(label, numbers.Integral):
        return int(label)
    if isinstance(label, numbers.Real) and float(label).is_integer():
        return int(label)
    raise ValueError(f"expected class labels that are text or whole numbers, got {label!r}")


def label_array(name, y):
    """y (tensor, array, Series or list) as a 1-D numpy array of labels."""
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    array = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"{name}: expected one label per row (shape [N]), got shape {array.shape}")
    return array


def distinct_labels(name, y):
    """The sorted distinct labels of y (numbers before text), as plain Python values."""
    uniq = sorted({label_key(v): v for v in label_array(name, y).tolist()}.items())
    return [plain_label(v) for _, v in uniq]


def encode_labels(name, y, class_names):
    """y's labels as int64 class indices through ``class_names``; a label not among them is an error."""
    array = label_array(name, y)
    try:
        uniq, codes = np.unique(array, return_inverse=True)
    except TypeError:   # an object array mixing text and numbers: numpy cannot sort it
        uniq, codes = np.asarray(list(dict.fromkeys(array.tolist())), dtype=object), None
        codes = np.asarray([{label_key(u): i for i, u in enumerate(uniq)}[label_key(v)] for v in array.tolist()])
    lookup = {label_key(c): i for i, c in enumerate(class_names)}
    mapping = []
    for label in uniq.tolist():
        index = lookup.get(label_key(label))
        if index is None:
            shown = ", ".join(map(repr, class_names[:20])) + (", ..." if len(class_names) > 20 else "")
            raise ValueError(f"{name}: label {label!r} is not one of the model's {len(class_names)} classes: {shown}")
        mapping.append(index)
    return torch.as_tensor(np.asarray(mapping, dtype=np.int64)[codes.reshape(-1)])


def decode_labels(indices, class_names):
    """Class indices as the user's labels: an int64 tensor when every label is a number, else a numpy
    array of text (torch holds no strings)."""
    if class_names is None:
        return indices
    if all(isinstance(c, bool) for c in class_names):
        return torch.as_tensor(class_names, dtype=torch.bool, device=indices.device)[indices]
    if all(isinstance(c, numbers.Number) for c in class_names):
        return torch.as_tensor(class_names, dtype=torch.int64, device=indices.device)[indices]
    return np.asarray([str(c) for c in class_names])[indices.cpu().numpy()]


# ---------------------------------------------------------------------------------------------
# A checkpoint's config, read as untrusted


def _finite(v):
    """A real number (not a bool) that is finite as a float (10**400 is not: it does not fit)."""
    try:
        return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
    except OverflowError:
        return False


def read_config(config, features, outputs, fail):
    """The preprocessing fields of a checkpoint's config, checked against the network's widths.

    Returns {"x_mean", "x_std", "y_mean", "y_std", "task", "class_names", "feature_names"} (None where
    absent); ``fail(field, problem)`` raises for a bad field."""
    found = {}
    for key, width, of in (("x_mean", features, "feature"), ("x_std", features, "feature"),
                           ("y_mean", outputs, "output"), ("y_std", outputs, "output")):
        value = config.get(key)
        if value is None:
            found[key] = None
            continue
        if not (isinstance(value, list) and len(value) == width and all(_finite(v) for v in value)):
            some = isinstance(value, list) and len(value) == width   # the count is right: a value is not
            fail(key, f"expected {width} finite numbers (one per {of}), got {_describe(value)}"
                      + (", not all of them finite numbers" if some else ""))
        if key.endswith("std") and not all(v > 0 for v in value):
            fail(key, "expected positive numbers")
        found[key] = [float(v) for v in value]
    if (found["x_mean"] is None) != (found["x_std"] is None) or (found["y_mean"] is None) != (found["y_std"] is None):
        fail("x_std" if found["x_mean"] is not None or found["x_std"] is not None else "y_std",
             "a mean and a std come together; one of the pair is missing")
    names = config.get("class_names")
    if names is not None and not (isinstance(names, list) and len(names) == outputs
                                  and all(isinstance(c, (str, int)) for c in names)):
        fail("class_names", f"expected {outputs} labels (text or whole numbers, one per output), got {_describe(names)}")
    if names is not None and len({label_key(c) for c in names}) != len(names):
        fail("class_names", "expected distinct labels")
    features_named = config.get("feature_names")
    if features_named is not None and not (isinstance(features_named, list) and len(features_named) == features
                                           and all(isinstance(c, str) for c in features_named)):
        fail("feature_names", f"expected {features} names (one per feature column), got {_describe(features_named)}")
    task = config.get("task_used")
    if task is None:   # checkpoints written before task_used: classes mean classify; data without them, values
        task = "classify" if config.get("classes") or names else "regress" if config.get("data") else None
    elif task not in TASKS_USED:
        fail("task_used", f"expected one of {TASKS_USED}, got {task!r}")
    if task == "classify" and found["y_mean"] is not None:
        fail("y_mean", "a classifier has no target scale")
    found.update(task=task, class_names=list(names) if names is not None else None,
                 feature_names=list(features_named) if features_named is not None else None)
    return found


def _describe(value):
    return f"{len(value)} values" if isinstance(value, list) else repr(value)[:60]
