"""Missing cells: refused by default with the rows named, or dropped or filled when asked.

A missing cell is NaN in a number column (a CSV cell that is empty, NA, N/A, NaN, null, None or ?)
or an empty label. ``refuse`` names the first rows; ``drop`` leaves out every row with one;
``mean`` fills a feature's missing cells with its column's mean (over the file's present cells, or a
trained model's ``fill`` values) and leaves out the rows whose target is missing (a target is never
made up). Infinite values are never missing: they are refused where the file is read.
"""
import numpy as np

POLICIES = ("refuse", "drop", "mean")
SHOWN = 5                        # rows named in a refusal


def apply(where, x, y, policy, fill, place, exc):
    """``(x, y, keep, fill, note)``: ``x`` float [N, F] numpy, ``y`` numeric [N, T] numpy, a list of labels or None.

    ``keep`` is the boolean row mask (None when every row is kept), ``fill`` the per-feature values ``mean``
    fills with (given: a trained model's; else the columns' means, kept for predicting), ``note`` what was done."""
    if policy not in POLICIES:
        raise ValueError(f"missing: expected one of {', '.join(map(repr, POLICIES))}, got {policy!r}")
    holes = np.isnan(x) if x.dtype.kind == "f" else np.zeros(x.shape, bool)
    if y is None:
        y_holes = np.zeros((x.shape[0], 0), bool)
    elif isinstance(y, np.ndarray) and y.dtype.kind == "f":
        y_holes = np.isnan(y).reshape(x.shape[0], -1)
    else:
        y_holes = np.array([label == "" for label in y], dtype=bool).reshape(-1, 1)
    given = fill is not None
    if policy == "mean" and not given:
        counts = (~holes).sum(0)
        if not counts.all():
            raise exc(f"{where}: feature {int(np.flatnonzero(counts == 0)[0]) + 1} has no value in any row: no mean "
                      f"to fill it with")
        # column by column over a contiguous copy: the same sum whatever the table's memory order
        fill = [float(x[~holes[:, j], j].sum(dtype=np.float64) / counts[j]) for j in range(x.shape[1])]
    if policy == "mean" and len(fill) != x.shape[1]:
        raise exc(f"{where}: the model fills the missing cells of {len(fill)} features; this data has {x.shape[1]}")
    fill = fill if policy == "mean" else None
    rows = holes.any(1) | y_holes.any(1)
    if not rows.any():
        return x, y, None, fill, None
    if policy == "refuse":
        bad = np.flatnonzero(rows)
        cells = np.concatenate([holes, y_holes], 1)
        shown = "; ".join(place(int(i), int(np.flatnonzero(cells[i])[0])) for i in bad[:SHOWN])
        more = f" (and {len(bad) - SHOWN} more rows)" if len(bad) > SHOWN else ""
        raise exc(f"{where}: {len(bad)} row{'s' if len(bad) > 1 else ''} with a missing cell (empty, NA or NaN): "
                  f"{shown}{more}; --missing drop leaves such rows out, --missing mean fills a feature's missing "
                  f"cells with its column's mean")
    keep = ~rows if policy == "drop" else ~y_holes.any(1)
    note = []
    if policy == "mean" and holes.any():
        x = np.where(holes, np.asarray(fill, dtype=x.dtype), x)
        note.append(f"filled {int(holes.sum())} missing feature cell{'s' if holes.sum() > 1 else ''} with "
                    f"{'the model' if given else 'its column'}'s mean")
    dropped = int((~keep).sum())
    if dropped == x.shape[0]:
        raise exc(f"{where}: every row has {'a missing cell' if policy == 'drop' else 'a missing target'}; "
                  f"nothing is left to read")
    if dropped:
        note.append(f"left out {dropped} row{'s' if dropped > 1 else ''} with "
                    f"{'a missing cell' if policy == 'drop' else 'a missing target'}")
    x = x[keep]
    if y is not None:
        y = y[keep] if isinstance(y, np.ndarray) else [label for label, k in zip(y, keep) if k]
    return x, y, keep, fill, f"{where}: {'; '.join(note)} (--missing {policy})"
