"""A run with early stopping, interrupted and resumed, equals the uninterrupted run: the same stop, the
same kept epoch, the same weights (the Stopper's state travels in Trainer.state_dict and checkpoints)."""
import json

import pytest
import torch

import manualnn
from manualnn import load_checkpoint
from manualnn.cli import main


def blobs(seed=3):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(240) % 4
    x = torch.randn(4, 6, generator=g)[labels] + 1.5 * torch.randn(240, 6, generator=g)
    return x[:180], labels[:180], (x[180:], labels[180:])


def options(backend):
    return dict(bias=True, loss="ce", reduction="mean", optimizer="adam", lr=3e-3, batch_size=32, patience=4,
                backend=backend)


@pytest.mark.parametrize("backend", ["torch", "native"])
@pytest.mark.parametrize("cut", [3, 14])
def test_a_resumed_trainer_stops_where_the_whole_run_stops(backend, cut):
    x, y, val = blobs()
    w = manualnn.init_weights([6, 32, 4], "kaiming", generator=torch.Generator().manual_seed(0))
    whole = manualnn.Trainer(x, y, w, val_data=val, **options(backend))
    whole.run(200)
    assert whole.stopped_early and cut <= whole.best_epoch < whole.epoch - 1   # the cut falls inside the run
    first = manualnn.Trainer(x, y, w, val_data=val, **options(backend))
    first.run(cut)
    state = first.state_dict()
    again = manualnn.Trainer(x, y, w, val_data=val, **options(backend))
    again.load_state_dict(state)
    again.run(200 - cut)
    assert (again.epoch, again.best_epoch, again.stopped_early) == (whole.epoch, whole.best_epoch, True)
    assert again.losses == whole.losses and again.val_losses == whole.val_losses
    assert all(torch.equal(a, b) for a, b in zip(again.weights + again.biases, whole.weights + whole.biases))


def test_a_stopped_run_trains_no_further():
    x, y, val = blobs()
    w = manualnn.init_weights([6, 32, 4], "kaiming", generator=torch.Generator().manual_seed(0))
    trainer = manualnn.Trainer(x, y, w, val_data=val, **options("auto"))
    result = trainer.run(200)
    assert result.stopped_early and result.best_epoch == trainer.best_epoch
    assert result.val_losses[result.best_epoch - result.start_epoch] == min(trainer.val_losses)
    with pytest.raises(RuntimeError, match=r"stopped early at epoch \d+ \(patience 4\) and holds the weights of "
                                           r"epoch \d+; to train on, make a new Trainer"):
        trainer.run(5)


def test_the_command_line_resumes_the_data_defaults_exactly(capsys, tmp_path):
    """--data digits with its defaults (13 epochs of patience on a validation split): cut at epoch 16, resumed in
    place, the same lines, stop, kept epoch and checkpoint as one run."""
    def run(*argv):
        code = main(["train", "--data", "digits", "--seed", "0", "--device", "cpu", *argv])
        out, err = capsys.readouterr()
        assert code == 0, err
        return out, err

    whole, whole_err = run("--save", str(tmp_path / "whole.pt"), "--json", str(tmp_path / "whole.json"))
    part, _ = run("--epochs", "16", "--save", str(tmp_path / "part.pt"))
    rest, rest_err = run("--resume", str(tmp_path / "part.pt"), "--epochs", "200", "--save", str(tmp_path / "part.pt"),
                         "--json", str(tmp_path / "part.json"))
    assert part + rest == whole
    stop = [line for line in whole_err.splitlines() if "stopped at epoch" in line]
    assert stop and stop == [line for line in rest_err.splitlines() if "stopped at epoch" in line]
    a, b = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("whole", "part"))
    assert a["best_epoch"] == b["best_epoch"] and a["losses"] == b["losses"]
    ours, theirs = load_checkpoint(tmp_path / "part.pt"), load_checkpoint(tmp_path / "whole.pt")
    assert ours.epoch == theirs.epoch and ours.stopped_early and ours.best["epoch"] == a["best_epoch"]
    assert all(torch.equal(p, q) for p, q in zip(ours.weights + ours.biases, theirs.weights + theirs.biases))
    code = main(["train", "--resume", str(tmp_path / "part.pt"), "--epochs", "300"])
    assert code == 2 and "stopped early at epoch" in capsys.readouterr().err
