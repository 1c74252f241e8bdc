"""The MLP carries its preprocessing: fit learns it, predict/evaluate apply it to raw rows, and it travels
with save/load, state_dict and the nn.Sequential export."""
import numpy as np
import pytest
import torch

import manualnn
from manualnn.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def raw_blobs(n=120, seed=0, scale=(1.0, 100.0, 1e4, 0.01)):
    """Three classes in 4 raw features of very different scales (as cm, mg, counts ...)."""
    g = np.random.RandomState(seed)
    labels = np.arange(n) % 3
    x = (g.randn(3, 4)[labels] * 3 + g.randn(n, 4)) * np.array(scale) + np.array([5.0, -300.0, 2e4, 0.0])
    return x, labels


def raw_regression(n=200, seed=0):
    g = np.random.RandomState(seed)
    x = g.randn(n, 3) * np.array([1.0, 50.0, 0.1])
    y = 1000.0 + 300.0 * np.tanh(x[:, 0]) + 2.0 * x[:, 1] - 500.0 * x[:, 2]
    return x, y


def fitted_classifier(labels_offset=1, epochs=60):
    x, labels = raw_blobs()
    model = manualnn.MLP([4, 32, 3], seed=0)
    model.fit(x[:90], labels[:90] + labels_offset, epochs=epochs, backend="torch")
    return model, x, labels + labels_offset


def test_fit_standardizes_raw_features_and_keeps_labels_1_to_k():
    model, x, labels = fitted_classifier()
    assert model.task == "classify" and model.class_names == [1, 2, 3] and model.scaled == {"x": True, "y": False}
    assert model.x_mean.dtype == torch.float64 and model.x_mean.tolist() == pytest.approx(x[:90].mean(0).tolist())
    predicted = model.predict(x[90:])
    assert predicted.dtype == torch.int64 and set(predicted.tolist()) <= {1, 2, 3}
    assert (predicted.numpy() == labels[90:]).mean() > 0.9
    probabilities = model.predict_proba(x[90:])
    assert probabilities.dtype == torch.float64 and torch.allclose(probabilities.sum(1), torch.ones(30, dtype=torch.float64))
    assert torch.equal(probabilities.argmax(1) + 1, predicted)
    ev = model.evaluate(x[90:], labels[90:])
    assert ev.accuracy == pytest.approx((predicted.numpy() == labels[90:]).mean())
    assert manualnn.evaluate(model, x[90:], labels[90:]) == ev   # the package's evaluate asks the model


def test_without_standardizing_the_raw_features_train_worse():
    # what fit used to do silently: the same run on raw features (scales 0.01 to 1e4)
    x, labels = raw_blobs()
    plain = manualnn.MLP([4, 32, 3], seed=0)
    plain.fit(x[:90], labels[:90], epochs=60, backend="torch", standardize=False)
    scaled, _, _ = fitted_classifier(labels_offset=0)
    assert plain.scaled == {"x": False, "y": False} and plain.x_std.tolist() == [1.0] * 4
    assert scaled.evaluate(x[90:], labels[90:]).accuracy > plain.evaluate(x[90:], labels[90:]).accuracy + 0.1


def test_text_labels_and_a_regression_in_the_targets_units():
    x, labels = raw_blobs()
    names = np.array(["setosa", "versicolor", "virginica"])[labels]
    model = manualnn.MLP([4, 16, 3], seed=1)
    model.fit(x, names, epochs=40, backend="torch")
    assert model.class_names == ["setosa", "versicolor", "virginica"]
    predicted = model.predict(x)
    assert isinstance(predicted, np.ndarray) and (predicted == names).mean() > 0.9
    with pytest.raises(ValueError, match=r"y: label 'rose' is not one of the model's 3 classes: 'setosa'"):
        model.evaluate(x[:2], ["setosa", "rose"])
    xr, yr = raw_regression()
    reg = manualnn.MLP([3, 32, 1], seed=0)
    result = reg.fit(xr[:150], yr[:150], val_data=(xr[150:], yr[150:]), epochs=150, backend="torch")   # 1-D targets
    assert reg.task == "regress" and reg.scaled == {"x": True, "y": True}
    assert reg.y_mean.item() == pytest.approx(yr[:150].mean()) and reg.y_std.item() == pytest.approx(yr[:150].std())
    predicted = reg.predict(xr[150:])[:, 0].double().numpy()
    ev = reg.evaluate(xr[150:], yr[150:])
    rmse = float(np.sqrt(((predicted - yr[150:]) ** 2).mean()))
    assert ev.rmse == pytest.approx(rmse, rel=1e-4) and rmse < 0.3 * yr.std()   # RMSE in the targets' units
    assert result.val_rmse[result.best_epoch] == pytest.approx(ev.rmse, rel=1e-4)
    # the loss as trained: the mean of squares on standardized targets
    z = (predicted - yr[:150].mean()) / yr[:150].std()
    assert ev.loss == pytest.approx(float((((yr[150:] - yr[:150].mean()) / yr[:150].std() - z) ** 2).mean()), rel=1e-4)


