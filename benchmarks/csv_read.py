"""Reading a big CSV: manualnn.load_data beside pandas.read_csv, in one run, as a ratio of medians.

``python -m benchmarks.csv_read`` writes a CSV as pandas writes it (a header, 200,000 rows x 51 columns of
numbers with 6 decimals, ~96 MB) to a temp folder, then times, repeat by repeat and in a rotating order so
that a busy moment hits every contender alike:

- ``manualnn``: ``load_data(path)`` as ``manualnn train --data`` calls it (the parser it picks: the native
  runner's where it is built, else pandas' C parser when pandas is installed, else numpy's), float32
  features, every check made;
- ``manualnn_pandas``: the same with pandas' parser (when pandas is installed), what a machine without the
  native runner gets;
- ``manualnn_numpy``: the same with numpy's parser, what an install with neither gets;
- ``pandas``: ``pandas.read_csv(path)`` (when pandas is installed), a float64 DataFrame.

``measure(rows, cols, repeats)`` returns the medians (seconds), the ratios to pandas and the machine's
state, for the combined CPU benchmark. Nothing here asserts a time: it prints and returns numbers.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

from . import at_least_one, run_main
from .provenance import loadavg, machine_name


def write_csv(path, rows, cols, seed=0):
    """A header f0..f{cols-2},target over rows of normal numbers rounded to 6 decimals, written as pandas
    writes a DataFrame (index=False); with numpy alone when pandas is not installed (same text)."""
    values = np.random.default_rng(seed).normal(size=(rows, cols)).round(6)
    names = [f"f{i}" for i in range(cols - 1)] + ["target"]
    try:
        import pandas
    except ImportError:
        np.savetxt(path, values, delimiter=",", fmt="%.6g", header=",".join(names), comments="")
        return
    pandas.DataFrame(values, columns=names).to_csv(path, index=False)


def contenders():
    """name -> a function of the path that reads the file."""
    from manualnn.datafiles import load_data
    found = {"manualnn": lambda path: load_data(path),
             "manualnn_numpy": lambda path: load_data(path, parser="numpy")}
    try:
        import pandas
    except ImportError:
        return found
    found["manualnn_pandas"] = lambda path: load_data(path, parser="pandas")
    found["pandas"] = lambda path: pandas.read_csv(path)
    return found


def measure(rows=200_000, cols=51, repeats=5):
    """Median read times (s) of each contender on one file, ratios to pandas, and the machine's state."""
    runs, before = contenders(), loadavg()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "big.csv")
        write_csv(path, rows, cols)
        size = os.path.getsize(path)
        times = {name: [] for name in runs}
        for name, read in runs.items():   # a first read of each: imports and the page cache, not timed
            read(path)
        names = list(runs)
        for r in range(repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                started = time.perf_counter()
                runs[name](path)
                times[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(t) for name, t in times.items()}
    ratios = {name: medians[name] / medians["pandas"] for name in medians} if "pandas" in medians else {}
    return {"rows": rows, "cols": cols, "bytes": size, "repeats": repeats, "seconds": times, "median": medians,
            "ratio_to_pandas": ratios, "machine": machine_name(), "loadavg_before_after": [before, loadavg()],
            "versions": _versions()}


def _versions():
    import importlib.metadata
    out = {}
    for dist in ("numpy", "pandas", "torch"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=at_least_one, default=200_000)
    parser.add_argument("--cols", type=int, default=51)
    parser.add_argument("--repeats", type=at_least_one, default=5)
    args = parser.parse_args(argv)
    result = measure(args.rows, args.cols, args.repeats)
    before, after = result["loadavg_before_after"]
    print(f"CSV read: {result['rows']} rows x {result['cols']} columns, {result['bytes'] / 1e6:.1f} MB; "
          f"{result['machine']}; load average (1, 5, 15 min) before {before}, after {after}; {result['versions']}")
    print(f"{'contender':16} {'median s':>9} {'ratio':>7}  each run (s)")
    for name, median in result["median"].items():
        ratio = result["ratio_to_pandas"].get(name)
        shown = f"{ratio:7.2f}" if ratio is not None else "      -"
        runs = " ".join(f"{t:.3f}" for t in result["seconds"][name])
        print(f"{name:16} {median:9.3f} {shown}  {runs}")
    if not result["ratio_to_pandas"]:
        print("(pandas is not installed: no ratio; pip install pandas to compare)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
