"""The fast CSV parsers: a C parser reads the rows of a file already read and checked into memory.

``parse`` returns ``(numbers, texts)`` (float64 [rows, number columns] in column order, and the text
columns' stripped cells) or None when the file is not one it takes as the careful reader would
(``csvread``), which then reads it. Never a message: the careful reader names every problem.

Which parser: the native runner's own (kernels/native/csv.cpp) reads the plainest files, numbers only (no
quote, no missing or text cell, every row one line of ``width`` cells), on every CPU: ~12 ns a number on one
core, 0.12 s for 96 MB on two, against 0.2 s for ``pandas.read_csv`` of the path (itself parallel in pandas
3.1). It is correctly rounded as float() is. "auto" uses it from NATIVE_FROM bytes where it is built already
(it is never compiled for a file: ``native_build``) and the file has no text column; it says None to any
other file, which the parsers below then read.

numpy's ``loadtxt`` is always there (numpy is a dependency) and rounds as Python's float()
does, but holds the GIL and widens text to UCS4: about 55 ns a number, ~3x pandas' on a 96 MB file.
pandas' C parser (an optional extra, ``pip install "manualnn[fast-csv]"``; pandas 3 or later, see
``pandas_available``) reaches pandas' own speed. It is used when the process has already imported pandas
(a notebook, the user's script), or when the file is big enough to repay importing it (``PANDAS_FROM``).
Where they differ from float(), both are stricter (pandas refuses "nan", both refuse "1_000"), and a
refusal only sends the file to the careful reader.
"""
import importlib.metadata
import io
import itertools
import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# bytes: below this, importing pandas (0.25 s idle, 0.45 s on a busy 2-core machine, after torch) costs more than its
# parser saves over numpy's (~3.7 ms a MB idle, 5 ms busy: 0.55 s against 0.19 s for 96 MB, measured)
PANDAS_FROM = 64 << 20
# pandas' parser on big files: up to PIECES parts of at least PIECE_FROM bytes, parsed on the CPUs at once
# (6 parts on 2 CPUs: 0.24 s against 0.43 s in one part for 96 MB, measured; pandas.read_csv of a path: 0.21 s)
PIECES, PIECE_FROM = 6, 4 << 20
# bytes: from this size "auto" reads a file with the native parser (below, numpy's takes a few ms; loading the
# native runner in a process ~2 ms)
NATIVE_FROM = 1 << 20
PARSERS = ("auto", "native", "numpy", "pandas")


def parse(data, body, delimiter, width, kinds, parser="auto"):
    """The cells of ``data[body:]``: ``kinds.numeric`` columns as numbers, ``kinds.text`` as text, others skipped.

    ``data`` ends its lines with \\n or \\r\\n only (``csvread`` turns a lone \\r into \\n first). ``parser``:
    "auto", "native" (the native runner's, built first if it is not; a file it does not take goes on as
    "auto" without it), "numpy" or "pandas" (pandas' when it is installed and 3 or later, else numpy's)."""
    quoted = b'"' in data    # one scan of the bytes: where a quoted cell could hold a line break
    if not kinds.text and not quoted:
        native = _native(parser, len(data) - body)
        numbers = native.parse_csv(data, body, delimiter, width, kinds.numeric, _cpus()) if native else None
        if numbers is not None:
            return numbers, {}
    if parser == "native":
        parser = "auto"
    if (parser == "pandas" or parser == "auto" and _pandas_pays(len(data) - body)) and pandas_available():
        cells = _pandas(data, body, delimiter, width, kinds, quoted)
    else:
        cells = _numpy(data, body, delimiter, width, kinds)
    if cells is None:
        return None
    numbers, texts = cells
    for column in texts.values():
        # a quote or line break left in a text cell: read differently by the csv module, or a cell over lines
        if any('"' in cell or "\n" in cell or "\r" in cell for cell in set(column)):
            return None
    if quoted and len(numbers) != len(nonblank_lines(data, body)):
        return None          # a quoted line break joined two lines into one row
    return numbers, texts


def pandas_available():
    """pandas 3 or later is installed: its parser rounds as Python's float() does. pandas 2's default parser
    is off by an ulp on about a third of 17-digit numbers (measured on 300,000 reprs of floats, 2.2.3), so
    its numbers would depend on what else is installed: numpy's parser reads the file there."""
    try:
        return int(importlib.metadata.version("pandas").split(".")[0]) >= 3
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False


def _native(parser, nbytes):
    """The native runner's module, where ``parser`` asks for it (or "auto" finds it built), else None."""
    if parser not in ("auto", "native"):
        return None
    from .backends import BackendUnavailableError, native_build
    if parser == "auto" and not (nbytes >= NATIVE_FROM and native_build.is_built()):
        return None
    try:
        return native_build.load()
    except (BackendUnavailableError, ImportError, OSError):   # it cannot be built here, or a damaged build in
        return None                                           # the cache: the other parsers read the file


