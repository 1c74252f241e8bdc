"""scikit-learn's side of the real-data benchmark: MLPClassifier / MLPRegressor with their defaults.

Per (data set, seed): features standardized with a StandardScaler fitted on the training rows,
targets raw, ``MLPClassifier(random_state=seed)`` or ``MLPRegressor(random_state=seed)`` (100 ReLU
units, Adam lr 1e-3, batch min(200, N), L2 1e-4, up to 200 epochs; ConvergenceWarning silenced).
fit() is timed twice: with one BLAS/OpenMP thread (threadpoolctl) and with the default threads.
The score on the test rows is accuracy or R^2.

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


def cache_key(entry, version=None):
    return f"{entry.dataset}/seed{entry.seed}/sklearn-{version or sklearn_version()}"


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


def fit_and_score(entry):
    """Fit and score one (data set, seed); returns the record that goes into the cache."""
    from sklearn.preprocessing import StandardScaler
    x_train, y_train = load_train(entry)
    x_test, y_test = load_test(entry)
    scaler = StandardScaler().fit(x_train)
    x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    score_1, seconds_1, model = _fit_once(entry, x_train, y_train, x_test, y_test, threads=1)
    score_n, seconds_n, _ = _fit_once(entry, x_train, y_train, x_test, y_test, threads=None)
    finite = bool(np.isfinite(model.loss_curve_).all() and np.isfinite(score_1))
    return {"dataset": entry.dataset, "seed": entry.seed, "task": entry.task, "metric": entry.metric,
            "score": score_1, "score_default_threads": score_n,
            "fit_s_1_thread": seconds_1, "fit_s_default_threads": seconds_n,
            "n_iter": int(model.n_iter_), "max_iter": int(model.max_iter),
            "converged": int(model.n_iter_) < int(model.max_iter), "finite": finite,
            "final_loss": float(model.loss_curve_[-1]),
            "sklearn": sklearn_version(), "machine": machine_name(), "loadavg": loadavg(), "blas": blas_info(),
            "versions": {k: v for k, v in versions().items() if k in ("python", "sklearn", "numpy", "threadpoolctl")},
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git_commit": git_commit()}


class Cache:
    """The JSON file of sklearn results: {key: record}; written atomically after every new fit."""

    def __init__(self, path):
        self.path = path
        self.records = {}
        if path and os.path.exists(path):
            with open(path) as f:
                self.records = json.load(f).get("results", {})

    def get(self, entry):
        return self.records.get(cache_key(entry))

    def put(self, entry, record):
        self.records[cache_key(entry)] = record
        if not self.path:
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({"about": "scikit-learn MLP defaults on the real-data suite (benchmarks/sklearn_mlp.py); "
                                "key: data set/seed/sklearn version",
                       "results": dict(sorted(self.records.items()))}, f, indent=1)
            f.write("\n")
        os.replace(tmp, self.path)


def sklearn_results(entries, cache_path, refit=False, log=sys.stderr):
    """{(dataset, seed): record} for every entry: from the cache, or fitted now (and cached)."""
    cache = Cache(cache_path)
    out = {}
    for entry in entries:
        record = None if refit else cache.get(entry)
        if record is None:
            record = fit_and_score(entry)
            cache.put(entry, record)
            print(f"sklearn {entry.dataset} seed {entry.seed}: {entry.metric} {record['score']:.4f}, fit "
                  f"{record['fit_s_1_thread']:.2f} s (1 thread), {record['fit_s_default_threads']:.2f} s (default), "
                  f"{record['n_iter']} epochs", file=log, flush=True)
        out[(entry.dataset, entry.seed)] = record
    return out
