"""manualnn: small ReLU networks trained with hand-written gradients.

The hot path runs as fused Triton kernels on NVIDIA GPUs and as plain PyTorch ops elsewhere.

Which defaults each entry point trains with: ``MLPClassifier``/``MLPRegressor`` (scikit-learn
estimators) and ``MLP.fit`` take ``manualnn train --data``'s (Adam, lr 3e-3, mean loss over batches of
200, cross-entropy for labels, standardized features, early stopping); ``train`` and ``Trainer`` take
tensors and, unless told otherwise, the seed's step (SGD, lr 1e-6, sum of squares summed over the batch).
Names are imported on first use, so ``import manualnn`` (and the command line's start, which
a Ctrl-C may interrupt) does not wait for torch until something needs it.
"""
import os as _os
import sys as _sys
from importlib import import_module as _import_module

__version__ = "0.1.0"

# An OpenMP thread that has done its share of a parallel op spins (libgomp's default: 300,000 rounds) before
# it sleeps. While a run steps on one thread because another process keeps a core busy, those spins take CPU
# from the run: `manualnn train --data digits` with one busy process on 2 cores took 0.28 s of training,
# against 0.22 s with --threads 1. With 10,000 rounds: 0.23 s against 0.23 s, and idle 0.18 s as before (a
# step's next op still finds the threads awake). libgomp reads this once, when torch loads it, so it applies
# where manualnn is imported before torch (the command line, a script that starts with it), and never over
# the user's own GOMP_SPINCOUNT or OMP_WAIT_POLICY.
if "torch" not in _sys.modules and not {"GOMP_SPINCOUNT", "OMP_WAIT_POLICY"} & set(_os.environ):
    _os.environ["GOMP_SPINCOUNT"] = "10000"

_EXPORTS = {
    "train": "training", "Trainer": "training", "TrainResult": "training", "NonFiniteLossError": "training",
    "evaluate": "model", "Evaluation": "training", "StepSpec": "spec",
    "BackendUnavailableError": "backends",
    "MLP": "model", "TwoLayerNet": "model", "load": "model",
    "MLPClassifier": "estimators", "MLPRegressor": "estimators",
    "seed_data": "data", "load_data": "data", "init_weights": "data", "DataError": "data",
    "save_checkpoint": "checkpoint", "load_checkpoint": "checkpoint", "Checkpoint": "checkpoint",
    "CheckpointError": "checkpoint",
    "reference_loop": "reference", "relu_loop": "reference", "tutorial_loop": "reference",
    "minibatch_reference_loop": "reference", "reference_run": "reference",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'manualnn' has no attribute {name!r}")
    value = getattr(_import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
