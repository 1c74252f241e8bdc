"""What a Trainer's run returns (a TrainResult) and what its checkpoint holds, and how a Trainer takes
that back: weights, biases, optimizer state, epoch, histories and early stopping's state (so a resumed run
stops where the uninterrupted one does)."""
import torch

from .result import TrainResult


def result_of(trainer, start_epoch, seconds):
    """The TrainResult of a run that began at ``start_epoch``: its epochs' figures and copies of the weights."""
    h, params = trainer.history, trainer.params
    tail = lambda key: h[key][start_epoch:]  # noqa: E731
    biases = params.biases
    return TrainResult(losses=tail("losses"), weights=[w.clone() for w in params.weights],
                       biases=None if biases is None else [b.clone() for b in biases],
                       backend=trainer.backend_name, seconds=seconds, start_epoch=start_epoch,
                       val_losses=tail("val_losses"), val_accuracies=tail("val_accuracies"),
                       val_rmse=tail("val_rmse"), val_r2=tail("val_r2"),
                       best_epoch=trainer.best_epoch, stopped_early=trainer.stopped_early)


def trainer_state(trainer):
    """``Trainer.state_dict()``: everything on the CPU, the histories cut to the epochs done."""
    params, stopper = trainer.params, trainer.stopper
    biases = params.biases
    state = {"weights": [w.detach().cpu().clone() for w in params.weights],
             "biases": None if biases is None else [b.detach().cpu().clone() for b in biases],
             "optimizer": params.state_dict(), "epoch": trainer.epoch,
             **{key: list(values[:trainer.epoch]) for key, values in trainer.history.items()},
             "spec": trainer.spec, "batch_size": trainer.batch_size, "shuffle": trainer.shuffle,
             "shuffle_seed": trainer.shuffle_seed, "stopped_early": trainer.stopped_early, "best": None}
    if stopper is not None and stopper.best_epoch is not None:
        weights, biases = params.weights_of(stopper.snapshot)
        state["best"] = {"epoch": stopper.best_epoch, "loss": stopper.best_loss, "weights": weights,
                         "biases": biases, "optimizer": params.state_dict(stopper.snapshot)}
    return state


@torch.no_grad()
def load_trainer_state(trainer, state):
    """``Trainer.load_state_dict()``: the weights, biases and optimizer state copied in (and the best
    epoch's into early stopping's snapshot); epoch, histories and whether the run had stopped taken."""
    params, stopper = trainer.params, trainer.stopper
    params.load_weights(state["weights"], state.get("biases"))
    params.load_state_dict(state.get("optimizer") or {})
    best = state.get("best")
    if stopper is not None and best is not None:
        saved = params.snapshot()   # the best's tensors pass through the live ones, then back
        params.load_weights(best["weights"], best.get("biases"))
        params.load_state_dict(best.get("optimizer") or {})
        for s, t in zip(stopper.snapshot, params.all_tensors()):
            s.copy_(t)
        params.restore(saved)
        stopper.best.copy_(torch.tensor([float(best["epoch"]), float(best["loss"])], dtype=torch.float64))
    for key in trainer.history:
        trainer.history[key] = [float(v) for v in state.get(key, [])]
    trainer.epoch = int(state["epoch"])
    trainer.stopped_early = bool(state.get("stopped_early", False))
