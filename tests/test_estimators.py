"""The scikit-learn estimators: scikit-learn's own checks, the tools around an estimator (Pipeline,
ColumnTransformer, cross_val_score, GridSearchCV with two jobs), and the command line's training."""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

sklearn = pytest.importorskip("sklearn")
pd = pytest.importorskip("pandas")   # the test extra installs it: the pandas checks must not skip

from sklearn.base import clone  # noqa: E402
from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score, cross_validate  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import OneHotEncoder  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import manualnn  # noqa: E402
from manualnn.cli import main  # noqa: E402

# scikit-learn runs its array-API check only when SCIPY_ARRAY_API=1 was set before scipy was imported;
# another test file may have imported scipy in this worker already, so that check runs in a child instead
ARRAY_API_CHILD = """
import os, sys
os.environ["SCIPY_ARRAY_API"] = "1"
from sklearn.utils import estimator_checks
import manualnn
estimator = getattr(manualnn, sys.argv[1])()
estimator_checks.check_array_api_input(sys.argv[1], estimator, array_namespace="numpy", expect_only_array_outputs=False)
print("checked")
"""


@parametrize_with_checks([manualnn.MLPClassifier(), manualnn.MLPRegressor()])
def test_scikit_learn_checks(estimator, check):
    if getattr(check, "func", None) is not None and check.func.__name__ == "check_array_api_input":
        assert check.keywords == {"array_namespace": "numpy", "expect_only_array_outputs": False}
        proc = subprocess.run([sys.executable, "-c", ARRAY_API_CHILD, type(estimator).__name__], capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0 and proc.stdout.strip() == "checked", proc.stderr[-3000:]
        return
    check(estimator)


def blobs(n=150, features=4, classes=3, seed=0):
    g = np.random.RandomState(seed)
    y = np.arange(n) % classes
    return g.randn(classes, features)[y] * 3 + g.randn(n, features), y


def test_string_labels_torch_and_pandas_input_and_pickling():
    x, y = blobs()
    names = np.array(["red", "green", "blue"])[y]
    frame = pd.DataFrame(x * [1, 10, 100, 1000], columns=["a", "b", "c", "d"])
    clf = manualnn.MLPClassifier(hidden_layer_sizes=(32,), random_state=0, early_stopping=True).fit(frame, names)
    assert clf.classes_.tolist() == ["blue", "green", "red"] and clf.feature_names_in_.tolist() == ["a", "b", "c", "d"]
    assert clf.n_features_in_ == 4 and clf.n_iter_ == len(clf.loss_curve_) >= 1 and clf.out_activation_ == "softmax"
    assert clf.score(frame, names) > 0.9 and clf.best_loss_ is None and len(clf.validation_scores_) == clf.n_iter_
    assert [c.shape for c in clf.coefs_] == [(4, 32), (32, 3)] and clf.t_ == 120 * clf.n_iter_
    assert clf.model_.class_names == ["blue", "green", "red"]   # the saved model names its classes too
    again = pickle.loads(pickle.dumps(clf))
    assert (again.predict(frame) == clf.predict(frame)).all()
    torch_x = torch.tensor(frame.to_numpy())
    with pytest.warns(UserWarning, match="X does not have valid feature names"):   # scikit-learn's own warning
        assert (clf.predict(torch_x) == clf.predict(frame)).all()
    params = clf.get_params()
    assert params["hidden_layer_sizes"] == (32,) and params["learning_rate_init"] == 3e-3
    assert clone(clf).set_params(max_iter=3).get_params()["max_iter"] == 3 and not hasattr(clone(clf), "model_")


def test_regressor_predicts_in_the_targets_units_one_or_several_outputs():
    g = np.random.RandomState(0)
    x = g.randn(300, 3)
    y = 500.0 + 100.0 * x[:, 0] - 40.0 * x[:, 1] ** 2
    reg = manualnn.MLPRegressor(hidden_layer_sizes=(64,), random_state=0).fit(x, y)
    assert reg.predict(x).shape == (300,) and reg.predict(x).dtype == np.float64
    assert reg.score(x, y) > 0.9 and reg.model_.scaled == {"x": True, "y": True}
    both = manualnn.MLPRegressor(hidden_layer_sizes=(64,), random_state=0).fit(x, np.c_[y, -y / 10])
    assert both.predict(x).shape == (300, 2) and both.n_outputs_ == 2 and both.score(x, np.c_[y, -y / 10]) > 0.9


def test_bad_parameters_name_themselves_when_fit():
    x, y = blobs(30)
    for params, message in [({"hidden_layer_sizes": (0,)}, r"hidden_layer_sizes: expected 'auto' or positive integers"),
                            ({"hidden_layer_sizes": "Auto"}, r"hidden_layer_sizes: expected 'auto' or .* got 'Auto'"),
                            ({"learning_rate_init": -1}, r"learning_rate_init: expected a positive finite number"),
                            ({"solver": "lbfgs"}, r"solver: expected one of 'sgd', 'momentum', 'adam', got 'lbfgs'"),
                            ({"validation_fraction": 1.0}, r"validation_fraction: expected a number in \[0, 1\)"),
                            ({"max_iter": 0}, r"max_iter: expected a positive integer, got 0")]:
        with pytest.raises(ValueError, match=message):
            manualnn.MLPClassifier(**params).fit(x, y)


def test_pipeline_with_a_column_transformer_on_text_and_numbers():
    x, y = blobs(200)
    frame = pd.DataFrame({"size": x[:, 0] * 100, "weight": x[:, 1], "colour": np.where(y == 2, "red", "grey"),
                          "shape": np.where(y == 1, "round", "square")})
    columns = ColumnTransformer([("text", OneHotEncoder(), ["colour", "shape"])], remainder="passthrough")
    pipe = make_pipeline(columns, manualnn.MLPClassifier(hidden_layer_sizes=(16,), random_state=0))
    pipe.fit(frame[:150], y[:150])
    assert pipe.score(frame[150:], y[150:]) > 0.95 and pipe.predict(frame[150:]).shape == (50,)
    scores = cross_val_score(pipe, frame, y, cv=3)
    assert len(scores) == 3 and scores.min() > 0.9


class ThreadsSeen(manualnn.MLPClassifier):
    """Records, while it trains, the torch threads and the process it trained in."""

    def fit(self, X, y):
        super().fit(X, y)
        self.threads_, self.pid_ = torch.get_num_threads(), os.getpid()
        return self


def test_two_jobs_train_in_two_processes_with_a_fair_share_of_the_cores():
    x, y = blobs(120)
    results = cross_validate(ThreadsSeen(hidden_layer_sizes=(16,), max_iter=20, random_state=0), x, y, cv=4, n_jobs=2,
                             return_estimator=True)
    pids = {e.pid_ for e in results["estimator"]}
    threads = [e.threads_ for e in results["estimator"]]
    assert os.getpid() not in pids   # joblib's workers trained them
    # joblib's loky workers limit OpenMP to cpu_count // n_jobs threads, and torch reads that limit
    assert all(n <= max(1, os.cpu_count() // 2) for n in threads), threads
    search = GridSearchCV(manualnn.MLPClassifier(max_iter=30, random_state=0),
                          {"hidden_layer_sizes": [(8,), (32,)], "learning_rate_init": [1e-3, 3e-3]}, cv=3, n_jobs=2)
    search.fit(x, y)
    assert search.best_score_ > 0.9 and set(search.best_params_) == {"hidden_layer_sizes", "learning_rate_init"}


def test_the_estimator_trains_the_command_lines_network(tmp_path, capsys):
    # the same data file and seed: the same split, initial weights, batches and steps, so the same weights
    x, y = blobs(200, features=5, seed=3)
    x = x * [1, 10, 100, 0.1, 5]
    np.savez(tmp_path / "train.npz", x=x, y=y)
    code = main(["train", "--data", str(tmp_path / "train.npz"), "--seed", "7", "--epochs", "40", "--hidden", "24",
                 "--save", str(tmp_path / "m.pt"), "--device", "cpu", "--backend", "torch"])
    assert code == 0, capsys.readouterr().err
    cli = manualnn.load(tmp_path / "m.pt")
    clf = manualnn.MLPClassifier(hidden_layer_sizes=(24,), max_iter=40, random_state=7, device="cpu", backend="torch")
    clf.fit(x, y)
    for mine, theirs in zip(list(clf.model_.weights) + list(clf.model_.biases), list(cli.weights) + list(cli.biases)):
        assert torch.equal(mine, theirs)
    assert clf.model_.x_mean.tolist() == cli.config["x_mean"] and clf.loss_curve_ == cli.losses
    assert (clf.predict(x) == cli.predict(x).numpy()).all()


def test_without_scikit_learn_manualnn_trains_and_the_estimators_say_what_to_install():
    script = (
        "import sys; sys.modules['sklearn'] = None\n"
        "import manualnn, numpy as np\n"
        "m = manualnn.MLP([3, 8, 2], seed=0); m.fit(np.random.rand(20, 3), np.arange(20) % 2, epochs=2)\n"
        "try:\n    manualnn.MLPClassifier\nexcept ImportError as e:\n    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "need scikit-learn >= 1.6: pip install 'manualnn[sklearn]'" in proc.stdout


@pytest.mark.slow
def test_a_grid_search_on_digits_scores_within_a_point_of_the_command_line(tmp_path):
    # benchmarks/sklearn_grid.py: GridSearchCV(n_jobs=2) over width and lr beside manualnn train + predict
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)
    from benchmarks import sklearn_grid
    assert sklearn_grid.main(["--seeds", "0", "--out", str(tmp_path)]) == 0
    (run,) = json.loads((tmp_path / "grid-digits.json").read_text())["runs"]
    assert run["cli_accuracy"] > 0.95 and abs(run["grid_test_accuracy"] - run["cli_accuracy"]) <= 0.01, run


@pytest.mark.parametrize("cls", [manualnn.MLPClassifier, manualnn.MLPRegressor])
def test_a_parameter_not_taken_is_refused_naming_the_estimator_and_the_alternative(cls):
    with pytest.raises(TypeError, match=rf"^{cls.__name__}: no parameter 'alpha'; the L2 is weight_decay"):
        cls(alpha=1e-4)
    with pytest.raises(TypeError, match=rf"^{cls.__name__}: no parameter 'tol'; there is no tolerance stop"):
        cls(max_iter=5, tol=1e-4)
    with pytest.raises(TypeError, match=rf"^{cls.__name__}: no parameter 'bogus'; its parameters are backend, "):
        cls(bogus=1)
    model = cls(max_iter=5, weight_decay=1e-3)   # what it takes still builds, clones and pickles
    assert clone(model).get_params() == pickle.loads(pickle.dumps(model)).get_params() == model.get_params()

    class Scaled(cls):   # a user's subclass that passes the rest on: its parameters are its own business
        def __init__(self, scale=1.0, **kwargs):
            super().__init__(**kwargs)
            self.scale = scale

    assert Scaled(scale=2.0, max_iter=3).max_iter == 3

    class Extra(cls):    # one that names them all: refused as the estimators refuse
        def __init__(self, hidden_layer_sizes="auto", *, scale=1.0, max_iter=200):
            super().__init__(hidden_layer_sizes, max_iter=max_iter)
            self.scale = scale

    assert clone(Extra(scale=3.0, max_iter=4)).get_params()["scale"] == 3.0
    with pytest.raises(TypeError, match=r"^Extra: no parameter 'alpha'; the L2 is weight_decay"):
        Extra(alpha=1.0)
