"""scikit-learn estimators: ``MLPClassifier`` and ``MLPRegressor``, trained by manualnn.

They follow scikit-learn's estimator API (``get_params``/``set_params``/``clone``, fitted attributes
ending in ``_``, numpy, pandas or torch input) and pass its ``parametrize_with_checks`` suite. The
defaults are ``manualnn train --data``'s (manualnn.spec.DATA_DEFAULTS): 512 hidden units with biases,
features (and a regression's targets) standardized inside, Adam at lr 3e-3 over batches of 200, the
mean loss (cross-entropy for classes), and what follows from the rows (manualnn.spec.data_settings):
from 1,000 rows up early stopping on 20% of them (100 steps' patience, at least 5 epochs, the best epoch
kept), below that every row trained on with L2 of 10 (classes; 1500 / rows² above 150 rows) or 30
(values) / rows, and below 50 rows L2 chosen by 3-fold cross-validation (manualnn.training.selection);
MLPRegressor with the default ``hidden_layer_sizes="auto"`` lets the same folds, up to 200 rows, also weigh
a network with no hidden layer (ridge regression) and takes it where its validation loss is lower.
With the same ``random_state`` as ``--seed`` they split, initialize and shuffle as the command line
does, so they train the same network. Needs scikit-learn (``pip install 'manualnn[sklearn]'``); ``import
manualnn`` and the rest of manualnn do not.
"""
import inspect
import numbers

import numpy as np
import torch

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError:   # absent, or older than 1.6 (validate_data and the tags came then)
    raise ImportError("manualnn.MLPClassifier and MLPRegressor need scikit-learn >= 1.6: pip install "
                      "'manualnn[sklearn]' (or pip install scikit-learn); the rest of manualnn works without it") from None

from . import preprocessing as prep
from .data import split
from .model import MLP
from .spec import BACKENDS, DATA_DEFAULTS, DTYPES, OPTIMIZERS, check_choice, check_number, data_settings


# scikit-learn's MLP parameters that these estimators do not take, and what to use instead
NOT_TAKEN = {
    "alpha": "the L2 is weight_decay, on the mean loss (scikit-learn scales alpha by the batch); "
             "weight_decay=None chooses it from the rows",
    "activation": "the hidden layers are always ReLU, scikit-learn's default",
    "tol": "there is no tolerance stop: a fit runs max_iter epochs, or stops early on a validation split "
           "(early_stopping, n_iter_no_change)",
    "learning_rate": "the step size is constant (scikit-learn's default, 'constant'): learning_rate_init",
    "power_t": "the step size is constant: learning_rate_init",
    "nesterovs_momentum": "solver='momentum' is classical momentum, without Nesterov's",
    "max_fun": f"there is no 'lbfgs' solver: solver is one of {', '.join(OPTIMIZERS)}",
}


