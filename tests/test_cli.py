"""The command line: stdout format, --seed reproducibility, --json, save/resume, errors."""
import json
import os
import re
import subprocess
import sys

import pytest

from manualnn.cli import main
from seed_script import run_seed_script

LINE = re.compile(r"^Epoch:(\d+), Loss:(-?\d+\.\d{4})$")
SMALL = ["--batch", "8", "--features", "12", "--hidden", "9", "--out", "3", "--lr", "1e-3", "--device", "cpu"]


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as e:   # argparse's own refusals
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def losses_of(out):
    lines = out.splitlines()
    assert lines and all(LINE.match(line) for line in lines), out
    return [float(LINE.match(line).group(2)) for line in lines]


def test_seed_0_tutorial_prints_what_the_seed_prints(capsys):
    code, out, err = run(capsys, "train", "--seed", "0", "--grad", "tutorial", "--device", "cpu")
    assert code == 0 and err == ""
    got, expected = losses_of(out), losses_of("\n".join(run_seed_script(0)))
    assert [line.split(",")[0] for line in out.splitlines()] == [f"Epoch:{i}" for i in range(20)]
    for g, e in zip(got, expected):  # to float32 rounding
        assert abs(g - e) <= 1e-6 * abs(e), (g, e)


def test_seed_0_relu_matches_autograd(capsys):
    import torch
    from manualnn import seed_data
    from test_reference import autograd_run
    code, out, _ = run(capsys, "train", "--seed", "0", "--grad", "relu", "--device", "cpu")
    assert code == 0
    x, y, weights = seed_data(0)
    expected, _ = autograd_run(x, y, weights, 20, 1e-6)
    for g, e in zip(losses_of(out), expected):
        assert abs(g - e) <= 1e-5 * abs(e), (g, e)
    assert torch.get_default_dtype() == torch.float32


def test_log_every_prints_every_nth_and_the_last(capsys):
    code, out, _ = run(capsys, "train", *SMALL, "--epochs", "10", "--log-every", "4", "--seed", "1")
    assert code == 0
    assert [line.split(",")[0] for line in out.splitlines()] == ["Epoch:0", "Epoch:4", "Epoch:8", "Epoch:9"]


def test_json_record(capsys, tmp_path):
    path = tmp_path / "run.json"
    code, out, _ = run(capsys, "train", *SMALL, "--epochs", "5", "--seed", "3", "--json", str(path))
    assert code == 0
    record = json.loads(path.read_text())
    assert record["losses"] == pytest.approx(losses_of(out), rel=1e-9, abs=1e-4)
    assert record["config"]["seed"] == 3 and record["config"]["hidden"] == [9]
    from manualnn.backends import resolve
    assert record["config"]["backend_used"] == resolve("auto", "cpu") and record["status"] == "ok"
    assert record["val_losses"] == [] and record["val_accuracies"] == []
    assert record["timing"]["seconds"] > 0 and record["device"]["type"] == "cpu"
    assert record["versions"]["torch"]


def test_save_then_resume_gives_the_uninterrupted_losses(capsys, tmp_path):
    ck = tmp_path / "ck.pt"
    _, whole, _ = run(capsys, "train", *SMALL, "--epochs", "12", "--seed", "5")
    code, first, _ = run(capsys, "train", *SMALL, "--epochs", "7", "--seed", "5", "--save", str(ck))
    assert code == 0 and ck.exists()
    code, rest, err = run(capsys, "train", "--resume", str(ck), "--epochs", "12", "--device", "cpu")
    assert code == 0, err
    assert first + rest == whole


def test_save_every_and_random_seed_is_recorded(capsys, tmp_path):
    ck = tmp_path / "ck.pt"
    code, whole, _ = run(capsys, "train", *SMALL, "--epochs", "6", "--save", str(ck), "--save-every", "2")
    assert code == 0
    from manualnn import load_checkpoint
    saved = load_checkpoint(ck)
    assert saved.epoch == 6 and isinstance(saved.config["seed"], int)
    # the recorded seed reproduces the run
    _, again, _ = run(capsys, "train", *SMALL, "--epochs", "6", "--seed", str(saved.config["seed"]))
    assert again == whole


def test_resume_with_conflicting_settings_is_an_error(capsys, tmp_path):
    ck = tmp_path / "ck.pt"
    run(capsys, "train", *SMALL, "--epochs", "3", "--seed", "5", "--save", str(ck))
    code, out, err = run(capsys, "train", "--resume", str(ck), "--hidden", "7", "--device", "cpu")
    assert code == 2 and out == ""
    assert "--hidden: the checkpoint's run used [9], got [7]" in err
    code, _, err = run(capsys, "train", "--resume", str(ck), "--epochs", "3", "--device", "cpu")
    assert code == 2 and "--epochs: expected a total above the 3 epochs the checkpoint has done, got 3" in err


