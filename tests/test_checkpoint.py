"""Checkpoints: round trip, atomic writes, and clear errors for missing/truncated/foreign/inconsistent
files: every field corrupted in turn is refused, naming the field."""
import math
import os
import stat

import pytest
import torch

from manualnn.checkpoint import FORMAT

from manualnn import CheckpointError, load_checkpoint, save_checkpoint


def write(path, epoch=2):
    weights = [torch.randn(4, 3), torch.randn(3, 2)]
    save_checkpoint(path, weights=weights, epoch=epoch, losses=[3.0, 2.0][:epoch], config={"lr": 0.1})
    return weights


def test_round_trip(tmp_path):
    path = tmp_path / "run.pt"
    weights = write(path)
    ck = load_checkpoint(path)
    assert ck.epoch == 2 and ck.losses == [3.0, 2.0] and ck.config == {"lr": 0.1}
    assert all(torch.equal(a, b) for a, b in zip(weights, ck.weights))
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]  # no temp file left behind


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    weights = write(path)

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write(path, epoch=1)
    monkeypatch.undo()
    ck = load_checkpoint(path)
    assert ck.epoch == 2 and torch.equal(ck.weights[0], weights[0])
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope.pt'.*no such file"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_file(tmp_path):
    path = tmp_path / "run.pt"
    write(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"not a readable manualnn checkpoint \(truncated, corrupt"):
        load_checkpoint(path)


def test_empty_and_text_files(tmp_path):
    for content in (b"", b"hello, not a checkpoint\n"):
        path = tmp_path / "bad.pt"
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match="not a readable manualnn checkpoint"):
            load_checkpoint(path)


def test_foreign_torch_file(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"state_dict": {"w": torch.randn(2)}}, path)
    with pytest.raises(CheckpointError, match=r"not a manualnn checkpoint \(expected format 'manualnn.checkpoint', got None\)"):
        load_checkpoint(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a manualnn checkpoint"):
        load_checkpoint(path)


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)


def full_state():
    w = [torch.randn(4, 3), torch.randn(3, 2)]
    b = [torch.randn(3), torch.randn(2)]
    opt = {"step": 5, "powers": [0.5, 0.9], "exp_avg": [torch.zeros(5, 3), torch.zeros(4, 2)],
           "exp_avg_sq": [torch.zeros(5, 3), torch.zeros(4, 2)]}
    return {"format": FORMAT, "version": 2, "epoch": 2, "losses": [3.0, 2.0], "weights": w, "biases": b,
            "optimizer": opt, "config": {"lr": 0.1}, "val_losses": [1.0, 0.5], "val_accuracies": [],
            "val_rmse": [], "val_r2": []}


def corrupt(state, field, value):
    state = dict(state)
    if "." in field:
        outer, inner = field.split(".")
        state[outer] = {**state[outer], inner: value}
    else:
        state[field] = value
    return state


CORRUPTIONS = [
    ("weights", [torch.randn(4, 3), torch.randn(5, 2)], r"field 'weights\[1\]': shape \(5, 2\) does not follow"),
    ("weights", [torch.randn(4, 3).to(torch.int64), torch.randn(3, 2)], r"'weights\[0\]': expected dtype float32"),
    ("weights", [torch.randn(4, 3).half(), torch.randn(3, 2)], r"'weights\[0\]': expected dtype float32 or float64"),
    ("weights", [torch.randn(4, 3, dtype=torch.complex64), torch.randn(3, 2)], r"'weights\[0\]': expected dtype"),
    ("weights", [torch.ones(4, 3, dtype=torch.bool), torch.randn(3, 2)], r"'weights\[0\]': expected dtype"),
    ("weights", [torch.full((4, 3), math.nan), torch.randn(3, 2)], r"'weights\[0\]': holds NaN or Inf"),
    ("weights", [torch.randn(4, 3), torch.randn(3, 2).double()], r"'weights\[1\]': expected dtype torch.float32"),
    ("weights", [torch.randn(12)], r"'weights\[0\]': expected a non-empty 2-D tensor"),
    ("weights", [], r"'weights': expected a non-empty list of tensors"),
    ("weights", "w", r"'weights': expected a non-empty list of tensors"),
    ("biases", [torch.randn(3)], r"'biases': expected 2 tensors"),
    ("biases", [torch.randn(3), torch.randn(5)], r"'biases\[1\]': expected shape \(2,\)"),
    ("biases", [torch.randn(3), torch.tensor([math.inf, 0.0])], r"'biases\[1\]': holds NaN or Inf"),
    ("epoch", -1, r"'epoch': expected an integer >= 0, got -1"),
    ("epoch", "2", r"'epoch': expected an integer >= 0, got '2'"),
    ("losses", [3.0], r"'losses': expected 2 values, got 1"),
    ("losses", ["a", "b"], r"'losses': expected a list of numbers"),
    ("val_losses", [1.0], r"'val_losses': expected 0 or 2 values, got 1"),
    ("config", [1, 2], r"'config': expected a dict with string keys, got list"),
    ("optimizer", "adam", r"'optimizer': expected a dict, got str"),
    ("optimizer.step", -3, r"'optimizer.step': expected an integer from 0 to 2\*\*63-1"),
    ("optimizer.powers", [2.0, 0.5], r"'optimizer.powers': expected two numbers in \[0, 1\]"),
    ("optimizer.exp_avg", [torch.zeros(4, 3), torch.zeros(4, 2)], r"'optimizer.exp_avg': shapes do not match"),
    ("optimizer.exp_avg_sq", [torch.full((5, 3), math.nan), torch.zeros(4, 2)], r"'optimizer.exp_avg_sq\[0\]': holds NaN"),
    # an integer too large for a float, a step count beyond int64, values --json cannot write
    ("losses", [10 ** 400, 2.0], r"'losses': expected a list of numbers that fit in a float"),
    ("val_losses", [1.0, 10 ** 400], r"'val_losses': expected a list of numbers that fit in a float"),
    ("optimizer.step", 2 ** 70, r"'optimizer.step': expected an integer from 0 to 2\*\*63-1, got 1180591620717411303424"),
    ("config", {"lr": 0.1, "extra": torch.ones(2)}, r"'config.extra': expected a number, string, .* got Tensor"),
    ("config", {"lr": 0.1, "note": b"bytes"}, r"'config.note': expected a number, string, .* got bytes"),
    # Adam's second moment is a mean of squares: a negative one turns the run NaN
    ("optimizer.exp_avg_sq", [torch.full((5, 3), -1.0), torch.zeros(4, 2)], r"'optimizer.exp_avg_sq': holds negative"),
]


