"""The real-data harness (benchmarks/realdata.py) on one tiny data set, one seed, in-process.

Checks that the report and a sweep write their tables, and that a run that diverges is recorded as
a failed run, not a crash. Nothing here asserts a time or a score against scikit-learn.
"""
import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import manualnn_runs, realdata, suite  # noqa: E402

# an lr that overflows float32 within a step or two, whatever the loss and optimizer
DIVERGING_LR = "1e30"


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("realdata")
    return {"out": str(root / "out"), "cache": str(root / "data"), "sk": str(root / "sklearn.json")}


def common(paths):
    return ["--datasets", "iris", "--splits", "0", "--seeds", "0", "--out", paths["out"], "--cache", paths["cache"],
            "--sklearn-cache", paths["sk"]]


def test_suite_files_are_raw_and_split_as_specified(paths):
    (entry,) = suite.write_suite(paths["cache"], ["iris"], [0])
    x_train, y_train = suite.load_train(entry)
    x_test, y_test = suite.load_test(entry)
    assert y_train.dtype == np.int64 and x_train.dtype == np.float64
    assert (x_train.shape, x_test.shape) == ((112, 4), (38, 4))
    assert x_train.max() > 7   # raw sepal lengths in cm, not standardized
    assert np.bincount(y_test).tolist() == [13, 13, 12]   # stratified
    assert entry.classes == 3 and entry.chance == pytest.approx(max(1 / 3, entry.majority) + 0.05)
    assert entry.majority == pytest.approx(13 / 38)   # the largest class of the 38 test rows


def test_sweep_writes_a_table_and_records_a_diverging_run_as_failed(paths):
    rc = realdata.main(["sweep", "--grid", f"lr=1e-6,{DIVERGING_LR}", "--extra", "--epochs 3", *common(paths)])
    assert rc == 0
    table = open(os.path.join(paths["out"], "sweep.md")).read()
    assert "| `--lr 1e-6` | iris |" in table and f"| `--lr {DIVERGING_LR}` | iris |" in table
    record = json.load(open(os.path.join(paths["out"], "sweep.json")))
    for key in ("machine", "versions", "date", "git_commit"):
        assert record["meta"][key]
    calm, wild = record["combinations"]
    assert calm["options"] == ["--lr", "1e-6"] and wild["options"] == ["--lr", DIVERGING_LR]
    (run,) = wild["runs"]
    assert run["failed"] and "diverged" in run["reasons"], run
    assert wild["summary"]["iris"]["failed"] == 1
    (run,) = calm["runs"]
    assert run["train_rc"] == 0 and not run["diverged"] and run["score"] is not None, run
    # scikit-learn's result was cached: a second harness run reads it instead of refitting
    cached = json.load(open(paths["sk"]))["results"]
    version = record["meta"]["versions"]["sklearn"]
    assert list(cached) == [f"iris/split0/linear/sklearn-{version}", f"iris/split0/seed0/sklearn-{version}"]
    assert cached[f"iris/split0/linear/sklearn-{version}"]["model"] == "LogisticRegression"


def test_report_writes_both_files_with_provenance(paths):
    rc = realdata.main(["--mode", "inprocess", "--extra", "--epochs 2 --lr 1e-6", "--name", "tiny", *common(paths)])
    assert rc == 0
    md = open(os.path.join(paths["out"], "tiny.md")).read()
    assert "| iris | accuracy |" in md and "PyTorch autograd" in md
    record = json.load(open(os.path.join(paths["out"], "tiny.json")))
    assert record["meta"]["git_commit"] and record["meta"]["versions"]["torch"]
    assert record["summary"]["manualnn"]["iris"]["runs"] == 1
    assert record["meta"]["versions"]["manualnn"] in md


def test_splits_train_every_seed_and_the_parts_are_named(paths):
    entries = suite.write_suite(paths["cache"], ["iris", "friedman2"], [0, 1], splits=[0, 1])
    assert [(e.dataset, e.split, e.seed) for e in entries] == [
        (ds, k, s) for ds in ("iris", "friedman2") for k in (0, 1) for s in (0, 1)]
    assert {e.part for e in entries if e.dataset == "iris"} == {suite.TUNED}
    assert {e.part for e in entries if e.dataset == "friedman2"} == {suite.HELD_OUT}
    a, b = (suite.load_train(e)[0] for e in entries if e.dataset == "iris" and e.seed == 0)
    assert a.shape == b.shape == (112, 4) and not np.array_equal(a, b)   # two splits of the same rows
    same = [suite.load_train(e)[0] for e in entries if e.dataset == "iris" and e.split == 0]
    assert np.array_equal(*same)   # a split's seeds share its files
    parts = [set(suite.parse_datasets(part)) for part in suite.PARTS]
    assert all(parts) and sum(map(len, parts)) == len(set().union(*parts))   # none empty, none shared
    assert set().union(*parts) == set(suite.parse_datasets("all"))
    assert set(suite.FIRST_TEN) <= parts[0]


def test_the_bound_is_against_the_better_of_the_mlp_and_the_linear_model():
    from benchmarks import realdata_tables as tables
    from benchmarks.sklearn_mlp import baseline
    sk = {("d", 0, 0): {"score": 0.90}, ("d", 0, 1): {"score": 0.80}, ("d", 0, "linear"): {"score": 0.85}}
    assert baseline(sk, "d", 0, 0) == (0.90, "mlp") and baseline(sk, "d", 0, 1) == (0.85, "linear")
    runs = [{"dataset": "d", "split": 0, "seed": 0, "part": "tuned", "score": 0.88, "failed": False, "reasons": []},
            {"dataset": "d", "split": 0, "seed": 1, "part": "tuned", "score": 0.81, "failed": False, "reasons": []}]
    s = tables.summarize(runs, sk, "classify")
    assert s["below_bound"] == ["split 0 seed 1"]   # 0.81 is 4 points under the linear model's 0.85
    assert s["worst_baseline_gap"] == pytest.approx(-4.0) and s["worst_gap"] == pytest.approx(-2.0)


