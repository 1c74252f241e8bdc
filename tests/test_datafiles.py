"""Reading users' files: CSV as people write it, the task rule, and hostile files refused promptly."""
import io
import itertools
import os
import random
import re
import stat
import sys
import threading
import tracemalloc
import zipfile

import numpy as np
import pytest
import torch

import manualnn.data
from manualnn import csvfast, csvread, datafiles, safeio
from manualnn.columns import Columns
from manualnn.datafiles import DataError, Dataset, load_data
from helpers import write


def load_promptly(path, seconds=10, **kw):
    """load_data in a thread: a read that blocks (a FIFO, /dev/zero) fails the test instead of hanging it."""
    box = {}

    def target():
        try:
            box["value"] = load_data(path, **kw)
        except BaseException as e:   # handed to the test below
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if stat.S_ISFIFO(os.stat(path).st_mode):
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))   # unblock a reader stuck on the FIFO
        pytest.fail(f"load_data({path}) still running after {seconds} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


ROWS = [(5.1, 3.5, "setosa"), (7.0, 3.2, "versicolor"), (6.3, 3.3, "virginica")] * 5


def iris_text(delimiter=",", header=True):
    lines = [delimiter.join(["sepal_length", "sepal_width", "species"])] if header else []
    lines += [delimiter.join(map(str, row)) for row in ROWS]
    return "\n".join(lines) + "\n"


def check_iris(data, header=True):
    assert data.x.dtype == torch.float32 and data.x.shape == (15, 2)
    assert torch.equal(data.x[:3], torch.tensor([[5.1, 3.5], [7.0, 3.2], [6.3, 3.3]]))
    assert data.class_names == ["setosa", "versicolor", "virginica"] and data.classes == 3 and data.out == 3
    assert data.y.tolist() == [0, 1, 2] * 5 and data.y.dtype == torch.int64 and data.task == "classify"
    assert data.feature_names == (["sepal_length", "sepal_width"] if header else None)


# ---------------------------------------------------------------------------------------------
# CSV as people write it


@pytest.mark.parametrize("name,delimiter", [("d.csv", ","), ("d.csv", "\t"), ("d.csv", ";"), ("d.tsv", "\t")])
def test_delimiters(tmp_path, name, delimiter):
    check_iris(load_data(write(tmp_path, name, iris_text(delimiter))))


def test_excel_utf8_export_bom_crlf_blank_lines_and_spaces(tmp_path):
    text = iris_text().replace(",", " ,  ").replace("\n", "\r\n\r\n")
    path = write(tmp_path, "excel.csv", b"\xef\xbb\xbf" + text.encode())
    check_iris(load_data(path))              # the BOM is not part of the first header name


def test_no_header_with_text_labels_keeps_the_first_row(tmp_path):
    data = load_data(write(tmp_path, "d.csv", iris_text(header=False)))
    check_iris(data, header=False)
    assert "text labels" in data.task_reason


def test_quoted_cells(tmp_path):
    path = write(tmp_path, "q.csv", '"a","b","kind"\n' + '"1.5", 2,"Iris, setosa"\n3,"4","Iris; virginica"\n' * 5)
    data = load_data(path)
    assert data.x[:2].tolist() == [[1.5, 2.0], [3.0, 4.0]] and data.feature_names == ["a", "b"]
    assert data.class_names == ["Iris, setosa", "Iris; virginica"] and data.y[:2].tolist() == [0, 1]


def test_labels_one_to_three_become_classes_zero_to_two(tmp_path):
    rows = [f"{13 + i % 7 / 10},{2 + i % 5 / 10},{1 + i % 3}" for i in range(30)]   # wine-like, no header
    data = load_data(write(tmp_path, "wine.csv", "\n".join(rows) + "\n"))
    assert data.x.shape == (30, 2) and data.feature_names is None
    assert data.class_names == [1, 2, 3] and data.y.tolist() == [i % 3 for i in range(30)]
    assert "3 whole-number values 1..3 in 30 rows" in data.task_reason and "--task regress" in data.task_reason


@pytest.mark.parametrize("content,pattern", [
    ("a,b,y\n1,2,0\n3,4\n", r"bad.csv': row 3 has 2 columns, expected 3"),
    ("a,b,y\n1,2,0\n\n1e39,4,1\n", r"bad.csv': value 1e\+39 in row 4, column 1 \('a'\) is too large for float32 "
                                   r"\(largest 3.4e\+38\)"),
    ("a,b,y\n1,2,0\n3,NaN,1\n", r"bad.csv': 1 row with a missing cell \(empty, NA or NaN\): row 3, column 2 "
                                r"\('b'\); --missing drop leaves such rows out"),
    ("a,b,y\n1,2,0\n3,-inf,1\n", r"bad.csv': row 3, column 2 \('b'\) holds -inf: infinite values are not allowed"),
    ("1,2,0\n3,4,1e39\n", r"bad.csv': value 1e\+39 in row 2, column 3 is too large for float32"),
    ("a,b,y\n1,2,0\n3,x,1\n", r"bad.csv': row 3, column 2 \('b'\): expected a number, got 'x' \(text is allowed "
                              r"only in the target column, the last: --target 2 makes this column the target; --id "
                              r"or --ignore takes a column of text\)"),
    ("a;b;y\n1,5;2;0\n", r"bad.csv': row 2, column 1 \('a'\): expected a number, got '1,5' \(decimal commas"),
    ("a,b,y\n1,2,\n", r"bad.csv': 1 row with a missing cell \(empty, NA or NaN\): row 2, column 3 \('y'\)"),
    ("a,b\n", r"bad.csv': has a header but no data rows"),
    ("\n\n", r"bad.csv': is empty"),
])
def test_bad_csv_names_row_and_column(tmp_path, content, pattern):
    with pytest.raises(DataError, match=pattern):
        load_data(write(tmp_path, "bad.csv", content))


def test_a_text_feature_in_a_file_for_a_trained_model_is_not_offered_target(tmp_path):
    # predict reads the columns the model takes: --target (a train option) is not the way out there
    path = write(tmp_path, "bad.csv", "a,b,y\n1,2,0\n3,x,1\n")
    with pytest.raises(DataError, match=r"row 3, column 2 \('b'\): expected a number, got 'x' \(text is allowed only "
                                        r"in the target column, the last; --id or --ignore takes a column of text\)"):
        load_data(path, need_y=False, features=2)


def test_text_targets_need_one_target_column(tmp_path):
    path = write(tmp_path, "d.csv", "1,2,a,b\n3,4,c,d\n")
    with pytest.raises(DataError, match=r"row 2, column 3 \('a'\): expected a number, got 'c' \(text labels need a "
                                        r"single target column"):
        load_data(path, target_cols=2)


def test_float64_file_keeps_a_value_too_large_for_float32(tmp_path):
    np.savez(tmp_path / "big.npz", x=np.array([[1e39, 1.0]] * 10), y=np.arange(10.0) / 3)
    data = load_data(tmp_path / "big.npz")
    assert data.x.dtype == torch.float64 and data.x[0, 0].item() == 1e39 and data.task == "regress"


def test_csv_without_targets_for_a_model_of_that_width(tmp_path):
    data = load_data(write(tmp_path, "f.csv", "a,b,c\n1,2,3\n4,5,6\n"), need_y=False, features=3)
    assert data.y is None and data.task is None and data.x.shape == (2, 3) and data.feature_names == ["a", "b", "c"]


@pytest.mark.parametrize("parser", ["numpy", "pandas"])
def test_csv_numbers_are_not_held_as_python_floats(tmp_path, monkeypatch, parser):
    from manualnn import csvfast
    if parser == "pandas" and not csvfast.pandas_available():
        pytest.skip("pandas 3 is not installed")
    monkeypatch.setattr(csvfast, "_pandas_pays", lambda nbytes: parser == "pandas")
    monkeypatch.setattr(csvfast, "NATIVE_FROM", float("inf"))    # (this file does not load the native runner)
    if parser == "numpy":
        monkeypatch.setattr(csvfast, "pandas_available", lambda: False)
    rows, cols = 20000, 10
    table = np.arange(rows * cols, dtype=np.float64).reshape(rows, cols) / 7
    path = tmp_path / "big.csv"
    np.savetxt(path, table, delimiter=",", fmt="%.6f")
    if parser == "pandas":
        import pandas  # noqa: F401  (imported before the count: its import is not the reader's memory)
    tracemalloc.start()
    try:
        data = load_data(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert data.x.shape == (rows, cols - 1) and data.task == "regress"
    # the file's bytes (2.5 MB: parsed in memory), float64 cells (1.6 MB) and their float32 copy (0.7 MB),
    # and with pandas its frame's float64 columns (1.6 MB); a list of Python floats alone would be 6.4 MB more
    budget = path.stat().st_size + rows * cols * (8 + 4 + (8 if parser == "pandas" else 0)) + 0.5e6
    assert peak < budget, f"peak {peak / 1e6:.1f} MB, more than {budget / 1e6:.1f} MB"


# ---------------------------------------------------------------------------------------------
# The task rule


def test_diabetes_like_whole_numbers_are_values(tmp_path):
    gen = np.random.default_rng(0)
    targets = np.concatenate([np.arange(25, 347, 1.5).round()[:214], gen.integers(25, 347, 228)])[:442]
    assert len(np.unique(targets)) >= 150 and targets.min() >= 25 and (targets == targets.round()).all()
    np.savez(tmp_path / "d.npz", x=gen.normal(size=(442, 10)), y=targets)
    data = load_data(tmp_path / "d.npz")
    assert data.task == "regress" and data.classes is None and data.y.shape == (442, 1)
    assert "distinct whole numbers" in data.task_reason and "--task classify" in data.task_reason
    forced = load_data(tmp_path / "d.npz", task="classify")
    assert forced.classes == len(np.unique(targets)) and forced.class_names[0] == int(targets.min())


def test_scikit_learn_diabetes_is_values_and_iris_is_classes(tmp_path):
    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_diabetes(scaled=False)
    np.savez(tmp_path / "diabetes.npz", x=d.data, y=d.target)
    diabetes = load_data(tmp_path / "diabetes.npz")
    assert diabetes.task == "regress" and "214 distinct whole numbers (more than 100" in diabetes.task_reason
    iris = datasets.load_iris()
    np.savetxt(tmp_path / "iris.csv", np.c_[iris.data, iris.target], delimiter=",", fmt="%g")   # the README's
    data = load_data(tmp_path / "iris.csv")
    assert data.task == "classify" and data.class_names == [0, 1, 2] and data.y.tolist() == iris.target.tolist()
    assert data.task_reason.startswith("target column holds 3 whole-number values 0..2 in 150 rows")
    assert load_data(tmp_path / "iris.csv", task="regress").y.dtype == torch.float32


@pytest.mark.parametrize("labels,why", [
    ([0, 1, 2, 3] * 4, "only 16 rows"),                       # 4 classes need 20 rows
    ([3, 4, 5] * 10, "not starting at 0 or 1"),
    ([0, 1, 3] * 10, "with gaps"),
    ([2] * 10, "a single value 2"),
    (list(range(101)) * 6, "101 distinct whole numbers (more than 100"),
])
def test_whole_numbers_that_do_not_look_like_classes_are_values(tmp_path, labels, why):
    np.savez(tmp_path / "d.npz", x=np.ones((len(labels), 2), dtype=np.float32), y=np.array(labels))
    data = load_data(tmp_path / "d.npz")
    assert data.task == "regress" and why in data.task_reason and data.y.dtype == torch.float32
    assert load_data(tmp_path / "d.npz", task="classify").classes == len(set(labels))


def test_other_targets(tmp_path):
    x = np.ones((10, 2), dtype=np.float32)
    np.savez(tmp_path / "s.npz", x=x, y=np.array(["dog", "cat"] * 5))
    text = load_data(tmp_path / "s.npz")
    assert text.class_names == ["cat", "dog"] and text.y.tolist() == [1, 0] * 5
    with pytest.raises(DataError, match=r"s.npz': task 'regress' needs numbers"):
        load_data(tmp_path / "s.npz", task="regress")
    np.savez(tmp_path / "b.npz", x=x, y=np.array([True, False] * 5))
    assert load_data(tmp_path / "b.npz").class_names == [False, True]
    np.savez(tmp_path / "f.npz", x=x, y=np.arange(10) / 4)
    assert load_data(tmp_path / "f.npz").task == "regress"
    with pytest.raises(DataError, match=r"needs whole-number or text labels, but the target column holds 0.25 in y\[1\]"):
        load_data(tmp_path / "f.npz", task="classify")
    np.savez(tmp_path / "m.npz", x=x, y=np.zeros((10, 3), dtype=np.int64))
    assert load_data(tmp_path / "m.npz").out == 3
    with pytest.raises(ValueError, match="task: expected one of"):
        load_data(tmp_path / "m.npz", task="guess")


def test_class_names_from_a_model_encode_a_test_file(tmp_path):
    known = ["setosa", "versicolor", "virginica"]
    path = write(tmp_path, "test.csv", "a,b,species\n1,2,virginica\n3,4,setosa\n")   # only some classes
    data = load_data(path, class_names=known)
    assert data.y.tolist() == [2, 0] and data.class_names == known and data.classes == 3 and data.task == "classify"
    write(tmp_path, "test.csv", "a,b,species\n1,2,virginica\n3,4,rose\n")
    with pytest.raises(DataError, match=r"test.csv': label 'rose' \(row 3\) is not one of the model's 3 classes: "
                                        r"'setosa', 'versicolor', 'virginica'"):
        load_data(path, class_names=known)
    numbers = write(tmp_path, "n.csv", "1,2,3\n3,4,1\n")
    assert load_data(numbers, class_names=[1, 2, 3]).y.tolist() == [2, 0]
    with pytest.raises(DataError, match=r"label 3 \(row 1\) is not one of the model's 2 classes: 0, 1"):
        load_data(numbers, class_names=[0, 1])
    with pytest.raises(ValueError, match="class_names"):
        load_data(numbers, class_names=[1, 2, 3], task="regress")


def test_digits_and_the_old_imports():
    assert manualnn.data.load_data is load_data and manualnn.data.Dataset is Dataset
    assert manualnn.data.DataError is DataError and manualnn.data.TASKS == ("auto", "classify", "regress")
    assert ".tsv" in manualnn.data.FORMATS
    pytest.importorskip("sklearn")
    data = load_data("digits")
    assert data.class_names == list(range(10)) and data.task == "classify" and data.x.shape == (1797, 64)


# ---------------------------------------------------------------------------------------------
# Hostile files


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "f.csv"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match=r"f.csv': is a FIFO \(named pipe\), not a regular file"):
        load_promptly(fifo)


def test_dev_zero_behind_a_symlink_is_refused(tmp_path):
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    os.symlink("/dev/zero", tmp_path / "x.csv")
    with pytest.raises(DataError, match=r"x.csv': is a character device, not a regular file"):
        load_promptly(tmp_path / "x.csv")


def test_a_symlink_to_a_regular_file_is_fine(tmp_path):
    os.symlink(write(tmp_path, "real.csv", iris_text()), tmp_path / "link.csv")
    check_iris(load_data(tmp_path / "link.csv"))


def test_a_folder_is_refused(tmp_path):
    (tmp_path / "d.npz").mkdir()
    with pytest.raises(DataError, match=r"d.npz': is a folder"):
        load_data(tmp_path / "d.npz")


@pytest.mark.parametrize("content,pattern", [
    (random.Random(0).randbytes(4096), r"not a readable CSV text file: line \d+ (holds NUL bytes|is not UTF-8)"),
    (None, r"not a readable CSV text file: it is a zip archive"),
    ("a,b,y\n1,2,caf\u00e9\n".encode("latin-1"), r"not a readable CSV text file: line 2 is not UTF-8 \(byte 0xe9\)"),
    ("a,b\n1,2\n".encode("utf-16"), r"not a readable CSV text file: it is UTF-16 text; save it as UTF-8"),
])
def test_binary_and_non_utf8_files_named_csv(tmp_path, content, pattern):
    if content is None:
        np.savez(tmp_path / "real.npz", x=np.ones((3, 2)))
        content = (tmp_path / "real.npz").read_bytes()
    with pytest.raises(DataError, match=r"x.csv': " + pattern):
        load_data(write(tmp_path, "x.csv", content))


def test_a_csv_larger_than_the_memory_budget_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(safeio, "memory_budget", lambda: 10_000)
    with pytest.raises(DataError, match=r"d.csv': a 4.0 KB CSV \(up to 2001 numbers\) needs 28.0 KB, more than the "
                                        r"10.0 KB of memory available"):
        load_data(write(tmp_path, "d.csv", "1,2\n" * 1000))


def npy_header(shape, descr="<f8"):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def write_member(path, name, header, zeros, compression=zipfile.ZIP_DEFLATED):
    """A zip with one .npy member: ``header`` then ``zeros`` zero bytes, streamed (never all in memory)."""
    with zipfile.ZipFile(path, "w", compression=compression) as zf, zf.open(name, "w", force_zip64=True) as m:
        m.write(header)
        chunk = bytes(1 << 20)
        while zeros > 0:
            m.write(chunk[:zeros])
            zeros -= len(chunk)
    return path


@pytest.fixture
def no_inflating(monkeypatch):
    """Fail if any array is read: a bomb must be refused from the zip directory and the .npy header."""
    def read_array(*args, **kwargs):
        raise AssertionError("an array was inflated")
    monkeypatch.setattr(np.lib.format, "read_array", read_array)


def test_a_deflate_bomb_is_refused_before_inflating(tmp_path, monkeypatch, no_inflating):
    # 16.8 MB of zeros deflate to about 16 KB: refused by its ratio (zlib reaches ~1030:1 on zeros; another
    # deflate library may stop short of 1000:1), else by the memory budget
    path = write_member(tmp_path / "bomb.npz", "x.npy", npy_header((2048, 1024)), 2048 * 1024 * 8)
    assert path.stat().st_size < 100_000
    monkeypatch.setattr(safeio, "memory_budget", lambda: 8_000_000)
    with pytest.raises(DataError, match=r"bomb.npz': (member 'x.npy' inflates .* refused as a zip bomb|'x' .* needs "
                                        r"16.8 MB, more than the 8.0 MB of memory available)"):
        load_data(path)


def test_an_array_larger_than_the_memory_budget_is_never_read(tmp_path, monkeypatch, no_inflating):
    path = write_member(tmp_path / "big.npz", "x.npy", npy_header((2048, 1024)), 2048 * 1024 * 8, zipfile.ZIP_STORED)
    monkeypatch.setattr(safeio, "memory_budget", lambda: 8_000_000)
    with pytest.raises(DataError, match=r"big.npz': 'x' \(declared shape \(2048, 1024\), float64\) needs 16.8 MB, "
                                        r"more than the 8.0 MB of memory available"):
        load_data(path)


def test_a_bzip2_bomb_is_refused_by_its_ratio(tmp_path, no_inflating):
    path = write_member(tmp_path / "bomb.npz", "x.npy", npy_header((2048, 1024)), 2048 * 1024 * 8, zipfile.ZIP_BZIP2)
    with pytest.raises(DataError, match=r"bomb.npz': member 'x.npy' inflates .* to 16.8 MB \(more than 1000:1\): "
                                        r"refused as a zip bomb"):
        load_data(path)


def test_npy_headers_that_lie(tmp_path, no_inflating):
    huge = write_member(tmp_path / "huge.npz", "x.npy", npy_header((1_000_000, 1_000_000)), 80)
    with pytest.raises(DataError, match=r"huge.npz': 'x' \(declared shape \(1000000, 1000000\), float64\) needs "
                                        r"8.0 TB, more than the .* of memory available"):
        load_data(huge)
    short = write_member(tmp_path / "short.npz", "x.npy", npy_header((1000, 100)), 80)
    with pytest.raises(DataError, match=r"short.npz': member 'x.npy' declares 208 B but its array \(1000, 100\) "
                                        r"float64 needs 800.1 KB: the archive is damaged"):
        load_data(short)
    long = write_member(tmp_path / "long.npz", "x.npy", npy_header((10, 2)), 3 << 20)
    with pytest.raises(DataError, match=r"long.npz': member 'x.npy' declares 3.1 MB for an array of 160 B: refused"):
        load_data(long)


def test_damaged_archives(tmp_path):
    x = np.random.default_rng(0).normal(size=(200, 20))
    np.savez_compressed(tmp_path / "ok.npz", x=x, y=np.arange(200.0))
    raw = bytearray((tmp_path / "ok.npz").read_bytes())
    with zipfile.ZipFile(tmp_path / "ok.npz") as zf:
        info = zf.getinfo("x.npy")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start + 200:start + 400] = bytes(range(200))             # garbage inside the deflate stream
    write(tmp_path, "corrupt.npz", bytes(raw))
    with pytest.raises(DataError, match=r"corrupt.npz': .*(damaged|not a readable)"):
        load_data(tmp_path / "corrupt.npz")
    write(tmp_path, "cut.npz", (tmp_path / "ok.npz").read_bytes()[:3000])
    with pytest.raises(DataError, match=r"cut.npz': not a readable .npz file"):
        load_data(tmp_path / "cut.npz")
    np.savez(tmp_path / "stored.npz", x=x, y=np.arange(200.0))     # stored, not deflated: only the CRC can tell
    raw = bytearray((tmp_path / "stored.npz").read_bytes())
    raw[1000] ^= 0xFF                                             # one byte inside x's numbers
    write(tmp_path, "crc.npz", bytes(raw))
    with pytest.raises(DataError, match=r"crc.npz': not a readable .npz file: 'x' is damaged \(Bad CRC-32"):
        load_data(tmp_path / "crc.npz")


