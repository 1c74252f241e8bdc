"""The command line on a user's data: --data, mini-batches, validation, --plot, predict, and the
defects a new user met (unwritable outputs, broken pipes, Ctrl-C, odd devices, messages)."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import manualnn
from manualnn.backends.torch_backend import forward
from manualnn.cli import main
from manualnn.training import batch_order

from test_cli import LINE, SMALL, cli_env, losses_of, run

DATA_LINE = re.compile(r"^Epoch:(\d+), Loss:(-?\d+\.\d{4}), Val loss:(\d+\.\d{4})(, Val accuracy:(\d\.\d{4}))?$")


def blobs_csv(path, n=90, seed=0):
    """Three labelled blobs in 4 features, label in the last column, with a header row."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, 4, generator=g) * 3
    labels = torch.randint(0, 3, (n,), generator=g)
    x = centres[labels] + torch.randn(n, 4, generator=g)
    rows = ["f1,f2,f3,f4,label"] + [",".join(f"{v:.6f}" for v in row) + f",{int(c)}" for row, c in zip(x.tolist(), labels)]
    path.write_text("\n".join(rows) + "\n")
    return x, labels


def test_digits_default_run_reaches_98_percent(capsys, tmp_path):
    pytest.importorskip("sklearn")
    js = tmp_path / "r.json"
    code, out, err = run(capsys, "train", "--data", "digits", "--seed", "0", "--json", str(js), "--device", "cpu")
    assert code == 0, err
    lines = out.splitlines()
    assert 25 < len(lines) <= 200 and all(DATA_LINE.match(s) for s in lines), lines[:3]
    record = json.loads(js.read_text())
    assert len(record["val_accuracies"]) == len(record["val_losses"]) == len(lines)
    best = record["best_epoch"] if record["best_epoch"] is not None else len(lines) - 1   # the weights kept
    assert record["val_accuracies"][best] >= 0.98
    config = record["config"]
    assert config["hidden"] == [512] and config["batch_size"] == 200 and config["optimizer"] == "adam"
    assert config["loss"] == "ce" and config["reduction"] == "mean" and config["bias"] is True
    assert record["rows"] == {"train": 1438, "val": 359}
    assert "digits" in err and "classes" in err          # the task and its reason, on stderr


@pytest.mark.parametrize("grad", ["relu", "tutorial"])
def test_minibatch_in_order_equals_the_plain_loop(capsys, grad):
    code, out, _ = run(capsys, "train", "--seed", "1", "--batch", "96", "--batch-size", "32", "--no-shuffle",
                       "--epochs", "5", "--grad", grad, "--device", "cpu")
    assert code == 0
    x, y, w0 = manualnn.seed_data(1, batch=96)
    ref = manualnn.minibatch_reference_loop(x.double(), y.double(), [w.double() for w in w0], epochs=5, lr=1e-6,
                                            grad=grad, batch_size=32)
    # a plain loop written out here: batches in row order, the epoch's loss the sum of the batches'
    ws = [w.double() for w in w0]
    plain = []
    for _ in range(5):
        total = 0.0
        for s in range(0, 96, 32):
            xb, yb = x[s:s + 32].double(), y[s:s + 32].double()
            h_pre = xb @ ws[0]
            h = h_pre.clamp(min=0)
            diff = h @ ws[1] - yb
            total += float((diff ** 2).sum())
            grad_h = (2 * diff) @ ws[1].t()
            grad_h = grad_h * (h_pre > 0) if grad == "relu" else grad_h.clamp(min=0)
            g1, g0 = h.t() @ (2 * diff), xb.t() @ grad_h
            ws[1] -= 1e-6 * g1
            ws[0] -= 1e-6 * g0
        plain.append(total)
    assert ref.losses == pytest.approx(plain, rel=1e-12)
    for got, want in zip(losses_of(out), plain):
        assert abs(got - want) <= 1e-5 * abs(want) + 1e-4, (got, want)


