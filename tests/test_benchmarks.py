"""The benchmark harness: a --quick run on the CPU at a tiny shape (slow: CI runs it, the default
test run does not), and its judging of contenders. It asserts no time.

It checks the files and the JSON schema, and that every contender was judged against the float64
reference before it was timed.
"""
import json
import os
import subprocess
import sys

import pytest

from manualnn.backends import native_build as native

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROW_KEYS = {"shape", "dims", "precision", "contender", "epochs", "status", "reason", "check", "cold_s", "run_s",
            "step_s", "tflops", "peak_mem_bytes", "vs_seed", "vs_floor"}


def jax_installed():
    import importlib.util
    return importlib.util.find_spec("jax") is not None


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, request):
    out = tmp_path_factory.mktemp("bench")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if not native.missing_tools():  # the session's build of the native runner: no second compile
        env["MANUALNN_NATIVE_CACHE"] = request.getfixturevalue("native_build")[0]
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--device", "cpu", "--quick", "--shapes", "tiny",
                           "--epochs", "5", "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


@pytest.mark.slow
def test_files_are_written(quick_run):
    out, proc = quick_run
    assert sorted(os.listdir(out)) == ["results.json", "results.md", "results.png"]
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "results.md").read_text()
    assert "| tiny | fp32 | manualnn-torch | ok |" in table and table in proc.stdout


@pytest.mark.slow
def test_json_schema_and_every_contender_was_checked(quick_run):
    out, _ = quick_run
    record = json.loads((out / "results.json").read_text())
    meta = record["meta"]
    for key in ("device", "device_name", "versions", "git_commit", "date", "epochs", "quick"):
        assert key in meta
    assert meta["device"] == "cpu" and meta["quick"] is True and meta["versions"]["torch"]
    rows = record["rows"]
    names = {r["contender"] for r in rows}
    assert {"seed", "seed-print", "matmul-floor", "manualnn-torch", "manualnn-native", "autograd-foreach",
            "autograd-fused", "compile-default", "jax-jit-scan"} <= names
    assert "manualnn-triton" not in names  # the interpreter is never timed
    if not jax_installed():  # the optional contender says why it did not run
        jax_row = next(r for r in rows if r["contender"] == "jax-jit-scan")
        assert jax_row["status"] == "n/a" and "jax is not installed" in jax_row["reason"]
        rows = [r for r in rows if r is not jax_row]
    if native.missing_tools():  # no compiler here: the native contender is reported, not timed
        native_row = next(r for r in rows if r["contender"] == "manualnn-native")
        assert native_row["status"] == "error" and "needs" in native_row["reason"]
        rows = [r for r in rows if r is not native_row]
    for r in rows:
        assert ROW_KEYS <= set(r), r["contender"]
        assert r["status"] == "ok", (r["contender"], r["reason"])
        if r["contender"] == "matmul-floor":
            assert r["check"]["ok"] is None
        else:
            assert r["check"]["ok"] is True and r["check"]["epochs"] == 5
            assert r["check"]["max_loss_rel_err"] <= r["check"]["max_loss_bound"]
        assert r["run_s"]["median"] > 0 and r["run_s"]["n"] >= 1 and r["tflops"] > 0
        assert r["vs_seed"] is not None and r["vs_floor"] is not None
    grads = {r["contender"]: r["check"]["grad"] for r in rows if r["check"]["ok"]}
    assert grads["seed"] == "tutorial" and grads["autograd-foreach"] == "relu" and grads["manualnn-torch"] == "relu"


def test_a_wrong_contender_is_reported_not_timed(monkeypatch):
    sys.path.insert(0, ROOT)
    try:
        import torch
        from benchmarks import contenders, run
    finally:
        sys.path.remove(ROOT)

    class Broken(contenders.SeedLoop):
        grad = "relu"   # the seed loop's tutorial gradient is not the relu gradient: must be caught

    p = run.Problem("tiny", (8, 32, 16, 4), 1e-3, torch.device("cpu"), 5)

    class Args:
        check_epochs, verbose = {}, False

    refs = {}
    refs_for = lambda grad, epochs, precision="fp32": refs.setdefault(  # noqa: E731
        (grad, epochs), run.reference_runs(p.x, p.y, p.w0, epochs=epochs, lr=p.lr, grad=grad))
    row, contender = run.prepare("broken", Broken, p, "fp32", Args, refs_for, deadline=float("inf"))
    assert row["status"] == "wrong" and contender is None and row["run_s"] is None
    assert "FAIL" in row["reason"]