@pytest.mark.parametrize("field,value,pattern", CORRUPTIONS, ids=[f"{c[0]}-{i}" for i, c in enumerate(CORRUPTIONS)])
def test_every_field_is_checked(tmp_path, field, value, pattern):
    path = tmp_path / "run.pt"
    torch.save(full_state(), path)
    assert load_checkpoint(path).epoch == 2          # the uncorrupted state loads
    torch.save(corrupt(full_state(), field, value), path)
    with pytest.raises(CheckpointError, match=pattern):
        load_checkpoint(path)


def test_version_1_checkpoints_still_load(tmp_path):
    path = tmp_path / "old.pt"
    state = {k: v for k, v in full_state().items() if k not in ("biases", "optimizer", "val_rmse", "val_r2")}
    torch.save({**state, "version": 1}, path)
    ck = load_checkpoint(path)
    assert ck.biases is None and ck.optimizer == {} and ck.val_rmse == []


def test_non_finite_weights_are_never_written(tmp_path):
    path = tmp_path / "run.pt"
    good = write(path)
    with pytest.raises(ValueError, match=r"weights\[1\]: not finite .*refusing to write it"):
        save_checkpoint(path, weights=[good[0], torch.full((3, 2), math.nan)], epoch=1, losses=[1.0])
    assert torch.equal(load_checkpoint(path).weights[0], good[0])


def test_written_files_honour_the_umask_and_keep_an_overwritten_files_mode(tmp_path):
    path = tmp_path / "run.pt"
    old = os.umask(0o022)
    try:
        write(path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
        os.chmod(path, 0o640)
        write(path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    finally:
        os.umask(old)


def test_a_stale_temp_file_of_a_killed_writer_is_cleaned_up(tmp_path):
    path = tmp_path / "run.pt"
    dead_pid = 2 ** 22 + 12345     # above the usual pid_max: no such process
    stale = tmp_path / f".run.pt.{dead_pid}.manualnn-tmp"
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / ".notes.txt.1.manualnn-tmp"   # another file's temp: not this write's business
    other.write_bytes(b"x")
    write(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "run.pt"]


def test_special_files_are_refused(tmp_path):
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match=r"not a regular file"):
        load_checkpoint(fifo)


def test_a_checkpoint_that_would_not_load_is_never_written(tmp_path):
    """Item 2 of 'Nothing lost, round two', in the save path: histories whose lengths disagree with the
    epoch (a signal between the two) are refused, and the good file stays."""
    path = tmp_path / "run.pt"
    good = write(path)
    for bad in ({"epoch": 3, "losses": [3.0, 2.0]}, {"epoch": 2, "losses": [3.0, 2.0], "val_losses": [1.0]}):
        with pytest.raises(ValueError, match=r"refusing to write .*run.pt'.*field '(val_)?losses': expected [0-9 or]+ values, got [12]"):
            save_checkpoint(path, weights=good, **bad)
    assert load_checkpoint(path).epoch == 2 and [p.name for p in tmp_path.iterdir()] == ["run.pt"]


def zip_with(path, member, data, compress):
    """The checkpoint at ``path`` rewritten with one member's bytes replaced (deflated if ``compress``)."""
    import zipfile
    with zipfile.ZipFile(path) as zf:
        members = [(info, zf.read(info)) for info in zf.infolist()]
    with zipfile.ZipFile(path, "w") as zf:
        for info, content in members:
            chosen = info.filename.endswith(member)
            zf.writestr(info.filename, data if chosen else content,
                        compress_type=zipfile.ZIP_DEFLATED if chosen and compress else zipfile.ZIP_STORED)


def test_declared_sizes_are_checked_before_anything_is_inflated(tmp_path, monkeypatch):
    """Item 12: a 7 MB checkpoint of deflated members took predict to 15 GB before it failed."""
    path = tmp_path / "bomb.pt"
    write(path)
    zip_with(path, "data/0", bytes(64 << 20), compress=True)   # 64 MB of zeros in about 64 KB
    assert path.stat().st_size < 200_000
    with pytest.raises(CheckpointError, match=r"member '.*data/0' inflates .* to 67.1 MB \(more than 1000:1\): "
                                              r"refused as a zip bomb"):
        load_checkpoint(path)
    write(path)
    monkeypatch.setattr("manualnn.safeio.memory_budget", lambda: 100)
    with pytest.raises(CheckpointError, match=r"its contents needs .* more than the 100 B of memory available"):
        load_checkpoint(path)
