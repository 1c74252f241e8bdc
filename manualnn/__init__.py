"""manualnn: small ReLU networks trained with hand-written gradients.

The hot path runs as fused Triton kernels on NVIDIA GPUs and as plain PyTorch ops elsewhere.

Which defaults each entry point trains with: ``MLPClassifier``/``MLPRegressor`` (scikit-learn
estimators) and ``MLP.fit`` take ``manualnn train --data``'s (Adam, lr 3e-3, mean loss over batches of
200, cross-entropy for labels, standardized features, early stopping); ``train`` and ``Trainer`` take
tensors and, unless told otherwise, the seed's step (SGD, lr 1e-6, sum of squares summed over the batch).
Names are imported on first use, so ``import manualnn`` (and the command line's start, which
a Ctrl-C may interrupt) does not wait for torch until something needs it.
"""
from importlib import import_module as _import_module

__version__ = "0.1.0"

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