@pytest.mark.parametrize("path", ["layers", "2launch"])
def test_triton_step_contenders_are_judged_right(path):
    # timed only on CUDA (all_contenders leaves them out elsewhere); here they run on the interpreter
    # through the same prepare() that judges every contender before timing
    sys.path.insert(0, ROOT)
    try:
        import torch
        from benchmarks import contenders, run
    finally:
        sys.path.remove(ROOT)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    p = run.Problem("tiny", (8, 32, 16, 4), 1e-3, device, 5)

    class Args:
        check_epochs, verbose = {}, True

    refs_for = lambda grad, epochs, precision: run.reference_runs(  # noqa: E731
        p.x, p.y, p.w0, epochs=epochs, lr=p.lr, grad=grad)
    factory = lambda pr, precision: contenders.TritonSteps(pr, precision, path)  # noqa: E731
    row, contender = run.prepare(f"manualnn-triton-{path}", factory, p, "fp32", Args, refs_for, deadline=float("inf"))
    assert row["status"] == "ok" and row["check"]["ok"] is True, row
    assert contender.backend.two_launch == (path == "2launch")


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_reduced_precision_judge_passes_emulated_rounding_and_fails_5_percent(precision):
    # the harness judges tf32/bf16 rows against the emulated rounding (the CPU can run the judge,
    # not the modes): a contender computing exactly that passes, one 5% off in its weights fails
    sys.path.insert(0, ROOT)
    try:
        import torch
        from benchmarks import contenders, emulate, run
    finally:
        sys.path.remove(ROOT)
    p = run.Problem("tiny", (8, 32, 16, 4), 1e-3, torch.device("cpu"), 5)

    class Emulated(contenders.Contender):
        precisions = ("tf32", "bf16")
        scale = 1.0

        def run(self, epochs, record=False):
            self.last = emulate.emulated_loop(p.x, p.y, p.w0, epochs=epochs, lr=p.lr, grad="relu",
                                              precision=self.precision)

        def result(self):
            return self.last.losses, [w * self.scale for w in self.last.weights]

    class Off(Emulated):
        scale = 1.05

    class Args:
        check_epochs, verbose = {}, True

    refs_for = run.reference_cache(p)
    row, _ = run.prepare("emulated", Emulated, p, precision, Args, refs_for, deadline=float("inf"))
    assert row["status"] == "ok" and row["check"]["ok"] is True, row
    row, _ = run.prepare("off", Off, p, precision, Args, refs_for, deadline=float("inf"))
    assert row["status"] == "wrong", row


def test_native_step_benchmark_times_one_thread_and_all(native_build, monkeypatch, capsys):
    """python -m benchmarks.native_step at a tiny blocked shape: one line, a time for each count."""
    import re

    from benchmarks import native_step
    monkeypatch.setenv(native.CACHE_ENV, native_build[0])
    native_step.main(["--rows", "130", "--features", "5", "--hidden", "7", "--outputs", "3", "--loss", "ce",
                      "--steps", "3", "--rounds", "1"])
    out = capsys.readouterr().out
    assert re.fullmatch(r"native step, 130 x 5 -> 7 -> 3 \(ce\): 1 thread [0-9.]+ us(, \d+ threads [0-9.]+ us)?\n",
                        out), out


@pytest.mark.slow
@pytest.mark.skipif(bool(native.missing_tools()), reason="needs a C++ compiler")
def test_busy_share_benchmark_times_every_mode_idle_and_busy(capsys):
    """python -m benchmarks.busy_share at a few steps: a row for each way of sharing the step, every mode's
    program ran (a time for it idle and busy)."""
    import re

    from benchmarks import busy_share
    busy_share.main(["--steps", "20", "--rounds", "1"])
    rows = capsys.readouterr().out.splitlines()[2:]
    assert len(rows) == len(busy_share.MODES), rows
    for mode, (row, name) in enumerate(zip(rows, busy_share.MODES)):
        assert re.fullmatch(rf"\| {mode}: {re.escape(name)} \| \d+ \| \d+ \(\d+-\d+\) \| [0-9.]+ \| [0-9.]+ \|", row), row


@pytest.mark.parametrize("argv,message", [(["--only", "step"], "--only: expected parts of steps, default"),
                                          (["--loads", "x"], "--loads: expected counts of busy processes"),
                                          (["--repeats", "0"], "--repeats: expected 1 or more, got 0")])
def test_the_cpu_benchmark_refuses_bad_options_before_it_measures(capsys, argv, message):
    from benchmarks import cpu
    with pytest.raises(SystemExit) as stop:
        cpu.main(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_a_cpu_report_without_steps_leaves_no_plot_of_an_earlier_run(tmp_path):
    from benchmarks.report_cpu import write_cpu_report
    (tmp_path / "cpu.png").write_bytes(b"an earlier run's plot")
    meta = {"machine": "m", "threads": 2, "versions": {"torch": "t"}, "commit": "c", "date": "d", "quick": True,
            "loadavg_at_start": [0, 0, 0], "command": ["python", "-m", "benchmarks.cpu"], "loads": [0]}
    text, written = write_cpu_report({"meta": meta, "setup": [{"call": "x", "ms": 1.0, "x_seed": 1.0}]}, str(tmp_path))
    assert written == ["cpu.json", "cpu.md"] and not (tmp_path / "cpu.png").exists() and "Setup" in text


def test_a_benchmark_whose_stdout_reader_went_away_stops_quietly_with_141():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    reader, writer = os.pipe()
    os.close(reader)   # '| head' already gone
    proc = subprocess.run([sys.executable, "-c", "import sys; from benchmarks import run_main; "
                           "sys.exit(run_main(lambda: print('row') or 0))"],
                          cwd=root, stdout=writer, stderr=subprocess.PIPE, text=True, timeout=60)
    os.close(writer)
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr
