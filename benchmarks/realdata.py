"""Real data: ``manualnn train --data FILE`` with its defaults beside scikit-learn's MLP defaults.

    python -m benchmarks.realdata                          # the report: every data set, splits 0-2, seeds 0-9
    python -m benchmarks.realdata --datasets held-out --mode inprocess --name confirm
    python -m benchmarks.realdata sweep --datasets tuned --grid 'lr=1e-3,3e-3;batch-size=32,200' --seeds 0-2
    python -m benchmarks.realdata sklearn                  # only scikit-learn: fill its cache, write its table

The suite (benchmarks/suite.py) is classification and regression sets saved as a user saves them:
raw features, one .npz train file and one test file per (data set, split), in five parts: the sets
the defaults were tuned on, the held-out sets that confirm them, and three parts of fresh sets, each
written down before it was run to confirm a later change (--datasets tuned / held-out / fresh / fresh-2 /
fresh-3).
Every split is trained with every seed. scikit-learn's side (benchmarks/sklearn_mlp.py: its MLP per
split and seed, a linear model per split) is cached in --sklearn-cache, keyed by data set, split,
seed and scikit-learn version; manualnn's side (benchmarks/manualnn_runs.py) runs the two CLI
commands, in child processes (cli) or in this process (inprocess, for sweeps). --splits seed is the
old protocol: one split per seed, its random_state the seed.

- report (default): manualnn with no options beyond --data/--seed (and --extra if given) per data
  set, split and seed; mean and min score for both, manualnn's failed runs, the mean and worst gap,
  the worst gap to the better of the MLP and the linear model and the runs below the bound (3 points,
  0.05 of R^2), seconds per fit. Writes <name>.json and <name>.md under --out.
- sweep: every combination of --grid ('key=v1,v2;key2=...': --key v; a value 'on' is the bare flag
  --key, 'off' leaves it out; a value with spaces gives several words, e.g. 'hidden=64,128 128'; a value
  'C/n' is C divided by the data set's training rows, e.g. 'weight-decay=10/n'),
  in-process by default; per combination and data set the mean/min score, failed runs, seconds
  and the gap to scikit-learn. Writes <name>.json and <name>.md (default name: sweep), rewritten
  after each combination so an interrupted sweep keeps what it measured.

--extra takes options as one string; write it --extra='--no-shuffle' when it is a single word
starting with a dash. Every record names the machine, versions, date and git commit.
"""
import argparse
import itertools
import json
import math
import os
import platform
import re
import shlex
import sys
import time

from . import run_main
from . import realdata_tables as tables
from .autograd_runs import COMPARED_EPOCHS, run_autograd
from .manualnn_runs import MODES, describe, run_one
from .provenance import blas_info, git_commit, loadavg, machine_name, versions
from .sklearn_mlp import sklearn_results
from .suite import DEFAULT_CACHE, parse_datasets, parse_seeds, specs, write_suite

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "realdata")
DEFAULT_SKLEARN_CACHE = os.path.join(DEFAULT_OUT, "sklearn-cache.json")

# Contenders beside manualnn, each trained on manualnn's own inputs: run(entry, extra, manualnn_record).
EXTRA_CONTENDERS = {"PyTorch autograd": run_autograd}


