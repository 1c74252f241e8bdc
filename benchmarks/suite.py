"""The real-data suite: ten small classification and regression sets, saved as a user would save them.

Every (data set, seed) becomes two ``.npz`` files, ``<name>/seed<S>-train.npz`` and
``<name>/seed<S>-test.npz``, each with arrays ``x`` (raw features as scikit-learn returns them,
float64, no scaling) and ``y`` (int64 class labels, or float64 regression targets). The split is
``train_test_split(test_size=0.25, random_state=seed)``, stratified for classification. The
generated sets (moons, classification, circles, friedman1) are also drawn with ``random_state=seed``.

Files are written once per scikit-learn version (its generators and bundled data decide the bytes)
into a cache folder; a rerun reuses them.
"""
import os
import re
from dataclasses import dataclass

import numpy as np

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "manualnn", "realdata")


def _bundled(loader, **kwargs):
    def load(seed):
        x, y = loader(return_X_y=True, **kwargs)
        return x, y
    return load


def _digits(scale):
    def load(seed):
        from sklearn.datasets import load_digits
        x, y = load_digits(return_X_y=True)   # pixels 0..16, float64
        return (x / 16.0 if scale else x), y
    return load


def _generated(name, **kwargs):
    def load(seed):
        import sklearn.datasets
        x, y = getattr(sklearn.datasets, name)(random_state=seed, **kwargs)
        return x, y
    return load


@dataclass(frozen=True)
class Spec:
    """One data set: its task, how to draw it (raw) for a seed, and a line saying what it is."""
    name: str
    task: str          # "classify" or "regress"
    load: object       # seed -> (x, y) numpy arrays
    about: str


def _specs():
    from sklearn import datasets as d
    specs = [
        Spec("iris", "classify", _bundled(d.load_iris), "150 x 4, 3 classes"),
        Spec("wine", "classify", _bundled(d.load_wine), "178 x 13, 3 classes; features from 0.1 to 1680"),
        Spec("breast_cancer", "classify", _bundled(d.load_breast_cancer),
             "569 x 30, 2 classes (63% one class); features from 1e-4 to 4254"),
        Spec("digits_raw", "classify", _digits(scale=False), "1797 x 64, 10 classes; pixels 0..16"),
        Spec("digits_scaled", "classify", _digits(scale=True), "1797 x 64, 10 classes; pixels / 16"),
        Spec("moons", "classify", _generated("make_moons", n_samples=1000, noise=0.2),
             "make_moons(1000, noise=0.2): 2 features, 2 classes"),
        Spec("classification", "classify",
             _generated("make_classification", n_samples=1000, n_features=20, n_informative=10),
             "make_classification(1000, 20 features, 10 informative): 2 classes"),
        Spec("circles", "classify", _generated("make_circles", n_samples=1000, noise=0.1, factor=0.5),
             "make_circles(1000, noise=0.1, factor=0.5): classes differ only by distance from the origin"),
        Spec("diabetes", "regress", _bundled(d.load_diabetes, scaled=False),
             "442 x 10, raw targets 25..346 (whole numbers, stored as float)"),
        Spec("friedman1", "regress", _generated("make_friedman1", n_samples=1000, noise=1.0),
             "make_friedman1(1000, noise=1.0): 10 features, 5 informative"),
    ]
    return {s.name: s for s in specs}


NAMES = ("iris", "wine", "breast_cancer", "digits_raw", "digits_scaled", "moons", "classification", "circles",
         "diabetes", "friedman1")


def specs(names=None):
    """{name: Spec} for ``names`` (default: all, in the suite's order); unknown names are an error."""
    table = _specs()
    names = list(names or NAMES)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"--datasets: unknown {', '.join(unknown)}; expected names from {', '.join(NAMES)}")
    return {n: table[n] for n in names}


def parse_seeds(text):
    """'0-9' or '0,3,5' or '0-2,7' -> sorted list of ints."""
    seeds = set()
    for part in str(text).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ValueError(f"--seeds: expected e.g. 0-9 or 0,3,5, got {text!r}")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise ValueError(f"--seeds: {part!r} runs backwards")
        seeds.update(range(lo, hi + 1))
    return sorted(seeds)


def parse_datasets(text):
    if not text or text == "all":
        return list(NAMES)
    names = [n.strip() for n in text.split(",") if n.strip()]
    specs(names)   # checks the names
    return names


@dataclass(frozen=True)
class Entry:
    """One (data set, seed): the two files and what scoring needs to know."""
    dataset: str
    seed: int
    task: str
    classes: int        # 0 for regression
    train: str
    test: str
    train_rows: int
    test_rows: int
    features: int
    majority: float = 0.0   # the largest class's share of the test rows (what a constant guess scores)

    @property
    def chance(self):
        """The score at or below which a run counts as failed: the better of 1/K and always guessing the
        largest class, plus 0.05 (accuracy); 0.05 (R^2)."""
        return max(1.0 / self.classes, self.majority) + 0.05 if self.task == "classify" else 0.05

    @property
    def metric(self):
        return "accuracy" if self.task == "classify" else "R2"


def _split(spec, seed):
    from sklearn.model_selection import train_test_split
    x, y = spec.load(seed)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64 if spec.task == "classify" else np.float64)
    return train_test_split(x, y, test_size=0.25, random_state=seed,
                            stratify=y if spec.task == "classify" else None)


def _save(path, x, y):
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    np.savez(tmp, x=x, y=y)
    os.replace(tmp, path)


def cache_folder(cache):
    import sklearn
    return os.path.join(cache, f"sklearn-{sklearn.__version__}")


def write_suite(cache=DEFAULT_CACHE, datasets=None, seeds=range(10)):
    """Write (or reuse) the train/test files for every data set and seed; returns a list of Entry."""
    folder = cache_folder(cache)
    entries = []
    for name, spec in specs(datasets).items():
        os.makedirs(os.path.join(folder, name), exist_ok=True)
        for seed in seeds:
            train = os.path.join(folder, name, f"seed{seed}-train.npz")
            test = os.path.join(folder, name, f"seed{seed}-test.npz")
            if not (os.path.exists(train) and os.path.exists(test)):
                x_train, x_test, y_train, y_test = _split(spec, seed)
                _save(train, x_train, y_train)
                _save(test, x_test, y_test)
            with np.load(train) as a, np.load(test) as b:
                y_all = np.concatenate([a["y"], b["y"]])
                classes = int(y_all.max()) + 1 if spec.task == "classify" else 0
                majority = float(np.bincount(b["y"].astype(np.int64)).max() / len(b["y"])) if classes else 0.0
                entries.append(Entry(name, seed, spec.task, classes, train, test, a["x"].shape[0], b["x"].shape[0],
                                     a["x"].shape[1], majority))
    return entries


def load_test(entry):
    with np.load(entry.test) as f:
        return f["x"], f["y"]


def load_train(entry):
    with np.load(entry.train) as f:
        return f["x"], f["y"]
