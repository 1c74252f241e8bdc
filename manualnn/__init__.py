"""manualnn: small ReLU networks trained with hand-written gradients.

The hot path runs as fused Triton kernels on NVIDIA GPUs and as plain PyTorch ops elsewhere.
"""
__version__ = "0.1.0"

from .backends import BackendUnavailableError  # noqa: E402
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402
from .data import seed_data  # noqa: E402
from .model import MLP, TwoLayerNet  # noqa: E402
from .reference import reference_loop, relu_loop, tutorial_loop  # noqa: E402
from .trainer import NonFiniteLossError, Trainer, TrainResult, train  # noqa: E402

__all__ = [
    "train", "Trainer", "TrainResult", "NonFiniteLossError", "BackendUnavailableError",
    "MLP", "TwoLayerNet", "seed_data", "save_checkpoint", "load_checkpoint", "Checkpoint",
    "CheckpointError", "reference_loop", "relu_loop", "tutorial_loop",
]
