"""scikit-learn's side of the real-data benchmark: its MLP with its defaults, and a linear model.

Per (data set, split, seed): features standardized with a StandardScaler fitted on the training rows,
targets raw, ``MLPClassifier(random_state=seed)`` or ``MLPRegressor(random_state=seed)`` (100 ReLU
units, Adam lr 1e-3, batch min(200, N), L2 1e-4, up to 200 epochs; ConvergenceWarning silenced).
fit() is timed with one BLAS/OpenMP thread (threadpoolctl) and, for the old protocol (benchmarks/cpu.py),
also with the default threads. Per (data set, split): the linear baseline on the same standardized
features, ``LogisticRegression()`` (L2, C=1, lbfgs) or ``LinearRegression()`` (least squares). The
score on the test rows is accuracy or R^2.

Results are cached in a JSON file keyed by data set, seed and scikit-learn version, so a rerun of
the harness does not refit them (the cache records the machine the times were taken on).
"""
import json
import os
import sys
import time
import warnings

import numpy as np

from .provenance import blas_info, git_commit, loadavg, machine_name, versions
from .suite import load_test, load_train


def sklearn_version():
    import sklearn
    return sklearn.__version__


def cache_key(entry, version=None, linear=False):
    split = "" if entry.split is None else f"split{entry.split}/"
    run = "linear" if linear else f"seed{entry.seed}"
    return f"{entry.dataset}/{split}{run}/sklearn-{version or sklearn_version()}"


def _model(entry):
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    return (MLPClassifier if entry.task == "classify" else MLPRegressor)(random_state=entry.seed)


def _fit_once(entry, x_train, y_train, x_test, y_test, threads):
    """One timed fit(); threads=1 under threadpool_limits(1), None for the default."""
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits
    model = _model(entry)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if threads is None:
            started = time.perf_counter()
            model.fit(x_train, y_train)
            seconds = time.perf_counter() - started
        else:
            with threadpool_limits(limits=threads):
                started = time.perf_counter()
                model.fit(x_train, y_train)
                seconds = time.perf_counter() - started
    score = float(model.score(x_test, y_test))   # accuracy, or R^2 for the regressor
    return score, seconds, model


def _standardized(entry):
    from sklearn.preprocessing import StandardScaler
    x_train, y_train = load_train(entry)
    x_test, y_test = load_test(entry)
    scaler = StandardScaler().fit(x_train)
    return scaler.transform(x_train), y_train, scaler.transform(x_test), y_test


def _provenance():
    return {"sklearn": sklearn_version(), "machine": machine_name(), "loadavg": loadavg(), "blas": blas_info(),
            "versions": {k: v for k, v in versions().items() if k in ("python", "sklearn", "numpy", "threadpoolctl")},
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git_commit": git_commit()}


def fit_and_score(entry, default_threads=True):
    """Fit and score one (data set, split, seed); returns the record that goes into the cache."""
    x_train, y_train, x_test, y_test = _standardized(entry)
    score_1, seconds_1, model = _fit_once(entry, x_train, y_train, x_test, y_test, threads=1)
    score_n = seconds_n = None
    if default_threads:
        score_n, seconds_n, _ = _fit_once(entry, x_train, y_train, x_test, y_test, threads=None)
    finite = bool(np.isfinite(model.loss_curve_).all() and np.isfinite(score_1))
    return {"dataset": entry.dataset, "split": entry.split_id, "seed": entry.seed, "task": entry.task,
            "metric": entry.metric, "score": score_1, "score_default_threads": score_n,
            "fit_s_1_thread": seconds_1, "fit_s_default_threads": seconds_n,
            "n_iter": int(model.n_iter_), "max_iter": int(model.max_iter),
            "converged": int(model.n_iter_) < int(model.max_iter), "finite": finite,
            "final_loss": float(model.loss_curve_[-1]), **_provenance()}


def fit_linear(entry):
    """LogisticRegression or LinearRegression on one (data set, split): the record that goes into the cache."""
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from threadpoolctl import threadpool_limits
    x_train, y_train, x_test, y_test = _standardized(entry)
    model = LogisticRegression(max_iter=1000) if entry.task == "classify" else LinearRegression()
    with threadpool_limits(limits=1):
        started = time.perf_counter()
        model.fit(x_train, y_train)
        seconds = time.perf_counter() - started
    return {"dataset": entry.dataset, "split": entry.split_id, "task": entry.task, "metric": entry.metric,
            "model": type(model).__name__, "score": float(model.score(x_test, y_test)), "fit_s_1_thread": seconds,
            **_provenance()}


class Cache:
    """The JSON file of sklearn results: {key: record}; written atomically after every new fit."""

    def __init__(self, path):
        self.path = path
        self.records = {}
        if path and os.path.exists(path):
            with open(path) as f:
                self.records = json.load(f).get("results", {})

    def get(self, entry, linear=False):
        return self.records.get(cache_key(entry, linear=linear))

    def put(self, entry, record, linear=False):
        self.records[cache_key(entry, linear=linear)] = record
        if not self.path:
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({"about": "scikit-learn's MLP defaults (and linear models) on the real-data suite "
                                "(benchmarks/sklearn_mlp.py); key: data set/[split/]seed (or linear)/sklearn version",
                       "results": dict(sorted(self.records.items()))}, f, indent=1)
            f.write("\n")
        os.replace(tmp, self.path)


def sklearn_results(entries, cache_path, refit=False, log=sys.stderr):
    """{(dataset, split, seed): record} for every entry, and {(dataset, split, "linear"): record} for every
    split (the linear baseline): from the cache, or fitted now (and cached)."""
    cache = Cache(cache_path)
    out = {}
    for entry in entries:
        record = None if refit else cache.get(entry)
        if record is None:
            record = fit_and_score(entry, default_threads=entry.split is None)
            cache.put(entry, record)
            print(f"sklearn {entry.dataset} split {entry.split_id} seed {entry.seed}: {entry.metric} "
                  f"{record['score']:.4f}, fit {record['fit_s_1_thread']:.2f} s (1 thread), {record['n_iter']} epochs",
                  file=log, flush=True)
        out[(entry.dataset, entry.split_id, entry.seed)] = record
        linear_key = (entry.dataset, entry.split_id, "linear")
        if linear_key not in out:
            record = None if refit else cache.get(entry, linear=True)
            if record is None:
                record = fit_linear(entry)
                cache.put(entry, record, linear=True)
            out[linear_key] = record
    return out


def baseline(sk, dataset, split, seed):
    """The better of scikit-learn's MLP (same split and seed) and the linear model (same split): (score, name),
    (None, None) when neither has a finite score."""
    mlp, linear = sk.get((dataset, split, seed)), sk.get((dataset, split, "linear"))
    options = [(r["score"], name) for r, name in ((mlp, "mlp"), (linear, "linear"))
               if r is not None and np.isfinite(r["score"])]
    return max(options) if options else (None, None)