def _pandas_pays(nbytes):
    return "pandas" in sys.modules or nbytes >= PANDAS_FROM


def nonblank_lines(data, body):
    """The indexes (0: the line at ``body``) of the lines that are not empty: the rows a parser reads when no
    cell holds a line break."""
    view = np.frombuffer(data, np.uint8, offset=body)
    ends = np.flatnonzero(view == 10)
    starts, stops = np.concatenate([[0], ends + 1]), np.concatenate([ends, [len(view)]])
    length = stops - starts
    cr = np.zeros(len(length), bool)
    cr[length > 0] = view[stops[length > 0] - 1] == 13
    return np.flatnonzero(~((length == 0) | ((length == 1) & cr)))


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


def _pandas(data, body, delimiter, width, kinds, quoted):
    try:
        import pandas
    except Exception:    # not installed, or an install that fails to import: numpy's parser reads the file
        return _numpy(data, body, delimiter, width, kinds)
    spans = _pieces(data, body, quoted)
    read = lambda span: _pandas_piece(pandas, data, span, delimiter, width, kinds)  # noqa: E731
    with warnings.catch_warnings():   # (the filters are the process's: set here, not in the threads)
        warnings.simplefilter("error", pandas.errors.ParserWarning)   # a long row, which it would cut short
        if len(spans) == 1:
            parts = [read(spans[0])]
        else:
            with ThreadPoolExecutor(min(len(spans), _cpus())) as pool:
                parts = list(pool.map(read, spans))
    if any(part is None for part in parts):
        return None
    if len(parts) == 1:
        return parts[0]
    return (np.concatenate([numbers for numbers, _ in parts]),
            {c: [cell for _, texts in parts for cell in texts[c]] for c in kinds.text})


def _cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not Linux
        return os.cpu_count() or 1


BOM = b"\xef\xbb\xbf"


def _pieces(data, body, quoted):
    """``data[body:]`` as (start, stop) spans cut after line ends, for the CPUs to parse at once (pandas'
    parser lets go of the GIL). The cuts depend on the data only, never on the CPUs, so a file reads the
    same everywhere. One span below ``PIECE_FROM`` bytes, where a quote could hold a line break (``quoted``:
    the data holds a quote), or where a cut would start a piece with a byte-order mark (pandas
    drops one at the start of what it reads)."""
    size = len(data) - body
    count = min(PIECES, size // PIECE_FROM) if not quoted else 1
    cuts = [body]
    for i in range(1, max(count, 1)):
        end = data.find(b"\n", max(body + size * i // count, cuts[-1]))
        if end < 0:
            break
        cuts.append(end + 1)
    cuts.append(len(data))
    if any(data.startswith(BOM, cut) for cut in cuts[1:-1]):
        cuts = [body, len(data)]
    return [(start, stop) for start, stop in zip(cuts, cuts[1:]) if stop > start] or [(body, len(data))]


def _pandas_piece(pandas, data, span, delimiter, width, kinds):
    """One piece's (numbers, texts), or None where the careful reader must read the file."""
    start, stop = span
    if stop == len(data):
        buffer = io.BytesIO(data)     # shares the bytes (a view's BytesIO would copy them)
        buffer.seek(start)
    else:
        buffer = io.BytesIO(memoryview(data)[start:stop])
    try:    # number dtypes inferred: faster than asking for float64 (measured); another type means text
        if getattr(sys.flags, "context_aware_warnings", False):   # Python 3.14's per-thread filters
            warnings.simplefilter("error", pandas.errors.ParserWarning)
        frame = pandas.read_csv(buffer, sep=delimiter, header=None, names=range(width), index_col=False,
                                na_filter=False, dtype={c: object for c in kinds.text}, quotechar='"',
                                engine="c", encoding="utf-8", skip_blank_lines=True, on_bad_lines="error")
    except (ValueError, TypeError, OverflowError, IndexError, pandas.errors.ParserError,
            pandas.errors.ParserWarning, pandas.errors.EmptyDataError):
        return None
    dtypes = frame.dtypes
    if not all(dtypes[c].kind in "iuf" for c in kinds.numeric):
        return None          # text (or true/false, or an integer too big for 64 bits) in a number column
    last = frame[width - 1]
    if dtypes[width - 1].kind not in "iuf" and "" in set(last.tolist()):
        return None          # a short row, which pandas pads with empty cells (an empty last cell looks the same)
    numbers = (frame if len(kinds.numeric) == width else frame[kinds.numeric]).to_numpy(np.float64)
    return numbers, {c: [cell.strip() for cell in frame[c].tolist()] for c in kinds.text}
