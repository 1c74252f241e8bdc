"""What a run refuses, or warns about, in one line, and what it no longer refuses wrongly: checkpoint
contents (huge numbers, a network its config misstates, missing optimizer state), options a float32
step cannot hold, an incomplete torchrun environment, memory blamed on the right option, a run that
saved untrained weights, overshot, or hid its last epoch's line; and --plot's figures.
"""
import json
import re

import numpy as np
import pytest
import torch

from test_cli import SMALL, run


def data_file(tmp_path, name="d.npz", rows=60):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, 4, generator=g)
    np.savez(tmp_path / name, x=x.numpy(), y=(x[:, 0] > 0).long().numpy())
    return tmp_path / name


def one_line_error(code, out, err, pattern):
    """Exit 2, one line saying what was wrong (after the data's note, for --data runs)."""
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and sum("error:" in line for line in lines) == 1, err
    assert re.search(pattern, lines[-1]) and "Traceback" not in err, err


def trained(capsys, tmp_path, *extra):
    d, ck = data_file(tmp_path), tmp_path / "run.pt"
    code, _, err = run(capsys, "train", "--data", str(d), "--epochs", "2", "--save", str(ck), "--device", "cpu", *extra)
    assert code == 0, err
    return d, ck


def edited(ck, change):
    """The checkpoint's raw state changed by ``change(state)``, written back (as a hostile file would be)."""
    state = torch.load(ck, weights_only=True)
    change(state)
    torch.save(state, ck)
    return ck


@pytest.mark.parametrize("field,value", [("lr", 10 ** 400), ("x_mean", [10 ** 400, 0.0, 0.0, 0.0])])
def test_numbers_too_large_for_a_float_in_a_checkpoints_config(capsys, tmp_path, field, value):
    """Item 8: OverflowError in predict and --resume."""
    d, ck = trained(capsys, tmp_path)
    edited(ck, lambda s: s["config"].__setitem__(field, value))
    for argv in (["predict", "--model", str(ck), "--data", str(d)],
                 ["train", "--resume", str(ck), "--epochs", "4", "--device", "cpu"]):
        one_line_error(*run(capsys, *argv), rf"checkpoint .*config field '{field}': expected")


def test_a_config_that_misstates_its_network_is_refused_before_sizing_the_run(capsys, tmp_path):
    """Item 12: hidden=[10**20] was blamed on --batch-size as a run too large for memory."""
    _, ck = trained(capsys, tmp_path, "--hidden", "9")
    edited(ck, lambda s: s["config"].__setitem__("hidden", [10 ** 20]))
    one_line_error(*run(capsys, "train", "--resume", str(ck), "--epochs", "4", "--device", "cpu"),
                   r"--resume: checkpoint .*: config field 'hidden': says \[100000000000000000000\], but its weights "
                   r"hold \[9\]")


def test_an_adam_run_without_its_optimizer_state_is_not_resumed(capsys, tmp_path):
    """Item 13: 'optimizer: {}' for an Adam run silently restarted Adam."""
    _, ck = trained(capsys, tmp_path)
    edited(ck, lambda s: s.__setitem__("optimizer", {}))
    one_line_error(*run(capsys, "train", "--resume", str(ck), "--epochs", "4", "--device", "cpu"),
                   r"--resume: checkpoint .*: field 'optimizer': holds no 'step', which adam needs")


@pytest.mark.parametrize("argv,pattern", [
    (["--optimizer", "sgd", "--lr", "1e39"], r"--lr: expected at most 1.7e\+38 in a float32 run, got 1e\+39"),
    (["--optimizer", "momentum", "--lr", "1e39"], r"--lr: expected at most"),
    (["--weight-decay", "1e39"], r"--weight-decay: expected at most 3.4e\+38 in a float32 run"),
    (["--optimizer", "sgd", "--lr", "1e20", "--weight-decay", "1e20"], r"--weight-decay: --lr times --weight-decay"),
])
def test_step_sizes_a_float32_run_cannot_hold(capsys, tmp_path, argv, pattern):
    """Item 10: "value cannot be converted to type float without overflow"."""
    one_line_error(*run(capsys, "train", "--data", str(data_file(tmp_path)), "--device", "cpu", *argv), pattern)


