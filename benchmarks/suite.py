"""The real-data suite: small classification and regression sets, saved as a user would save them.

Every (data set, split) becomes two ``.npz`` files, ``<name>/split<K>-train.npz`` and
``<name>/split<K>-test.npz``, each with arrays ``x`` (raw features as the package returns them,
float64, no scaling) and ``y`` (int64 class labels 0..K-1, or float64 regression targets). The split
is ``train_test_split(test_size=0.25, random_state=K)``, stratified for classification; a generated
set is drawn anew per split with ``random_state=K``. Every split is trained with seeds 0-9.

The sets are in five parts (README, "How the defaults were chosen"): ``tuned``, the sets the defaults
were chosen on; ``held-out``, sets that were not run while tuning and only confirm the choice; ``fresh``,
sets written down before any run to confirm a later change once the held-out sets had been seen;
``fresh-2``, written down likewise once ``fresh`` had been seen, to confirm even batches; and ``fresh-3``,
small sets written down before any run once ``fresh-2`` had been seen, to confirm the small-set search's
choice between the hidden layers and none (manualnn/training/selection.py).
The data sets come from scikit-learn (bundled and generated), statsmodels and palmerpenguins (all
bundled in the packages: nothing is downloaded; ``pip install statsmodels palmerpenguins``).

Files are written once per scikit-learn version into a cache folder; a rerun reuses them. The old
protocol (one split per seed, split = seed: the first ten sets) is ``splits=None``.
"""
import os
import re
from dataclasses import dataclass

import numpy as np

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "manualnn", "realdata")
TUNED, HELD_OUT, FRESH, FRESH2, FRESH3 = "tuned", "held-out", "fresh", "fresh-2", "fresh-3"
PARTS = (TUNED, HELD_OUT, FRESH, FRESH2, FRESH3)


def _bundled(loader, **kwargs):
    return lambda split: loader(return_X_y=True, **kwargs)


def _digits(scale):
    def load(split):
        from sklearn.datasets import load_digits
        x, y = load_digits(return_X_y=True)   # pixels 0..16, float64
        return (x / 16.0 if scale else x), y
    return load


def _generated(name, labels01=False, **kwargs):
    def load(split):
        import sklearn.datasets
        x, y = getattr(sklearn.datasets, name)(random_state=split, **kwargs)
        return x, ((y > 0).astype(np.int64) if labels01 else y)   # hastie's -1/+1 as 0/1
    return load


def _statsmodels(name, target, features=None, drop=()):
    """A statsmodels data set's numeric columns: ``target`` (a column name, or a function of the frame)."""
    def load(split):
        import importlib
        frame = importlib.import_module(f"statsmodels.datasets.{name}").load_pandas().data
        y = target(frame) if callable(target) else frame[target]
        cols = features or [c for c in frame.columns if c not in (() if callable(target) else (target,))
                            and c not in drop]
        return frame[cols].to_numpy(np.float64), np.asarray(y, dtype=np.float64)
    return load


def _penguins(split):
    from palmerpenguins import load_penguins
    frame = load_penguins()
    cols = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "year"]
    frame = frame.dropna(subset=cols)   # two rows have no measurements
    names, y = np.unique(frame["species"].to_numpy(str), return_inverse=True)
    return frame[cols].to_numpy(np.float64), y


@dataclass(frozen=True)
class Spec:
    """One data set: its task, how to draw it (raw) for a split, a line saying what it is, its part."""
    name: str
    task: str          # "classify" or "regress"
    load: object       # split -> (x, y) numpy arrays
    about: str
    part: str = TUNED


def _specs():
    from sklearn import datasets as d
    c, r = "classify", "regress"
    star98_share = lambda f: f["NABOVE"] / (f["NABOVE"] + f["NBELOW"])  # noqa: E731
    specs = [
        # tuned: the first ten (swept before), and five that test tiny and linear problems
        Spec("iris", c, _bundled(d.load_iris), "150 x 4, 3 classes"),
        Spec("wine", c, _bundled(d.load_wine), "178 x 13, 3 classes; features from 0.1 to 1680"),
        Spec("breast_cancer", c, _bundled(d.load_breast_cancer),
             "569 x 30, 2 classes (63% one class); features from 1e-4 to 4254"),
        Spec("digits_raw", c, _digits(scale=False), "1797 x 64, 10 classes; pixels 0..16"),
        Spec("digits_scaled", c, _digits(scale=True), "1797 x 64, 10 classes; pixels / 16"),
        Spec("moons", c, _generated("make_moons", n_samples=1000, noise=0.2),
             "make_moons(1000, noise=0.2): 2 features, 2 classes"),
        Spec("classification", c,
             _generated("make_classification", n_samples=1000, n_features=20, n_informative=10),
             "make_classification(1000, 20 features, 10 informative): 2 classes"),
        Spec("circles", c, _generated("make_circles", n_samples=1000, noise=0.1, factor=0.5),
             "make_circles(1000, noise=0.1, factor=0.5): classes differ only by distance from the origin"),
        Spec("diabetes", r, _bundled(d.load_diabetes, scaled=False),
             "442 x 10, raw targets 25..346 (whole numbers, stored as float)"),
        Spec("friedman1", r, _generated("make_friedman1", n_samples=1000, noise=1.0),
             "make_friedman1(1000, noise=1.0): 10 features, 5 informative"),
        Spec("spector", c, _statsmodels("spector", "GRADE"),
             "statsmodels: 32 x 3, 2 classes (21/11): 24 rows to train"),
        Spec("stackloss", r, _statsmodels("stackloss", "STACKLOSS"), "statsmodels: 21 x 3, a value: 15 rows to train"),
        Spec("engel", r, _statsmodels("engel", "foodexp", ["income"]),
             "statsmodels: 235 x 1, food expenditure by income (a nearly linear law)"),
        Spec("regression", r, _generated("make_regression", n_samples=500, n_features=20, n_informative=10, noise=10.0),
             "make_regression(500, 20 features, 10 informative, noise 10): a linear target"),
        Spec("classification_small", c, _generated("make_classification", n_samples=150, n_features=8,
                                                   n_informative=4, flip_y=0.05),
             "make_classification(150, 8 features, 4 informative, 5% labels flipped): 2 classes"),
        # held out: not run while the defaults were chosen
        Spec("penguins", c, _penguins, "palmerpenguins: 342 x 5 (mm, g, year), 3 species", HELD_OUT),
        Spec("anes96", c, _statsmodels("anes96", "vote", drop=("vote",)),
             "statsmodels: 944 x 10 survey answers, the 1996 vote (2 classes)", HELD_OUT),
        Spec("gaussian_quantiles", c, _generated("make_gaussian_quantiles", n_samples=1000, n_features=4, n_classes=3),
             "make_gaussian_quantiles(1000, 4 features, 3 classes): shells around the origin", HELD_OUT),
        Spec("hastie", c, _generated("make_hastie_10_2", labels01=True, n_samples=4000),
             "make_hastie_10_2(4000): 10 features, 2 classes (labels -1/+1 saved as 0/1)", HELD_OUT),
        Spec("classification3", c, _generated("make_classification", n_samples=300, n_features=10, n_informative=5,
                                              n_classes=3),
             "make_classification(300, 10 features, 5 informative, 3 classes)", HELD_OUT),
        Spec("longley", r, _statsmodels("longley", "TOTEMP"), "statsmodels: 16 x 6, employment: 12 rows to train",
             HELD_OUT),
        Spec("star98", r, _statsmodels("star98", star98_share, drop=("NABOVE", "NBELOW")),
             "statsmodels: 303 x 20, the share of pupils above the median", HELD_OUT),
        Spec("grunfeld", r, _statsmodels("grunfeld", "invest", ["value", "capital", "year"]),
             "statsmodels: 220 x 3, investment by firm value and capital", HELD_OUT),
        Spec("friedman2", r, _generated("make_friedman2", n_samples=1000, noise=10.0),
             "make_friedman2(1000, noise=10): 4 features from 0 to 1700, targets up to ~1700", HELD_OUT),
        Spec("friedman3", r, _generated("make_friedman3", n_samples=1000, noise=0.1),
             "make_friedman3(1000, noise=0.1): an arctangent of the features", HELD_OUT),
        Spec("sparse_uncorrelated", r, _generated("make_sparse_uncorrelated", n_samples=500),
             "make_sparse_uncorrelated(500): 10 features, 4 of them in a linear target", HELD_OUT),
        # fresh: written down before any run, to confirm a change of the rule for 150 to 1,000 rows (classes)
        Spec("blobs", c, _generated("make_blobs", n_samples=500, n_features=6, centers=4, cluster_std=3.0),
             "make_blobs(500, 6 features, 4 overlapping centers)", FRESH),
        Spec("moons_noisy", c, _generated("make_moons", n_samples=300, noise=0.35),
             "make_moons(300, noise=0.35): 2 features, 2 classes", FRESH),
        Spec("circles_small", c, _generated("make_circles", n_samples=400, noise=0.15, factor=0.6),
             "make_circles(400, noise=0.15, factor=0.6)", FRESH),
        Spec("classification4", c, _generated("make_classification", n_samples=600, n_features=15, n_informative=6,
                                              n_redundant=3, n_classes=4, flip_y=0.05),
             "make_classification(600, 15 features, 6 informative, 4 classes, 5% labels flipped)", FRESH),
        Spec("classification_flip", c, _generated("make_classification", n_samples=800, n_features=8, n_informative=3,
                                                  flip_y=0.1, class_sep=0.8),
             "make_classification(800, 8 features, 3 informative, 10% labels flipped, class_sep 0.8): 2 classes",
             FRESH),
        Spec("quantiles_small", c, _generated("make_gaussian_quantiles", n_samples=400, n_features=3, n_classes=2),
             "make_gaussian_quantiles(400, 3 features, 2 classes): a ball and the shell around it", FRESH),
        Spec("hastie_small", c, _generated("make_hastie_10_2", labels01=True, n_samples=700),
             "make_hastie_10_2(700): 10 features, 2 classes", FRESH),
        Spec("modechoice", c, _statsmodels("modechoice", "choice", drop=("individual",)),
             "statsmodels: 840 x 7, travel mode chosen or not (75/25) by costs, times, income", FRESH),
        # fresh-2: written down before any run, to confirm even batches (training/batches.py)
        Spec("fair", c, _statsmodels("fair", lambda f: (f["affairs"] > 0).astype(float), drop=("affairs",)),
             "statsmodels: 6366 x 8 survey answers, whether the woman had an affair (32% did)", FRESH2),
        Spec("classification5", c, _generated("make_classification", n_samples=400, n_features=12, n_informative=6,
                                              n_classes=5, n_clusters_per_class=1),
             "make_classification(400, 12 features, 6 informative, 5 classes, 1 cluster each)", FRESH2),
        Spec("moons_mid", c, _generated("make_moons", n_samples=600, noise=0.25), "make_moons(600, noise=0.25)",
             FRESH2),
        Spec("blobs3", c, _generated("make_blobs", n_samples=250, n_features=5, centers=3, cluster_std=2.5),
             "make_blobs(250, 5 features, 3 overlapping centers)", FRESH2),
        Spec("hastie_mid", c, _generated("make_hastie_10_2", labels01=True, n_samples=600),
             "make_hastie_10_2(600): 10 features, 2 classes", FRESH2),
        Spec("statecrime", r, _statsmodels("statecrime", "violent"),
             "statsmodels: 51 x 6, violent crime per US state: 38 rows to train", FRESH2),
        Spec("ccard", r, _statsmodels("ccard", "AVGEXP"), "statsmodels: 72 x 4, credit card spending", FRESH2),
        Spec("copper", r, _statsmodels("copper", "WORLDCONSUMPTION"),
             "statsmodels: 25 x 5, world copper consumption: 18 rows to train", FRESH2),
        Spec("scotland", r, _statsmodels("scotland", "YES"),
             "statsmodels: 32 x 7, the 1997 devolution vote's yes share by council", FRESH2),
        Spec("macrodata", r, _statsmodels("macrodata", "realgdp", drop=("year", "quarter")),
             "statsmodels: 203 x 11, US real GDP by the other quarterly series", FRESH2),
        Spec("friedman1_small", r, _generated("make_friedman1", n_samples=300, noise=1.0),
             "make_friedman1(300, noise=1.0): 10 features, 5 informative", FRESH2),
        Spec("regression_small", r, _generated("make_regression", n_samples=200, n_features=8, n_informative=4,
                                               noise=20.0),
             "make_regression(200, 8 features, 4 informative, noise 20): a linear target", FRESH2),
        # fresh-3: written down before any run, to confirm the search's choice of no hidden layer (selection.py)
        Spec("committee", r, _statsmodels("committee", "BILLS104"),
             "statsmodels: 20 x 6, bills before each House committee by its size and staff: 15 rows to train", FRESH3),
        Spec("cpunish", r, _statsmodels("cpunish", "EXECUTIONS"),
             "statsmodels: 17 x 7, executions by US state and its income, poverty, ...: 12 rows to train", FRESH3),
        Spec("danish", r, _statsmodels("danish_data", "lrm"),
             "statsmodels: 55 x 5, Danish log real money by income, prices and interest rates", FRESH3),
        Spec("elnino", r, _statsmodels("elnino", "DEC", drop=("YEAR",)),
             "statsmodels: 61 x 13, December's sea temperature by the year's other months", FRESH3),
        Spec("heart", r, _statsmodels("heart", "survival"),
             "statsmodels: 69 x 3, heart transplant survival days by age and censoring", FRESH3),
        Spec("interest", r, _statsmodels("interest_inflation", "R", drop=("year", "quarter")),
             "statsmodels: 107 x 4, the German interest rate by inflation", FRESH3),
        Spec("strikes", r, _statsmodels("strikes", "duration"),
             "statsmodels: 62 x 2, strike duration by industrial production", FRESH3),
        Spec("classification_tiny", c, _generated("make_classification", n_samples=120, n_features=6,
                                                  n_informative=3, n_redundant=1),
             "make_classification(120, 6 features, 3 informative, 2 classes)", FRESH3),
        Spec("moons_tiny", c, _generated("make_moons", n_samples=100, noise=0.3), "make_moons(100, noise=0.3)",
             FRESH3),
        Spec("circles_tiny", c, _generated("make_circles", n_samples=150, noise=0.1, factor=0.5),
             "make_circles(150, noise=0.1, factor=0.5)", FRESH3),
        Spec("blobs4", c, _generated("make_blobs", n_samples=150, n_features=4, centers=4, cluster_std=2.0),
             "make_blobs(150, 4 features, 4 overlapping centers)", FRESH3),
        Spec("regression_tiny", r, _generated("make_regression", n_samples=80, n_features=5, noise=10.0),
             "make_regression(80, 5 features, noise 10): a linear target", FRESH3),
        Spec("friedman1_tiny", r, _generated("make_friedman1", n_samples=120, noise=1.0),
             "make_friedman1(120, noise=1.0): 10 features, 5 informative, a curved target", FRESH3),
    ]
    return {s.name: s for s in specs}


