"""Reading a CSV or TSV file's cells: at a C parser's speed when the file is clean, exact about every problem.

The whole file is read once (bounded, checked as text by ``safeio``), its delimiter and first row are read
from its first lines, and ``columns.plan_columns`` says what each column is. Two readers then parse the
rows after the first into the same cells:

- the fast one is a C parser (``csvfast``): the native runner's own where it is built (numbers only, on
  every CPU), else numpy's (``numpy.loadtxt`` with a structured dtype: numbers, text, or skipped for each
  column; numpy is already a dependency) or pandas' when installed; each is correctly rounded, like
  Python's float();
- the careful one is Python's csv module, row by row. It runs only when the fast one does not take the
  file (a missing cell, a ragged row, text among numbers, a quoted cell over several lines), and it
  either reads the file the same way or names the row and column of the problem.

Cells that mean "no value" (empty, NA, NaN, null, ?) become NaN in number columns; ``datafiles`` applies
the missing-cell policy. What the first row is (a header or data) is decided once the rows are read.
"""
import array
import csv
import io
import itertools
import math
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import numpy as np

from . import csvfast, safeio
from .columns import maybe_header, plan_columns

SNIFF_LINES = 50                 # lines that decide the delimiter and the kind of the flexible columns
MISSING = frozenset({"", "na", "n/a", "nan", "-nan", "null", "none", "?"})   # cells (lower-cased) with no value


@dataclass
class CsvData:
    """A CSV file's rows by role. ``x`` float64 [N, F] (NaN: a missing cell); ``y`` float64 [N, T], a list of
    N text labels, or None; ``place(i, j)`` names row i's column j of x (j >= F: of y) for messages."""
    x: np.ndarray
    y: object
    feature_names: Optional[List[str]]
    target_names: Optional[List[str]]
    ids: Optional[List[str]]
    id_name: Optional[str]
    row_name: Callable
    place: Callable
    notes: List[str] = field(default_factory=list)


