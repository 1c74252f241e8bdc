"""``manualnn.load(checkpoint).predict(raw rows)`` answers as ``manualnn predict`` does, on every data set of
the real-data benchmark (benchmarks/suite.py: raw features as scikit-learn returns them, saved as .npz)."""
import os
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import manualnn  # noqa: E402
from benchmarks import suite  # noqa: E402
from manualnn.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def entries(tmp_path_factory):
    return {e.dataset: e for e in suite.write_suite(str(tmp_path_factory.mktemp("suite")), list(suite.NAMES), [0])}


@pytest.mark.parametrize("name", suite.NAMES)
def test_a_loaded_model_predicts_raw_rows_as_manualnn_predict_does(name, entries, tmp_path, capsys):
    entry = entries[name]
    model_path, predictions = tmp_path / "model.pt", tmp_path / "predictions.npz"
    # a few epochs are enough: the question is whether both sides apply the same preprocessing
    assert main(["train", "--data", entry.train, "--seed", "0", "--epochs", "3", "--save", str(model_path),
                 "--device", "cpu"]) == 0
    assert main(["predict", "--model", str(model_path), "--data", entry.test, "--output", str(predictions),
                 "--device", "cpu"]) == 0
    capsys.readouterr()
    written = np.load(predictions, allow_pickle=False)
    raw = np.load(entry.test, allow_pickle=False)["x"]        # the test rows as the user has them
    model = manualnn.load(model_path)
    assert model.scaled["x"] and model.task == suite.specs([name])[name].task
    predicted = model.predict(raw)
    assert torch.equal(model.outputs(raw), torch.from_numpy(written["outputs"]))
    # both sides share the model's code: judge it against the checkpoint's statistics applied by hand
    config = model.config
    x = ((raw - np.array(config["x_mean"])) / np.array(config["x_std"])).astype(np.float32)
    z = torch.from_numpy(x)
    for i, (w, b) in enumerate(zip(model.weights, model.biases)):
        z = z @ w.detach() + b.detach()
        z = z.clamp(min=0) if i < len(model.weights) - 1 else z
    if model.task == "regress":
        z = z * torch.tensor(config["y_std"]) + torch.tensor(config["y_mean"])
    assert torch.allclose(torch.from_numpy(written["outputs"]), z, rtol=1e-4, atol=1e-4 * float(z.abs().max()))
    if model.task == "classify":
        assert [str(label) for label in predicted.tolist()] == written["class_names"].tolist()
        assert set(predicted.tolist()) <= set(np.unique(np.load(entry.train)["y"]).tolist())
    else:
        assert model.scaled["y"] and torch.equal(predicted, torch.from_numpy(written["outputs"]))
        # in the targets' own units, not standardized ones
        y = np.load(entry.test)["y"]
        assert abs(float(predicted.mean()) - y.mean()) < 2 * y.std()