FIRST_TEN = ("iris", "wine", "breast_cancer", "digits_raw", "digits_scaled", "moons", "classification", "circles",
             "diabetes", "friedman1")
NAMES = FIRST_TEN   # the first ten sets, scikit-learn's only: what older callers iterate over


def specs(names=None):
    """{name: Spec} for ``names`` (default: every set, in the suite's order); unknown names are an error."""
    table = _specs()
    names = list(table if names is None else names)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"--datasets: unknown {', '.join(unknown)}; expected names from {', '.join(table)}, "
                         f"{', '.join(repr(p) for p in PARTS)} or 'all'")
    return {n: table[n] for n in names}


def parse_seeds(text, what="--seeds"):
    """'0-9' or '0,3,5' or '0-2,7' -> sorted list of ints."""
    seeds = set()
    for part in str(text).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ValueError(f"{what}: expected e.g. 0-9 or 0,3,5, got {text!r}")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise ValueError(f"{what}: {part!r} runs backwards")
        seeds.update(range(lo, hi + 1))
    return sorted(seeds)


def parse_datasets(text):
    """'all', a part ('tuned', 'held-out', 'fresh', 'fresh-2', 'fresh-3'), or comma-separated names (parts may be mixed in)."""
    table = _specs()
    names = []
    given = [n.strip() for n in ("all" if text is None else text).split(",") if n.strip()]
    if not given:
        raise ValueError(f"--datasets: expected names, a part or 'all', got {text!r}")
    for n in given:
        if n in ("all",) + PARTS:
            names += [s.name for s in table.values() if n == "all" or s.part == n]
        else:
            names.append(n)
    specs(names)   # checks the names
    return list(dict.fromkeys(names))