class _ManualnnMLP(BaseEstimator):
    """What the classifier and the regressor share: the parameters, their checks and the training."""

    def __new__(cls, *args, **params):
        """A parameter these estimators do not take is refused naming the class (not this shared base) and,
        for scikit-learn's own, what to use instead. (A subclass whose __init__ takes **kwargs or *args
        checks its own.)"""
        init = list(cls.__signature__.parameters.values())   # (__init__'s, without self: __init_subclass__)
        if not any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in init):
            taken = sorted(p.name for p in init)
            for name in params:
                if name not in taken:
                    hint = NOT_TAKEN.get(name, f"its parameters are {', '.join(taken)}")
                    raise TypeError(f"{cls.__name__}: no parameter {name!r}; {hint}")
        return super().__new__(cls)

    def __init_subclass__(cls, **kwargs):   # inspect.signature(cls) is __init__'s, not __new__'s catch-all
        super().__init_subclass__(**kwargs)
        cls.__signature__ = inspect.Signature(list(inspect.signature(cls.__init__).parameters.values())[1:])

    def __init__(self, hidden_layer_sizes="auto", *, learning_rate_init=DATA_DEFAULTS["lr"],
                 batch_size=DATA_DEFAULTS["batch_size"], max_iter=DATA_DEFAULTS["epochs"],
                 solver=DATA_DEFAULTS["optimizer"], momentum=0.9, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 weight_decay=None, early_stopping="auto", validation_fraction=0.2,
                 n_iter_no_change=None, shuffle=True, standardize=True, random_state=None,
                 warm_start=False, verbose=False, backend="auto", device="auto", dtype="float32"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.learning_rate_init = learning_rate_init
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.solver = solver
        self.momentum = momentum
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.weight_decay = weight_decay
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.shuffle = shuffle
        self.standardize = standardize
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.backend = backend
        self.device = device
        self.dtype = dtype

    def _hidden(self):
        sizes = self.hidden_layer_sizes
        if isinstance(sizes, str) and sizes == "auto":
            return list(DATA_DEFAULTS["hidden"])
        sizes = [sizes] if not hasattr(sizes, "__iter__") or isinstance(sizes, str) else list(sizes)
        if any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1 for n in sizes):
            raise ValueError(f"hidden_layer_sizes: expected 'auto' or positive integers (one width per hidden "
                             f"layer), got {self.hidden_layer_sizes!r}")
        return [int(n) for n in sizes]

    def _step_options(self):
        """The parameters as Trainer keywords, each checked under the estimator's own name."""
        for name in ("max_iter",) + (() if self.n_iter_no_change is None else ("n_iter_no_change",)) + \
                (() if self.batch_size == "auto" else ("batch_size",)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        check_choice("solver", self.solver, OPTIMIZERS)
        check_choice("dtype", self.dtype, tuple(DTYPES))
        check_choice("backend", self.backend, BACKENDS)
        check_number("validation_fraction", self.validation_fraction, low=0, high=1, high_open=True)
        if self.early_stopping not in (True, False, "auto"):
            raise ValueError(f"early_stopping: expected True, False or 'auto', got {self.early_stopping!r}")
        decay = {} if self.weight_decay is None else {   # None: manualnn.spec.data_settings' L2 (MLP.fit)
            "weight_decay": check_number("weight_decay", self.weight_decay, low=0)}
        return dict(**decay, lr=check_number("learning_rate_init", self.learning_rate_init, low=0, low_open=True),
                    optimizer=self.solver, momentum=check_number("momentum", self.momentum, low=0, high=1, high_open=True),
                    betas=(check_number("beta_1", self.beta_1, low=0, high=1, high_open=True),
                           check_number("beta_2", self.beta_2, low=0, high=1, high_open=True)),
                    eps=check_number("epsilon", self.epsilon, low=0, low_open=True),
                    batch_size=DATA_DEFAULTS["batch_size"] if self.batch_size == "auto" else int(self.batch_size),
                    shuffle=bool(self.shuffle), backend=self.backend)

    def _device(self):
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            return torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}") from None

    def _seed(self):
        """random_state as a seed: an int is the seed itself (as manualnn train --seed), else one drawn from it."""
        if isinstance(self.random_state, numbers.Integral) and not isinstance(self.random_state, bool):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _train(self, X, y, outputs, classes=None):
        """Fit ``model_`` on validated X and y (labels, or values [N] / [N, outputs]); set the fitted attributes."""
        options, hidden, seed = self._step_options(), self._hidden(), self._seed()
        rows = X.shape[0]
        auto = isinstance(self.hidden_layer_sizes, str) and self.hidden_layer_sizes == "auto"
        sizes = self.model_.sizes if hasattr(self, "model_") else None
        keep = self.warm_start and sizes is not None and (
            sizes == [X.shape[1], *hidden, outputs] or (auto and sizes == [X.shape[1], outputs]))
        model = self.model_ if keep else MLP([X.shape[1], *hidden, outputs], seed=seed, dtype=DTYPES[self.dtype])
        # "auto": manualnn train --data's choice, where it searches, between these hidden layers and none; only
        # at the default step (a linear model trains at its own rate and length, spec.LINEAR)
        linear_candidate = auto and self.learning_rate_init == DATA_DEFAULTS["lr"] and \
            self.max_iter == DATA_DEFAULTS["epochs"] and self.solver == DATA_DEFAULTS["optimizer"] and \
            self.batch_size in ("auto", DATA_DEFAULTS["batch_size"])
        model.to(self._device())
        # the command line's split: the same rows for the same seed (split shuffles the row numbers)
        val = None
        early = self.early_stopping
        if early == "auto":   # as the command line: a validation split only where it makes 200 rows or more
            early = bool(data_settings(rows, "classify" if classes is not None else "regress")["val_split"])
        n_val = round(rows * self.validation_fraction) if early else 0
        if 1 <= n_val < rows:
            _, train_rows, _, val_rows = split(torch.zeros(rows, 1), torch.arange(rows), self.validation_fraction, seed)
            val = (X[val_rows.numpy()], y[val_rows.numpy()])
            X, y = X[train_rows.numpy()], y[train_rows.numpy()]
            if self.n_iter_no_change is not None:   # None: 100 steps' worth of epochs (MLP.fit)
                options["patience"] = self.n_iter_no_change
        if self.verbose:
            options["callback"] = _print_epochs
        result = model.fit(X, y, epochs=self.max_iter, standardize=self.standardize, classes=classes, val_data=val,
                           shuffle_seed=seed, linear_candidate=linear_candidate, **options)
        self.model_ = model.cpu()   # a fitted estimator pickles and predicts anywhere
        self.n_iter_ = len(result.losses)
        self.loss_curve_ = list(result.losses)
        self.loss_ = self.loss_curve_[-1]
        self.t_ = (self.t_ if keep else 0) + X.shape[0] * self.n_iter_   # training rows seen, as scikit-learn counts
        scores = result.val_accuracies if classes is not None else result.val_r2
        self.validation_scores_ = list(scores) if val is not None else None
        kept = result.best_epoch if result.best_epoch is not None else len(scores) - 1
        self.best_validation_score_ = scores[kept] if val is not None else None
        self.best_loss_ = None if val is not None else min(self.loss_curve_)
        self.coefs_ = [w.detach().numpy().copy() for w in model.weights]
        self.intercepts_ = [b.detach().numpy().copy() for b in model.biases]
        self.n_layers_, self.n_outputs_ = len(model.sizes), outputs   # (input, hidden and output layers)
        return self

    def _outputs(self, X):
        check_is_fitted(self)
        X = validate_data(self, _host(X), reset=False, dtype=(np.float64, np.float32))
        # float64 from the trained weights: a row's prediction does not depend on the rows passed with it
        return self.model_.outputs(X, dtype=torch.float64)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False   # a given random_state gives the same network
        return tags


