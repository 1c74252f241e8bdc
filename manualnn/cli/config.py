"""A run's configuration: the options, the defaults of its kind of run, or a checkpoint's settings.

A resumed run keeps its checkpoint's settings (a conflicting option is an error); every value a
checkpoint brings is checked here before anything uses it, as a checkpoint is an untrusted file.
"""
import math
import numbers
import os
import secrets

from ..checkpoint import CheckpointError, as_float, load_checkpoint
from ..spec import BACKENDS, GRAD_MODES, LOSSES, OPTIMIZERS, PRECISIONS, REDUCTIONS, TASKS_USED
from .options import DATA_DEFAULTS, DTYPES, INITS, MISSING, SEED_DEFAULTS, SEED_MAX, SKLEARN_DATA_DEFAULTS, TASKS

STEP_KEYS = ("lr", "grad", "bias", "loss", "reduction", "optimizer", "momentum", "betas", "eps", "weight_decay")
# What a resumed run must share with the run that wrote the checkpoint.
SEED_IDENTITY = ("batch", "features", "hidden", "out", "dtype", "seed", "init", "batch_size", "shuffle", "val_split",
                 "backend", "precision") + STEP_KEYS
DATA_IDENTITY = ("hidden", "dtype", "seed", "init", "batch_size", "shuffle", "val_split", "target_cols", "task",
                 "standardize", "backend", "precision", "target", "ignore", "id", "missing") + STEP_KEYS
# What older checkpoints ran with, by the settings added since (0.1: the seed problem only).
LEGACY_DEFAULTS = {"init": "randn", "batch_size": None, "shuffle": True, "val_split": 0.0, "backend": "auto",
                   "precision": "ieee"}
