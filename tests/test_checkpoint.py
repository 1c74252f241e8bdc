"""Checkpoints: round trip, atomic writes, and clear errors for missing/truncated/foreign files."""
import pytest
import torch

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
