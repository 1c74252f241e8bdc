"""How a training run stops without losing what it finished: signals at any moment (the trainer's
bookkeeping between epochs included, and just after the last epoch), SIGHUP, a closed stdout.

The randomized test sends SIGINT, SIGTERM and SIGHUP at random moments to many short runs (with and without
validation, on every CPU backend, fresh and resumed in place) and checks that every checkpoint
said to be saved loads and resumes exactly, and that no good checkpoint is ever replaced by a worse
or unloadable one. Its default run is four runs; ``-m slow`` runs 96.
"""
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

import manualnn.training.trainer as trainer_module
from manualnn import load_checkpoint
from manualnn.cli import main
from test_cli import SMALL, cli_env, run

SCRIPT = os.path.join(os.path.dirname(sys.executable), "manualnn")
EPOCHS = 5000            # up to about half a second of training, four runs at a time
HISTORIES = ("losses", "val_losses", "val_accuracies", "val_rmse", "val_r2")


def terminal_signals():
    """The run's SIGINT and SIGHUP as a terminal gives them, whatever this suite inherited: a background shell
    starts jobs with SIGINT ignored, nohup with SIGHUP ignored (and a run keeps what it inherits)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def start(argv, cwd, env=None):
    return subprocess.Popen([SCRIPT, "train", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env or cli_env(), cwd=cwd, preexec_fn=terminal_signals)


def quiet(argv):
    from contextlib import redirect_stderr, redirect_stdout
    from io import StringIO
    with redirect_stdout(StringIO()), redirect_stderr(StringIO()) as err:
        code = main(argv)
    return code, err.getvalue()


def record(path):
    with open(path) as f:
        return json.load(f)


# --- the trainer's bookkeeping and the end of the run: signals at chosen moments -------------------

def test_a_signal_in_the_bookkeeping_between_epochs_waits_for_it(capsys, tmp_path, monkeypatch):
    """Item 2 of 'Nothing lost, round two': the epoch counter is advanced before the histories are
    appended; a signal in between must not be saved as a checkpoint whose lengths disagree."""
    calls, real = [], trainer_module.Trainer._commit

    def record_with_a_signal(self, rows, first):
        calls.append(1)
        if len(calls) == 3:   # the third chunk: its rows about to be recorded
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, rows, first)

    monkeypatch.setattr(trainer_module.Trainer, "_commit", record_with_a_signal)
    ck = tmp_path / "run.pt"
    code, out, err = run(capsys, "train", *SMALL, "--seed", "3", "--epochs", "100000", "--val-split", "0.5",
                         "--save", str(ck))
    assert code == 143 and "saved them to" in err, err
    saved = load_checkpoint(ck)            # whole: lengths agree with the epoch
    assert saved.epoch == len(saved.losses) == len(saved.val_losses) == len(out.splitlines())
    monkeypatch.undo()
    _, whole, _ = run(capsys, "train", *SMALL, "--seed", "3", "--epochs", str(saved.epoch + 2), "--val-split", "0.5")
    code, rest, _ = run(capsys, "train", "--resume", str(ck), "--epochs", str(saved.epoch + 2), "--device", "cpu")
    assert code == 0 and rest.splitlines() == whole.splitlines()[saved.epoch:]


DRIVER = """import os, signal, sys
import manualnn.training.trainer as t
real = t.Trainer.diagnose
def diagnose(self):   # the moment after the last epoch: the signal arrives while the run is being finished
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    return real(self)
t.Trainer.diagnose = diagnose
from manualnn.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("sig,code,name", [("SIGTERM", 143, "SIGTERM"), ("SIGINT", 130, "Ctrl-C")])
def test_a_signal_just_after_the_last_epoch_still_writes_the_run(tmp_path, sig, code, name):
    """Item 3: the handlers were restored before the final diagnosis and the writes: the run was lost."""
    ck, js = tmp_path / "big.pt", tmp_path / "big.json"
    proc = subprocess.run([sys.executable, "-c", DRIVER, sig, "train", *SMALL, "--seed", "4", "--epochs", "3",
                           "--save", str(ck), "--json", str(js)], capture_output=True, text=True, env=cli_env(),
                          cwd=tmp_path, timeout=120, preexec_fn=terminal_signals)
    assert proc.returncode == code, proc.stderr
    assert f"{name} arrived as the run ended; what it finished was written first" in proc.stderr
    assert load_checkpoint(ck).epoch == 3 and record(js)["status"] == "ok" and record(js)["epochs_run"] == 3
    assert len(proc.stdout.splitlines()) == 3 and "Traceback" not in proc.stderr