def test_bad_labels_and_inputs_name_the_argument():
    model = manualnn.MLP([4, 8, 3], seed=0)
    x, labels = raw_blobs(30)
    with pytest.raises(ValueError, match=r"y: 4 distinct labels \(1, 2, 3, 7\) for a network of 3 outputs; expected "
                                         r"labels 0..2 or 3 distinct labels, or classes=\[...\]"):
        model.fit(x, np.r_[labels[:-1] + 1, 7], epochs=1)
    with pytest.raises(ValueError, match=r"y: expected 30 labels \(the rows of x\), got 29"):
        model.fit(x, labels[:-1], epochs=1)
    with pytest.raises(ValueError, match=r"y: expected 30 targets of 3 values \(shape \[30, 3\]\), got shape \(30, 2\)$"):
        model.fit(x, np.zeros((30, 2)), epochs=1)
    with pytest.raises(ValueError, match=r"y: expected 30 targets of 3 values \(shape \[30, 3\]\), got shape \(30,\)$"):
        model.fit(x, np.zeros(30), epochs=1)   # (the shape as given, not as read)
    with pytest.raises(ValueError, match=r"predict_proba: the model is not a classifier \(task None\)"):
        model.predict_proba(x)
    with pytest.raises(ValueError, match=r"x: expected finite values, got NaN or Inf"):
        model.predict(np.full((2, 4), np.nan))


def test_save_and_load_keep_the_preprocessing(tmp_path):
    model, x, labels = fitted_classifier()
    path = model.save(tmp_path / "m.pt")
    again = manualnn.load(path)
    assert again.class_names == [1, 2, 3] and again.task == "classify" and again.scaled == model.scaled
    assert torch.equal(again.predict(x), model.predict(x)) and torch.equal(again.outputs(x), model.outputs(x))
    assert again.evaluate(x, labels) == model.evaluate(x, labels)
    assert again.epoch == model.epoch == 60 and again.losses == model.losses
    xr, yr = raw_regression()
    reg = manualnn.MLP([3, 8, 1], seed=0)
    reg.fit(xr, yr, epochs=5, backend="torch")
    reg_again = manualnn.load(reg.save(tmp_path / "r.pt"))
    assert torch.equal(reg_again.predict(xr), reg.predict(xr)) and reg_again.y_std.tolist() == reg.y_std.tolist()


@pytest.mark.parametrize("field,value,message", [
    ("x_mean", [0.0, 1.0], r"config field 'x_mean': expected 4 finite numbers \(one per feature\), got 2 values"),
    ("x_std", [1.0, 1.0, 0.0, 1.0], r"config field 'x_std': expected positive numbers"),
    ("class_names", ["a", "b"], r"config field 'class_names': expected 3 labels"),
    ("class_names", ["a", "a", "b"], r"config field 'class_names': expected distinct labels"),
    ("feature_names", [1, 2, 3, 4], r"config field 'feature_names': expected 4 names"),
    ("task_used", "cluster", r"config field 'task_used': expected one of \('classify', 'regress'\)"),
    ("loss", "hinge", r"config field 'loss': expected one of"),
])
def test_a_checkpoints_preprocessing_is_checked_field_by_field(tmp_path, field, value, message):
    model, _, _ = fitted_classifier(epochs=1)
    path = model.save(tmp_path / "m.pt")
    checkpoint = load_checkpoint(path)
    config = dict(checkpoint.config, **{field: value})
    if field == "x_std":
        config["x_mean"] = [0.0] * 4
    save_checkpoint(path, weights=checkpoint.weights, biases=checkpoint.biases, epoch=1, losses=checkpoint.losses,
                    config=config)
    with pytest.raises(CheckpointError, match=message):
        manualnn.load(path)


