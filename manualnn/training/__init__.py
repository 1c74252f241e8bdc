"""Training: the Trainer and its loop (trainer.py), each epoch's batches and steps (epoch.py,
batches.py), CUDA graphs of whole chunks (graphs.py), the data-parallel step (parallel.py) and
scoring (metrics.py), early stopping (stopping.py), the CPU thread policy (threads.py) and what a
run returns (result.py)."""
from .batches import batch_order
from .metrics import Evaluation, evaluate
from .result import NonFiniteLossError, TrainResult
from .threads import cpu_threads
from .trainer import Trainer, train

__all__ = ["Evaluation", "NonFiniteLossError", "TrainResult", "Trainer", "batch_order", "cpu_threads", "evaluate",
           "train"]