def test_an_incomplete_torchrun_environment(capsys, monkeypatch):
    """Item 10: RANK=0 WORLD_SIZE=1 without MASTER_ADDR was a ValueError."""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    one_line_error(*run(capsys, "train", *SMALL, "--epochs", "1"),
                   r"RANK and WORLD_SIZE are set, as torchrun sets them, but the ranks cannot meet: .*MASTER_ADDR")


@pytest.mark.parametrize("argv,option", [
    (["--features", "3000000000"], "--features"),          # was blamed on --hidden
    (["--data", "{d}", "--hidden", "1000000000"], "--hidden"),   # was blamed on --batch-size
    (["--batch", "100000000"], "--batch"),
])
def test_memory_is_blamed_on_the_option_that_needs_it(capsys, tmp_path, argv, option):
    argv = [a.format(d=data_file(tmp_path)) for a in argv]
    one_line_error(*run(capsys, "train", "--device", "cpu", *argv), rf"^manualnn train: error: {option}: this run "
                                                                     rf"needs about .* of memory")


def test_a_batch_larger_than_the_data_is_the_data(capsys, tmp_path):
    """Item 12: --batch-size 100000000 on 60 rows was refused as needing 618 GB."""
    code, _, err = run(capsys, "train", "--data", str(data_file(tmp_path)), "--batch-size", "100000000",
                       "--epochs", "1", "--device", "cpu")
    assert code == 0, err


def test_no_checkpoint_of_untrained_weights(capsys, tmp_path, monkeypatch):
    """Issue 22, item 10: a checkpoint saved after 0 epochs predicted at chance with no word; and it
    replaced the good checkpoint there."""
    import os
    import signal

    from manualnn.training.epoch import EpochRunner
    d, ck = trained(capsys, tmp_path)
    good = ck.read_bytes()
    real = EpochRunner.run
    monkeypatch.setattr(EpochRunner, "run", lambda *a: (os.kill(os.getpid(), signal.SIGINT), real(*a))[1])
    # Ctrl-C as a terminal has it, even where the tests run as a background job (which ignores SIGINT)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code, out, err = run(capsys, "train", "--data", str(d), "--epochs", "5", "--save", str(ck), "--backend",
                             "torch", "--device", "cpu")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 130 and out == "", err
    assert f"--save: no epoch finished in this run, so nothing was written to {str(ck)!r}" in err
    assert "interrupted (Ctrl-C) after 0 epochs\n" in err and ck.read_bytes() == good


def test_predict_warns_about_a_checkpoint_of_untrained_weights(capsys, tmp_path):
    """Issue 22, item 10: such a checkpoint (written before this version, or by save_checkpoint) predicted at
    chance with no word."""
    from manualnn import load_checkpoint, save_checkpoint
    d, ck = trained(capsys, tmp_path)
    saved = load_checkpoint(ck)
    untrained = tmp_path / "untrained.pt"
    save_checkpoint(untrained, weights=saved.weights, biases=saved.biases, epoch=0, losses=[], config=saved.config)
    code, out, err = run(capsys, "predict", "--model", str(untrained), "--data", str(d))
    assert code == 0 and "was saved before any epoch of training finished: its weights are the untrained" in err
    code, out, err = run(capsys, "predict", "--model", str(ck), "--data", str(d))
    assert code == 0 and "untrained" not in err


