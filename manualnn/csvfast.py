"""The fast CSV parsers: a C parser reads the rows of a file already read and checked into memory.

``parse`` returns ``(numbers, texts)`` (float64 [rows, number columns] in column order, and the text
columns' stripped cells) or None when the file is not one it takes as the careful reader would
(``csvread``), which then reads it. Never a message: the careful reader names every problem.

Which parser: numpy's ``loadtxt`` is always there (numpy is a dependency) and correctly rounded, but
holds the GIL and widens text to UCS4: about 55 ns a number, ~3x pandas' on a 92 MB file. pandas'
C parser (an optional extra, ``pip install "manualnn[fast-csv]"``) reaches pandas' own speed, so it is
used when pandas is installed and the file is big enough to repay importing it (~0.25 s), or when
the process has already imported it. Both are stricter than Python's float() where they differ
(pandas refuses "nan", both refuse "1_000"), and a refusal only sends the file to the careful reader.
"""
import importlib.util
import io
import itertools
import sys
import warnings

import numpy as np

PANDAS_FROM = 16 << 20   # bytes: below this, importing pandas costs more than its parser saves over numpy's
PARSERS = ("auto", "numpy", "pandas")


def parse(data, body, delimiter, width, kinds, parser="auto"):
    """The cells of ``data[body:]``: ``kinds.numeric`` columns as numbers, ``kinds.text`` as text, others skipped."""
    if b"\r" in data and data.count(b"\r") != data.count(b"\r\n"):
        return None          # a lone carriage return: the careful reader's line numbers differ from the parsers'
    if parser == "pandas" or parser == "auto" and _pandas_pays(len(data) - body):
        cells = _pandas(data, body, delimiter, width, kinds)
    else:
        cells = _numpy(data, body, delimiter, width, kinds)
    if cells is None:
        return None
    numbers, texts = cells
    for column in texts.values():
        # a quote or line break left in a text cell: read differently by the csv module, or a cell over lines
        if any('"' in cell or "\n" in cell or "\r" in cell for cell in set(column)):
            return None
    if b'"' in data and len(numbers) != _rows(data, body):
        return None          # a quoted line break joined two lines into one row
    return numbers, texts


def pandas_available():
    return "pandas" in sys.modules or importlib.util.find_spec("pandas") is not None


def _pandas_pays(nbytes):
    return "pandas" in sys.modules or nbytes >= PANDAS_FROM and pandas_available()


def _rows(data, body):
    """Lines after ``body`` that are not blank (the rows a parser reads when no cell holds a line break)."""
    view = np.frombuffer(data, np.uint8, offset=body)
    ends = np.flatnonzero(view == 10)
    starts = np.concatenate([[0], ends + 1])
    stops = np.concatenate([ends, [len(view)]])
    length = stops - starts
    cr = np.zeros(len(length), bool)
    cr[length > 0] = view[stops[length > 0] - 1] == 13
    return int(np.count_nonzero(~((length == 0) | ((length == 1) & cr))))


def _numpy(data, body, delimiter, width, kinds):
    fields, number_fields = [], []
    for kind, run in itertools.groupby(range(width), kinds.of):
        run = list(run)
        if kind == "text":
            fields += [(f"t{c}", "O") for c in run]
        else:       # a run of number (or skipped) columns is one field: a [rows, run] block, no per-column copy
            fields.append((f"{kind[0]}{run[0]}", "f8" if kind == "number" else "U1", (len(run),)))
            if kind == "number":
                number_fields.append(fields[-1][0])
    buffer = io.BytesIO(data)
    buffer.seek(body)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # "input contained no data", "line N contained no data"
        try:
            table = np.loadtxt(buffer, dtype=fields, delimiter=delimiter, quotechar='"', comments=None,
                               encoding="utf-8", ndmin=1)
        except (ValueError, TypeError, OverflowError, IndexError):
            return None
    blocks = [table[name] for name in number_fields]
    numbers = blocks[0] if len(blocks) == 1 else np.concatenate(blocks, 1) if blocks else np.empty((len(table), 0))
    return numbers, {c: [cell.strip() for cell in table[f"t{c}"]] for c in kinds.text}


def _pandas(data, body, delimiter, width, kinds):
    try:
        import pandas
    except ImportError:
        return _numpy(data, body, delimiter, width, kinds)
    buffer = io.BytesIO(data)
    buffer.seek(body)
    try:    # number dtypes inferred: faster than asking for float64 (measured); another type means text
        with warnings.catch_warnings():
            warnings.simplefilter("error", pandas.errors.ParserWarning)   # a long row, which it would cut short
            frame = pandas.read_csv(buffer, sep=delimiter, header=None, names=range(width), index_col=False,
                                    na_filter=False, dtype={c: object for c in kinds.text}, quotechar='"',
                                    engine="c", encoding="utf-8", skip_blank_lines=True, on_bad_lines="error")
    except (ValueError, TypeError, OverflowError, IndexError, pandas.errors.ParserError,
            pandas.errors.ParserWarning):
        return None
    dtypes = frame.dtypes
    if not all(dtypes[c].kind in "iuf" for c in kinds.numeric):
        return None          # text (or true/false, or an integer too big for 64 bits) in a number column
    last = frame[width - 1]
    if dtypes[width - 1].kind not in "iuf" and "" in set(last.tolist()):
        return None          # a short row, which pandas pads with empty cells (an empty last cell looks the same)
    numbers = (frame if len(kinds.numeric) == width else frame[kinds.numeric]).to_numpy(np.float64)
    return numbers, {c: [cell.strip() for cell in frame[c].tolist()] for c in kinds.text}