def test_sighup_saves_like_sigterm(tmp_path, sig=signal.SIGHUP, code=129, name="SIGHUP"):
    """Item 15: a closed terminal or SSH session (SIGHUP) killed the run without saving."""
    ck, js = tmp_path / "run.pt", tmp_path / "run.json"
    proc = start([*SMALL, "--seed", "3", "--epochs", "1000000", "--save", str(ck), "--json", str(js)], tmp_path)
    for _ in range(20):
        proc.stdout.readline()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    saved = load_checkpoint(ck)
    assert f"interrupted ({name}) after {saved.epoch} epochs; saved them to {ck}" in err, err
    assert record(js)["status"] == "interrupted" and record(js)["epochs_run"] == saved.epoch >= 20


def test_a_hangup_that_was_ignored_stays_ignored(tmp_path):
    """nohup: a run started with SIGHUP ignored is not stopped by it."""
    proc = subprocess.Popen([SCRIPT, "train", *SMALL, "--seed", "3", "--epochs", "3000"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=tmp_path,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    first = proc.stdout.readline()
    proc.send_signal(signal.SIGHUP)
    out, err = proc.stdout.read(), proc.stderr.read()   # (communicate would skip what readline buffered)
    proc.wait(timeout=120)
    assert proc.returncode == 0 and len([first, *out.splitlines()]) == 3000, err


CTRL_C_AT_EXIT = """
import atexit, os, signal, sys, time
atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(0.2)))   # runs last, in the teardown
sys.argv = ["manualnn", "train", *{small!r}, "--seed", "3", "--epochs", "2"]
from manualnn._entry import run
run()
"""


def test_a_ctrl_c_while_the_finished_run_exits_prints_nothing(tmp_path):
    """A Ctrl-C in the interpreter's teardown, after the run is written, is ignored: no traceback over it
    (the randomized signal test once hit Python's 'Exception ignored in atexit callback' there)."""
    out = subprocess.run([sys.executable, "-c", CTRL_C_AT_EXIT.format(small=SMALL)], capture_output=True, text=True,
                         env=cli_env(), cwd=tmp_path, timeout=120)
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 2, out.stderr
    assert "Traceback" not in out.stderr and "KeyboardInterrupt" not in out.stderr, out.stderr


def test_a_closed_stdout_saves_and_writes_the_record(tmp_path):
    """Issue 22, item 7: '| head -3' exited 141 with no checkpoint, no --json and no message."""
    ck, js = tmp_path / "h.pt", tmp_path / "h.json"
    proc = start([*SMALL, "--seed", "3", "--epochs", "1000000", "--save", str(ck), "--json", str(js)], tmp_path)
    first = [proc.stdout.readline() for _ in range(3)]
    proc.stdout.close()       # what '| head -3' does
    err = proc.stderr.read()
    proc.wait(timeout=60)
    assert proc.returncode == 141 and len(first) == 3, err
    saved = load_checkpoint(ck)
    assert re.fullmatch(rf"manualnn train: interrupted \(stdout closed: its reader went away\) after {saved.epoch} "
                        rf"epochs; saved them to {re.escape(str(ck))}\n", err), err
    assert record(js)["status"] == "interrupted" and record(js)["epochs_run"] == saved.epoch >= 3


# --- signals at random moments ----------------------------------------------------------------------

def reference(tmp_path, backend, val):
    """The uninterrupted run's histories (--json), in-process."""
    js = tmp_path / f"ref-{backend}-{val}.json"
    code, err = quiet(["train", *SMALL, "--seed", "5", "--epochs", str(EPOCHS), "--backend", backend,
                       "--val-split", val, "--json", str(js)])
    assert code == 0, err
    return {key: record(js)[key] for key in HISTORIES}


def one_trial(folder, backend, val, resumed, sig, delay, env, total):
    """A run (or a run resumed in place) of ``--save run.pt`` to ``total`` epochs, to be stopped by ``sig``
    ``delay`` seconds after its first epoch line (signal_it), possibly after its end."""
    ck = folder / "run.pt"
    argv = [*SMALL, "--seed", "5", "--epochs", str(total), "--backend", backend, "--val-split", val]
    before = None
    if resumed:
        code, err = quiet(["train", *argv, "--epochs", str(random.Random(delay).randint(1, 50)), "--save", str(ck)])
        assert code == 0, err
        before = load_checkpoint(ck)
        argv = ["--resume", str(ck), "--epochs", str(total), "--device", "cpu"]
    return {"argv": argv, "before": before, "sig": sig, "delay": delay, "folder": folder, "env": env}


def signal_it(trial):
    proc = start([*trial["argv"], "--save", str(trial["folder"] / "run.pt"), "--json",
                  str(trial["folder"] / "run.json")], trial["folder"], trial["env"])
    first = proc.stdout.readline()
    time.sleep(trial["delay"])
    proc.send_signal(trial["sig"])
    out, trial["err"] = proc.stdout.read(), proc.stderr.read()   # (communicate would skip what readline buffered)
    trial["code"] = proc.wait(timeout=300)
    trial["printed"] = max(int(line.split(",")[0][len("Epoch:"):]) for line in [first, *out.splitlines()])


def judge(trial, ref):
    """Every checkpoint there loads, holds the uninterrupted run's epochs and resumes exactly; a resumed
    run's checkpoint never goes back; nothing else is left in the folder."""
    folder, err, code = trial["folder"], trial["err"], trial["code"]
    what = f"{trial['sig'].name} after {trial['delay']:.3f} s, {trial['argv']}: exit {code}: {err[-600:]}"
    assert code in (0, 129, 130, 143, -signal.SIGTERM, -signal.SIGINT, -signal.SIGHUP), what
    assert "Traceback" not in err, what
    ck = folder / "run.pt"
    assert sorted(p.name for p in folder.iterdir()) in (["run.json", "run.pt"], ["run.pt"]), what
    saved = load_checkpoint(ck)     # never an unloadable file, never none: an epoch was printed, so it finished
    k = saved.epoch
    assert k > trial["printed"], what
    for key in HISTORIES:
        assert getattr(saved, key) == ref[key][:k], (key, what)
    if trial["before"] is not None:
        assert k >= trial["before"].epoch, what
    if (folder / "run.json").exists():   # the record, when written, is the checkpoint's run
        assert record(folder / "run.json")["losses"] == ref["losses"][:k], what
    if k + 2 <= EPOCHS:   # resumes exactly: the next epochs are the uninterrupted run's
        js = folder / "more.json"
        resumed, more_err = quiet(["train", "--resume", str(ck), "--epochs", str(k + 2), "--json", str(js),
                                   "--device", "cpu"])
        assert resumed == 0, more_err
        assert record(js)["losses"] == ref["losses"][:k + 2], what
        js.unlink()


COMBINATIONS = [(backend, val, resumed) for backend in ("torch", "native") for val in ("0", "0.5")
                for resumed in (False, True)]
# the default run: half of them, each backend, validation and resuming in two of the four
HALF = [("torch", "0", False), ("torch", "0.5", True), ("native", "0", True), ("native", "0.5", False)]


def trials(tmp_path, rounds, combinations, native_cache):
    rng = random.Random(int(os.environ.get("MANUALNN_SIGNAL_SEED", "0")))
    env = {**cli_env(), "MANUALNN_NATIVE_CACHE": native_cache}
    made = []
    for r in range(rounds):
        for backend, val, resumed in combinations:
            folder = tmp_path / f"{r}-{backend}-{val}-{resumed}"
            folder.mkdir()
            sig = rng.choice([signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
            total = rng.choice([300, 1000, EPOCHS])   # some runs end before their signal comes
            trial = one_trial(folder, backend, val, resumed, sig, rng.uniform(0, 0.5), env, total)
            made.append(((backend, val), trial))
    return made


def run_trials(tmp_path, rounds, combinations, native_build, monkeypatch):
    monkeypatch.setenv("MANUALNN_NATIVE_CACHE", native_build[0])
    refs = {(b, v): reference(tmp_path, b, v) for b in ("torch", "native") for v in ("0", "0.5")}
    made = trials(tmp_path, rounds, combinations, native_build[0])
    for start_at in range(0, len(made), 4):   # four runs at a time: two cores, and runs that wait on pipes
        threads = [threading.Thread(target=signal_it, args=(t,)) for _, t in made[start_at:start_at + 4]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for key, trial in made:
        judge(trial, refs[key])
    print(f"{len(made)} runs stopped at random moments; exit statuses "
          f"{sorted(set(t['code'] for _, t in made))}; epochs saved "
          f"{sorted(load_checkpoint(t['folder'] / 'run.pt').epoch for _, t in made)}")


def test_signals_at_random_moments_save_only_whole_runs(tmp_path, native_build, monkeypatch):
    run_trials(tmp_path, 1, HALF, native_build, monkeypatch)


@pytest.mark.slow
def test_signals_at_random_moments_save_only_whole_runs_many(tmp_path, native_build, monkeypatch):
    run_trials(tmp_path, 12, COMBINATIONS, native_build, monkeypatch)