def read_csv(f, size, where, exc, spec, tsv, parser="auto"):
    """``CsvData`` for the open file ``f``, its columns chosen by ``spec`` (a ``columns.Columns``)."""
    # the file's bytes, then at least 2 bytes per number ("1,"): 8 bytes each as float64, 4 more as float32
    safeio.check_budget(where, f"a {safeio.human(size)} CSV (up to {size // 2 + 1} numbers)",
                        size + (size // 2 + 1) * 12, exc)
    data, start = safeio.read_text_bytes(f, where, exc)
    if b"\r" in data and data.count(b"\r") != data.count(b"\r\n"):   # old Mac line ends: lines end at \n below
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    head, offsets = _head(data, start)
    delimiter = "\t" if tsv else safeio.sniff_delimiter(head)
    reader = csv.reader(head, delimiter=delimiter, skipinitialspace=True)
    first, first_line = None, 0
    try:
        for row in reader:
            first_line += 1
            cells = [c.strip() for c in row]
            if any(cells):
                first = cells
                _check_one_line(where, exc, cells, first_line, reader.line_num)
                break
        sample = [[c.strip() for c in r] for r in reader]
    except csv.Error as e:
        raise exc(f"{where}: not a readable CSV text file: row {reader.line_num}: {e}") from None
    if first is None:
        raise exc(f"{where}: is empty (expected numeric rows)" if len(head) <= SNIFF_LINES else
                  f"{where}: its first {SNIFF_LINES + 1} lines are blank")
    plan = plan_columns(first, spec, where, exc)
    kinds = _kinds(plan, sample)
    # a first row of numbers is data: parsed with the rest (no copy to put it in front afterwards)
    data_first = not maybe_header(first) and not plan.by_name
    before = first_line - data_first          # the line the parsed rows come after
    body = offsets[before - 1] if before else start
    cells = None
    if body < len(data):
        cells = csvfast.parse(data, body, delimiter, plan.width, kinds, parser)
    if cells is not None:
        numbers, texts = cells
        cells = _Cells(numbers, texts, _LineNumbers(data, body, before, len(numbers)))
    elif body >= len(data):
        cells = _Cells(np.empty((0, len(kinds.numeric))), {c: [] for c in kinds.text}, np.empty(0, np.int64))
    else:
        cells, kinds = _careful(data, body, before, delimiter, first, plan, kinds, where, exc)
    return _assemble(where, exc, first, first_line, plan, kinds, cells, data_first)


def _head(data, start):
    """The first SNIFF_LINES + 1 lines as text, and the byte offset where each of them ends."""
    ends, pos = [], start
    while len(ends) <= SNIFF_LINES:
        pos = data.find(b"\n", pos) + 1
        if pos == 0:
            break
        ends.append(pos)
    stop = ends[-1] if len(ends) > SNIFF_LINES else len(data)
    lines = data[start:stop].decode("utf-8").split("\n")
    lines = [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    return lines, ends + [len(data)] * (len(lines) - len(ends))


def _check_one_line(where, exc, cells, start, end):
    """A row is one line: a quoted cell with a line break is most often a quote never closed."""
    if end != start:
        column = next((j for j, cell in enumerate(cells) if "\n" in cell or "\r" in cell), 0)
        raise exc(f"{where}: row {start}, column {column + 1}: a quoted cell runs from line {start} to line {end} "
                  f"(a quote that is never closed?)")


@dataclass
class _Kinds:
    numeric: List[int]      # columns parsed as numbers
    text: List[int]         # columns kept as text
    width: int

    def __post_init__(self):
        self._number, self._text = set(self.numeric), set(self.text)   # a lookup per column: wide files

    def of(self, column):
        """"number", "text" or "skip" (ignored columns: never parsed)."""
        return "number" if column in self._number else "text" if column in self._text else "skip"


def _kinds(plan, sample):
    """Features are numbers, the ID is text; a single target (or the index) is text if the sample holds text."""
    text = [plan.id] if plan.id is not None else []
    for c in sorted(plan.flexible()):
        if any(len(r) > c and r[c] and safeio.number(r[c]) is None and r[c].lower() not in MISSING for r in sample):
            text.append(c)
    wanted = set(plan.features) | set(plan.targets) | set(plan.flexible())
    return _Kinds(sorted(wanted - set(text)), sorted(text), plan.width)


@dataclass
class _Cells:
    numbers: np.ndarray                      # float64 [rows, len(kinds.numeric)]
    texts: dict                              # column -> list of str
    lines: object                            # lines[i]: the file line of row i (an array, or _LineNumbers)


class _After:
    """Line numbers with the first row's in front."""

    def __init__(self, first_line, later):
        self.first_line, self.later = first_line, later

    def __getitem__(self, i):
        return self.first_line if i == 0 else self.later[i - 1]


class _LineNumbers:
    """The file line of each parsed row, for a file whose rows are each one line (blank lines are not rows):
    the fast parsers' files. Found when a message needs them: a scan up to the row for the first rows, one
    pass over the file for a row further on."""

    FEW = 10_000

    def __init__(self, data, body, before, rows):
        self.data, self.body, self.before, self.rows, self.all = data, body, before, rows, None

    def __call__(self):
        if self.all is None:
            self.all = self.before + 1 + csvfast.nonblank_lines(self.data, self.body)[:self.rows]
        return self.all

    def __getitem__(self, i):
        if self.all is not None or i >= self.FEW:
            return int(self()[i])
        line, pos, row = self.before, self.body, -1
        while row < i:
            end = self.data.find(b"\n", pos)
            end = len(self.data) if end < 0 else end
            line += 1
            row += bool(self.data[pos:end].strip(b"\r"))
            pos = end + 1
        return line


def _careful(data, body, first_line, delimiter, first, plan, kinds, where, exc):
    """(_Cells, _Kinds) of the rows after ``body``, one at a time; the first problem is raised with its row and
    column."""
    reader = csv.reader(io.StringIO(data[body:].decode("utf-8"), newline=""), delimiter=delimiter,
                        skipinitialspace=True)
    numbers, lines = array.array("d"), array.array("q")
    flexible = {c: [] for c in sorted(plan.flexible())}     # kept as text until every row is read
    strict = [c for c in kinds.numeric if c not in flexible]
    texts = {c: [] for c in kinds.text if c not in flexible}
    last = 0
    try:
        for row in reader:
            start, last = last + 1, reader.line_num
            cells = [c.strip() for c in row]
            if not any(cells):
                continue
            line = first_line + start
            _check_one_line(where, exc, cells, line, first_line + last)
            if len(cells) != plan.width:
                raise exc(f"{where}: row {line} has {len(cells)} columns, expected {plan.width} (as in the first row)")
            values = [cells[c] for c in strict]
            try:   # float() over the row at once; a cell it refuses, or reads too freely, is looked at alone
                parsed = list(map(float, values))
                if not all(v.isascii() and "_" not in v for v in values):
                    raise ValueError
            except ValueError:
                parsed = [_number(where, exc, first, plan, line, c, v) for c, v in zip(strict, values)]
            numbers.extend(parsed)
            for c, column in itertools.chain(texts.items(), flexible.items()):
                column.append(cells[c])
            lines.append(line)
    except csv.Error as e:
        raise exc(f"{where}: not a readable CSV text file: row {first_line + reader.line_num}: {e}") from None
    table = np.frombuffer(numbers, dtype=np.float64).reshape(len(lines), len(strict))
    columns = {c: table[:, i] for i, c in enumerate(strict)}
    for c, cells in flexible.items():
        values = [safeio.number(v) for v in cells]
        if all(v is not None or cell.lower() in MISSING for v, cell in zip(values, cells)):
            columns[c] = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
        else:
            texts[c] = cells
    kinds = _Kinds(list(columns), sorted(texts), kinds.width)      # the flexible columns decided by every row
    result = np.stack([columns[c] for c in kinds.numeric], 1) if kinds.numeric else np.empty((len(lines), 0))
    return _Cells(result, texts, np.frombuffer(lines, dtype=np.int64)), kinds


def _number(where, exc, first, plan, line, column, cell):
    """A number cell's value (NaN for a missing one); anything else is refused with its row and column."""
    value = safeio.number(cell)
    if value is not None:
        return value
    if cell.lower() in MISSING:
        return math.nan
    hint = ""
    if column in plan.targets:
        hint = " (text labels need a single target column)"
    elif "," in cell and safeio.number(cell.replace(",", ".")) is not None:
        hint = " (decimal commas are not read: write 1.5, not 1,5)"
    elif "_" in cell and safeio.number(cell.replace("_", "")) is not None:
        hint = " (digit separators are not read: write 1000, not 1_000)"
    elif plan.targets:
        last = ", the last" if plan.targets == [plan.width - 1] else ""
        choose = "" if plan.for_model else f": --target {column + 1} makes this column the target"
        hint = f" (text is allowed only in the target column{last}{choose}; --id or --ignore takes a column of text)"
    raise exc(f"{where}: row {line}, column {column + 1}{_name(first, column)}: expected a number, got {cell!r}{hint}")


def _name(first, column):
    """`` ('name')`` for a column whose first-row cell is text (a header), else ''."""
    return f" ({first[column]!r})" if first[column] and safeio.number(first[column]) is None else ""


def _assemble(where, exc, first, first_line, plan, kinds, cells, data_first):
    """Decide what the first row is, drop pandas' index, and gather x, y and the IDs."""
    header = not data_first and _is_header(first, plan, kinds, cells)
    numbers, texts, lines = cells.numbers, cells.texts, cells.lines
    if not header and not data_first:   # its number cells are numbers or missing (else it was a header)
        row = [_number(where, exc, first, plan, first_line, c, first[c]) for c in kinds.numeric]
        numbers = np.concatenate([np.array(row, dtype=np.float64).reshape(1, -1), numbers])
        texts = {c: [first[c]] + column for c, column in texts.items()}
        lines = _After(first_line, lines)
    notes = list(plan.notes)
    at = {c: i for i, c in enumerate(kinds.numeric)}
    if plan.index is not None:
        values = numbers[:, at[plan.index]] if plan.index in at else texts[plan.index]
        if header and _distinct(values):
            notes.append(f"{where}: column 1 has no name and distinct values ({_span(values)}): pandas' index "
                         f"(DataFrame.to_csv writes it), not a feature; dropped (name it in the header to keep it)")
        else:
            plan.features.insert(0, plan.index)
    for c in plan.features:
        if c in texts:     # text in a feature column (the unnamed first one, or a file whose sample misled)
            i = next(i for i, v in enumerate(texts[c]) if safeio.number(v) is None and v.lower() not in MISSING)
            _number(where, exc, first, plan, int(lines[i]), c, texts[c][i])
    x = _columns(numbers, [at[c] for c in plan.features])
    if plan.targets and plan.targets[0] in texts:
        y = texts[plan.targets[0]]
    else:
        y = _columns(numbers, [at[c] for c in plan.targets]) if plan.targets else None
    order = plan.features + plan.targets

    def row_name(i):
        return f"row {int(lines[i])}"

    def place(i, j):
        return f"{row_name(i)}, column {order[j] + 1}{_name(first, order[j]) if header else ''}"

    names = (lambda cols: [first[c] for c in cols]) if header else (lambda cols: None)
    return CsvData(x, y, names(plan.features), names(plan.targets) if plan.targets else None,
                   None if plan.id is None else texts[plan.id], names([plan.id])[0] if plan.id is not None and header
                   else None, row_name, place, notes)


def _columns(numbers, picked):
    """numbers[:, picked]: a view when the columns are a run (no copy of a big table), else a copy."""
    if picked and picked == list(range(picked[0], picked[0] + len(picked))):
        return numbers[:, picked[0]:picked[0] + len(picked)]
    return numbers[:, picked]


def _is_header(first, plan, kinds, cells):
    """A header: columns were found by name, a number column starts with text, or a target column of text
    labels starts with one no other row has (a column's name, not a class)."""
    if plan.by_name:
        return True
    if not maybe_header(first):
        return False
    if any(first[c] and safeio.number(first[c]) is None for c in kinds.numeric):
        return True
    return any(first[c] and first[c] not in set(cells.texts[c]) for c in kinds.text if c in plan.targets)


def _distinct(values):
    """Distinct whole numbers, or distinct non-empty text: row labels."""
    if isinstance(values, np.ndarray):
        return bool(np.isfinite(values).all() and (values == np.round(values)).all()
                    and len(np.unique(values)) == len(values))
    return all(values) and len(set(values)) == len(values)


def _span(values):
    if isinstance(values, np.ndarray):
        return f"{values.min():g}..{values.max():g}" if len(values) else "none"
    return f"{values[0]!r}, ..." if values else "none"
