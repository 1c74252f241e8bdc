"""Loading data: every format, integer labels, digits, the split, and a clear error for every bad file."""
import numpy as np
import pytest
import torch

from manualnn.data import DataError, load_data, split
from helpers import write


def table(n=40, d=3, seed=0):   # 40 rows: 4 classes need 5 rows each to be read as classes
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, 4, (n,), generator=g)


def test_npz_with_labels(tmp_path):
    x, labels = table()
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=labels.numpy())
    data = load_data(tmp_path / "d.npz")
    assert torch.equal(data.x, x) and torch.equal(data.y, labels) and data.classes == int(labels.max()) + 1


def test_npz_with_float_targets_and_images_flattened(tmp_path):
    x = torch.randn(5, 2, 3)
    y = torch.randn(5, 2)
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    data = load_data(tmp_path / "d.npz")
    assert data.x.shape == (5, 6) and torch.equal(data.x, x.reshape(5, 6))
    assert data.classes is None and torch.equal(data.y, y) and data.out == 2


def test_pt_dict(tmp_path):
    x, labels = table()
    torch.save({"x": x, "y": labels}, tmp_path / "d.pt")
    data = load_data(str(tmp_path / "d.pt"))
    assert torch.equal(data.x, x) and torch.equal(data.y, labels)