def test_grid_and_seeds_parsing():
    axes = realdata.parse_grid("lr=1e-3,3e-3; --batch-size=32,200;hidden=64,128 128;no-shuffle=on,off")
    assert [len(a) for a in axes] == [2, 2, 2, 2]
    assert realdata.combo_argv([("hidden", "128 128"), ("no-shuffle", "on")]) == ["--hidden", "128", "128",
                                                                                  "--no-shuffle"]
    assert realdata.combo_argv([("no-shuffle", "off"), ("lr", "1e-3")]) == ["--lr", "1e-3"]
    assert suite.parse_seeds("0-2,7") == [0, 1, 2, 7]
    with pytest.raises(ValueError):
        suite.parse_seeds("3-1")


def test_score_and_divergence_parsing():
    assert manualnn_runs.parse_score("Loss:0.12, Accuracy:0.9667 (38 samples)\n", "accuracy") == 0.9667
    assert manualnn_runs.parse_score("Loss:3.1, RMSE:55.2, R2:0.4321 (111 samples)\n", "R2") == 0.4321
    assert manualnn_runs.parse_score("Loss:3.1 (111 samples)\n", "R2") is None
    assert manualnn_runs.printed_nonfinite_loss("Epoch:0, Loss:1.0\nEpoch:1, Loss:nan, Val loss:inf\n")
    assert not manualnn_runs.printed_nonfinite_loss("Epoch:0, Loss:1.0, Val loss:2.0, Val accuracy:0.5\n")


def test_judge_names_every_reason():
    entry = suite.Entry("x", 0, "classify", 2, "a", "b", 1, 1, 1)
    failed, reasons = manualnn_runs.judge({"diverged": True, "train_rc": 1, "predict_rc": None, "score": 0.5,
                                           "task_used": "regress"}, entry)
    assert failed and reasons == ["diverged", "train exit 1", "trained as regress", "at chance"]
    assert manualnn_runs.judge({"train_rc": 0, "predict_rc": 0, "score": 0.9}, entry) == (False, [])
    assert manualnn_runs.judge({"train_rc": 0, "predict_rc": 0, "score": None}, entry) == (True, ["no score"])


@pytest.mark.slow
def test_cli_and_inprocess_modes_give_the_same_numbers(paths):
    (entry,) = suite.write_suite(paths["cache"], ["moons"], [0])
    extra = ["--epochs", "20"]
    cli = manualnn_runs.run_one(entry, extra, mode="cli")
    here = manualnn_runs.run_one(entry, extra, mode="inprocess")
    for key in ("train_rc", "predict_rc", "epochs_run", "final_loss", "score_printed", "score_from_predictions",
                "task_used", "failed"):
        assert cli[key] == here[key], (key, cli[key], here[key])
    assert cli["score"] is not None and cli["epochs_run"] == 20


def test_a_sweep_refuses_an_option_train_refuses_before_any_run(capsys, tmp_path):
    for grid, why in (("nosuchopt=1", "unrecognized arguments: --nosuchopt 1"),
                      ("weight-decay=x/n", "argument --weight-decay: expected a number")):
        code = realdata.main(["sweep", "--datasets", "iris", "--seeds", "0", "--splits", "0", "--grid", grid,
                              "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")])
        err = capsys.readouterr().err
        assert code == 2 and why in err and "manualnn train refuses them" in err, err
    assert not (tmp_path / "out" / "sweep.json").exists() and not os.listdir(tmp_path / "cache")   # nothing ran


@pytest.mark.parametrize("argv,message", [
    (["--datasets", ","], "--datasets: expected names, a part or 'all', got ','"),
    (["--out", "/proc/no/such"], "--out: cannot make the folder '/proc/no/such'"),
    (["--timeout", "-1"], "--timeout: expected a positive number of seconds, got -1"),
])
def test_the_report_refuses_bad_options_before_any_run(capsys, argv, message):
    assert realdata.main(argv) == 2
    assert message in capsys.readouterr().err


def test_the_json_outputs_hold_no_infinity_or_nan(tmp_path):
    realdata.write_outputs(str(tmp_path), "x", {"worst_gap": float("-inf"), "runs": [{"score": float("nan")}]}, "")
    text = (tmp_path / "x.json").read_text()
    assert json.loads(text) == {"worst_gap": None, "runs": [{"score": None}]} and "Infinity" not in text


def test_an_unfinished_sweeps_files_say_so(tmp_path):
    assert realdata.main(["sweep", "--datasets", "iris", "--seeds", "0", "--splits", "0", "--grid", "lr=1e-3,3e-3",
                          "--out", str(tmp_path), "--cache", str(tmp_path / "cache")]) == 0
    record = json.loads((tmp_path / "sweep.json").read_text())
    assert record["meta"]["grid_points_done"] == [2, 2] and "not finished" not in (tmp_path / "sweep.md").read_text()
    meta = dict(record["meta"], grid_points_done=[1, 2])   # as the files stand after the first point
    text = realdata.tables.sweep_markdown(meta, {"iris": "classify"}, record["combinations"][:1], record["sklearn"])
    assert "Grid `lr=1e-3,3e-3` (1 of its 2 points measured so far: the sweep is not finished); splits 0" in text