def _print_epochs(first, losses):
    for i, loss in enumerate(losses):   # the command line's epoch line
        print(f"Epoch:{first + i}, Loss:{loss:.4f}")


def _host(a):
    """A torch tensor (on any device) as a numpy array; anything else as it is."""
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a


class MLPClassifier(ClassifierMixin, _ManualnnMLP):
    """A ReLU network classifier trained by manualnn, with ``manualnn train --data``'s defaults.

    Parameters (scikit-learn's MLPClassifier's names where the meaning is the same):
    ``hidden_layer_sizes`` ("auto": 512 units, or for MLPRegressor none where the search below finds a
    linear model better, at the default ``learning_rate_init`` and ``max_iter``); ``learning_rate_init``
    3e-3; ``batch_size`` 200 rows (or "auto",
    the same: at most that many a step, the epoch's batches as even as the rows allow); ``max_iter``
    200 epochs; ``solver`` "adam", "sgd" or "momentum" (with ``momentum``);
    ``beta_1``, ``beta_2``, ``epsilon`` (Adam); ``weight_decay`` (L2 on the weights, as torch.optim
    adds it: scikit-learn's ``alpha`` is scaled differently, so it has another name; None: 0 with early
    stopping, else 10 (classes; 1500 / rows² above 150 rows) or 30 (values) / rows, below 50 rows C / rows
    for the C of 3, 10, 30, 100 that 3-fold cross-validation prefers); ``early_stopping`` ("auto": from
    1,000 rows up, as the command line; True: ``validation_fraction`` 0.2 of the rows held out, stop after
    ``n_iter_no_change`` epochs without a lower validation loss (None: 100 optimizer steps' worth, at least
    5) and keep the best epoch); ``shuffle``; ``standardize`` (features
    standardized with the training rows' statistics, inside the model); ``random_state`` (an int is
    ``manualnn train --seed``); ``warm_start``; ``verbose`` (the command line's epoch lines);
    ``backend`` ("auto": the fastest that runs here); ``device`` ("auto": CUDA when available);
    ``dtype`` ("float32" or "float64").

    Fitted attributes: ``classes_``, ``n_features_in_``, ``feature_names_in_`` (pandas input),
    ``n_iter_``, ``loss_curve_`` (mean cross-entropy per epoch), ``loss_``, ``best_loss_`` (without early
    stopping), ``validation_scores_`` (accuracy per epoch) and ``best_validation_score_`` (the kept
    epoch's), ``t_``, ``coefs_`` and ``intercepts_`` ([in, out], on standardized inputs), ``n_layers_``,
    ``n_outputs_``, ``out_activation_`` ("softmax"), and ``model_``: the trained ``manualnn.MLP``, which
    carries the standardization and the labels (``model_.save(path)``, ``model_.to_sequential()``).
    """

    def fit(self, X, y):
        """Train on X [n_samples, n_features] and labels y [n_samples] (numbers or text); returns self."""
        X, y = validate_data(self, _host(X), _host(y), dtype=(np.float64, np.float32))
        check_classification_targets(y)
        classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError(f"y: expected at least 2 classes, got 1 class ({classes[0]!r})")
        if self.warm_start and hasattr(self, "classes_") and not np.array_equal(classes, self.classes_):
            raise ValueError(f"y: warm_start keeps the classes {self.classes_.tolist()}, got {classes.tolist()}")
        self.classes_ = classes
        self.out_activation_ = "softmax"
        try:   # the labels as the model keeps them (text or whole numbers), so a saved model_ names them
            names = [prep.plain_label(c) for c in classes]
        except ValueError:
            names = None
        if names is None or len({prep.label_key(c) for c in names}) != len(names):
            names, y = list(range(len(classes))), np.searchsorted(classes, y)
        return self._train(X, y, len(classes), classes=names)

    def predict(self, X):
        """The most probable class of each row, as one of ``classes_``."""
        best = self._outputs(X).argmax(1).numpy()
        return self.classes_[best]

    def predict_proba(self, X):
        """Class probabilities [n_samples, n_classes] (float64, columns in the order of ``classes_``)."""
        return torch.softmax(self._outputs(X).double(), dim=1).numpy()

    def predict_log_proba(self, X):
        """The log of predict_proba, computed stably."""
        return torch.log_softmax(self._outputs(X).double(), dim=1).numpy()