class Payload:
    """Unpickling this would create the marker file: a stand-in for running any code."""
    marker = None

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickles_are_refused_and_never_run(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setattr(Payload, "marker", marker)
    np.savez(tmp_path / "obj.npz", x=np.ones((4, 2)), y=np.array([Payload()] * 4, dtype=object))
    with pytest.raises(DataError, match=r"obj.npz': 'y' is an array of Python objects \(it would need pickle"):
        load_data(tmp_path / "obj.npz")
    torch.save({"x": torch.ones(4, 2), "y": Payload()}, tmp_path / "obj.pt")
    with pytest.raises(DataError, match=r"obj.pt': not a readable .pt file \(it holds Python objects other than"):
        load_data(tmp_path / "obj.pt")
    assert not marker.exists()


def test_a_legacy_pt_is_refused(tmp_path):
    torch.save({"x": torch.ones(4, 2), "y": torch.zeros(4)}, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(DataError, match=r"old.pt': not a readable .pt file: not a zip-format .pt"):
        load_data(tmp_path / "old.pt")


def test_the_cli_reports_hostile_files_without_a_traceback(tmp_path, capsys):
    from manualnn.cli import main
    os.mkfifo(tmp_path / "f.csv")
    np.savez(tmp_path / "obj.npz", x=np.ones((4, 2)), y=np.array([object()] * 4, dtype=object))
    for path in (tmp_path / "f.csv", tmp_path / "obj.npz"):
        code = main(["train", "--data", str(path), "--device", "cpu"])
        out, err = capsys.readouterr()
        assert code == 2 and out == "" and "Traceback" not in err
        assert err.startswith("manualnn train: error: --data: data file") and len(err.splitlines()) == 1


@pytest.mark.skipif(sys.platform != "linux", reason="/proc/meminfo")
def test_the_memory_budget_is_what_linux_says_is_available():
    with open("/proc/meminfo") as f:
        available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    assert 0 < safeio.memory_budget() <= available * 1.5
    assert safeio.human(11.8e9) == "11.8 GB" and safeio.human(512) == "512 B" and datafiles.MAX_AUTO_CLASSES == 100


# ---------------------------------------------------------------------------------------------
# The fast parsers read exactly what the careful reader reads, and clean files never reach the careful one


def careful_only(monkeypatch):
    """Every CSV through the careful reader (the fast parsers refuse everything)."""
    monkeypatch.setattr(csvfast, "parse", lambda *args, **kwargs: None)


def outcome(path, **kw):
    try:
        d = load_data(path, need_y=False, **kw)
    except DataError as e:
        return "error", str(e)
    return (d.x.tolist(), None if d.y is None else d.y.tolist(), d.class_names, d.feature_names, d.target_names,
            d.ids, d.id_name, d.notes, d.task, d.fill_values)


NUMBERS = ["1", "-2.5", " 3", "4 ", "+.5", "5.", "1e3", "1E-2", "007", "-0", "nan", "NaN", "inf", "-inf", "", "NA",
           "?", "1_000", "1,5", "x", '"6"', '"7,5"', ' "8"', "\u00a09", "\u0661", "0x10", "1e400", "True"]
LABELS = ["a", "b", "setosa", "", '"d,e"', "NA", " f ", '"g""h"', ' "q"', "1", "2", '"multi\nline"', "caf\u00e9",
          "x\ry", "nul\0"]


def random_csv(r):
    """A small CSV as people write them, and as they get them wrong: odd numbers, missing cells, quotes,
    ragged rows, blank lines, CRLF, a byte-order mark, a header, pandas' index, text labels."""
    width, delimiter, index = r.randint(2, 5), r.choice([",", ";", "\t"]), r.random() < 0.2
    text_target = r.random() < 0.4
    rows = [delimiter.join([""] * index + [f"c{i}" for i in range(width)])] if r.random() < 0.5 else []
    clean = r.choice([0, 0, 60])     # rows past the first lines: a file the fast parsers read as it streams in
    for i in range(r.randint(0, 12) + clean):
        if i < clean:
            label = ["a", "b", "setosa"][i % 3] if text_target else str(i % 3)
            rows.append(delimiter.join([str(i)] * index + [str(i % 5)] * (width - 1) + [label]))
            continue
        odd = r.random() < (0.3 if clean else 0.15)
        cells = [r.choice(NUMBERS) if odd and r.random() < 0.3 else str(round(r.uniform(-5, 5), r.randint(0, 4)))
                 for _ in range(width - 1)]
        cells.append(r.choice(LABELS) if text_target else r.choice(NUMBERS) if odd else str(r.randint(0, 2)))
        cells = cells[:-1] if r.random() < 0.05 else cells + ["9"] if r.random() < 0.03 else cells
        rows.append(delimiter.join([str(r.choice([i, i, i, 0, "k"]))] * index + cells))
        rows += [""] * (r.random() < 0.05)
    end = r.choice(["\n", "\r\n"])
    return "\ufeff" * (r.random() < 0.1) + end.join(rows) + end * (r.random() < 0.8)


def test_fast_and_careful_readers_agree_on_random_files(tmp_path, monkeypatch):
    parsers = ["numpy"] + (["pandas"] if csvfast.pandas_available() else [])
    for seed in range(500):
        r = random.Random(seed)
        path = tmp_path / "r.csv"
        path.write_bytes(random_csv(r).encode("utf-8"))
        kw = dict(missing=r.choice(["refuse", "drop", "mean"]),
                  columns=Columns(target=r.choice([None, None, ["c1"], ["-1"], ["2"]]),
                                  ignore=r.choice([[], [], ["c0"], ["1"]]), id=r.choice([None, None, "c2", "3"])))
        fast = {parser: outcome(path, parser=parser, **kw) for parser in parsers}
        if "pandas" in parsers:   # a big file's way: pieces cut after line ends, parsed on two threads
            with monkeypatch.context() as m:
                m.setattr(csvfast, "PIECE_FROM", 8)
                m.setattr(csvfast, "_cpus", lambda: 2)
                fast["pandas in pieces"] = outcome(path, parser="pandas", **kw)
        with monkeypatch.context() as m:
            careful_only(m)
            careful = outcome(path, **kw)
        for parser, got in fast.items():
            assert got == careful, f"seed {seed}, {parser}: {path.read_bytes()!r} {kw}\n{got}\n{careful}"


@pytest.mark.parametrize("tail,ignore", [
    ("1,2,nul\0\n", []),                 # a NUL byte
    ("1,2,a\r\r1e400,4,b\n", []),          # lone carriage returns (a blank line, as old Macs wrote it)
    ("\n1e400,2,a\n", []),                # a blank line, then a value refused by its row
    ('1,"x\ny",a\n', ["b"]),              # a quoted line break in a column never parsed
    ("1,2\n", []),                        # a short row
    ("1,2,a,4\n", []),                    # a long row
    ("1,2,\n", []),                       # an empty label
])
def test_what_follows_the_first_lines_is_read_as_the_careful_reader_reads_it(tmp_path, monkeypatch, tail, ignore):
    rows = "".join(f"{i},{i % 5},{'xyz'[i % 3]}\n" for i in range(80))
    path = write(tmp_path, "t.csv", ("a,b,label\n" + rows + tail + "7,8,z\n").encode())
    kw = dict(columns=Columns(ignore=ignore))
    fast = [outcome(path, parser=parser, **kw) for parser in ["numpy", "pandas"]]
    careful_only(monkeypatch)
    assert fast == [outcome(path, **kw)] * 2


def test_a_big_file_is_parsed_in_pieces_on_every_cpu(tmp_path, monkeypatch):
    if not csvfast.pandas_available():
        pytest.skip("pandas 3 is not installed")
    monkeypatch.setattr(csvfast, "PIECE_FROM", 1000)
    monkeypatch.setattr(csvfast, "_cpus", lambda: 2)
    data = b"a,b,label\n" + b"".join(b"%d,%d.5,%s\r\n" % (i, -i, b"xyz"[i % 3:i % 3 + 1]) for i in range(3000))
    pieces = [data[start:stop] for start, stop in csvfast._pieces(data, 10, b'"' in data)]
    assert len(pieces) == csvfast.PIECES and b"".join(pieces) == data[10:]
    assert all(piece.endswith(b"\r\n") for piece in pieces)
    monkeypatch.setattr(csvfast, "_cpus", lambda: 1)
    starts = itertools.accumulate([10] + [len(p) for p in pieces])
    assert csvfast._pieces(data, 10, b'"' in data) == [(start, start + len(p)) for start, p in zip(starts, pieces)]
    path = write(tmp_path, "big.csv", data)
    monkeypatch.setattr(csvread, "_careful", lambda *a, **k: pytest.fail("the careful reader ran on a clean file"))
    got = load_data(path, parser="pandas")
    assert got.x[:, 0].tolist() == list(range(3000)) and got.x[2999, 1] == -2999.5 and got.y[:4].tolist() == [0, 1, 2, 0]
    quoted = data.replace(b"x\r", b'"x"\r')    # a quote could hold a line break: one piece
    assert len(csvfast._pieces(quoted, 10, b'"' in quoted)) == 1
    cut = csvfast._pieces(data, 10, b'"' in data)[1][0]   # a byte-order mark where a piece would start: pandas
    marked = data[:cut] + csvfast.BOM + data[cut:]   # drops it there, the careful reader refuses the row: one piece
    assert csvfast._pieces(marked, 10, b'"' in marked) == [(10, len(marked))]


def test_clean_files_are_read_by_the_fast_parser(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the careful reader ran on a clean file")
    monkeypatch.setattr(csvread, "_careful", refuse)
    species = ["setosa", "versicolor", '"Iris, virginica"']
    rows = [f'{i},{i / 7:.5f},"{-i}",{species[i % 3]},id{i}' for i in range(300)]
    text = ",a,b,species,name\r\n" + "\r\n".join(rows) + "\r\n"     # pandas' index, quotes, CRLF, a BOM below
    path = write(tmp_path, "clean.csv", b"\xef\xbb\xbf" + text.encode())
    for parser in ["numpy"] + (["pandas"] if csvfast.pandas_available() else []):
        data = load_data(path, parser=parser, columns=Columns(id="name"))
        assert data.x.shape == (300, 2) and data.feature_names == ["a", "b"] and data.x[7].tolist() == [1.0, -7.0]
        assert data.class_names == ["Iris, virginica", "setosa", "versicolor"] and data.y[:3].tolist() == [1, 2, 0]
        assert data.ids[:2] == ["id0", "id1"] and data.id_name == "name" and "pandas' index" in data.notes[0]


# ---------------------------------------------------------------------------------------------
# Columns by name or position, pandas' index, a model's feature names


def test_pandas_index_column_is_dropped_with_a_note(tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"a": np.arange(20) / 3, "b": np.arange(20) % 4, "label": ["x", "y"] * 10})
    frame.sample(frac=1, random_state=0).to_csv(tmp_path / "d.csv")    # shuffled: the index is not 0..N-1 in order
    data = load_data(tmp_path / "d.csv")
    assert data.x.shape == (20, 2) and data.feature_names == ["a", "b"] and data.class_names == ["x", "y"]
    assert len(data.notes) == 1 and "column 1 has no name and distinct values (0..19): pandas' index" in data.notes[0]
    write(tmp_path, "repeats.csv", ",a,label\n1,2,x\n1,3,y\n")           # repeated values: a feature without a name
    assert load_data(tmp_path / "repeats.csv").feature_names == ["", "a"]
    write(tmp_path, "named.csv", "row,a,label\n0,2,x\n1,3,y\n")          # a named column is the user's
    assert load_data(tmp_path / "named.csv").feature_names == ["row", "a"]


def test_columns_chosen_by_name_or_position(tmp_path):
    path = write(tmp_path, "d.csv", "id,a,note,b,price,label\n" + "".join(
        f"r{i},{i},text {i},{i % 5},{100 + i}.5,{i % 2}\n" for i in range(20)))
    data = load_data(path, columns=Columns(target=["label"], ignore=["note", "5"], id="id"))
    assert data.feature_names == ["a", "b"] and data.target_names == ["label"] and data.class_names == [0, 1]
    assert data.ids[:2] == ["r0", "r1"] and data.id_name == "id" and data.x[3].tolist() == [3.0, 3.0]
    both = load_data(path, target_cols=2, columns=Columns(ignore=["3"], id="1"))
    assert both.target_names == ["price", "label"] and both.feature_names == ["a", "b"] and both.task == "regress"
    assert load_data(path, columns=Columns(target=["-2"], ignore=["id", "note", "label"])).target_names == ["price"]
    for columns, pattern in [
        (Columns(target=["labl"]), r"a target column 'labl': no such column; the header has 'id', 'a', 'note'"),
        (Columns(target=["7"]), r"a target column '7': expected a position from 1 to 6 \(or -1 to -6"),
        (Columns(target=["label"], ignore=["label"]), r"column 6 \('label'\) is both a target and ignored"),
        (Columns(ignore=["id", "a", "b", "note", "price"]), r"expected at least one feature column besides 1 target"),
    ]:
        with pytest.raises(DataError, match=pattern):
            load_data(path, columns=columns)
    write(tmp_path, "plain.csv", "1,2,0\n3,4,1\n")
    with pytest.raises(DataError, match=r"a target column 'label': the file has no header row to find names in; "
                                        r"give the column's position \(1 to 3\)"):
        load_data(tmp_path / "plain.csv", columns=Columns(target=["label"]))
    np.savez(tmp_path / "d.npz", x=np.ones((4, 2)), y=np.zeros(4))
    with pytest.raises(DataError, match=r"columns are chosen \(target, ignore, id\) in CSV and TSV files"):
        load_data(tmp_path / "d.npz", columns=Columns(id="1"))


def test_a_models_feature_names_find_its_columns(tmp_path):
    model = dict(features=["a", "b", "c"], targets=["y"], width=3)
    path = write(tmp_path, "t.csv", "c,y,extra,a,b\n3,1,x,1,2\n6,0,x,4,5\n")      # reordered, with more columns
    data = load_data(path, need_y=False, columns=Columns(**model))
    assert data.x.tolist() == [[1, 2, 3], [4, 5, 6]] and data.y.tolist() == [[1.0], [0.0]]
    assert any("another order than the training file's; read by name" in n for n in data.notes)
    assert any("column 'extra' not read" in n for n in data.notes)
    write(tmp_path, "short.csv", "a,b,y\n1,2,0\n")
    with pytest.raises(DataError, match=r"short.csv': has no column 'c' \(the model was trained on 'a', 'b', 'c'; "
                                        r"this file has 'a', 'b', 'y'\)"):
        load_data(tmp_path / "short.csv", need_y=False, columns=Columns(**model))
    write(tmp_path, "few.csv", "1,2\n4,5\n")        # no header: by position, and one column is missing
    with pytest.raises(DataError, match=r"few.csv': has 2 columns to read; the model takes 3 features \(\+ 1 target "
                                        r"column\), so expected 3 or 4 \(the file has no header row"):
        load_data(tmp_path / "few.csv", need_y=False, features=3, columns=Columns(features=["a", "b", "c"]))


# ---------------------------------------------------------------------------------------------
# Missing cells: refused with the rows named, dropped, or filled with the column's mean


def test_missing_cells_refused_dropped_or_filled(tmp_path):
    path = write(tmp_path, "m.csv", "a,b,y\n1,2,0\n,4,1\n5,NA,0\n7,8,\n9,10,1\n11,?,1\n")
    with pytest.raises(DataError, match=r"m.csv': 4 rows with a missing cell \(empty, NA or NaN\): row 3, column 1 "
                                        r"\('a'\); row 4, column 2 \('b'\); row 5, column 3 \('y'\); row 7, column 2 "
                                        r"\('b'\); --missing drop leaves such rows out, --missing mean fills"):
        load_data(path)
    dropped = load_data(path, missing="drop")
    assert dropped.x.tolist() == [[1, 2], [9, 10]] and dropped.y.tolist() == [[0.0], [1.0]]
    assert dropped.notes == [f"data file {str(path)!r}: left out 4 rows with a missing cell (--missing drop)"]
    filled = load_data(path, missing="mean", task="classify")
    # the means of the present cells: a (1+5+7+9+11)/5 = 6.6, b (2+4+8+10)/4 = 6; row 5's target is missing: left out
    assert filled.fill_values == pytest.approx([6.6, 6.0])
    assert filled.x.flatten().tolist() == pytest.approx([1, 2, 6.6, 4, 5, 6, 9, 10, 11, 6])
    assert filled.y.tolist() == [0, 1, 0, 1, 1] and "filled 3 missing feature cells with its column's mean" in \
        filled.notes[0] and "left out 1 row with a missing target" in filled.notes[0]
    given = load_data(path, missing="mean", fill=[0.0, -1.0], need_y=False)   # a trained model's values
    assert given.x[1].tolist() == [0.0, 4.0] and given.x[2].tolist() == [5.0, -1.0]
    many = write(tmp_path, "many.csv", "a,y\n" + "".join(f"{'' if i % 2 else i},1\n" for i in range(20)))
    with pytest.raises(DataError, match=r"10 rows with a missing cell .* \(and 5 more rows\)"):
        load_data(many)


def test_nan_in_arrays_follows_the_same_policy(tmp_path):
    x = np.arange(12.0).reshape(6, 2)
    x[1, 0] = np.nan
    np.savez(tmp_path / "n.npz", x=x, y=np.array([0.5, 1, 2, 3, np.nan, 5]))
    with pytest.raises(DataError, match=r"n.npz': 2 rows with a missing cell \(empty, NA or NaN\): x\[1, 0\]; y\[4\]"):
        load_data(tmp_path / "n.npz")
    data = load_data(tmp_path / "n.npz", missing="drop")
    assert data.x.shape == (4, 2) and data.y[:, 0].tolist() == [0.5, 2, 3, 5]
    np.savez(tmp_path / "inf.npz", x=np.array([[1.0, np.inf]] * 3), y=np.zeros(3))
    with pytest.raises(DataError, match=r"inf.npz': 'x' has infinite values: inf at x\[0, 1\]"):
        load_data(tmp_path / "inf.npz", missing="drop")


# ---------------------------------------------------------------------------------------------
# Files the first fault suite missed: each read wrongly or with a traceback before


def test_a_header_of_numbers_over_text_labels_is_a_header(tmp_path):
    data = load_data(write(tmp_path, "d.csv", "0,1,label\n" + "1.5,2,cat\n3,4,dog\n" * 5))
    assert data.x.shape == (10, 2) and data.class_names == ["cat", "dog"] and data.feature_names == ["0", "1"]


def test_a_first_row_with_an_empty_target_is_data_not_a_header(tmp_path):
    path = write(tmp_path, "d.csv", "1,2,\n3,4,0\n5,6,1\n")
    with pytest.raises(DataError, match=r"d.csv': 1 row with a missing cell \(empty, NA or NaN\): row 1, column 3;"):
        load_data(path)
    assert load_data(path, missing="drop").x.tolist() == [[3, 4], [5, 6]]


def test_digit_separators_are_not_numbers(tmp_path):
    with pytest.raises(DataError, match=r"row 2, column 1 \('a'\): expected a number, got '1_000' \(digit separators "
                                        r"are not read: write 1000, not 1_000\)"):
        load_data(write(tmp_path, "d.csv", "a,b,y\n1_000,2,0\n3,4,1\n"))
    assert safeio.number("1_000") is None and safeio.number("\u0661") is None and safeio.number(" 1e3 ") == 1000


def test_an_unclosed_quote_is_named_where_it_opens(tmp_path):
    path = write(tmp_path, "q.csv", 'a,b,y\n1,2,0\n3,"4,1\n5,6,0\n7,8,1\n')
    with pytest.raises(DataError, match=r"q.csv': row 3, column 2: a quoted cell runs from line 3 to line 5 \(a quote "
                                        r"that is never closed\?\)"):
        load_data(path)


def test_a_big_endian_npz_is_read(tmp_path):
    x = np.arange(12.0).reshape(6, 2)
    np.savez(tmp_path / "be.npz", x=x.astype(">f8"), y=np.array([0, 1] * 3, dtype=">i4"))
    data = load_data(tmp_path / "be.npz", task="classify")
    assert data.x.tolist() == x.tolist() and data.y.tolist() == [0, 1] * 3


@pytest.mark.parametrize("shape", [(60, 0), (60, 0, 3)])
def test_x_without_features_is_refused(tmp_path, shape):
    np.savez(tmp_path / "z.npz", x=np.zeros(shape), y=np.arange(60) % 2)
    with pytest.raises(DataError, match=rf"z.npz': 'x' has no features \(shape {re.escape(str(shape))}\)"):
        load_data(tmp_path / "z.npz")


@pytest.mark.filterwarnings("ignore::UserWarning")    # torch's own, on making quantized and nested tensors
@pytest.mark.parametrize("kind,pattern", [
    ("sparse", r"'x' is a sparse_coo tensor; save x.to_dense\(\)"),
    ("meta", r"'x' is a meta tensor: it has a shape but no values"),
    ("quantized", r"'x' is a quantized tensor; save x.dequantize\(\)"),
    ("nested", r"'x' is a nested tensor \(rows of different lengths\)"),
])
def test_pt_data_of_other_tensor_kinds_is_refused(tmp_path, kind, pattern):
    x = {"sparse": lambda: torch.ones(4, 2).to_sparse(), "meta": lambda: torch.empty(4, 2, device="meta"),
         "quantized": lambda: torch.quantize_per_tensor(torch.ones(4, 2), 0.1, 0, torch.qint8),
         "nested": lambda: torch.nested.nested_tensor([torch.ones(2, 2), torch.ones(3, 2)])}[kind]()
    torch.save({"x": x, "y": torch.zeros(4)}, tmp_path / "d.pt")
    with pytest.raises(DataError, match=r"d.pt': " + pattern):
        load_data(tmp_path / "d.pt")


def test_a_label_with_a_lone_surrogate_is_refused(tmp_path):
    np.savez(tmp_path / "s.npz", x=np.ones((6, 2)), y=np.array(["a", "b\ud800"] * 3))
    with pytest.raises(DataError, match=r"s.npz': label 'b\\ud800' \(y\[1\]\) is not valid text \(it holds a lone "
                                        r"surrogate"):
        load_data(tmp_path / "s.npz")


def test_capital_x_and_y_as_scikit_learn_names_them(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.ones((10, 2)), y=np.arange(10) % 2)
    assert load_data(tmp_path / "d.npz").x.shape == (10, 2)
    torch.save({"X": torch.ones(10, 2), "Y": torch.arange(10) % 2}, tmp_path / "d.pt")
    assert load_data(tmp_path / "d.pt").classes == 2
    np.savez(tmp_path / "both.npz", x=np.ones((10, 2)), X=np.ones((10, 2)), y=np.zeros(10))
    with pytest.raises(DataError, match=r"both.npz': holds both 'x' and 'X'; keep one"):
        load_data(tmp_path / "both.npz")


def test_the_csv_benchmark_runs_and_reports_each_contender():
    from benchmarks import csv_read
    result = csv_read.measure(rows=300, cols=5, repeats=2)
    assert {"manualnn", "manualnn_numpy"} <= set(result["median"]) and result["bytes"] > 300 * 5 * 2
    assert all(len(times) == 2 for times in result["seconds"].values())
    assert set(result["ratio_to_pandas"]) == (set(result["median"]) if "pandas" in result["median"] else set())


def test_the_cli_offers_every_missing_cell_policy():
    from manualnn import missing
    from manualnn.cli.options import MISSING
    assert MISSING == missing.POLICIES
