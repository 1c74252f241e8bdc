"""Which columns of a CSV file are features, targets, an ID or ignored, chosen by name or position.

A user names columns as header cells or as 1-based positions (negative: from the end); a name wins
when the header holds that text. A trained model names the columns it reads (``Columns.features``):
a file with a header is then read by those names, so a missing column is named and a reordered file
is read right; a file without one is read by position and must have the model's width.
"""
from dataclasses import dataclass, field
from typing import List, Optional

from . import safeio


@dataclass
class Columns:
    """How to choose a CSV file's columns (every field optional).

    - ``target``: the target columns, names or positions; default: the last ``target_cols`` columns
      that are not ignored or the ID.
    - ``ignore``: columns read as nothing (not parsed: they may hold anything).
    - ``id``: a column carried beside the rows (``Dataset.ids``) and written with predictions.
    - ``features``/``targets``: a trained model's feature and target names; ``width`` its input width;
      ``model_id``: the ID column it was trained beside, read when a file with a header has it;
      ``model_ignored``: the columns its training ignored (not worth a note when a file has them).
    """
    target: Optional[List] = None
    target_cols: int = 1
    ignore: List = field(default_factory=list)
    id: Optional[object] = None
    features: Optional[List[str]] = None
    targets: Optional[List[str]] = None
    width: Optional[int] = None
    model_id: Optional[str] = None
    model_ignored: List = field(default_factory=list)

    @property
    def chosen(self):
        """Whether the user chose columns (names or positions), which only a CSV file has."""
        return self.target is not None or bool(self.ignore) or self.id is not None


@dataclass
class Plan:
    """The role of every column index (0-based): the first row's cells may be a header."""
    width: int
    features: List[int]
    targets: List[int]
    id: Optional[int] = None
    index: Optional[int] = None        # an unnamed first column: pandas' index when its values are distinct
    by_name: bool = False              # columns were found by their header names: the first row is a header
    for_model: bool = False            # the columns a trained model reads (predict): not chosen by --target
    notes: List[str] = field(default_factory=list)

    def flexible(self):
        """Columns whose kind (numbers or text) the data decides: a single target, the index."""
        return set(self.targets if len(self.targets) == 1 else []) | ({self.index} - {None})


def maybe_header(first):
    """Whether the first row could be a header: a cell that is text (an empty cell says nothing)."""
    return any(cell and safeio.number(cell) is None for cell in first)


def plan_columns(first, spec, where, exc):
    """The ``Plan`` for a file whose first non-blank row is ``first`` (a list of cells)."""
    width = len(first)
    names = first if maybe_header(first) else None
    known = [n for n in spec.features or [] if names is not None and n in names]
    if known and len(known) == len(spec.features):
        return _by_model_names(first, spec, where, exc)
    if known and not spec.chosen:
        missing = [n for n in spec.features if n not in names]
        raise exc(f"{where}: has no column {_list(missing)} (the model was trained on {_list(spec.features)}; "
                  f"this file has {_list(names)})")
    pick = _Picker(first, names, where, exc)
    ident = None if spec.id is None else pick.one(spec.id, "the ID column")
    taken = {pick.one(c, "an ignored column") for c in spec.ignore} | {ident}
    unnamed = names is not None and first[0] == "" and 0 not in taken
    if spec.target is not None:
        targets = [pick.one(c, "a target column") for c in spec.target]
        overlap = taken & set(targets)
        if overlap:
            raise exc(f"{where}: column {_name(first, min(overlap), names)} is both a target and "
                      f"{'the ID' if ident in overlap else 'ignored'}")
        if len(set(targets)) != len(targets):
            raise exc(f"{where}: a target column is named twice in {', '.join(map(str, spec.target))}")
    else:
        free = [c for c in range(width) if c not in taken]
        count, readable = spec.target_cols, len(free) - unnamed
        if spec.width is not None and readable == spec.width:
            count = 0        # exactly the model's features: a file without targets
        elif spec.width is not None and readable != spec.width + count:
            raise exc(f"{where}: has {readable} columns to read; the model takes {spec.width} features "
                      f"(+ {count} target column{'s' if count > 1 else ''}), so expected {spec.width} or "
                      f"{spec.width + count}" + ("" if names else " (the file has no header row to read "
                                                                  "columns by name)"))
        targets = free[len(free) - count:] if count else []
    index = 0 if unnamed and 0 not in targets else None
    features = [c for c in range(width) if c not in taken and c not in targets and c != index]
    if not features:
        raise exc(f"{where}: has {width} columns; expected at least one feature column besides "
                  f"{len(targets)} target column(s)" + (", the ID and the ignored ones" if taken - {None} else ""))
    plan = Plan(width, features, targets, ident, index, by_name=pick.used_names, for_model=spec.width is not None)
    if spec.features is not None and names is not None and not known:
        plan.notes.append(f"{where}: its header names none of the model's features ({_list(spec.features)}); "
                          f"read by position")
    return plan


def _by_model_names(first, spec, where, exc):
    """A trained model's columns, found by name in a file with a header (any order, any extra columns)."""
    pick = _Picker(first, first, where, exc)
    features = [pick.one(n, "a feature") for n in spec.features]
    known = [n for n in (spec.targets or []) if n in first]
    targets = [pick.one(n, "a target column") for n in known] if len(known) == len(spec.targets or []) else []
    ident = pick.one(spec.id, "the ID column") if spec.id is not None else \
        first.index(spec.model_id) if spec.model_id in first and first.count(spec.model_id) == 1 else None
    plan = Plan(len(first), features, targets, ident, by_name=True, for_model=True)
    if features != sorted(features):
        plan.notes.append(f"{where}: its columns are in another order than the training file's; read by name")
    unused = [c for c in range(len(first))
              if c not in features + targets + [ident] and first[c] not in spec.ignore + spec.model_ignored
              and first[c]]
    if unused:
        plan.notes.append(f"{where}: column{'s' if len(unused) > 1 else ''} "
                          f"{_list([first[c] for c in unused])} not read (the model does not use "
                          f"{'them' if len(unused) > 1 else 'it'})")
    return plan


class _Picker:
    """Column indexes from names (header cells) or 1-based positions."""

    def __init__(self, first, names, where, exc):
        self.first, self.names, self.where, self.exc = first, names, where, exc
        self.used_names = False

    def one(self, token, role):
        width = len(self.first)
        if isinstance(token, str) and self.names is not None and token in self.names:
            if self.names.count(token) > 1:
                raise self.exc(f"{self.where}: {role} {token!r} names {self.names.count(token)} columns of the "
                               f"header; name it by position instead")
            self.used_names = True
            return self.names.index(token)
        try:
            position = int(token)
        except (TypeError, ValueError):
            position = None
        if position is not None and 1 <= abs(position) <= width:
            return position - 1 if position > 0 else width + position
        if position is not None:
            raise self.exc(f"{self.where}: {role} {token!r}: expected a position from 1 to {width} (or -1 to "
                           f"-{width} from the end), as the file has {width} columns")
        if self.names is None:
            raise self.exc(f"{self.where}: {role} {token!r}: the file has no header row to find names in; give "
                           f"the column's position (1 to {width})")
        raise self.exc(f"{self.where}: {role} {token!r}: no such column; the header has {_list(self.names)}")


def _name(first, column, names):
    return f"{column + 1} ({first[column]!r})" if names else str(column + 1)


def _list(names, limit=12):
    shown = ", ".join(map(repr, names[:limit]))
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