def meta(args, seeds, datasets, sk, parts=None):
    dates = sorted(r.get("date", "?") for r in sk.values())
    timed_on = [f"{m} ({dates[0]} to {dates[-1]})" for m in sorted({r.get("machine", "?") for r in sk.values()})]
    return {"machine": machine_name(), "platform": platform.platform(), "loadavg": loadavg(),
            "versions": versions(), "blas": blas_info(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "git_commit": git_commit(), "command": ["python", "-m", "benchmarks.realdata", *sys.argv[1:]],
            "mode": getattr(args, "mode", None), "extra": shlex.split(getattr(args, "extra", "") or ""), "seeds": seeds,
            "seeds_text": args.seeds, "splits_text": args.splits, "datasets": datasets, "parts": parts,
            "sklearn_timed_on": "; ".join(timed_on)}


def parse_grid(text):
    """'lr=1e-3,3e-3;batch-size=32,200' -> [[('lr', '1e-3'), ('lr', '3e-3')], [...]]."""
    axes = []
    for part in (text or "").split(";"):
        part = part.strip()
        if not part:
            continue
        key, sep, values = part.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key or not values.strip():
            raise SystemExit(f"--grid: expected 'option=v1,v2;option2=...', got {part!r}")
        axes.append([(key, v.strip()) for v in values.split(",")])
    if not axes:
        raise SystemExit("--grid: expected at least one 'option=v1,v2'")
    return axes


def combo_argv(combo):
    argv = []
    for key, value in combo:
        if value == "off":
            continue
        argv.append(f"--{key}")
        if value != "on":
            argv += value.split()
    return argv


def lean(runs):
    """Run records without their per-epoch losses (final_loss stays): thousands of runs, each up to 200 epochs."""
    return [{k: v for k, v in r.items() if k != "losses"} for r in runs]


def json_safe(value):
    """``value`` with every non-finite float as None: strict JSON readers refuse Infinity and NaN (a run that
    failed has no gap)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_outputs(out, name, record, markdown):
    os.makedirs(out, exist_ok=True)
    for ext, text in (("json", json.dumps(json_safe(record), indent=1, allow_nan=False) + "\n"), ("md", markdown)):
        path = os.path.join(out, f"{name}.{ext}")
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    return [os.path.join(out, f"{name}.{ext}") for ext in ("json", "md")]


def check_folder(option, folder):
    """A folder that can be made and written in, or ValueError naming ``option``."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{option}: cannot make the folder {folder!r}: {e.strerror or e}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{option}: cannot write in {folder!r}")


def parse_splits(text):
    return None if text == "seed" else parse_seeds(text, "--splits")


def prepare(args):
    seeds = parse_seeds(args.seeds)
    datasets = parse_datasets(args.datasets)
    entries = write_suite(args.cache, datasets, seeds, parse_splits(args.splits))
    sk = sklearn_results(entries, args.sklearn_cache, refit=args.refit_sklearn)
    tasks = {name: spec.task for name, spec in specs(datasets).items()}
    chances = {e.dataset: e.chance for e in entries}
    sk_summary = {}
    for ds in datasets:
        mine = [e for e in entries if e.dataset == ds]
        linear = {e.split_id: sk[(ds, e.split_id, "linear")] for e in mine}
        sk_summary[ds] = tables.summarize_sklearn([sk[(ds, e.split_id, e.seed)] for e in mine], tasks[ds],
                                                  chances[ds], list(linear.values()))
    return seeds, datasets, entries, sk, tasks, sk_summary


def parts_of(datasets):
    return {name: spec.part for name, spec in specs(datasets).items()}


def per_rows(extra, rows):
    """Options for one data set: a value 'C/n' becomes C / (the training file's rows), e.g. --weight-decay 10/n."""
    return [f"{float(a[:-2]) / rows:.6g}" if re.fullmatch(r"[0-9]*\.?[0-9]+([eE][+-]?[0-9]+)?/n", a) else a
            for a in extra]


def run_all(entries, extra, mode, timeout, log=sys.stderr):
    runs = []
    for entry in entries:
        record = run_one(entry, per_rows(extra, entry.train_rows), mode=mode, timeout=timeout)
        print(describe(record), file=log, flush=True)
        runs.append(record)
    return runs


def by_dataset(runs, sk, tasks):
    return {ds: tables.summarize([r for r in runs if r["dataset"] == ds], sk, task) for ds, task in tasks.items()}


