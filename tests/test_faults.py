"""Fault injection: nothing a user trained is ever lost, and no path, signal or full disk hurts a run.

Colliding paths are refused before any work; a failed final --save keeps the old file and puts the
run in a fallback file (a real full disk where the tests run as root and can mount a small tmpfs, an
injected writer failure otherwise); SIGTERM and Ctrl-C save the last finished epoch; signals at
random moments during training and during writes leave every file whole. (Hostile data files:
tests/test_datafiles.py; every checkpoint field corrupted in turn: tests/test_checkpoint.py.)
"""
import errno
import re
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import manualnn.cli.saving as saving
from manualnn import load_checkpoint
from manualnn.cli import main
from test_cli import LINE, SMALL, cli_env, losses_of, run

SCRIPT = os.path.join(os.path.dirname(sys.executable), "manualnn")


def data_file(tmp_path, name="d.npz"):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 4, generator=g)
    np.savez(tmp_path / name, x=x.numpy(), y=(x[:, 0] > 0).long().numpy())
    return tmp_path / name


@pytest.mark.parametrize("args", [
    ["--data", "{d}", "--save", "{d}"],
    ["--data", "{d}", "--save", "{link}"],                       # another name for the same file
    ["--data", "{d}", "--json", "{d}"],
    ["--data", "{d}", "--save", "{tmp}/r.pt", "--json", "{tmp}/r.pt"],
    ["--data", "{d}", "--save", "{tmp}/r.pt", "--plot", "{tmp}/r.pt"],
    ["--resume", "{tmp}/old.pt", "--save", "{tmp}/old.pt", "--plot", "{tmp}/old.pt"],
])
def test_an_output_that_names_an_input_or_another_output_is_refused(capsys, tmp_path, args):
    d = data_file(tmp_path)
    os.symlink(d, tmp_path / "link.npz")
    assert run(capsys, "train", "--data", str(d), "--epochs", "1", "--save", str(tmp_path / "old.pt"),
               "--device", "cpu")[0] == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    argv = [a.format(d=d, link=tmp_path / "link.npz", tmp=tmp_path) for a in args]
    code, out, err = run(capsys, "train", *argv, "--epochs", "2", "--device", "cpu")
    assert code == 2 and out == "", err
    assert "names the same file as" in err and len(err.strip().splitlines()) == 1, err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before   # nothing touched


@pytest.mark.parametrize("output", ["{model}", "{data}"])
def test_predict_never_writes_over_its_model_or_data(capsys, tmp_path, output):
    d, model = data_file(tmp_path), tmp_path / "m.pt"
    assert run(capsys, "train", "--data", str(d), "--epochs", "1", "--save", str(model), "--device", "cpu")[0] == 0
    before = (d.read_bytes(), model.read_bytes())
    code, _, err = run(capsys, "predict", "--model", str(model), "--data", str(d),
                       "--output", output.format(model=model, data=d))
    assert code == 2 and "names the same file as" in err, err
    assert (d.read_bytes(), model.read_bytes()) == before


def test_a_failed_final_save_keeps_the_old_file_and_the_run(capsys, tmp_path, monkeypatch):
    ck, js = tmp_path / "run.pt", tmp_path / "run.json"
    assert run(capsys, "train", *SMALL, "--epochs", "3", "--seed", "1", "--save", str(ck))[0] == 0
    old = ck.read_bytes()
    real = saving.save_checkpoint

    def full_disk(path, **kw):
        if os.path.abspath(path) == str(ck):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, **kw)

    monkeypatch.setattr(saving, "save_checkpoint", full_disk)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "spare"))
    os.makedirs(tmp_path / "spare")
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    code, out, err = run(capsys, "train", *SMALL, "--epochs", "5", "--seed", "2", "--save", str(ck), "--json", str(js))
    assert code == 4, err
    assert "disk full" in err and "the previous file is untouched" in err, err
    assert ck.read_bytes() == old
    rescued = [p for p in (tmp_path / "spare").iterdir() if p.name.startswith("manualnn-rescued-run.pt")]
    assert len(rescued) == 1 and str(rescued[0]) in err
    record = json.loads(js.read_text())
    assert record["checkpoint"] == str(rescued[0]) and record["epochs_run"] == 5
    assert load_checkpoint(rescued[0]).epoch == 5


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (the injected failure above "
                                              "covers the same path)")