@dataclass(frozen=True)
class Entry:
    """One (data set, split, seed): the two files and what scoring needs to know."""
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
    split: int = None       # the train/test split's random_state (None: the seed, the old protocol)
    part: str = TUNED

    @property
    def split_id(self):
        return self.seed if self.split is None else self.split

    @property
    def chance(self):
        """The score at or below which a run counts as failed: the better of 1/K and always guessing the
        largest class, plus 0.05 (accuracy); 0.05 (R^2)."""
        return max(1.0 / self.classes, self.majority) + 0.05 if self.task == "classify" else 0.05

    @property
    def metric(self):
        return "accuracy" if self.task == "classify" else "R2"


def _split(spec, split):
    from sklearn.model_selection import train_test_split
    x, y = spec.load(split)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64 if spec.task == "classify" else np.float64)
    return train_test_split(x, y, test_size=0.25, random_state=split,
                            stratify=y if spec.task == "classify" else None)


def _save(path, x, y):
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    np.savez(tmp, x=x, y=y)
    os.replace(tmp, path)


def cache_folder(cache):
    import sklearn
    return os.path.join(cache, f"sklearn-{sklearn.__version__}")


def write_suite(cache=DEFAULT_CACHE, datasets=None, seeds=range(10), splits=None):
    """Write (or reuse) the train/test files; returns a list of Entry, one per (data set, split, seed).

    ``splits=None`` is the old protocol (the split's random_state is the seed; ``datasets=None``: the first
    ten sets); a list of splits trains every seed on each (``datasets=None``: every set)."""
    folder = cache_folder(cache)
    entries = []
    if datasets is None and splits is None:
        datasets = FIRST_TEN
    for name, spec in specs(datasets).items():
        os.makedirs(os.path.join(folder, name), exist_ok=True)
        pairs = [(seed, seed) for seed in seeds] if splits is None else [(k, s) for k in splits for s in seeds]
        for split, seed in pairs:
            stem = f"seed{split}" if splits is None else f"split{split}"
            train = os.path.join(folder, name, f"{stem}-train.npz")
            test = os.path.join(folder, name, f"{stem}-test.npz")
            if not (os.path.exists(train) and os.path.exists(test)):
                x_train, x_test, y_train, y_test = _split(spec, split)
                _save(train, x_train, y_train)
                _save(test, x_test, y_test)
            with np.load(train) as a, np.load(test) as b:
                y_all = np.concatenate([a["y"], b["y"]])
                classes = int(y_all.max()) + 1 if spec.task == "classify" else 0
                majority = float(np.bincount(b["y"].astype(np.int64)).max() / len(b["y"])) if classes else 0.0
                entries.append(Entry(name, seed, spec.task, classes, train, test, a["x"].shape[0], b["x"].shape[0],
                                     a["x"].shape[1], majority, None if splits is None else split, spec.part))
    return entries


def load_test(entry):
    with np.load(entry.test) as f:
        return f["x"], f["y"]


def load_train(entry):
    with np.load(entry.train) as f:
        return f["x"], f["y"]