def report(args):
    seeds, datasets, entries, sk, tasks, sk_summary = prepare(args)
    parts = parts_of(datasets)
    m = meta(args, seeds, datasets, sk, parts)   # date and load average as the runs start
    started = time.perf_counter()
    extra = shlex.split(args.extra or "")
    others = {name: fn for name, fn in EXTRA_CONTENDERS.items() if not args.no_autograd}
    compare = f"manualnn {args.compare}" if args.compare else None
    contenders, runs = {}, {name: [] for name in ["manualnn", *others, *([compare] if compare else [])]}
    for entry in entries:   # each entry's contenders one after the other: drift in the machine's load hits all alike
        mine = run_one(entry, extra, mode=args.mode, timeout=args.timeout)
        print(describe(mine), file=sys.stderr, flush=True)
        runs["manualnn"].append(mine)
        for name, run_fn in others.items():
            theirs = run_fn(entry, extra, mine)
            theirs.update(split=entry.split_id, part=entry.part)   # scored against the same split's baselines
            runs[name].append(theirs)
        if compare:
            runs[compare].append(run_one(entry, shlex.split(args.compare) + extra, mode=args.mode,
                                         timeout=args.timeout))
    for name, rs in runs.items():
        contenders[name] = by_dataset(rs, sk, tasks)
    m["seconds"] = round(time.perf_counter() - started, 1)
    notes = []
    for name in others:
        diffs = [r["loss_rel_diff"] for r in runs[name] if r.get("loss_rel_diff") is not None]
        if diffs:
            notes += [f"{name}: trained on manualnn's own inputs (split, standardization, initial weights, batch "
                      f"order); its per-epoch losses over the first {COMPARED_EPOCHS} epochs differ from manualnn's "
                      f"by at most {max(diffs):.1e} (relative), over {len(diffs)} runs.", ""]
    sk_failed = [f"{ds} ({s['failed']}/{s['runs']})" for ds, s in sk_summary.items() if s["failed"]]
    if sk_failed:   # the peer itself at chance: a gap to it says little there
        notes += [f"scikit-learn's defaults themselves fail (score at chance or below) on: {', '.join(sk_failed)}.",
                  ""]
    markdown = tables.report_markdown(m, tasks, sk_summary, contenders, notes)
    markdown += "\n" + "\n".join(["The bound: every run at least the better of scikit-learn's MLP (same split and "
                                  "seed) and the linear model (same split) minus 3 points (R²: 0.05).", ""] +
                                 tables.bound_markdown(tasks, parts, sk_summary, contenders["manualnn"])) + "\n"
    if compare:
        markdown += "\n" + "\n".join([f"The same bound for `{compare}`:", ""] + tables.bound_markdown(
            tasks, parts, sk_summary, contenders[compare], title=compare)) + "\n"
    markdown += "\n" + tables.sklearn_markdown(sk_summary, tasks, args.seeds)
    record = {"meta": m, "summary": {"sklearn": sk_summary, **contenders},
              "runs": {name: lean(rs) for name, rs in runs.items()},
              "sklearn_runs": [sk[(e.dataset, e.split_id, e.seed)] for e in entries],
              "linear_runs": list({(e.dataset, e.split_id): sk[(e.dataset, e.split_id, "linear")]
                                   for e in entries}.values())}
    paths = write_outputs(args.out, args.name or report_name(args), record, markdown)   # (before stdout: '| head')
    print(f"wrote {', '.join(paths)}", file=sys.stderr)
    print(markdown)
    return 0


def check_train_options(options):
    """Refuse, before any run, options that ``manualnn train`` would refuse on every run (a misspelled grid
    option, a value 'x/n'): train's own parser says why, on stderr."""
    from manualnn.cli.options import build_parser as train_parser
    try:
        train_parser().parse_args(["train", "--data", "data.npz", *per_rows(options, 100)])
    except SystemExit:
        raise SystemExit(f"the options {' '.join(options)!r}: manualnn train refuses them (above)") from None


def report_name(args):
    """The report's default file stem: realdata for the whole suite (seeds 0-9, splits 0-2), the committed
    report; realdata-partial for a smaller run, which should not replace it."""
    whole = (parse_datasets(args.datasets) == parse_datasets("all") and parse_seeds(args.seeds) == list(range(10))
             and parse_splits(args.splits) == [0, 1, 2])
    if not whole:
        print("python -m benchmarks.realdata: a part of the suite: written as realdata-partial (--name names it)",
              file=sys.stderr)
    return "realdata" if whole else "realdata-partial"


def sweep(args):
    points = list(itertools.product(*parse_grid(args.grid)))
    base = shlex.split(args.extra or "")
    for combo in points:   # every grid point a train command takes, before any run
        check_train_options(base + combo_argv(combo))
    seeds, datasets, entries, sk, tasks, sk_summary = prepare(args)
    m = meta(args, seeds, datasets, sk, parts_of(datasets))
    m["grid"] = args.grid
    combos, started = [], time.perf_counter()
    name = args.name or "sweep"
    for combo in points:
        options = combo_argv(combo)
        print(f"sweep: {' '.join(options) or '(no options)'}", file=sys.stderr, flush=True)
        runs = run_all(entries, base + options, args.mode, args.timeout)
        combos.append({"options": options, "options_text": " ".join(options), "grid_point": dict(combo),
                       "summary": by_dataset(runs, sk, tasks), "runs": lean(runs)})
        m["seconds"] = round(time.perf_counter() - started, 1)
        m["grid_points_done"] = [len(combos), len(points)]   # (an interrupted sweep's files say so)
        markdown = tables.sweep_markdown(m, tasks, combos, sk_summary)
        record = {"meta": m, "sklearn": sk_summary, "combinations": combos}
        paths = write_outputs(args.out, name, record, markdown)
    print(f"wrote {', '.join(paths)}", file=sys.stderr)
    print(markdown)
    return 0