def test_a_really_full_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        (disk / "filler").write_bytes(b"\0" * 40000)   # a checkpoint of this network (~36 KB) no longer fits
        spare = tmp_path / "spare"
        spare.mkdir()
        proc = subprocess.run([SCRIPT, "train", *SMALL[:-4], "--hidden", "600", "--lr", "1e-4", "--device", "cpu",
                               "--epochs", "3", "--save", str(disk / "run.pt"), "--json", str(disk / "r.json")],
                              capture_output=True, text=True, env={**cli_env(), "TMPDIR": str(spare)}, timeout=120)
        assert proc.returncode == 4, proc.stderr
        assert "disk full (No space left on device)" in proc.stderr, proc.stderr
        rescued = list(spare.iterdir())
        assert len(rescued) == 1 and load_checkpoint(rescued[0]).epoch == 3
        assert sorted(p.name for p in disk.iterdir()) in (["filler"], ["filler", "r.json"])   # no temp file left
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def start(tmp_path, *extra):
    return subprocess.Popen([SCRIPT, "train", *SMALL, "--seed", "3", "--epochs", "100000", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=tmp_path,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.mark.parametrize("sig,code,name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_a_signal_saves_the_last_finished_epoch(capsys, tmp_path, sig, code, name):
    ck, js = tmp_path / "run.pt", tmp_path / "run.json"
    proc = start(tmp_path, "--save", str(ck), "--json", str(js))
    printed = [proc.stdout.readline() for _ in range(30)]
    proc.send_signal(sig)
    out, err = proc.stdout.read(), proc.stderr.read()   # (communicate would skip what readline buffered)
    proc.wait(timeout=60)
    assert proc.returncode == code, err
    saved = load_checkpoint(ck)
    assert f"interrupted ({name}) after {saved.epoch} epochs; saved them to {ck}" in err, err
    assert "Traceback" not in err and json.loads(js.read_text())["status"] == "interrupted"
    lines = [line.strip() for line in printed + out.splitlines() if line.strip()]
    assert len(lines) == saved.epoch and losses_of("\n".join(lines)) == pytest.approx(saved.losses, abs=1e-4)
    # the saved run is whole: resuming it gives the uninterrupted run's losses
    total = saved.epoch + 3
    _, whole, _ = run(capsys, "train", *SMALL, "--seed", "3", "--epochs", str(total))
    code, rest, _ = run(capsys, "train", "--resume", str(ck), "--epochs", str(total), "--device", "cpu")
    assert code == 0 and losses_of(rest) == losses_of(whole)[saved.epoch:]


def test_signals_at_random_moments_leave_every_file_whole(tmp_path):
    rng = random.Random(0)
    for trial, sig in enumerate([signal.SIGTERM, signal.SIGINT, signal.SIGKILL]):
        folder = tmp_path / str(trial)
        folder.mkdir()
        ck = folder / "run.pt"
        proc = start(folder, "--save", str(ck), "--save-every", "1")   # a write every epoch: signals land in writes
        proc.stdout.readline()
        time.sleep(rng.uniform(0, 0.3))
        proc.send_signal(sig)
        proc.communicate(timeout=60)
        assert proc.returncode in (130, 143, -9), proc.returncode
        if ck.exists():
            assert load_checkpoint(ck).epoch >= 1
        leftovers = [p.name for p in folder.iterdir() if p.name != "run.pt"]
        if proc.returncode != -9:          # a process that ran its exit path leaves no temp file
            assert leftovers == [], leftovers
        else:                              # after kill -9, the next write removes the stale temp file
            assert len(leftovers) <= 1
            assert run_quiet(["train", "--resume", str(ck), "--epochs", str(load_checkpoint(ck).epoch + 1),
                              "--save", str(ck), "--device", "cpu"]) == 0
            assert [p.name for p in folder.iterdir()] == ["run.pt"]


def run_quiet(argv):
    from contextlib import redirect_stderr, redirect_stdout
    from io import StringIO
    with redirect_stdout(StringIO()), redirect_stderr(StringIO()):
        return main(argv)


@pytest.mark.parametrize("argv,pattern", [
    (["--hidden", "1000000000"], r"--hidden: this run needs about .* TB of memory .*; cpu has .* free"),
    (["--batch", "100000000"], r"--batch: this run needs about .* of memory"),
])
def test_runs_that_cannot_fit_in_memory_are_refused_before_any_work(capsys, argv, pattern):
    import re
    code, out, err = run(capsys, "train", "--device", "cpu", *argv)
    assert code == 2 and out == "" and re.search(pattern, err) and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("option", ["--save", "--json", "--plot"])
def test_a_resumed_run_never_writes_over_the_data_its_checkpoint_names(capsys, tmp_path, option):
    """Item 1 of 'Nothing lost, round two': outputs were compared with --data only, not with the data
    file a resumed checkpoint names."""
    d, ck = data_file(tmp_path), tmp_path / "r.pt"
    assert run(capsys, "train", "--data", str(d), "--epochs", "3", "--save", str(ck), "--device", "cpu")[0] == 0
    before = d.read_bytes()
    code, out, err = run(capsys, "train", "--resume", str(ck), "--epochs", "5", "--device", "cpu", option, str(d))
    assert code == 2 and out == "", err
    assert f"{option} {str(d)!r} names the same file as the checkpoint's data file" in err, err
    assert d.read_bytes() == before


def fail_writes_to(monkeypatch, path, times=None):
    """Writes to ``path`` fail as on a full disk (every one, or the first ``times``); others go through."""
    import manualnn.checkpoint as checkpoint
    real, left = checkpoint.atomic_open, [times]

    def atomic_open(target, mode="wb"):
        if os.path.abspath(target) == str(path) and (left[0] is None or left[0] > 0):
            left[0] = None if left[0] is None else left[0] - 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(target, mode)

    monkeypatch.setattr(checkpoint, "atomic_open", atomic_open)
    spare = path.parent / "spare"
    spare.mkdir()
    monkeypatch.setenv("TMPDIR", str(spare))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    return spare


def test_the_rescue_copy_of_a_long_name_fits_in_a_file_name(capsys, tmp_path, monkeypatch):
    """Item 4: with a 219-character --save name the rescue name grew past 255 bytes, and the run was lost."""
    ck = tmp_path / ("r" * 216 + ".pt")
    spare = fail_writes_to(monkeypatch, ck)
    code, _, err = run(capsys, "train", *SMALL, "--epochs", "3", "--seed", "2", "--save", str(ck))
    rescued = list(spare.iterdir())
    assert code == 4 and len(rescued) == 1 and f"was saved to {rescued[0]} instead" in err, err
    assert len(rescued[0].name.encode()) <= 255 and rescued[0].name.startswith("manualnn-rescued-rrrr")
    assert load_checkpoint(rescued[0]).epoch == 3 and "nothing was written there" in err


def test_failed_periodic_saves_then_a_final_save_that_lands(capsys, tmp_path, monkeypatch):
    """Item 11: exit 4, a message that epoch 4 was saved to a rescue file 'instead', and three rescue
    files left, though run.pt held the final epoch; 'the previous file is untouched' when there was none."""
    ck = tmp_path / "run.pt"
    spare = fail_writes_to(monkeypatch, ck, times=3)          # the saves at epochs 2, 4 and 6
    code, _, err = run(capsys, "train", *SMALL, "--epochs", "8", "--seed", "2", "--save", str(ck), "--save-every", "2")
    assert code == 0, err
    assert load_checkpoint(ck).epoch == 8 and list(spare.iterdir()) == []   # the stale rescue copy is gone
    assert err.count("cannot write") == 1 and "nothing was written there" in err, err
    assert "the previous file is untouched" not in err and re.search(r"wrote .*run.pt' \(epoch 8\) after the failed "
                                                                     r"writes; removed the rescue copy", err), err


def test_a_write_through_a_symlink_updates_its_target(capsys, tmp_path):
    """Item 6: --save latest.pt, a symlink, replaced the link with a file and left its target stale."""
    (tmp_path / "runs").mkdir()
    target, link = tmp_path / "runs" / "run-1.pt", tmp_path / "latest.pt"
    os.symlink(target, link)                                   # dangling until the first write
    os.symlink(tmp_path / "runs" / "run-1.json", tmp_path / "latest.json")
    assert run(capsys, "train", *SMALL, "--epochs", "2", "--save", str(link), "--json", str(tmp_path / "latest.json"))[0] == 0
    assert run(capsys, "train", "--resume", str(link), "--epochs", "4", "--save", str(link), "--device", "cpu")[0] == 0
    assert link.is_symlink() and (tmp_path / "latest.json").is_symlink()
    assert load_checkpoint(target).epoch == 4 and json.loads((tmp_path / "runs" / "run-1.json").read_text())["epochs_run"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json", "latest.pt", "runs"]


def test_a_path_into_proc_is_refused_never_replaced(capsys, tmp_path):
    """Item 6: --json /dev/stdout with stdout redirected to a file replaced the /dev/stdout link with a
    regular file (as root). Here a link of the test's own stands for /dev/stdout."""
    from manualnn.files import OutputPathError, check_output_path
    with pytest.raises(OutputPathError, match=r"'/dev/stdout' leads into /proc"):
        check_output_path("/dev/stdout")
    link = tmp_path / "stdout"
    os.symlink("/proc/self/fd/1", link)
    with open(tmp_path / "out.txt", "w") as out:
        proc = subprocess.run([SCRIPT, "train", *SMALL, "--epochs", "2", "--json", str(link)], stdout=out,
                              stderr=subprocess.PIPE, text=True, env=cli_env(), timeout=120)
    assert proc.returncode == 2 and re.search(r"--json: '.*stdout' leads into /proc .*expected a file path",
                                              proc.stderr), proc.stderr
    assert link.is_symlink() and os.readlink(link) == "/proc/self/fd/1" and (tmp_path / "out.txt").read_text() == ""
