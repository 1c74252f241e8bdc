"""The --data defaults that follow from the data's rows (manualnn.spec.data_settings) and --sklearn-defaults."""
import json

import numpy as np
import pytest
import torch

from manualnn.spec import (DATA_DEFAULTS, L2_FADE_ROWS, PATIENCE_EPOCHS, PATIENCE_STEPS, SKLEARN_ALPHA, VAL_ROWS_MIN, VAL_SPLIT,
                           WEIGHT_DECAY_ROWS, data_settings)

from test_cli import run


def test_small_sets_train_on_every_row_with_l2_that_fades_with_rows():
    s = data_settings(112, "classify")
    assert s == {"val_split": 0.0, "weight_decay": pytest.approx(WEIGHT_DECAY_ROWS["classify"] / 112), "patience": None}
    s = data_settings(331, "regress")
    assert s["val_split"] == 0.0 and s["weight_decay"] == pytest.approx(WEIGHT_DECAY_ROWS["regress"] / 331)
    assert data_settings(20, "classify")["weight_decay"] > data_settings(200, "classify")["weight_decay"]


@pytest.mark.parametrize("rows", [150, 151, 225, 750, 990])
def test_the_l2_of_classes_fades_faster_above_150_rows(rows):
    """10 / rows up to L2_FADE_ROWS (150) rows, 1500 / rows² above (one curve: equal at 150); values keep
    30 / rows at every size."""
    assert L2_FADE_ROWS["classify"] == 150
    expected = 10 / rows if rows <= 150 else 1500 / rows ** 2
    assert data_settings(rows, "classify")["weight_decay"] == pytest.approx(expected, rel=1e-12)
    assert data_settings(rows, "regress")["weight_decay"] == pytest.approx(30 / rows, rel=1e-12)


def test_a_validation_split_only_where_it_makes_enough_rows():
    rows = int(VAL_ROWS_MIN / VAL_SPLIT)   # 1000: exactly VAL_ROWS_MIN validation rows
    assert data_settings(rows, "classify")["val_split"] == VAL_SPLIT
    assert data_settings(rows - 10, "classify")["val_split"] == 0.0
    # the edge the README states: 20% of 998 rows rounds to 200 validation rows, of 997 to 199
    assert data_settings(998, "classify")["val_split"] == VAL_SPLIT and data_settings(997, "regress")["val_split"] == 0.0
    s = data_settings(rows, "classify")
    assert s["weight_decay"] == 0.0   # early stopping holds overfitting back there


