"""Decide interpreter vs CUDA before anything that defines Triton kernels is imported.

TRITON_INTERPRET is read when a kernel is decorated, so it must be set here, first.
"""
import os

import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import tempfile  # noqa: E402

# The native runner's cache: a folder of this session's own, so that no test reads or writes the user's. The
# native_build fixture puts the current sources' build into it once per session (every xdist worker shares
# it), before any test runs: backend="auto" takes the native runner on the CPU, and no test should pay for, or
# print, a first compile. Where the user's own cache (MANUALNN_TEST_BUILT_CACHE: where `manualnn train` or
# `manualnn build-native` put it) already holds a build of these very sources, it is copied rather than compiled
# again: a build's folder is named by a hash of the sources, flags, torch, Python and CPU (native_build.build_key).
from manualnn.backends import native_build as _native  # noqa: E402

os.environ.setdefault("MANUALNN_TEST_BUILT_CACHE", _native.cache_root())   # (xdist workers inherit the controller's)
os.environ["MANUALNN_NATIVE_CACHE"] = tempfile.mkdtemp(prefix="manualnn-native-empty-")


def pytest_configure(config):
    """Refuse to test code this checkout does not hold: an editable install made from another checkout
    maps manualnn.kernels (installed from kernels/) to that checkout's files."""
    if hasattr(config.option, "loadscopereorder"):   # pytest-xdist 3.8+: the order of the collection, as sorted
        config.option.loadscopereorder = False       # by pytest_collection_modifyitems
    import importlib.util
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for name in ("manualnn", "manualnn.kernels"):
        spec = importlib.util.find_spec(name)
        where = os.path.realpath(spec.origin) if spec and spec.origin else None
        if where is None or not where.startswith(os.path.realpath(root) + os.sep):
            pytest.exit(f"{name} resolves to {where}, outside this checkout ({root}); install this checkout "
                        f"(pip install -e .) in the environment that runs its tests", returncode=4)


def pytest_report_header(config):
    mode = "CUDA" if HAS_CUDA else f"CPU, TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET')}"
    return f"manualnn tests on {mode}"


def pytest_collection_modifyitems(config, items):
    # the WITHOUT_NATIVE files first, then the rest, each part's longest files first (LONGEST, then by their
    # number of tests: xdist's own order, which pytest_configure turns off so that it keeps this one), so that
    # no long file is left to run alone at the end; a file's tests stay in their order
    per_file = {}
    for item in items:
        per_file[item.path] = per_file.get(item.path, 0) + 1
    items.sort(key=lambda item: (item.path.name not in WITHOUT_NATIVE, item.path.name not in LONGEST,
                                 -per_file[item.path], str(item.path)))
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


_early_build = []


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    """Under pytest-xdist the controller starts the native build at once, in a process of its own, into the
    folder the workers' native_build fixture uses: it compiles while they start and collect the tests (the
    first to need it waits on the folder's lock, see helpers.build_once), not after."""
    config = session.config
    if os.environ.get("PYTEST_XDIST_WORKER") or getattr(config.option, "dist", "no") == "no" or \
            os.environ.get("MANUALNN_TEST_NATIVE_CACHE") or config.option.collectonly:
        return
    from manualnn.backends import native_build as native
    if native.missing_tools():
        return
    import subprocess
    import sys
    cache = str(config._tmp_path_factory.getbasetemp() / "native-cache")   # the workers' basetemp's parent
    here = os.path.dirname(os.path.abspath(__file__))
    _early_build.append(subprocess.Popen(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {here!r}); import helpers; helpers.build_once({cache!r})"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))


def pytest_sessionfinish(session, exitstatus):
    for proc in _early_build:   # still compiling at the end: no test waited for it (a run of files that do not
        if proc.poll() is None:  # need it, a -x stop, a Ctrl-C), so nobody waits for it now
            proc.kill()
        proc.wait()


@pytest.fixture
def seed_shape():
    return dict(batch=100, features=1000, hidden=(100,), out=10)


@pytest.fixture(scope="session")
def native_build(tmp_path_factory):
    """The native runner built once for the whole run, in a fresh cache folder of its own:
    (cache folder, what the build said on stderr, seconds). Tests point manualnn at it through
    MANUALNN_NATIVE_CACHE (monkeypatch, or a subprocess's env). With pytest-xdist the workers share
    one build: the first builds under a lock, the others load it (and read what the build said). A
    developer re-running the tests can set MANUALNN_TEST_NATIVE_CACHE to a folder of their own, kept
    between sessions, to build only after a source change. A build of the same sources in the user's cache
    is copied, not compiled again (helpers.copy_built); MANUALNN_TEST_BUILT_CACHE= (empty) compiles anyway."""
    from helpers import build_once
    from manualnn.backends import native_build as native
    cache = os.environ.get("MANUALNN_TEST_NATIVE_CACHE")
    if native.missing_tools() and not (cache and native.is_built(cache=cache)):
        pytest.skip(f"cannot build the native runner here: needs {' and '.join(native.missing_tools())}")
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base   # xdist: the run's common folder
    cache = cache or str(shared / "native-cache")
    text, seconds = build_once(cache)
    return cache, text, seconds


# Test files that never run the native runner: they run first (pytest_collection_modifyitems) and do not wait
# for its build, so that under pytest-xdist every worker has work while the build compiles (about 30 s). A test
# here that reaches the runner after all fails at once, saying so (native_for_auto), rather than compiling it.
WITHOUT_NATIVE = {"test_kernels.py", "test_two_launch.py", "test_reference.py",
                  "test_checks.py", "test_emulate.py", "test_gpu_compile.py", "test_gpu_startup.py",
                  "test_functional.py", "test_data.py", "test_datafiles.py", "test_optim.py", "test_torch_backend.py"}
# The files that take longest here (--durations on a 2-core machine: 15 to 45 s each, most of it waiting on the
# processes their tests start; test_native_build_faults 6 s in 5 tests, which left it to run alone at the end),
# whatever their number of tests.
LONGEST = {"test_distributed.py", "test_estimators.py", "test_readme.py", "test_cli_data.py", "test_stops.py",
           "test_faults.py", "test_two_launch.py", "test_native_build_faults.py"}


@pytest.fixture(autouse=True)
def native_for_auto(request, monkeypatch):
    """Every test (and the subprocesses they start) finds the session's native build, as a user who has
    built it does; where it cannot be built, "auto" falls back to the torch backend, as it does for users.
    A test of a WITHOUT_NATIVE file does not wait for the build, and may not load it."""
    from manualnn.backends import native_build as native
    if request.node.path.name in WITHOUT_NATIVE:
        def refuse(*args, **kwargs):
            raise AssertionError(f"{request.node.path.name} is in conftest.WITHOUT_NATIVE, but this test loads the "
                                 f"native runner: take the file out of that list")
        monkeypatch.setattr(native, "load", refuse)
        yield None
        return
    if native.missing_tools() and not os.environ.get("MANUALNN_TEST_NATIVE_CACHE"):
        yield None
        return
    cache = request.getfixturevalue("native_build")[0]
    os.environ["MANUALNN_NATIVE_CACHE"] = cache
    yield cache


@pytest.fixture(autouse=True)
def torch_threads_restored():
    """A test that sets torch's thread count (one thread for a rank, say) leaves the next test torch's count."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def ieee_fp32_references():
    """References, fp32 twins and the torch backend stay IEEE fp32 on CUDA whatever the global TF32
    setting was (a no-op on the CPU)."""
    setting = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(setting)
