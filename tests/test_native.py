"""The native CPU runner (kernels/native/runner.cpp): built once per session, judged against the
float64 reference in both gradient modes at the seed shape and odd shapes, plus its build cache,
a rebuild after a source change, the missing-compiler error and the CLI."""
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

import manualnn
from helpers import BuildLog, run_and_judge
from manualnn import native, seed_data
from manualnn.backends import BackendUnavailableError, resolve
from manualnn.cli import main
from seed_script import run_seed_script
from test_reference import autograd_run

@pytest.fixture
def built(native_build, monkeypatch):
    """Point manualnn at the session's build (only for this test: other modules see an empty cache)."""
    cache = native_build[0]
    monkeypatch.setenv(native.CACHE_ENV, cache)
    return cache


SHAPES = {
    # name: (batch, features, hidden, out, lr)
    "seed": (100, 1000, (100,), 10, 1e-6),
    "batch1": (1, 33, (17,), 10, 1e-3),
    "w10": (10, 10, (10,), 10, 1e-3),
    "w17": (17, 17, (17,), 17, 1e-3),
    "w33": (33, 129, (33,), 10, 3e-5),
    "w129": (129, 33, (129,), 1, 1e-5),
    "3hidden": (33, 65, (17, 33, 9), 10, 1e-6),
    "no-hidden": (9, 12, (), 5, 1e-3),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("grad", ["relu", "tutorial"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_native_matches_reference(built, shape, grad, dtype):
    batch, features, hidden, out, lr = SHAPES[shape]
    # seed 10, the torch backend's test data: there both backends give the same numbers; with other
    # seeds the w129 shape's fp32 loss error can sit just above the judge's floor for both alike
    x, y, weights = seed_data(10, batch=batch, features=features, hidden=hidden, out=out, dtype=dtype)
    # every=7: chunks of 7, 7 and 6 epochs, each one native call
    result, _ = run_and_judge(x, y, weights, epochs=20, lr=lr, grad=grad, backend="native", every=7)
    assert result.backend == "native"


def test_step_and_run_epochs_agree_and_write_every_slot(built):
    x, y, weights = seed_data(21, batch=17, features=33, hidden=(10, 17), out=10)
    stepped = manualnn.Trainer(x, y, weights, lr=1e-4, backend="native")
    losses = [float(stepped.step()) for _ in range(6)]
    chunked = manualnn.Trainer(x, y, weights, lr=1e-4, backend="native")
    buf = torch.full((6,), float("nan"))   # poisoned: an unwritten slot would stay NaN
    chunked.backend.run_epochs(buf)
    assert buf.tolist() == losses           # the same ops in the same order: bit for bit
    for a, b in zip(stepped.weights, chunked.weights):
        assert torch.equal(a, b)
    with pytest.raises(RuntimeError, match="losses: expected a 0-d or 1-D CPU tensor of dtype Float"):
        chunked.backend.run_epochs(torch.zeros(3, dtype=torch.float64))


def test_small_networks_leave_the_thread_count_alone(built):
    threads = torch.get_num_threads()
    x, y, weights = seed_data(28, batch=8, features=12, hidden=(9,), out=3)   # runs on one thread inside
    manualnn.train(x, y, weights, epochs=3, lr=1e-3, backend="native")
    assert torch.get_num_threads() == threads


def test_relu_mode_equals_autograd_step_by_step(built):
    x, y, weights = seed_data(22, batch=21, features=40, hidden=(17, 9), out=10, dtype=torch.float64)
    losses, snapshots = autograd_run(x, y, weights, 6, 1e-3)
    trainer = manualnn.Trainer(x, y, weights, lr=1e-3, grad="relu", backend="native")
    for epoch in range(6):
        loss = trainer.step()
        assert abs(loss.item() - losses[epoch]) <= 1e-12 * abs(losses[epoch])
        for w, a in zip(trainer.weights, snapshots[epoch]):
            torch.testing.assert_close(w, a, rtol=1e-11, atol=1e-12)


def test_cli_native_tutorial_prints_the_seeds_losses(built, capsys):
    code = main(["train", "--backend", "native", "--seed", "0", "--grad", "tutorial", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""  # already built: nothing on stderr
    expected = [float(line.rsplit(":", 1)[1]) for line in run_seed_script(0)]
    got = [float(line.rsplit(":", 1)[1]) for line in out.splitlines()]
    assert len(got) == 20
    for g, e in zip(got, expected):  # to float32 rounding
        assert abs(g - e) <= 1e-6 * abs(e), (g, e)


def test_divergence_is_caught_and_rewound(built):
    x, y, weights = seed_data(23, batch=8, features=12, hidden=(9,), out=3)
    with pytest.raises(manualnn.NonFiniteLossError) as info:
        manualnn.train(x, y, weights, epochs=60, lr=10.0, backend="native")
    kept = info.value.result
    assert all(bool(torch.isfinite(w).all()) for w in kept.weights) and len(kept.losses) < 60


def test_first_build_says_so_and_later_loads_come_from_the_cache(native_build, tmp_path):
    cache, log, seconds = native_build
    print(f"first build: {seconds:.1f} s; its message: {log.strip()!r}")
    assert re.search(r"compiling the native runner \(once\) into .*\n.*built the native runner in \d+\.\d s", log)
    assert native.is_built(cache=cache)
    assert len(os.listdir(cache)) == 1
    # A fresh process loads from the cache: no compile, nothing on stderr, quickly.
    code = ("import time, sys; t = time.perf_counter(); from manualnn import native; native.load(); "
            "print(f'{time.perf_counter() - t:.3f}')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, native.CACHE_ENV: cache})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    print(f"cached load in a fresh process: {proc.stdout.strip()} s")
    assert len(os.listdir(cache)) == 1   # nothing new was built


def test_a_source_change_rebuilds(native_build, tmp_path):
    cache = native_build[0]
    src = tmp_path / "native"
    shutil.copytree(native.source_dir(), src)
    assert native.build_key(str(src)) == native.build_key()
    assert native.is_built(str(src), cache)
    runner = src / "runner.cpp"
    runner.write_text(runner.read_text() + "\n// a change\n")
    assert not native.is_built(str(src), cache)      # the hash of the sources moved
    log = BuildLog()
    module = native.load(str(src), cache, log=log)
    assert "compiling the native runner" in log.text
    assert native.is_built(str(src), cache) and len(os.listdir(cache)) == 2
    x, y, weights = seed_data(24, batch=5, features=7, hidden=(6,), out=3)
    losses = torch.empty(2)
    module.Runner(x, y, [w.clone() for w in weights], 1e-3, True).run(losses)
    assert losses.tolist() == pytest.approx(manualnn.relu_loop(x, y, weights, 2, 1e-3).losses, rel=1e-5)


def test_missing_compiler_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path / "empty"))
    monkeypatch.setenv("CXX", "no-such-cxx-compiler")
    assert any("no-such-cxx-compiler" in m for m in native.missing_tools())
    assert resolve("auto", "cpu") == "torch"             # auto never starts a compile
    x, y, weights = seed_data(25, batch=4, features=5, hidden=(3,), out=2)
    with pytest.raises(BackendUnavailableError, match=r"'native'.*needs a C\+\+ compiler \('no-such-cxx-compiler' "
                                                      r"is not on PATH"):
        manualnn.train(x, y, weights, epochs=2, backend="native")
    with pytest.raises(native.NativeBuildError, match="needs a C\\+\\+ compiler"):
        native.load()
    code = main(["build-native"])
    assert code == 2


def test_cli_build_native_when_built(built, capsys):
    assert main(["build-native"]) == 0
    assert "already built in " + built in capsys.readouterr().err


def test_auto_keeps_torch_on_cpu_even_once_built(built, capsys):
    # the seed's default run must print exactly the lines it always printed; native sums the loss in
    # float64, so its last printed digit can differ: native is used only when asked for
    assert resolve("auto", "cpu", torch.float32) == "torch"
    assert resolve("auto", "cpu", torch.float64) == "torch"
    assert manualnn.train(*seed_data(26, batch=4, features=5, hidden=(3,), out=2), epochs=2).backend == "torch"


def test_native_is_cpu_only_and_ieee_only(built):
    with pytest.raises(BackendUnavailableError, match="'native' cannot run on device cuda.*CPU only"):
        resolve("native", "cuda")
    x, y, weights = seed_data(27, batch=4, features=5, hidden=(3,), out=2)
    with pytest.raises(ValueError, match="precision: the native backend .* only 'ieee', got 'tf32'"):
        manualnn.train(x, y, weights, epochs=2, backend="native", precision="tf32")


def _nvcc():
    return shutil.which("nvcc") or next((p for p in ("/usr/local/cuda/bin/nvcc",) if os.path.isfile(p)), None)


@pytest.mark.parametrize("source", sorted(f for f in os.listdir(native.source_dir()) if f.endswith(".cu")) or
                         [pytest.param(None, marks=pytest.mark.skip(reason="no .cu source in kernels/native yet"))])
def test_cuda_sources_compile_for_sm90(source, tmp_path):
    """Every .cu source of the extension compiles for sm_90 (H100/H200) without warnings, where nvcc exists."""
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc is not installed here")
    cubin = tmp_path / (source + ".cubin")
    cmd = [nvcc, "-arch=sm_90", "-std=c++17", "--Werror", "all-warnings", "-cubin",
           os.path.join(native.source_dir(), source), "-o", str(cubin)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    kernels = sorted(set(re.findall(rb"\.text\.(_Z\w+)", cubin.read_bytes())))
    print(f"{source}: {len(kernels)} sm_90 kernels")
    assert kernels, "the cubin holds no kernel code"


@pytest.mark.parametrize("grad", ["relu", "tutorial"])
def test_minibatches_with_the_native_runner_equal_the_plain_loop(built, grad):
    from manualnn.testing import judge
    from manualnn.trainer import batch_order
    x, y, w0 = seed_data(11, batch=37, features=20, hidden=(17, 9), out=3, init="kaiming")
    result = manualnn.train(x, y, w0, epochs=5, lr=2e-3, grad=grad, backend="native", batch_size=8, shuffle_seed=5)
    refs = tuple(manualnn.minibatch_reference_loop(x.to(dt), y.to(dt), [w.to(dt) for w in w0], epochs=5, lr=2e-3,
                                                   grad=grad, batch_size=8, order=lambda e: batch_order(37, e, seed=5))
                 for dt in (torch.float64, torch.float32))
    verdict = judge(result.losses, result.weights, x, y, w0, epochs=5, lr=2e-3, grad=grad, refs=refs)
    assert verdict.ok, verdict.summary()