DATA_LEGACY = {"target": None, "ignore": None, "id": None, "missing": "refuse"}   # the file options added since
STEP_LEGACY = {"bias": False, "loss": "sse", "reduction": "sum", "optimizer": "sgd", "momentum": 0.9,
               "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}


class UsageError(Exception):
    """A mistake in the options, the data or a file: one line for the user, exit status 2."""


def option_name(key):
    return "--no-shuffle" if key == "shuffle" else "--" + key.replace("_", "-")


def run_config(args):
    """The run's identity: the options, or with --resume the checkpoint's (conflicts are errors).
    Returns (config, checkpoint or None)."""
    config, checkpoint = {}, None
    keys = set(SEED_IDENTITY) | set(DATA_IDENTITY) | {"epochs", "patience"}
    given = {key: getattr(args, key, None) for key in keys}
    given["shuffle"] = False if args.no_shuffle else None
    if args.resume:
        try:
            checkpoint = load_checkpoint(args.resume)
        except CheckpointError as e:
            raise UsageError(f"--resume: {e}") from None
        config = dict(checkpoint.config)
        if "seed" in config:
            for key, value in LEGACY_DEFAULTS.items():
                config.setdefault(key, value)
            for key, value in STEP_LEGACY.items():
                config.setdefault(key, value)
            for key, value in DATA_LEGACY.items() if config.get("data") is not None else ():
                config.setdefault(key, value)
        check_config(config, f"--resume: checkpoint {args.resume!r}")
        check_network(config, checkpoint, f"--resume: checkpoint {args.resume!r}")
        identity = DATA_IDENTITY if config.get("data") is not None else SEED_IDENTITY
        if config.get("data") is None and args.data is not None:
            raise UsageError("--data: the checkpoint's run trained the seed's random problem, not a data set; "
                             "a resumed run keeps its data")
        for key in identity:
            if key not in config:
                raise UsageError(f"--resume: checkpoint {args.resume!r} has no {key!r} in its config; "
                                 f"it was not written by this version of 'manualnn train'")
            mine = given[key]
            if key == "betas" and mine is not None:
                mine = list(mine)
            if mine is not None and mine != config[key]:
                raise UsageError(f"{option_name(key)}: the checkpoint's run used {config[key]!r}, got {mine!r}; "
                                 f"a resumed run keeps its settings")
    # a given --data may name the checkpoint's data at another path: the data's hash must still match
    data = args.data if args.data is not None else config.get("data")
    if args.data is None and data not in (None, "digits") and not os.path.lexists(data):
        relative = "" if os.path.isabs(data) else " (a path relative to the folder the training ran in)"
        raise UsageError(f"--data: the checkpoint's data file {data!r} is not here{relative}; give --data PATH "
                         f"where the file is now")
    if data is not None:
        for option in ("batch", "features", "out"):
            if getattr(args, option) is not None:
                raise UsageError(f"--{option}: sets the seed problem's random data; with --data the data "
                                 f"decides it (see --batch-size for the rows per step)")
        if args.target is not None and args.target_cols is not None:
            raise UsageError("--target-cols: give the targets by --target or by --target-cols, not both")
        defaults = SKLEARN_DATA_DEFAULTS if getattr(args, "sklearn_defaults", False) else DATA_DEFAULTS
        if getattr(args, "sklearn_defaults", False) and args.resume is None:
            config["sklearn_defaults"] = True   # data_settings() (problem.py) fills the L2 the scikit-learn way
    else:
        if getattr(args, "sklearn_defaults", False):
            raise UsageError("--sklearn-defaults: applies to --data only (the seed's run keeps the seed's settings)")
        for option in ("target_cols", "task", "standardize", "target", "ignore", "id", "missing"):
            if getattr(args, option) is not None:
                raise UsageError(f"{option_name(option)}: applies to --data only")
        defaults = SEED_DEFAULTS
    config["data"] = data
    for key, default in defaults.items():
        value = given.get(key) if key in given else getattr(args, key, None)
        if key == "betas" and value is not None:
            value = list(value)
        config[key] = value if value is not None else config.get(key, default)
    # (with --data, val_split, weight_decay and patience left at None follow from the data: problem.py fills them)
    config["backend"] = args.backend or config.get("backend", "auto")
    config["precision"] = args.precision or config.get("precision", "ieee")
    if config.get("seed") is None:
        config["seed"] = args.seed if args.seed is not None else secrets.randbits(63)
    # batches as even as the rows allow (training/batches.py): a checkpoint without this key is older, and
    # resume() says so where its batches were not (the run goes on with even ones, and says so from then on)
    config["batches"] = "even"
    return config, checkpoint


def _is_int(v, low=None):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and (low is None or v >= low)


def _is_num(v, low=None, high=None):
    v = as_float(v)   # None for a non-number, or an integer too large for a float (10**400)
    return v is not None and math.isfinite(v) and (low is None or v >= low) and (high is None or v <= high)


def _texts(v):
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _floats(v, length=None):
    return isinstance(v, list) and all(_is_num(x) for x in v) and (length is None or len(v) == length)


CHECKS = {   # key: (what it must be, test)
    "hidden": ("a list of positive integers (empty: no hidden layer)",
               lambda v: isinstance(v, list) and all(_is_int(x, 1) for x in v)),
    "lr": ("a positive number", lambda v: _is_num(v) and v > 0),
    "batches": ("'even' (the only batching there is: training/batches.py)", lambda v: v == "even"),
    "grad": (f"one of {GRAD_MODES}", lambda v: v in GRAD_MODES),
    "loss": (f"one of {LOSSES}", lambda v: v in LOSSES),
    "reduction": (f"one of {REDUCTIONS}", lambda v: v in REDUCTIONS),
    "optimizer": (f"one of {OPTIMIZERS}", lambda v: v in OPTIMIZERS),
    "momentum": ("a number in [0, 1)", lambda v: _is_num(v, 0) and v < 1),
    "betas": ("two numbers in [0, 1)", lambda v: _floats(v, 2) and all(0 <= b < 1 for b in v)),
    "eps": ("a positive number", lambda v: _is_num(v) and v > 0),
    "weight_decay": ("a number >= 0", lambda v: _is_num(v, 0)),
    "bias": ("true or false", lambda v: isinstance(v, bool)),
    "dtype": (f"one of {DTYPES}", lambda v: v in DTYPES),
    "init": (f"one of {INITS}", lambda v: v in INITS),
    "seed": ("an integer from 0 to 2**63-1", lambda v: _is_int(v, 0) and v <= SEED_MAX),
    "batch_size": ("a positive integer or null", lambda v: v is None or _is_int(v, 1)),
    "shuffle": ("true or false", lambda v: isinstance(v, bool)),
    "val_split": ("a number in [0, 1)", lambda v: _is_num(v, 0) and v < 1),
    "precision": (f"one of {PRECISIONS}", lambda v: v in PRECISIONS),
    "backend": ("a backend name", lambda v: v in BACKENDS),
    "batch": ("a positive integer", lambda v: _is_int(v, 1)),
    "features": ("a positive integer", lambda v: _is_int(v, 1)),
    "out": ("a positive integer", lambda v: _is_int(v, 1)),
    "epochs": ("a positive integer", lambda v: _is_int(v, 1)),
    "patience": ("a positive integer or null", lambda v: v is None or _is_int(v, 1)),
    "target_cols": ("a positive integer", lambda v: _is_int(v, 1)),
    "task": (f"one of {TASKS}", lambda v: v in TASKS),
    "task_used": ("classify or regress", lambda v: v in TASKS_USED),
    "standardize": ("true, false or null", lambda v: v is None or isinstance(v, bool)),
    "target": ("a list of column names or null", lambda v: v is None or _texts(v)),
    "ignore": ("a list of column names or null", lambda v: v is None or _texts(v)),
    "id": ("a column name or null", lambda v: v is None or isinstance(v, str)),
    "id_name": ("a column name or null", lambda v: v is None or isinstance(v, str)),
    "missing": (f"one of {MISSING}", lambda v: v in MISSING),
    "feature_names": ("a list of column names or null", lambda v: v is None or _texts(v)),
    "target_names": ("a list of column names or null", lambda v: v is None or _texts(v)),
    "data": ("a path or null", lambda v: v is None or isinstance(v, str)),
    "classes": ("a positive integer or null", lambda v: v is None or _is_int(v, 1)),
    "class_names": ("a list of class names or null",
                    lambda v: v is None or (isinstance(v, list) and all(isinstance(c, (str, int)) for c in v))),
}


def check_config(config, where):
    """Every setting a checkpoint brings has the type and range it needs; the statistics fit the data."""
    for key, (expected, ok) in CHECKS.items():
        if key in config and not ok(config[key]):
            raise UsageError(f"{where}: config field {key!r}: expected {expected}, got {config[key]!r}")
    features, out = config.get("features"), config.get("out")
    for key, length, of in (("x_mean", features, "features"), ("x_std", features, "features"),
                            ("fill_values", features, "features"),
                            ("y_mean", out, "outputs"), ("y_std", out, "outputs")):
        if key in config and not _floats(config[key], length):
            raise UsageError(f"{where}: config field {key!r}: expected {length} finite numbers (one per {of[:-1]}), "
                             f"got {_describe(config[key])}")
        if key.endswith("std") and key in config and not all(v > 0 for v in config[key]):
            raise UsageError(f"{where}: config field {key!r}: expected positive numbers")
    if config.get("standardize") and "features" in config and "x_mean" not in config and config.get("data"):
        raise UsageError(f"{where}: config says the features were standardized but holds no 'x_mean'/'x_std'")
    names = config.get("class_names")
    if names is not None and out is not None and len(names) != out:
        raise UsageError(f"{where}: config field 'class_names': expected {out} names (one per output), got {len(names)}")
    names = config.get("feature_names")
    if names is not None and features is not None and len(names) != features:
        raise UsageError(f"{where}: config field 'feature_names': expected {features} names (one per feature), got "
                         f"{len(names)}")


def check_network(config, checkpoint, where):
    """The config's network (features, hidden widths, outputs, biases) is the one its weights hold:
    the run is sized by the config before the weights are read (a wrong width there is refused here,
    not blamed on an option as a run that cannot fit in memory)."""
    weights = checkpoint.weights
    held = {"features": weights[0].shape[0], "hidden": [w.shape[1] for w in weights[:-1]],
            "out": weights[-1].shape[1], "bias": checkpoint.biases is not None}
    for key, value in held.items():
        if key in config and config[key] != value:
            raise UsageError(f"{where}: config field {key!r}: says {config[key]!r}, but its weights hold {value!r}")


def _describe(value):
    return f"{len(value)} values" if isinstance(value, list) else repr(value)[:60]


def resolve_device(name, option="--device"):
    """A torch.device from --device: auto, cpu, cuda or cuda:N, checked against this machine."""
    import torch
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"{option}: expected auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"{option}: manualnn trains on cpu or cuda devices, got {name!r}")
    if device.type == "cpu" and device.index is not None:
        raise UsageError(f"{option}: expected auto, cpu, cuda or cuda:N, got {name!r} (the CPU has no device index)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"{option}: {name!r} was asked for but no CUDA device is available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"{option}: {name!r} was asked for but there are {torch.cuda.device_count()} CUDA devices")
    return device