def test_state_dict_carries_the_preprocessing():
    model, x, _ = fitted_classifier(epochs=5)
    state = model.state_dict()
    assert {"x_mean", "x_std", "y_mean", "y_std", "_extra_state"} <= set(state)
    fresh = manualnn.MLP([4, 32, 3], seed=9)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.predict(x), model.predict(x)) and fresh.class_names == [1, 2, 3]


def test_to_sequential_is_a_plain_torch_network_on_raw_rows():
    model, x, _ = fitted_classifier(epochs=5)
    seq = model.to_sequential()
    assert [type(m) for m in seq] == [torch.nn.Linear, torch.nn.ReLU, torch.nn.Linear]
    assert set(seq.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert tuple(seq[0].weight.shape) == (32, 4)   # nn.Linear's [out, in]
    xt = torch.tensor(x, dtype=torch.float32)
    assert torch.allclose(seq(xt), model(xt), rtol=1e-4, atol=1e-4)   # standardization folded into the first layer
    back = manualnn.MLP.from_sequential(seq, class_names=[1, 2, 3])
    assert torch.equal(back.predict(x), model.predict(x)) and back.scaled == {"x": False, "y": False}
    # a regression's target scale is folded into the last layer; a network without biases gets one where needed
    xr, yr = raw_regression()
    reg = manualnn.MLP([3, 8, 1], seed=0, bias=False)
    reg.fit(xr, yr, epochs=5, backend="torch")
    seq = reg.to_sequential()
    assert seq[0].bias is not None and seq[2].bias is not None
    xrt = torch.tensor(xr, dtype=torch.float32)
    assert torch.allclose(seq(xrt), reg.predict(xr), rtol=1e-4, atol=1e-2)


def test_from_sequential_takes_torch_layouts_and_refuses_other_layers():
    torch.manual_seed(0)
    seq = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3, bias=False))
    model = manualnn.MLP.from_sequential(seq)
    x = torch.randn(10, 5)
    assert model.sizes == [5, 7, 3] and torch.allclose(model(x), seq(x), atol=1e-6)
    assert torch.equal(model.biases[1], torch.zeros(3)) and tuple(model.weights[0].shape) == (5, 7)
    with pytest.raises(TypeError, match=r"sequential\[1\]: expected nn.ReLU \(Linear layers with ReLU between them\), "
                                        r"got Tanh"):
        manualnn.MLP.from_sequential(torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)))
    with pytest.raises(ValueError, match=r"sequential\[2\]: in_features 6 does not follow the previous Linear's "
                                         r"out_features 7"):
        manualnn.MLP.from_sequential(torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(6, 3)))
    with pytest.raises(ValueError, match=r"class_names: expected 3 labels"):
        manualnn.MLP.from_sequential(seq, class_names=["a", "b"])


def test_forward_stays_differentiable_through_the_preprocessing():
    model, x, _ = fitted_classifier(epochs=2)
    xt = torch.tensor(x[:5], requires_grad=True)   # float64 rows: standardized in float64, then float32
    model(xt).sum().backward()
    assert xt.grad is not None and xt.grad.shape == (5, 4) and bool(xt.grad.abs().sum() > 0)