def test_csv_classification_run_and_shuffled_resume(capsys, tmp_path):
    data = tmp_path / "blobs.csv"
    blobs_csv(data)
    args = ["train", "--data", str(data), "--hidden", "16", "--batch-size", "8", "--lr", "1e-2", "--seed", "4",
            "--val-split", "0.2", "--device", "cpu"]   # 90 rows: no validation split unless asked for
    code, whole, err = run(capsys, *args, "--epochs", "12")
    assert code == 0, err
    lines = whole.splitlines()
    assert len(lines) == 12 and all(DATA_LINE.match(s) for s in lines)
    assert float(DATA_LINE.match(lines[-1]).group(5)) >= 0.9           # well separated blobs are learnt
    ck = tmp_path / "ck.pt"
    code, first, _ = run(capsys, *args, "--epochs", "7", "--save", str(ck))
    code, rest, err = run(capsys, "train", "--resume", str(ck), "--epochs", "12", "--device", "cpu")
    assert code == 0, err
    assert first + rest == whole


def test_resuming_a_checkpoint_from_before_even_batches_says_what_changes(capsys, tmp_path):
    data = tmp_path / "blobs.csv"
    blobs_csv(data)   # 90 rows, 72 to train: by 10, older versions took 7 batches of 10 and one of 2; now 8 of 9
    ck = tmp_path / "ck.pt"
    args = ["--hidden", "16", "--batch-size", "10", "--lr", "1e-2", "--seed", "4", "--val-split", "0.2",
            "--device", "cpu"]
    code, _, err = run(capsys, "train", "--data", str(data), *args, "--epochs", "3", "--save", str(ck))
    assert code == 0, err
    state = torch.load(ck, weights_only=True)
    assert state["config"]["batches"] == "even"
    code, _, err = run(capsys, "train", "--resume", str(ck), "--epochs", "4", "--device", "cpu")
    assert code == 0 and "before batches were even" not in err, err
    del state["config"]["batches"]   # as a checkpoint of an older version holds it
    older = tmp_path / "older.pt"
    torch.save(state, older)
    code, _, err = run(capsys, "train", "--resume", str(older), "--epochs", "4", "--device", "cpu")
    assert code == 0, err
    assert "written before batches were even: its epochs took 7 batches of 10 rows and one of 2; from epoch 3 on " \
           "they take 8 of 9 rows" in " ".join(err.split())


def test_npz_regression_has_no_accuracy(capsys, tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 3, generator=g)
    y = torch.stack([x[:, 0] - x[:, 1], x[:, 2].abs()], 1)
    np.savez(tmp_path / "r.npz", x=x.numpy(), y=y.numpy())
    js = tmp_path / "r.json"
    code, out, err = run(capsys, "train", "--data", str(tmp_path / "r.npz"), "--epochs", "30", "--lr", "5e-4",
                         "--batch-size", "10", "--seed", "0", "--val-split", "0.2", "--json", str(js), "--device", "cpu")
    assert code == 0, err
    record = json.loads(js.read_text())
    assert record["val_accuracies"] == [] and len(record["val_losses"]) == 30
    assert record["losses"][-1] < record["losses"][0] / 10
    assert "Val accuracy" not in out


@pytest.mark.parametrize("argv,pattern", [
    (["--data", "nope.csv"], r"--data: data file 'nope.csv': no such file"),
    (["--data", "digits", "--batch", "10"], r"--batch: sets the seed problem's random data; with --data"),
    (["--target-cols", "2"], r"--target-cols: applies to --data only"),
    (["--seed", str(2 ** 64)], r"--seed: expected an integer from 0 to 2\*\*63-1"),
    (["--device", "meta"], r"--device: manualnn trains on cpu or cuda devices, got 'meta'"),
    (["--device", "mps"], r"--device: manualnn trains on cpu or cuda devices, got 'mps'"),
    (["--device", "gpu"], r"--device: expected auto, cpu, cuda or cuda:N, got 'gpu'"),
    (["--val-split", "1"], r"--val-split: expected a number in \[0, 1\), got '1'"),
])
def test_bad_options_exit_2_before_any_epoch(capsys, argv, pattern):
    try:
        code, out, err = run(capsys, "train", *argv)
    except SystemExit as e:      # argparse's own errors
        code, (out, err) = e.code, capsys.readouterr()
    assert code == 2 and out == ""
    assert re.search(pattern, err.replace("argument ", "")), err
    assert "Traceback" not in err