@pytest.mark.parametrize("rows,batch", [(2000, 200), (20_000, 200), (20_000_000, 200), (5000, 32)])
def test_patience_is_counted_in_steps_with_a_floor_in_epochs(rows, batch):
    s = data_settings(rows, "regress", batch_size=batch)
    train = rows - round(rows * VAL_SPLIT)
    steps_per_epoch = -(-train // batch)
    assert s["patience"] == max(PATIENCE_EPOCHS, -(-PATIENCE_STEPS // steps_per_epoch))
    assert s["patience"] * steps_per_epoch >= PATIENCE_STEPS and s["patience"] >= PATIENCE_EPOCHS


def test_given_values_are_kept_and_a_patience_alone_holds_rows_out():
    assert data_settings(90, "classify", patience=7) == {"val_split": VAL_SPLIT, "weight_decay": 0.0, "patience": 7}
    s = data_settings(90, "classify", val_split=0.3)
    assert s["val_split"] == 0.3 and s["weight_decay"] == 0.0 and s["patience"] >= PATIENCE_EPOCHS
    assert data_settings(5000, "classify", val_split=0.0, weight_decay=0.5) == {
        "val_split": 0.0, "weight_decay": 0.5, "patience": None}
    with pytest.raises(ValueError, match="task"):
        data_settings(10, "values")


def test_sklearn_settings():
    assert data_settings(90, "classify", sklearn=True) == {
        "val_split": 0.0, "weight_decay": pytest.approx(SKLEARN_ALPHA / 90), "patience": None}
    assert data_settings(5000, "regress", sklearn=True)["weight_decay"] == pytest.approx(SKLEARN_ALPHA / 200)


def blobs(path, n=90):
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(3, 4, generator=g)[labels] * 3 + torch.randn(n, 4, generator=g)
    np.savez(path, x=x.numpy(), y=labels.numpy())


def config_of(path):
    return json.loads(path.read_text())["config"]


def test_the_cli_resolves_the_rule_and_records_it(capsys, tmp_path):
    data, js = tmp_path / "b.npz", tmp_path / "r.json"
    blobs(data)
    code, out, err = run(capsys, "train", "--data", str(data), "--epochs", "3", "--seed", "0", "--json", str(js),
                         "--device", "cpu")
    assert code == 0, err
    config = config_of(js)
    assert config["val_split"] == 0.0 and config["patience"] is None
    assert config["weight_decay"] == pytest.approx(WEIGHT_DECAY_ROWS["classify"] / 90)
    assert "Val loss" not in out   # every row trained on: nothing to validate
    code, out, err = run(capsys, "train", "--data", str(data), "--epochs", "3", "--seed", "0", "--patience", "4",
                         "--json", str(js), "--device", "cpu")
    assert code == 0, err
    config = config_of(js)
    assert config["val_split"] == VAL_SPLIT and config["patience"] == 4 and config["weight_decay"] == 0.0
    assert "Val loss" in out


def test_a_resumed_default_run_equals_the_uninterrupted_one(capsys, tmp_path):
    data, ck = tmp_path / "b.npz", tmp_path / "ck.pt"
    blobs(data)
    common = ["train", "--data", str(data), "--seed", "2", "--batch-size", "16", "--device", "cpu"]
    code, whole, err = run(capsys, *common, "--epochs", "8")
    assert code == 0, err
    run(capsys, *common, "--epochs", "5", "--save", str(ck))
    code, rest, err = run(capsys, "train", "--resume", str(ck), "--epochs", "8", "--device", "cpu")
    assert code == 0, err
    first = whole.splitlines()[:5]
    assert "\n".join(first) + "\n" + rest == whole


def test_sklearn_defaults_option(capsys, tmp_path):
    data, js = tmp_path / "b.npz", tmp_path / "r.json"
    blobs(data)
    code, _, err = run(capsys, "train", "--data", str(data), "--epochs", "2", "--sklearn-defaults", "--json", str(js),
                       "--device", "cpu")
    assert code == 0, err
    config = config_of(js)
    assert config["hidden"] == [100] and config["lr"] == 1e-3 and config["batch_size"] == 200
    assert config["val_split"] == 0.0 and config["patience"] is None
    assert config["weight_decay"] == pytest.approx(SKLEARN_ALPHA / 90)
    assert config["hidden"] != DATA_DEFAULTS["hidden"]
    code, _, err = run(capsys, "train", "--data", str(data), "--epochs", "2", "--sklearn-defaults", "--hidden", "7",
                       "--json", str(js), "--device", "cpu")
    assert code == 0 and config_of(js)["hidden"] == [7] and config_of(js)["lr"] == 1e-3   # options still win
    code, out, err = run(capsys, "train", "--sklearn-defaults", "--device", "cpu")
    assert code == 2 and out == "" and "--sklearn-defaults: applies to --data only" in err


def test_the_iris_split_of_issue_21_scores_like_logistic_regression(capsys, tmp_path):
    """Seed 4 of this split kept the weights of its fifth step under the old defaults (81.6%)."""
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split
    x, y = load_iris(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    np.savez(tmp_path / "train.npz", x=x_train, y=y_train)
    np.savez(tmp_path / "test.npz", x=x_test, y=y_test)
    model = tmp_path / "m.pt"
    code, _, err = run(capsys, "train", "--data", str(tmp_path / "train.npz"), "--seed", "4", "--save", str(model),
                       "--device", "cpu")
    assert code == 0, err
    code, out, err = run(capsys, "predict", "--model", str(model), "--data", str(tmp_path / "test.npz"))
    assert code == 0, err
    assert float(out.split("Accuracy:")[1].split()[0]) >= 0.92, out


def test_mlp_fit_follows_the_same_rule():
    import manualnn
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 3, (60,), generator=g)
    x = torch.randn(3, 5, generator=g)[labels] * 2 + torch.randn(60, 5, generator=g)
    from manualnn.preprocessing import fit_standardizer, standardize
    model = manualnn.MLP([5, 16, 3], seed=3)
    result = model.fit(x, labels, epochs=20, backend="torch")
    again = manualnn.MLP([5, 16, 3], seed=3)
    x = standardize(x, *fit_standardizer(x))   # fit standardizes the features first
    same = manualnn.train(x, labels, [w.detach() for w in again.weights], biases=[b.detach() for b in again.biases],
                          epochs=20, lr=3e-3, optimizer="adam", reduction="mean", loss="ce", batch_size=200,
                          weight_decay=WEIGHT_DECAY_ROWS["classify"] / 60, backend="torch")
    assert result.losses == same.losses