@pytest.mark.parametrize("content", [b"", b"garbage", None])
def test_resume_from_bad_file_is_a_clear_error(capsys, tmp_path, content):
    path = tmp_path / "bad.pt"
    if content is not None:
        path.write_bytes(content)
    code, out, err = run(capsys, "train", "--resume", str(path), "--device", "cpu")
    assert code == 2 and out == ""
    assert err.startswith("manualnn train: error: --resume: checkpoint") and "Traceback" not in err


def test_divergence_exits_1_keeps_finite_checkpoint(capsys, tmp_path):
    ck, js = tmp_path / "ck.pt", tmp_path / "run.json"
    code, out, err = run(capsys, "train", *SMALL[:-4], "--lr", "0.5", "--device", "cpu", "--epochs", "300",
                         "--seed", "1", "--save", str(ck), "--json", str(js))
    assert code == 1
    assert "manualnn train: loss became" in err and "Try a smaller lr" in err
    from manualnn import load_checkpoint
    import torch
    saved = load_checkpoint(ck)
    assert saved.epoch == len(losses_of(out)) and all(bool(torch.isfinite(w).all()) for w in saved.weights)
    assert json.loads(js.read_text())["status"] == "diverged"


@pytest.mark.parametrize("argv,pattern", [
    (["--lr", "0"], r"argument --lr: expected a positive number, got '0'"),
    (["--lr", "-1"], r"argument --lr: expected a positive number, got '-1'"),
    (["--lr", "nan"], r"argument --lr: expected a positive number, got 'nan'"),
    (["--epochs", "0"], r"argument --epochs: expected a positive integer, got 0"),
    (["--batch", "0"], r"argument --batch: expected a positive integer, got 0"),
    (["--momentum", "1"], r"argument --momentum: expected a number in \[0, 1\), got '1'"),
    (["--betas", "0.9"], r"argument --betas: expected 2 arguments"),
    (["--weight-decay", "-1"], r"argument --weight-decay: expected a number in \[0, inf\), got '-1'"),
    (["--optimizer", "rmsprop"], r"argument --optimizer: invalid choice: 'rmsprop'"),
    (["--device", "cuda:0"] if not __import__("torch").cuda.is_available() else ["--device", "tpu"], r"--device: "),
    (["--device", "cpu:1"], r"--device: expected auto, cpu, cuda or cuda:N, got 'cpu:1' \(the CPU has no device index\)"),
    (["--save-every", "2"], r"--save-every: needs --save PATH"),
    (["--patience", "3"], r"patience: stops on the validation loss; expected val_data"),
    (["--task", "classify"], r"--task: applies to --data only"),
])
def test_cli_bad_values_are_one_line_and_exit_2(capsys, argv, pattern):
    code, out, err = run(capsys, "train", *SMALL[:-2], *argv)
    assert code == 2 and out == ""
    assert re.search(pattern, err), err
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "usage:" not in err, err


def test_triton_on_cpu_without_interpreter(capsys, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    code, out, err = run(capsys, "train", *SMALL, "--backend", "triton")
    assert code == 2 and out == ""
    assert "backend: 'triton' cannot run on device cpu" in err


def cli_env():
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    return env


def test_console_script_and_module_print_only_the_seed_lines(tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "manualnn")  # the venv's console script
    for cmd in ([script, "train"], [sys.executable, "-m", "manualnn", "train"]):
        proc = subprocess.run(cmd + ["--device", "cpu", "--seed", "0"], capture_output=True, text=True,
                              env=cli_env(), cwd=tmp_path, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert len(proc.stdout.splitlines()) == 20 and all(LINE.match(s) for s in proc.stdout.splitlines())
        assert proc.stderr == ""


def test_each_command_states_its_own_exit_statuses(capsys):
    for command, present, absent in (("train", "143 by SIGTERM", None), ("predict", "4 --output", "NaN")):
        with pytest.raises(SystemExit) as info:
            main([command, "--help"])
        out = " ".join(capsys.readouterr().out.split())   # as one line, however argparse wrapped it
        assert info.value.code == 0 and present in out
        assert absent is None or absent not in out


@pytest.mark.parametrize("argv,prog", [(["train", "--bogus", "x"], "manualnn train"),
                                       (["predict", "--model", "m.pt", "--data", "d.csv", "--zzz"], "manualnn predict"),
                                       (["--zzz"], "manualnn")])
def test_an_unknown_option_is_the_commands_one_line_error(capsys, argv, prog):
    code, out, err = run(capsys, *argv)
    extra = " ".join(argv[argv.index(next(a for a in argv if a in ("--bogus", "--zzz"))):])
    assert code == 2 and out == "" and err == f"{prog}: error: unrecognized arguments: {extra} (see {prog} --help)\n"