def sklearn_only(args):
    seeds, datasets, entries, sk, tasks, sk_summary = prepare(args)
    m = meta(args, seeds, datasets, sk)
    markdown = "\n".join(tables.header_lines(m, "scikit-learn's MLP defaults on the real-data suite")) + "\n"
    markdown += (f"MLPClassifier/MLPRegressor(random_state=seed), features StandardScaler'd on the training rows, "
                 f"targets raw; test rows 25%. Times from {m['sklearn_timed_on']}, when each result was first "
                 f"fitted.\n\n" + tables.sklearn_markdown(sk_summary, tasks, args.seeds))
    paths = write_outputs(args.out, args.name or "sklearn-baseline", {"meta": m, "summary": sk_summary}, markdown)
    print(f"cached in {args.sklearn_cache}; wrote {', '.join(paths)}", file=sys.stderr)
    print(markdown)
    return 0


def build_parser(command):
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.realdata{'' if command == 'report' else ' ' + command}",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="all",
                   help="comma-separated names, tuned, held-out, fresh, fresh-2, fresh-3, or all (default)")
    p.add_argument("--seeds", default="0-9", help="e.g. 0-9 (default), 0,3,5 or 0-2,7")
    p.add_argument("--splits", default="0-2", help="train/test splits (their random_state) per data set, e.g. "
                                                   "0-2 (default); 'seed': one split per seed, the old protocol")
    p.add_argument("--cache", default=DEFAULT_CACHE, help="folder for the data files (default %(default)s)")
    p.add_argument("--sklearn-cache", default=DEFAULT_SKLEARN_CACHE,
                   help="JSON file of scikit-learn results (default: the committed %(default)s)")
    p.add_argument("--refit-sklearn", action="store_true", help="refit scikit-learn even where the cache has it")
    p.add_argument("--out", default=DEFAULT_OUT, help="output folder (default %(default)s)")
    p.add_argument("--name", help="output file stem (default: realdata for the report of the whole suite, "
                                  "realdata-partial for a part of it, sweep for a sweep)")
    if command == "sklearn":
        return p
    p.add_argument("--mode", choices=MODES, default="inprocess" if command == "sweep" else "cli",
                   help="cli: python -m manualnn per command; inprocess: manualnn.cli.main here "
                        "(default: %(default)s)")
    p.add_argument("--extra", default="", help="options added to every train command, e.g. --extra '--lr 1e-3'")
    p.add_argument("--no-autograd", action="store_true", help="report: leave out the PyTorch autograd column")
    p.add_argument("--compare", default="", metavar="OPTIONS",
                   help="report: also run manualnn with these options after each run (e.g. the old defaults, "
                        "'--val-split 0.2 --patience 25 --weight-decay 0'), as a column of its own")
    p.add_argument("--timeout", type=float, default=900, help="cli mode: seconds per command before it is killed and the run counts as failed")
    if command == "sweep":
        p.add_argument("--grid", required=True, help="e.g. 'lr=1e-3,3e-3;batch-size=32,200'")
    return p


COMMANDS = {"report": report, "sweep": sweep, "sklearn": sklearn_only}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv and argv[0] in COMMANDS else "report"
    if argv and argv[0] == command:
        argv = argv[1:]
    args = build_parser(command).parse_args(argv)
    try:
        parse_seeds(args.seeds)
        parse_splits(args.splits)
        parse_datasets(args.datasets)
        for option, folder in (("--out", args.out), ("--cache", args.cache)):   # now, not after every run
            check_folder(option, folder)
        if getattr(args, "timeout", 1) <= 0:
            raise ValueError(f"--timeout: expected a positive number of seconds, got {args.timeout:g}")
    except ValueError as e:
        print(f"python -m benchmarks.realdata: error: {e}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[command](args)
    except SystemExit as e:   # a refusal found before the runs (check_train_options)
        if isinstance(e.code, str):
            print(f"python -m benchmarks.realdata {command}: error: {e.code}", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        print("python -m benchmarks.realdata: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(run_main(main))