def test_a_run_that_overshoots_says_so(capsys, tmp_path):
    """Issue 22, item 10: --lr 1e3 'succeeded' with losses near 3e8 and printed 'Val loss -0.0000'."""
    datasets = pytest.importorskip("sklearn.datasets")
    iris, js = datasets.load_iris(), tmp_path / "r.json"
    np.savez(tmp_path / "iris.npz", x=iris.data, y=iris.target)
    code, out, err = run(capsys, "train", "--data", str(tmp_path / "iris.npz"), "--lr", "1e3", "--seed", "0",
                         "--val-split", "0.2", "--json", str(js), "--device", "cpu")   # 150 rows: none by default
    rec = json.loads(js.read_text())
    assert code == 0 and -0.0 in rec["val_losses"] and "-0.0000" not in out + err, out + err
    assert re.search(r"warning: the training loss of epoch \d+ \(the weights kept\) is .* per sample, above the "
                     r"1.099 of guessing every class alike: the steps overshoot; try a smaller --lr", err), err
    assert rec["warning"].startswith("the training loss of epoch")


def test_the_last_epochs_line_is_printed_when_early_stopping_ends_the_run(capsys, tmp_path):
    """Issue 22, item 10: with --log-every and early stopping the last epoch's line was never printed."""
    code, out, err = run(capsys, "train", "--data", str(data_file(tmp_path)), "--patience", "2", "--epochs", "500",
                         "--log-every", "1000", "--seed", "0", "--device", "cpu")
    stopped = int(re.search(r"stopped at epoch (\d+)", err).group(1))
    assert code == 0 and [line.split(",")[0] for line in out.splitlines()] == ["Epoch:0", f"Epoch:{stopped}"], out


def test_the_plot_shows_losses_per_sample_named_and_the_kept_epoch(capsys, tmp_path, monkeypatch):
    """Issue 22, item 11: the loss panel divided an already averaged loss by the rows again, called
    cross-entropy "sum of squares", and its title's accuracy was not the kept epoch's."""
    pytest.importorskip("matplotlib")
    import matplotlib.figure
    figures, save = [], matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: (figures.append(fig), save(fig, *a, **k)))
    js, png = tmp_path / "r.json", tmp_path / "r.png"
    code, _, err = run(capsys, "train", "--data", str(data_file(tmp_path)), "--patience", "3", "--epochs", "500",
                       "--seed", "0", "--json", str(js), "--plot", str(png), "--device", "cpu")
    rec = json.loads(js.read_text())
    assert code == 0 and rec["best_epoch"] is not None and png.stat().st_size > 0, err
    losses, accuracy = figures[0].axes
    assert list(losses.lines[0].get_ydata()) == pytest.approx(rec["losses"])            # a mean loss: as it is
    assert list(losses.lines[1].get_ydata()) == pytest.approx(rec["val_losses"])
    assert losses.get_ylabel() == "loss per sample (cross-entropy)"
    kept = rec["best_epoch"]
    assert accuracy.get_title().startswith(f"kept epoch {kept}: {100 * rec['val_accuracies'][kept]:.2f}%")


def test_the_plot_of_a_summed_loss_divides_by_the_rows(capsys, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from manualnn import plot
    figures = []
    monkeypatch.setattr(plot, "atomic_open", lambda *a: (_ for _ in ()).throw(OSError("not written")))
    import matplotlib.figure
    monkeypatch.setattr(matplotlib.figure.Figure, "tight_layout", lambda fig: figures.append(fig))
    with pytest.raises(OSError):
        plot.write_training_plot(tmp_path / "p.png", {"losses": [8.0, 4.0]}, loss="sse", reduction="sum",
                                 train_rows=4)
    assert list(figures[0].axes[0].lines[0].get_ydata()) == [2.0, 1.0]
    assert figures[0].axes[0].get_ylabel() == "loss per sample (sum of squares)"


def test_predict_out_of_memory_advises_what_predict_has(capsys, tmp_path, monkeypatch):
    """Item 12: predict's out-of-memory advice named options predict does not have."""
    d, ck = trained(capsys, tmp_path)
    import manualnn.model

    def no_memory(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(manualnn.model.MLP, "outputs", no_memory)
    code, out, err = run(capsys, "predict", "--model", str(ck), "--data", str(d))
    assert code == 2 and err == "manualnn predict: error: out of memory (MemoryError); try fewer rows in --data\n", err
