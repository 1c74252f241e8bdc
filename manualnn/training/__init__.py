"""Training: the Trainer and its loop (trainer.py), each epoch's batches and steps (epoch.py,
batches.py), CUDA graphs of whole chunks (graphs.py), the data-parallel step (parallel.py) and
scoring (metrics.py)."""
from .batches import batch_order
from .metrics import Evaluation, evaluate
from .trainer import NonFiniteLossError, Trainer, TrainResult, cpu_threads, train

__all__ = ["Evaluation", "NonFiniteLossError", "TrainResult", "Trainer", "batch_order", "cpu_threads", "evaluate",
           "train"]