def test_csv_with_header_last_column_labels(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n" + "0.5,1,2\n-1,2.5,0\n3,4,1\n" * 5)   # 5 rows per class: classes
    data = load_data(path)
    assert data.x.tolist() == [[0.5, 1.0], [-1.0, 2.5], [3.0, 4.0]] * 5 and data.feature_names == ["a", "b"]
    assert data.y.tolist() == [2, 0, 1] * 5 and data.y.dtype == torch.int64 and data.class_names == [0, 1, 2]


def test_csv_regression_and_several_target_columns(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("1,2,0.5,7\n3,4,1.5,8\n")
    data = load_data(path, target_cols=2)
    assert data.x.tolist() == [[1, 2], [3, 4]] and data.y.tolist() == [[0.5, 7], [1.5, 8]]
    # whole numbers, but 7 and 8 are not a run from 0 or 1 and 2 rows are too few: auto reads values;
    # classify forces classes, indexed by their sorted values
    assert load_data(path).classes is None and load_data(path).y.tolist() == [[7.0], [8.0]]
    forced = load_data(path, task="classify")
    assert forced.classes == 2 and forced.y.tolist() == [0, 1] and forced.class_names == [7, 8]
    assert load_data(path, task="regress").y.tolist() == [[7.0], [8.0]]


def test_whole_number_prices_are_values_not_classes(tmp_path):
    path = tmp_path / "price.csv"
    path.write_text("".join(f"{i},{i % 3},{100000 + 1000 * i}\n" for i in range(40)))
    data = load_data(path)
    assert data.classes is None and data.y.shape == (40, 1)     # not 139,000 one-hot outputs
    labels = tmp_path / "labels.csv"
    labels.write_text("".join(f"{i},{i % 3}\n" for i in range(40)))
    assert load_data(labels).classes == 3


def test_float64_files_stay_float64(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.full((3, 2), 0.1), y=np.full((3, 2), 0.2))
    data = load_data(tmp_path / "d.npz")
    assert data.x.dtype == torch.float64 and data.x[0, 0].item() == 0.1


def test_csv_without_targets_for_prediction(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("1,2,3\n4,5,6\n")
    data = load_data(path, need_y=False, features=3)
    assert data.y is None and data.x.shape == (2, 3)


def test_digits():
    pytest.importorskip("sklearn")
    data = load_data("digits")
    assert data.x.shape == (1797, 64) and data.classes == 10
    assert float(data.x.min()) == 0.0 and float(data.x.max()) == 1.0


def test_digits_without_scikit_learn_names_the_extra(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(DataError, match=r"needs scikit-learn, an optional extra: pip install \"manualnn\[data\]\""):
        load_data("digits")


BAD = [
    ("missing.csv", None, r"missing.csv': no such file"),
    ("d.txt", "1,2\n", r"d.txt': unknown format '.txt'; expected .npz, .pt, .csv"),
    ("d.csv", "1,2,3\n4,oops,6\n", r"d.csv': row 2, column 2: expected a number, got 'oops'"),
    ("d.csv", "a,b,c\n1,2,3\n4,,6\n", r"d.csv': 1 row with a missing cell \(empty, NA or NaN\): row 3, column 2 "
                                    r"\('b'\)"),
    ("d.csv", "1,2,3\n4,5\n", r"d.csv': row 2 has 2 columns, expected 3"),
    ("d.csv", "", r"d.csv': is empty"),
    ("d.csv", "a,b\n", r"d.csv': has a header but no data rows"),
    ("d.csv", "1\n2\n", r"d.csv': has 1 columns; expected at least one feature column"),
    ("d.csv", "1,nan,3\n4,5,6\n", r"d.csv': 1 row with a missing cell \(empty, NA or NaN\): row 1, column 2;"),
    ("d.csv", "1,2,3\n4,5,inf\n", r"d.csv': row 2, column 3 holds inf: infinite values are not allowed"),
    ("d.csv", b"\xff\xfe\x00garbage", r"d.csv': not a readable CSV text file"),
    ("d.npz", b"not a zip", r"d.npz': not a readable .npz file"),
    ("d.pt", b"junk", r"d.pt': not a readable .pt file"),
]


@pytest.mark.parametrize("name,content,pattern", BAD, ids=[b[2][:30] for b in BAD])
def test_bad_files_get_a_clear_error(tmp_path, name, content, pattern):
    path = tmp_path / name if content is None else write(tmp_path, name, content)
    with pytest.raises(DataError, match=pattern):
        load_data(path)


def test_bad_arrays_get_a_clear_error(tmp_path):
    np.savez(tmp_path / "rows.npz", x=np.ones((4, 2)), y=np.ones(3))
    with pytest.raises(DataError, match=r"rows.npz': 'x' has 4 rows but 'y' has 3"):
        load_data(tmp_path / "rows.npz")
    np.savez(tmp_path / "names.npz", a=np.ones((4, 2)))
    with pytest.raises(DataError, match=r"names.npz': expected arrays named 'x' and 'y' \(or 'X' and 'Y'\), found "
                                        r"\['a'\]"):
        load_data(tmp_path / "names.npz")
    np.savez(tmp_path / "noy.npz", x=np.ones((4, 2)))
    with pytest.raises(DataError, match=r"noy.npz': has no targets 'y'"):
        load_data(tmp_path / "noy.npz")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(DataError, match=r"list.pt': expected a dict with tensors 'x' and 'y' \(or 'X' and 'Y'\), "
                                        r"got list"):
        load_data(tmp_path / "list.pt")
    # forced classes may be any whole numbers (negative ones too); fractions cannot be classes
    np.savez(tmp_path / "neg.npz", x=np.ones((3, 2)), y=np.array([0, -1, 2]))
    neg = load_data(tmp_path / "neg.npz", task="classify")
    assert neg.class_names == [-1, 0, 2] and neg.y.tolist() == [1, 0, 2]
    np.savez(tmp_path / "frac.npz", x=np.ones((3, 2)), y=np.array([0, 0.5, 2]))
    with pytest.raises(DataError, match=r"frac.npz': task 'classify' needs whole-number or text labels, .* 0.5 in y\[1\]"):
        load_data(tmp_path / "frac.npz", task="classify")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(DataError, match=r"dir.csv': is a folder"):
        load_data(tmp_path / "dir.csv")


def test_split_is_seeded_and_checks_its_fraction():
    x, labels = table(n=10)
    a = split(x, labels, 0.3, seed=1)
    b = split(x, labels, 0.3, seed=1)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert a[0].shape[0] == 7 and a[2].shape[0] == 3
    assert sorted(a[0][:, 0].tolist() + a[2][:, 0].tolist()) == sorted(x[:, 0].tolist())
    assert not torch.equal(split(x, labels, 0.3, seed=2)[2], a[2])
    with pytest.raises(ValueError, match=r"val_split: 0.3 of 1 rows leaves 1 for training and 0 for validation"):
        split(x[:1], labels[:1], 0.3, seed=0)
    with pytest.raises(ValueError, match=r"val_split: expected a fraction in \[0, 1\), got 1.5"):
        split(x, labels, 1.5, seed=0)
