"""The native CSV parser (kernels/native/csv.cpp): the numbers float() reads, every cell it does not take
refused, the same table on any number of threads and pieces, and through load_data what the careful reader
reads."""
import math
import random
import re

import numpy as np
import pytest

from manualnn import csvfast, csvread
from manualnn.backends import native_build as native
from manualnn.columns import Columns
from manualnn.datafiles import load_data
from helpers import write
from test_datafiles import careful_only, outcome

GRAMMAR = re.compile(r" *[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)? *")


@pytest.fixture
def module(native_for_auto):
    if native_for_auto is None:
        pytest.skip("the native runner cannot be built here")
    return native.load()


def random_cell(r):
    kind = r.random()
    if kind < 0.2:
        return repr(r.uniform(-1e6, 1e6))
    if kind < 0.35:
        return repr(r.lognormvariate(0, 150) * r.choice([-1, 1]))      # 17 digits and exponents, near subnormal
    if kind < 0.45:
        return str(r.randint(-10 ** 25, 10 ** 25))                    # more digits than 53 bits hold
    if kind < 0.55:
        return f"{r.random():.{r.randint(0, 30)}f}"
    if kind < 0.65:
        return f"{r.random() * 10 ** r.randint(-30, 30):.{r.randint(0, 20)}{r.choice('eE')}}"
    if kind < 0.8:
        return r.choice([".5", "5.", "-.5", "+5", "+.5e3", "1E5", "1e-5", "007", "-0", "0.", " 1.5", "2 ", "  -3  ",
                         "1e308", "1.7976931348623159e308", "4.9e-324", "2e-324", "1e-400", "1e400", "0e99999",
                         "9007199254740993", "0.1000000000000000055511151231257827"])
    if kind < 0.9:     # not numbers here: missing, text, what float() reads but a CSV parser should not
        return r.choice(["", " ", "nan", "NaN", "inf", "-Infinity", "NA", "1_000", "0x10", "1e", "e5", ".", "-", "+-1",
                         "1..2", "1e5.5", "1 2", "\t1", "1\t", "\u00a01", "x", "True", "1,5"])
    return "".join(r.choice("0123456789.+-eE ") for _ in range(r.randint(1, 6)))


def taken(cell):
    """Whether the parser takes the cell: plain number syntax, and within a double's range as float() reads it
    (1e400 is inf, 1e-400 is 0 although a digit is not)."""
    if not GRAMMAR.fullmatch(cell):
        return False
    value = float(cell)
    mantissa = re.split("[eE]", cell)[0]
    return math.isfinite(value) and (value != 0 or not any(c in "123456789" for c in mantissa))


def test_each_cell_is_float_or_refused(module):
    r = random.Random(0)
    cells = [random_cell(r) for _ in range(20000)]
    accepted = 0
    for cell in cells:
        got = module.parse_csv((cell + ",1\n").encode(), 0, ",", 2, [0], 1)
        assert (got is not None) == taken(cell), repr(cell)
        if got is not None:
            value = float(cell)
            assert got.shape == (1, 1) and got[0, 0] == value, repr(cell)
            assert math.copysign(1, got[0, 0]) == math.copysign(1, value), repr(cell)   # -0 is -0
            accepted += 1
    assert accepted > 10000


def python_table(text, delimiter, columns):
    """The rows of a clean file as the careful reader reads them: empty lines are no rows, cells stripped."""
    rows = [line.rstrip("\r").split(delimiter) for line in text.split("\n") if line.rstrip("\r")]
    table = [[float(row[c].strip(" ")) for c in columns] for row in rows]
    return np.array(table, dtype=np.float64).reshape(-1, len(columns))


def random_file(r, width, rows):
    delimiter, end = r.choice([",", ";", "\t"]), r.choice(["\n", "\r\n"])
    lines = []
    for _ in range(rows):
        lines.append(delimiter.join(random_cell(r) if r.random() < 0.02 else repr(r.gauss(0, 10 ** r.randint(-5, 5)))
                                    for _ in range(width)))
        lines += [""] * (r.random() < 0.05)
    return delimiter, end.join(lines) + end * (r.random() < 0.8)


def test_any_threads_and_pieces_give_the_same_table(module):
    r = random.Random(1)
    for seed in range(60):
        width = r.randint(1, 7)
        delimiter, text = random_file(r, width, r.randint(0, 300))
        columns = sorted(r.sample(range(width), r.randint(1, width)))
        data = b"h\n" + text.encode()
        rows = [line.rstrip("\r").split(delimiter) for line in text.split("\n") if line.rstrip("\r")]
        # a ragged row, or a cell it does not take (even one float() reads: inf, "1_000"): the file is refused
        clean = all(len(row) == width and all(taken(row[c]) for c in columns) for row in rows)
        want = python_table(text, delimiter, columns) if clean else None
        for threads, piece in [(1, 0), (1, 7), (2, 1), (3, 64), (2, 1000)]:
            got = module.parse_csv(data, 2, delimiter, width, columns, threads, piece)
            if want is None:
                assert got is None, (seed, threads, piece)
            else:
                assert got is not None and got.dtype == np.float64 and np.array_equal(got, want), (seed, threads, piece)
                assert all(math.copysign(1, a) == math.copysign(1, b) for a, b in zip(got.ravel(), want.ravel()))


@pytest.mark.parametrize("text", [
    "1,2\n3\n",            # a short row
    "1,2\n3,4,5\n",        # a long row
    "1,2,\n",              # a trailing delimiter
    '1,"2"\n',             # a quote
    "1,2\r\r\n",           # a lone carriage return
    "1,2\n\n 3,x\n",       # text in a number column after a blank line
    "1,2\n   \n",          # a line of spaces
    "1\t,2\n",             # a tab that is not the delimiter
])
def test_files_it_does_not_take(module, text):
    assert module.parse_csv(text.encode(), 0, ",", 2, [0, 1], 2, 3) is None


def test_only_bytes_are_read(module):
    """The file's bytes as csvread holds them: a view (which could skip bytes, or be changed meanwhile) is
    refused."""
    with pytest.raises(TypeError):
        module.parse_csv(memoryview(b"1,2\n" * 4)[::2], 0, ",", 2, [0, 1], 1)
    got = module.parse_csv(b"1,2\n\n\n\n3,4\n", 0, ",", 2, [0, 1], 2, 1)
    assert got.tolist() == [[1, 2], [3, 4]] and got.base is None     # empty lines: the room they took let go


def test_skipped_columns_are_not_read(module):
    got = module.parse_csv(b"1,x y,2\n3,,4\r\n\n5,NA,6", 0, ",", 3, [0, 2], 2, 1)
    assert got.tolist() == [[1, 2], [3, 4], [5, 6]]
    assert module.parse_csv(b"1,2,3\n", 0, ",", 3, [2, 0], 1).tolist() == [[3, 1]]   # in the order asked for
    assert module.parse_csv(b"\n\n", 0, ",", 2, [0, 1], 1).shape == (0, 2)


def test_load_data_reads_what_the_careful_reader_reads(module, tmp_path, monkeypatch):
    calls = []
    parse = module.parse_csv
    monkeypatch.setattr(native, "load", lambda *a, **k: type("M", (), {"parse_csv": staticmethod(
        lambda *args: calls.append(parse(*args)) or calls[-1])}))
    r = random.Random(2)
    for seed in range(120):
        width = r.randint(2, 5)
        delimiter, text = random_file(r, width, r.randint(1, 80))
        header = delimiter.join(f"c{i}" for i in range(width)) + "\n" if r.random() < 0.7 else ""
        path = write(tmp_path, "n.csv", ("\ufeff" * (r.random() < 0.1) + header + text).encode())
        kw = dict(missing=r.choice(["refuse", "drop", "mean"]),
                  columns=Columns(target=r.choice([None, ["-1"], ["0"]]), ignore=r.choice([[], ["1"]])))
        calls.clear()
        got = outcome(path, parser="native", **kw)
        with monkeypatch.context() as m:
            careful_only(m)
            assert got == outcome(path, **kw), (seed, path.read_bytes())
        rows = [line.rstrip("\r").split(delimiter) for line in text.split("\n") if line.rstrip("\r")]
        if got[0] != "error" and all(len(row) == width and all(map(taken, row)) for row in rows):
            assert calls and calls[-1] is not None, (seed, path.read_bytes())    # a clean file: the native parser


def test_auto_uses_it_for_a_big_file_where_it_is_built(module, tmp_path, monkeypatch):
    path = write(tmp_path, "b.csv", "a,b,y\n" + "".join(f"{i / 3!r},{-i},{i % 2}\n" for i in range(2000)))
    seen, numpy_parser, pandas_parser = [], csvfast._numpy, csvfast._pandas
    monkeypatch.setattr(csvfast, "_numpy", lambda *a: seen.append("numpy") or numpy_parser(*a))
    monkeypatch.setattr(csvfast, "_pandas", lambda *a: seen.append("pandas") or pandas_parser(*a))
    monkeypatch.setattr(csvread, "_careful", lambda *a: pytest.fail("the careful reader ran on a clean file"))
    monkeypatch.setattr(csvfast, "NATIVE_FROM", 1000)
    data = load_data(path)
    assert seen == [] and data.x.shape == (2000, 2) and data.x[3].tolist() == [1.0, -3.0]
    monkeypatch.setattr(csvfast, "NATIVE_FROM", 1 << 30)     # a smaller file than that: numpy's (or pandas') parser
    again = load_data(path)
    assert len(seen) == 1 and again.x.tolist() == data.x.tolist() and again.y.tolist() == data.y.tolist()
    text_labels = write(tmp_path, "t.csv", "a,y\n" + "".join(f"{i},{'xy'[i % 2]}\n" for i in range(50)))
    monkeypatch.setattr(csvfast, "NATIVE_FROM", 0)
    monkeypatch.setattr(native, "load", lambda *a, **k: pytest.fail("the native parser was asked for text"))
    assert load_data(text_labels).class_names == ["x", "y"]


def test_room_is_made_for_what_the_bytes_can_hold(module):
    """A file of many empty or short lines under a wide header: room for the rows its bytes could hold, not
    one row per line (10 million lines x 10,000 columns would be 800 GB)."""
    import tracemalloc
    wide, empty = list(range(4_000_000)), b"\n" * (8 << 20)    # (made before the count)
    tracemalloc.start()
    try:
        assert module.parse_csv(b"\n" * 10 ** 7, 0, ",", 10_000, list(range(10_000)), 2).shape == (0, 10_000)
        assert module.parse_csv(b"1\n" * 10 ** 6, 0, ",", 1000, list(range(1000)), 2) is None
        # 8 pieces of empty lines under 4 million columns: no room at all (one row a piece would be 256 MB)
        assert module.parse_csv(empty, 0, ",", len(wide), wide, 2).shape == (0, len(wide))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100e6, f"peak {peak / 1e6:.0f} MB"
    row = ",".join("7" for _ in range(300)) + "\n"      # rows of the fewest bytes fit exactly, on any cut
    for piece in (0, 1, 600, 601, 602):
        assert module.parse_csv((row * 1000).encode(), 0, ",", 300, list(range(300)), 2, piece).shape == (1000, 300)
    assert module.parse_csv((row * 3).rstrip("\n").encode(), 0, ",", 300, list(range(300)), 1).shape == (3, 300)