def test_bad_data_file_trains_nothing(capsys, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,3\n4,x,6\n")
    code, out, err = run(capsys, "train", "--data", str(bad), "--device", "cpu")
    assert code == 2 and out == ""
    assert "bad.csv': row 2, column 2: expected a number, got 'x'" in err
    few = tmp_path / "few.csv"
    few.write_text("1,2,0\n")
    code, out, err = run(capsys, "train", "--data", str(few), "--val-split", "0.2", "--device", "cpu")
    assert code == 2 and out == "" and "--val-split: 0.2 of 1 rows leaves" in err


@pytest.mark.parametrize("option", ["--json", "--save", "--plot"])
@pytest.mark.parametrize("where", ["missing-folder", "proc", "folder"])
def test_unwritable_outputs_fail_before_training(capsys, tmp_path, option, where):
    path = {"missing-folder": str(tmp_path / "no" / "such" / "f"), "proc": "/proc/manualnn-test/f",
            "folder": str(tmp_path)}[where]
    code, out, err = run(capsys, "train", *SMALL, "--epochs", "3", option, path)
    assert code == 2 and out == ""
    assert err.startswith(f"manualnn train: error: {option}: ") and "Traceback" not in err


def test_plot_is_written(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "p.png"
    code, _, err = run(capsys, "train", *SMALL, "--epochs", "4", "--seed", "1", "--val-split", "0.25",
                       "--plot", str(png))
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]


def test_plot_without_matplotlib_names_the_extra(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, out, err = run(capsys, "train", *SMALL, "--plot", str(tmp_path / "p.png"))
    assert code == 2 and out == ""
    assert 'pip install "manualnn[plot]"' in err


def test_help_states_each_default_once():
    proc = subprocess.run([sys.executable, "-m", "manualnn", "train", "--help"], capture_output=True, text=True,
                          env=cli_env(), timeout=60)
    assert proc.returncode == 0
    assert "(default: None)" not in proc.stdout
    blocks = re.split(r"\n  (?=-)", proc.stdout)       # one block per option
    assert len(blocks) > 20
    for block in blocks:
        assert block.count("default") <= 1, block
    for opt in ("--data", "--batch-size", "--no-shuffle", "--init", "--val-split", "--plot", "--target-cols"):
        assert opt in proc.stdout
    assert "130 interrupted" in proc.stdout


def test_resume_messages(capsys, tmp_path):
    ck = tmp_path / "ck.pt"
    run(capsys, "train", *SMALL, "--epochs", "5", "--seed", "5", "--save", str(ck))
    code, out, err = run(capsys, "train", "--resume", str(ck), "--device", "cpu")
    assert code == 2 and out == ""
    assert "--epochs: the checkpoint has done all 5 epochs of its run; give --epochs N with N above 5" in err
    assert "got 5" not in err
    code, _, err = run(capsys, "train", "--resume", str(ck), "--epochs", "9", "--backend", "triton", "--device", "cpu")
    assert code == 2 and "--backend: the checkpoint's run used 'auto', got 'triton'" in err
    code, _, err = run(capsys, "train", "--resume", str(ck), "--epochs", "9", "--precision", "tf32", "--device", "cpu")
    assert code == 2 and "--precision: the checkpoint's run used 'ieee', got 'tf32'" in err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(300))
    code, _, err = run(capsys, "train", "--resume", str(junk), "--device", "cpu")
    assert code == 2 and "not a readable manualnn checkpoint" in err and "weights_only" not in err


def test_predict_round_trip(capsys, tmp_path):
    data = tmp_path / "blobs.csv"
    x, labels = blobs_csv(data)
    model_path = tmp_path / "m.pt"
    code, _, err = run(capsys, "train", "--data", str(data), "--hidden", "16", "--epochs", "10", "--batch-size", "8",
                       "--lr", "1e-3", "--seed", "2", "--save", str(model_path), "--device", "cpu")
    assert code == 0, err
    model = manualnn.load(model_path)
    assert isinstance(model, manualnn.MLP) and model.sizes == [4, 16, 3] and model.config["data"] == str(data)
    # data files are standardized with the training rows' statistics, kept in the checkpoint
    assert model.config["standardize"] is True and len(model.config["x_mean"]) == 4
    # the loaded model applies them itself: it scores and predicts from raw rows
    ev = manualnn.evaluate(model, x, labels)
    code, out, err = run(capsys, "predict", "--model", str(model_path), "--data", str(data))
    assert code == 0, err
    assert out == f"Loss:{ev.loss:.4f}, Accuracy:{ev.accuracy:.4f} (90 samples)\n"
    # predictions to a file, from a CSV without targets
    features = tmp_path / "features.csv"
    features.write_text("\n".join(",".join(f"{v:.6f}" for v in row) for row in x.tolist()) + "\n")
    pred = tmp_path / "pred.csv"
    code, out, err = run(capsys, "predict", "--model", str(model_path), "--data", str(features), "--output", str(pred))
    assert code == 0 and out == "" and "wrote 90 predictions" in err
    rows = pred.read_text().splitlines()
    assert rows[0] == "class,prob_0,prob_1,prob_2" and len(rows) == 91      # trained with ce: probabilities
    raw = np.loadtxt(features, delimiter=",")
    assert [int(r.split(",")[0]) for r in rows[1:]] == model.predict(raw).tolist()
    probabilities = torch.tensor([[float(v) for v in r.split(",")[1:]] for r in rows[1:]], dtype=torch.float64)
    assert torch.allclose(probabilities, torch.as_tensor(model.predict_proba(raw), dtype=torch.float64), atol=1e-6)
    code, out, err = run(capsys, "predict", "--model", str(model_path), "--data", str(features))
    assert code == 2 and "has no targets to score against; give --output PATH" in err


@pytest.mark.parametrize("content", [b"", b"junk", None])
def test_predict_with_a_bad_model_file(capsys, tmp_path, content):
    path = tmp_path / "m.pt"
    if content is not None:
        path.write_bytes(content)
    code, out, err = run(capsys, "predict", "--model", str(path), "--data", "digits")
    assert code == 2 and out == "" and err.startswith("manualnn predict: error: --model: checkpoint")


def script():
    return os.path.join(os.path.dirname(sys.executable), "manualnn")


def test_broken_pipe_stops_with_one_line(tmp_path):
    proc = subprocess.Popen([script(), "train", *SMALL, "--epochs", "100000"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=cli_env(), cwd=tmp_path)
    first = [proc.stdout.readline() for _ in range(2)]
    proc.stdout.close()       # what '| head -2' does
    _, err = proc.communicate(timeout=120)
    assert all(LINE.match(line.decode().strip()) for line in first)
    assert proc.returncode == 141, err
    assert re.fullmatch(rb"manualnn train: interrupted \(stdout closed: its reader went away\) after \d+ epochs\n", err)


def test_ctrl_c_while_training_says_interrupted_and_exits_130(tmp_path):
    proc = subprocess.Popen([script(), "train", *SMALL, "--epochs", "1000000"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=cli_env(), cwd=tmp_path,   # (Ctrl-C as a terminal has it,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))   # even under 'pytest &')
    proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert re.fullmatch(r"manualnn train: interrupted \(Ctrl-C\) after \d+ epochs\n", err.decode())   # no --save


def test_ctrl_c_during_the_search_says_nothing_was_trained(tmp_path):
    # 180 rows of 1,500 features: the search (3-fold fits of the hidden layers and of no hidden layer) takes
    # about 1.5 s on 2 cores; the data's note comes just before it
    gen = np.random.default_rng(0)
    x = gen.normal(size=(180, 1500)).astype(np.float32)
    np.savez(tmp_path / "wide.npz", x=x, y=(x[:, :5].sum(1) + gen.normal(size=180)).astype(np.float32))
    save = tmp_path / "h.pt"
    proc = subprocess.Popen([script(), "train", "--data", "wide.npz", "--seed", "0", "--save", str(save)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env(), cwd=tmp_path,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    note = proc.stderr.readline().decode()
    assert "values" in note, note
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and out == b"", (out, err)
    assert err.decode() == ("manualnn train: interrupted before the first epoch (while reading the data or choosing "
                            "the network and its L2); nothing was trained and no file was written\n")
    assert not save.exists()


@pytest.mark.parametrize("delay", [0.2, 0.5])
def test_ctrl_c_during_start_up_has_no_traceback(tmp_path, delay):
    proc = subprocess.Popen([script(), "train"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env(),
                            cwd=tmp_path)
    time.sleep(delay)           # torch (and numpy inside it) are still importing
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert b"Traceback" not in err and b"interrupted" in err, err


def test_triton_interpreter_runs_on_a_plain_install(tmp_path):
    pytest.importorskip("triton")
    env = {**cli_env(), "TRITON_INTERPRET": "1"}
    proc = subprocess.run([script(), "train", *SMALL, "--epochs", "2", "--backend", "triton", "--seed", "0"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 2 and "numpy" not in proc.stderr.lower()


def test_standardize_uses_training_rows_and_can_be_turned_off(capsys, tmp_path):
    data = tmp_path / "blobs.csv"
    blobs_csv(data)
    on, off = tmp_path / "on.pt", tmp_path / "off.pt"
    common = ["train", "--data", str(data), "--epochs", "2", "--lr", "1e-4", "--seed", "3", "--val-split", "0.2",
              "--device", "cpu"]
    assert run(capsys, *common, "--save", str(on))[0] == 0
    assert run(capsys, *common, "--no-standardize", "--save", str(off))[0] == 0
    config = manualnn.load(on).config
    from manualnn.data import load_data, split
    d = load_data(data)
    x_train = split(d.x, d.y, 0.2, 3)[0]
    assert config["x_mean"] == pytest.approx(x_train.mean(0).tolist(), rel=1e-6)
    assert config["x_std"] == pytest.approx(x_train.std(0, unbiased=False).tolist(), rel=1e-6)
    assert manualnn.load(off).config["standardize"] is False and "x_mean" not in manualnn.load(off).config
    code, out, err = run(capsys, "train", "--standardize", "--device", "cpu")
    assert code == 2 and "--standardize: applies to --data only" in err


def test_the_cli_waits_for_the_device_per_chunk_not_per_epoch(capsys, monkeypatch):
    calls = []
    real_run = manualnn.Trainer.run

    def counted(self, epochs, **kw):
        calls.append(epochs)
        return real_run(self, epochs, **kw)

    monkeypatch.setattr(manualnn.Trainer, "run", counted)
    code, out, _ = run(capsys, "train", *SMALL, "--epochs", "400", "--seed", "0")
    assert code == 0 and len(out.splitlines()) == 400      # every epoch is still printed
    assert sum(calls) == 400 and len(calls) <= 12, calls    # chunks grow: 1, 4, 16, ...


def regression_csv(path, n=40, seed=0, zero_targets=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = torch.zeros(n) if zero_targets else x @ torch.tensor([0.5, 1.5, -1.0]) + 0.25
    path.write_text("\n".join(",".join(f"{v:.6f}" for v in row) + f",{t:.6f}" for row, t in zip(x.tolist(), y.tolist()))
                    + "\n")


def test_predict_scores_a_regression_model_as_regression(capsys, tmp_path):
    regression_csv(tmp_path / "reg.csv")
    regression_csv(tmp_path / "test.csv", seed=1, zero_targets=True)   # whole-number targets: 0s
    model = tmp_path / "reg.pt"
    code, _, err = run(capsys, "train", "--data", str(tmp_path / "reg.csv"), "--epochs", "3", "--seed", "0",
                       "--save", str(model), "--device", "cpu")
    assert code == 0, err
    code, out, err = run(capsys, "predict", "--model", str(model), "--data", str(tmp_path / "test.csv"))
    assert code == 0, err
    m = manualnn.load(model)
    from manualnn.data import load_data
    x = load_data(tmp_path / "test.csv", task="regress").x
    # the network learnt standardized targets: the model predicts in the targets' units, against the file's 0 targets
    mean, std = m.config["y_mean"][0], m.config["y_std"][0]
    assert torch.equal(m.predict(x), m.outputs(x))
    with torch.no_grad():   # the network's own outputs, in standardized units
        pred = forward(m.inputs(x), list(m.weights), list(m.biases))[:, 0].double()
    rmse = float((pred * std + mean).pow(2).mean().sqrt())
    loss = float(((pred - (0 - mean) / std) ** 2).mean())   # as trained: mean over rows, standardized
    assert out == f"Loss:{loss:.4f}, RMSE:{rmse:.4f}, R2:0.0000 (40 samples)\n"   # no accuracy for values


def test_resume_checks_the_data_itself_and_allows_a_moved_file(capsys, tmp_path):
    data = tmp_path / "blobs.csv"
    blobs_csv(data)
    ck = tmp_path / "ck.pt"
    args = ["--hidden", "8", "--batch-size", "16", "--seed", "2", "--device", "cpu"]
    _, whole, _ = run(capsys, "train", "--data", str(data), *args, "--epochs", "6")
    assert run(capsys, "train", "--data", str(data), *args, "--epochs", "3", "--save", str(ck))[0] == 0
    moved = tmp_path / "sub" / "moved.csv"
    moved.parent.mkdir()
    data.rename(moved)
    code, rest, err = run(capsys, "train", "--resume", str(ck), "--data", str(moved), "--epochs", "6",
                          "--device", "cpu")
    assert code == 0, err
    assert whole.splitlines()[:3] + rest.splitlines() == whole.splitlines()
    # the same rows in another order have the same sums, but are not the same data
    lines = moved.read_text().splitlines()
    moved.write_text("\n".join([lines[0]] + lines[1:][::-1]) + "\n")
    code, out, err = run(capsys, "train", "--resume", str(ck), "--data", str(moved), "--epochs", "6", "--device", "cpu")
    assert code == 2 and out == "" and "differs from the data the checkpoint was trained on" in err


def test_resume_of_a_seed_run_refuses_data(capsys, tmp_path):
    ck = tmp_path / "s.pt"
    assert run(capsys, "train", *SMALL, "--epochs", "2", "--seed", "1", "--save", str(ck))[0] == 0
    code, out, err = run(capsys, "train", "--resume", str(ck), "--epochs", "4", "--data", "digits", "--device", "cpu")
    assert code == 2 and out == "" and "--data: the checkpoint's run trained the seed's random problem" in err
    code, out, err = run(capsys, "train", "--resume", str(ck), "--epochs", "4", "--val-split", "0.5", "--device", "cpu")
    assert code == 2 and "--val-split: the checkpoint's run used 0.0, got 0.5" in err


def test_cli_errors_name_the_option(capsys, tmp_path):
    code, out, err = run(capsys, "train", *SMALL, "--lr", "0")
    assert code == 2 and err.startswith("manualnn train: error: argument --lr: expected a positive number")
    model = tmp_path / "m.pt"
    data = tmp_path / "blobs.csv"
    blobs_csv(data)
    run(capsys, "train", "--data", str(data), "--epochs", "1", "--seed", "0", "--save", str(model), "--device", "cpu")
    code, out, err = run(capsys, "predict", "--model", str(model), "--data", str(data), "--output",
                         str(tmp_path / "p.txt"))
    assert code == 2 and out == "" and "--output: expected a .csv, .npz or .pt path" in err   # before any scoring


# ---------------------------------------------------------------------------------------------
# Files as people save them: columns by name, an ID carried through, missing cells, predictions on stdout


def people_csv(path, n=60, seed=0, order=None, drop=None):
    """A pandas-style file: an ID, a free-text note, three features and a species, as a header names them."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 3, generator=g) + labels[:, None] * 2.0
    names = ["id", "note", "a", "b", "c", "species"]
    rows = [[f"p{i}", f"seen {i}, twice", f"{v[0]:.5f}", f"{v[1]:.5f}", f"{v[2]:.5f}", ["cat", "dog", "eel"][int(k)]]
            for i, (v, k) in enumerate(zip(x.tolist(), labels))]
    order = order or names
    order = [c for c in order if c != drop]
    lines = [",".join(order)] + [",".join(f'"{row[names.index(c)]}"' if c == "note" else row[names.index(c)]
                                          for c in order) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_columns_by_name_and_an_id_carried_to_predictions_on_stdout(capsys, tmp_path):
    data = people_csv(tmp_path / "train.csv")
    model = tmp_path / "m.pt"
    code, _, err = run(capsys, "train", "--data", str(data), "--target", "species", "--ignore", "note", "--id", "id",
                       "--epochs", "5", "--seed", "0", "--save", str(model), "--device", "cpu")
    assert code == 0, err
    config = manualnn.load(model).config
    assert config["feature_names"] == ["a", "b", "c"] and config["target_names"] == ["species"]
    assert config["id_name"] == "id" and config["class_names"] == ["cat", "dog", "eel"]
    # a file in another order, without the target: read by name, predictions with their IDs on stdout
    test = people_csv(tmp_path / "test.csv", seed=1, order=["c", "id", "b", "note", "a"], drop="species")
    code, out, err = run(capsys, "predict", "--model", str(model), "--data", str(test), "--output", "-")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "id,class,prob_cat,prob_dog,prob_eel" and len(lines) == 61 and lines[1].startswith("p0,")
    assert "another order than the training file's; read by name" in err and "wrote 60 predictions to stdout" in err
    probabilities = np.array([[float(v) for v in line.split(",")[2:]] for line in lines[1:]])
    assert np.allclose(probabilities.sum(1), 1, atol=1e-5)
    # scored against its targets, the score goes to stderr: stdout holds only the predictions
    code, out, err = run(capsys, "predict", "--model", str(model), "--data", str(data), "--output", "-")
    assert code == 0 and out.splitlines()[0].startswith("id,class,") and re.search(r"Loss:\d+\.\d{4}, Accuracy:", err)


def test_predictions_into_a_closed_pipe_stop_quietly_with_141(capsys, tmp_path):
    data = people_csv(tmp_path / "train.csv")
    model = tmp_path / "m.pt"
    assert run(capsys, "train", "--data", str(data), "--ignore", "id,note", "--epochs", "2", "--seed", "0",
               "--save", str(model), "--device", "cpu")[0] == 0
    reader, writer = os.pipe()
    os.close(reader)   # '| true': the reader is gone before the first line
    proc = subprocess.run([script(), "predict", "--model", str(model), "--data", str(data), "--output", "-"],
                          stdout=writer, stderr=subprocess.PIPE, env=cli_env(), cwd=tmp_path, timeout=120)
    os.close(writer)
    assert proc.returncode == 141, proc.stderr
    assert b"Traceback" not in proc.stderr and b"cannot write" not in proc.stderr, proc.stderr


def test_a_test_file_without_a_feature_column_names_it(capsys, tmp_path):
    data = people_csv(tmp_path / "train.csv")
    model = tmp_path / "m.pt"
    assert run(capsys, "train", "--data", str(data), "--ignore", "id,note", "--epochs", "2", "--seed", "0",
               "--save", str(model), "--device", "cpu")[0] == 0
    test = people_csv(tmp_path / "test.csv", drop="b")
    code, out, err = run(capsys, "predict", "--model", str(model), "--data", str(test))
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert "test.csv': has no column 'b' (the model was trained on 'a', 'b', 'c'; this file has 'id', 'note'" in err


def test_missing_cells_filled_at_training_are_filled_alike_at_predict(capsys, tmp_path):
    rows = ["a,b,y"] + [f"{'' if i % 7 == 3 else i % 5},{i % 3},{i % 2}" for i in range(40)]
    data = tmp_path / "m.csv"
    data.write_text("\n".join(rows) + "\n")
    model = tmp_path / "m.pt"
    code, _, err = run(capsys, "train", "--data", str(data), "--epochs", "2", "--seed", "0", "--device", "cpu")
    assert code == 2 and "6 rows with a missing cell" in err and "--missing drop" in err
    code, _, err = run(capsys, "train", "--data", str(data), "--missing", "mean", "--epochs", "2", "--seed", "0",
                       "--save", str(model), "--device", "cpu")
    assert code == 0 and "filled 6 missing feature cells with its column's mean" in err
    fill = manualnn.load(model).config["fill_values"]
    assert fill == pytest.approx([sum(i % 5 for i in range(40) if i % 7 != 3) / 34, sum(i % 3 for i in range(40)) / 40])
    test = tmp_path / "t.csv"
    test.write_text("a,b\n,1\n2,2\n")
    code, out, err = run(capsys, "predict", "--model", str(model), "--data", str(test), "--output", "-")
    assert code == 0 and "filled 1 missing feature cell with the model's mean" in err and len(out.splitlines()) == 3
    code, _, err = run(capsys, "predict", "--model", str(model), "--data", str(test), "--missing", "refuse")
    assert code == 2 and "1 row with a missing cell (empty, NA or NaN): row 2, column 1 ('a')" in err


@pytest.mark.parametrize("argv,pattern", [
    (["--data", "{d}", "--target", "y", "--target-cols", "2"], r"--target-cols: give the targets by --target or by "
                                                               r"--target-cols, not both"),
    (["--target", "y"], r"--target: applies to --data only"),
    (["--missing", "drop"], r"--missing: applies to --data only"),
    (["--data", "{d}", "--target", "nope"], r"d.csv': a target column 'nope': no such column; the header has 'a', "
                                            r"'b', 'y'"),
])
def test_column_option_mistakes(capsys, tmp_path, argv, pattern):
    (tmp_path / "d.csv").write_text("a,b,y\n" + "1,2,0\n3,4,1\n" * 10)
    code, out, err = run(capsys, "train", *[a.format(d=tmp_path / "d.csv") for a in argv], "--device", "cpu")
    assert code == 2 and out == "" and re.search(pattern, err), err


def test_values_near_the_float64_limit_train_a_usable_checkpoint(capsys, tmp_path):
    g = np.random.default_rng(0)
    x = g.normal(size=(60, 3)) * 1e300
    np.savez(tmp_path / "huge.npz", x=x, y=(x[:, 0] > 0).astype(np.int64))
    model = tmp_path / "m.pt"
    code, _, err = run(capsys, "train", "--data", str(tmp_path / "huge.npz"), "--epochs", "3", "--seed", "0",
                       "--save", str(model), "--device", "cpu")
    assert code == 0, err
    config = manualnn.load(model).config
    assert all(np.isfinite(config["x_mean"])) and all(np.isfinite(config["x_std"]))
    code, out, err = run(capsys, "predict", "--model", str(model), "--data", str(tmp_path / "huge.npz"))
    assert code == 0 and out.startswith("Loss:"), err
    code, _, err = run(capsys, "train", "--resume", str(model), "--epochs", "4", "--device", "cpu")
    assert code == 0, err


def test_a_label_that_no_file_can_hold_is_refused_before_training(capsys, tmp_path):
    np.savez(tmp_path / "s.npz", x=np.random.default_rng(0).normal(size=(20, 2)), y=np.array(["a", "b\ud800"] * 10))
    code, out, err = run(capsys, "train", "--data", str(tmp_path / "s.npz"), "--device", "cpu")
    assert code == 2 and out == "" and "lone surrogate" in err and len(err.splitlines()) == 1


def test_resuming_elsewhere_a_run_on_a_relative_path_suggests_data(capsys, tmp_path, monkeypatch):
    (tmp_path / "run").mkdir()
    monkeypatch.chdir(tmp_path / "run")
    blobs_csv(tmp_path / "run" / "d.csv")
    assert run(capsys, "train", "--data", "d.csv", "--epochs", "2", "--seed", "0", "--save", "r.pt",
               "--device", "cpu")[0] == 0
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "train", "--resume", "run/r.pt", "--epochs", "3", "--device", "cpu")
    assert code == 2 and out == ""
    assert "--data: the checkpoint's data file 'd.csv' is not here (a path relative to the folder the training ran " \
           "in); give --data PATH where the file is now" in err
    code, _, err = run(capsys, "train", "--resume", "run/r.pt", "--data", "run/d.csv", "--epochs", "3",
                       "--device", "cpu")
    assert code == 0, err


def test_predict_with_the_seed_runs_checkpoint_reads_its_10_targets_from_a_csv(capsys, tmp_path):
    model = tmp_path / "run.pt"
    assert run(capsys, "train", "--save", str(model), "--device", "cpu")[0] == 0
    gen = np.random.default_rng(0)
    x, y = gen.normal(size=(5, 1000)), gen.normal(size=(5, 10))
    np.savetxt(tmp_path / "both.csv", np.hstack([x, y]), delimiter=",")
    np.savetxt(tmp_path / "x.csv", x, delimiter=",")
    code, out, err = run(capsys, "predict", "--model", str(model), "--data", str(tmp_path / "both.csv"))
    assert code == 0 and re.fullmatch(r"Loss:[\d.]+, RMSE:[\d.]+, R2:-?[\d.]+ \(5 samples\)\n", out), (out, err)
    code, out, err = run(capsys, "predict", "--model", str(model), "--data", str(tmp_path / "x.csv"), "--output", "-")
    assert code == 0 and out.splitlines()[0] == ",".join(f"output_{j}" for j in range(10)), err
    expected = manualnn.load(model).predict(torch.tensor(x, dtype=torch.float32))
    assert np.allclose([[float(v) for v in line.split(",")] for line in out.splitlines()[1:]], expected.numpy(),
                       rtol=1e-5, atol=1e-3)
