"""GridSearchCV over manualnn.MLPClassifier on digits beside ``manualnn train`` on the same rows.

    python -m benchmarks.sklearn_grid                  # seed 0: the grid below, 3 folds, two jobs
    python -m benchmarks.sklearn_grid --seeds 0-2 --n-jobs 1

Per seed: digits (raw 0..16 pixels, benchmarks/suite.py's digits_raw: a stratified 75/25 split) is
trained by ``manualnn train --data train.npz --seed S`` and scored by ``manualnn predict`` on the test
rows (in child processes, as a user runs them), and by ``GridSearchCV(MLPClassifier(random_state=S),
{hidden_layer_sizes: (256,), (512,); learning_rate_init: 1e-3, 3e-3}, cv=3, n_jobs=2)`` on the same
training rows, its best estimator scored on the same test rows. Prints a table and writes
``results/sklearn/grid-digits.{json,md}`` with the machine, versions, date and commit.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from . import run_main
from .provenance import git_commit, loadavg, machine_name, versions
from .suite import parse_seeds, write_suite

HERE = os.path.dirname(os.path.abspath(__file__))
GRID = {"hidden_layer_sizes": [(256,), (512,)], "learning_rate_init": [1e-3, 3e-3]}


def cli_run(entry, seed, tmp):
    """``manualnn train`` then ``manualnn predict`` on the test rows: (test accuracy, seconds of both commands)."""
    model = os.path.join(tmp, f"digits-{seed}.pt")
    started = time.perf_counter()
    for argv in (["train", "--data", entry.train, "--seed", str(seed), "--save", model, "--log-every", "1000"],
                 ["predict", "--model", model, "--data", entry.test]):
        proc = subprocess.run([sys.executable, "-m", "manualnn", *argv], capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise SystemExit(f"manualnn {' '.join(argv)} failed: {proc.stderr[-2000:]}")
    accuracy = float(re.search(r"Accuracy:([0-9.]+)", proc.stdout).group(1))
    return accuracy, time.perf_counter() - started


def grid_run(entry, seed, n_jobs):
    """GridSearchCV on the training rows: (best params, CV score, test accuracy, seconds of the search)."""
    import numpy as np
    from sklearn.model_selection import GridSearchCV

    import manualnn
    train, test = np.load(entry.train), np.load(entry.test)
    started = time.perf_counter()
    search = GridSearchCV(manualnn.MLPClassifier(random_state=seed), GRID, cv=3, n_jobs=n_jobs)
    search.fit(train["x"], train["y"])
    seconds = time.perf_counter() - started
    best = {k: list(v) if isinstance(v, tuple) else v for k, v in search.best_params_.items()}
    return best, float(search.best_score_), float(search.score(test["x"], test["y"])), seconds


def markdown(record):
    lines = [f"GridSearchCV(MLPClassifier, {GRID}, cv=3, n_jobs={record['n_jobs']}) beside `manualnn train` on "
             f"digits (raw pixels, stratified 75/25 split per seed); {record['machine']}, {record['date']}, "
             f"commit {record['git_commit']}, load average before: {record['loadavg']}.", "",
             "| seed | manualnn train + predict: test accuracy | seconds | GridSearchCV best params | CV score | "
             "test accuracy | seconds | gap (points) |", "|---|---|---|---|---|---|---|---|"]
    for r in record["runs"]:
        gap = round(100 * (r["grid_test_accuracy"] - r["cli_accuracy"]), 2) + 0.0   # + 0.0: no "-0.00"
        lines.append(f"| {r['seed']} | {100 * r['cli_accuracy']:.2f} | {r['cli_seconds']:.1f} | "
                     f"{r['grid_best']} | {100 * r['grid_cv_score']:.2f} | {100 * r['grid_test_accuracy']:.2f} | "
                     f"{r['grid_seconds']:.1f} | {gap:+.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "sklearn"))
    args = parser.parse_args(argv)
    record = {"machine": machine_name(), "versions": versions(), "loadavg": loadavg(), "git_commit": git_commit(),
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "n_jobs": args.n_jobs, "grid": GRID, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in parse_seeds(args.seeds):
            (entry,) = write_suite(os.path.join(tmp, "data"), ["digits_raw"], [seed])
            cli_accuracy, cli_seconds = cli_run(entry, seed, tmp)
            best, cv, test, seconds = grid_run(entry, seed, args.n_jobs)
            run = dict(seed=seed, cli_accuracy=cli_accuracy, cli_seconds=cli_seconds, grid_best=best,
                       grid_cv_score=cv, grid_test_accuracy=test, grid_seconds=seconds)
            record["runs"].append(run)
            print(json.dumps(run), flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "grid-digits.json"), "w") as f:
        json.dump(record, f, indent=1)
    text = markdown(record)
    with open(os.path.join(args.out, "grid-digits.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