class MLPRegressor(RegressorMixin, _ManualnnMLP):
    """A ReLU network regressor trained by manualnn, with ``manualnn train --data``'s defaults.

    The parameters are MLPClassifier's; the targets are standardized inside too (``standardize``),
    and predictions come back in their units. Fitted attributes: MLPClassifier's, without ``classes_``;
    ``loss_curve_`` is the mean squared error per epoch on standardized targets, ``validation_scores_``
    the R^2 per epoch, ``out_activation_`` "identity".
    """

    def fit(self, X, y):
        """Train on X [n_samples, n_features] and targets y [n_samples] or [n_samples, n_outputs]; returns self."""
        X, y = validate_data(self, _host(X), _host(y), dtype=(np.float64, np.float32), multi_output=True,
                             y_numeric=True)
        if y.ndim == 2 and y.shape[1] == 1:   # a column: predictions come back 1-D, as scikit-learn's MLP does
            from sklearn.utils.validation import column_or_1d
            y = column_or_1d(y, warn=True)
        self._one_output = y.ndim == 1
        self.out_activation_ = "identity"
        y = y if y.dtype.kind == "f" else y.astype(np.float64)   # whole numbers are values here, not labels
        return self._train(X, y, 1 if y.ndim == 1 else y.shape[1])

    def predict(self, X):
        """Predicted values [n_samples] (or [n_samples, n_outputs]) in the targets' units, float64."""
        values = self._outputs(X).double().numpy()
        return values[:, 0] if self._one_output else values

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


__all__ = ["MLPClassifier", "MLPRegressor"]