@pytest.mark.parametrize("key,value,message", [
    ("x_std", torch.zeros(4, dtype=torch.float64), r"^state_dict: x_std: expected positive numbers \(each column's "
                                                    r"spread\), got 0 among them$"),
    ("x_mean", torch.tensor([0.0, float("nan"), 0.0, 0.0], dtype=torch.float64),
     r"^state_dict: x_mean: expected finite numbers, got NaN or Inf$"),
])
def test_load_state_dict_checks_the_statistics_before_it_loads(key, value, message):
    model, x, _ = fitted_classifier(epochs=2)
    state = dict(model.state_dict(), **{key: value})
    other = manualnn.MLP([4, 32, 3], seed=1)
    before = [p.clone() for p in other.parameters()]
    with pytest.raises(ValueError, match=message):
        other.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(before, other.parameters()))   # refused before any copy
    other.load_state_dict(model.state_dict())
    assert torch.equal(other.predict(x), model.predict(x))


def test_a_statistic_of_the_right_count_but_not_finite_says_so():
    def fail(key, problem):
        raise ValueError(f"{key}: {problem}")

    with pytest.raises(ValueError, match=r"x_mean: expected 2 finite numbers \(one per feature\), got 2 values, not "
                                         r"all of them finite numbers"):
        manualnn.preprocessing.read_config({"x_mean": [0.0, float("nan")], "x_std": [1.0, 1.0]}, 2, 1, fail)


def test_forward_takes_numpy_and_lists_as_predict_does_and_names_a_wrong_width():
    model, x, _ = fitted_classifier(epochs=2)
    expected = model.outputs(x[:3])
    for rows in (x[:3], x[:3].astype(np.float32), x[:3].tolist()):   # read as predict reads them
        assert torch.allclose(model(rows).detach(), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"^x: expected a 2-D tensor with 4 columns \(the model's input width\), got "
                                         r"shape \(3, 5\)$"):
        model(torch.randn(3, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"got shape \(4,\) \(one sample\? pass it as one row: x\[None\]\)"):
        model(torch.tensor(x[0]))
    with pytest.raises(ValueError, match=r"^x: expected a 2-D array with 4 columns"):
        model(np.ones((3, 5)))


def test_a_later_fit_keeps_the_statistics_and_the_columns():
    pd = pytest.importorskip("pandas")
    x, labels = raw_blobs()
    frame = pd.DataFrame(x, columns=["cm", "mg", "count", "ratio"])
    model = manualnn.MLP([4, 16, 3], seed=0)
    model.fit(frame[:60], labels[:60], epochs=5, backend="torch")
    assert model.feature_names == ["cm", "mg", "count", "ratio"]
    mean = model.x_mean.clone()
    model.fit(frame[60:], labels[60:], epochs=5, backend="torch")   # other rows: the network's scale stays
    assert torch.equal(model.x_mean, mean) and model.epoch == 10 and len(model.losses) == 10
    with pytest.raises(ValueError, match=r"x: columns \['mg', 'cm', 'count', 'ratio'\] differ from the 4 the model "
                                         r"was fit on: \['cm', 'mg', 'count', 'ratio'\]"):
        model.predict(frame[["mg", "cm", "count", "ratio"]])
    assert torch.equal(model.predict(frame), model.predict(x))   # a table with the same columns, or a plain array
    # a model trained without standardizing does not start standardizing on a later fit
    plain = manualnn.MLP([4, 16, 3], seed=0)
    plain.fit(x, labels, epochs=2, standardize=False, backend="torch")
    plain.fit(x, labels, epochs=2, backend="torch")
    assert plain.scaled == {"x": False, "y": False}


def test_read_only_arrays_are_copied_not_shared(tmp_path):
    """np.load(..., mmap_mode="r") and frozen arrays train and predict as any other: torch cannot share memory
    it may not write (it warns once per process, and an op in place on it would fault), so they are copied;
    a writable array is still shared, not copied."""
    from manualnn.preprocessing import as_tensor
    x, labels = raw_blobs()
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    frozen = x.copy()
    frozen.setflags(write=False)
    for array in (mapped, frozen):
        t = as_tensor("x", array)
        assert torch.equal(t, torch.from_numpy(x)) and not np.shares_memory(t.numpy(), array)
    assert np.shares_memory(as_tensor("x", x).numpy(), x)
    model = manualnn.MLP([4, 16, 3], seed=0)
    model.fit(mapped, labels, epochs=3, backend="torch")
    assert model.predict(mapped).shape == (len(x),)
