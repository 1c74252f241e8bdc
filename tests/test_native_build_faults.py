"""The native runner's build survives a signal at any moment of its compile, never waits on a lock
whose holder is gone, says once that it waits on a live one, and refuses a read-only cache in one
line. A tiny extension stands in for the runner (its compile takes about a second, most of it reading
<regex>, so that a signal can land inside it); the cache is a folder of the test's own.
"""
import fcntl
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest

from helpers import BuildLog
from manualnn.backends import native_build as native
from manualnn.cli import main

SOURCE = """#include <Python.h>
#include <regex>
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define STR_(a) #a
#define STR(a) STR_(a)
static PyObject* answer(PyObject*, PyObject*) { return PyLong_FromLong(42); }
static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, "42"}, {nullptr, nullptr, 0, nullptr}};
static PyModuleDef module = {PyModuleDef_HEAD_INIT, STR(TORCH_EXTENSION_NAME), nullptr, -1, methods};
PyMODINIT_FUNC CAT(PyInit_, TORCH_EXTENSION_NAME)(void) { return PyModule_Create(&module); }
"""
BUILD = "import sys; from manualnn.backends import native_build as n; print(n.load(sys.argv[1], sys.argv[2]).answer())"

pytestmark = pytest.mark.skipif(bool(native.missing_tools()), reason="needs a C++ compiler and ninja")


@pytest.fixture
def tiny(tmp_path):
    """(sources folder, cache folder, the build's folder in the cache)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "tiny.cpp").write_text(SOURCE)
    cache = tmp_path / "cache"
    return str(src), str(cache), native._paths(str(src), str(cache))[1]


def build(src, cache, timeout=180):
    return subprocess.run([sys.executable, "-c", BUILD, src, cache], capture_output=True, text=True, timeout=timeout)


def interrupt_a_build(src, cache, sig, delay):
    """Start a build; ``delay`` seconds after it says it compiles, send ``sig``."""
    proc = subprocess.Popen([sys.executable, "-c", BUILD, src, cache], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    said = proc.stderr.readline()
    assert "compiling the native CPU runner (once" in said, said + proc.stderr.read()
    time.sleep(delay)
    proc.send_signal(sig)
    proc.communicate(timeout=120)


def check_the_next_build_completes(src, cache, folder):
    built_before = native.is_built(src, cache)   # (a signal can land after the interrupted build finished)
    proc = build(src, cache)
    assert proc.returncode == 0 and proc.stdout == "42\n", proc.stderr
    if built_before:
        assert proc.stderr == ""
    else:   # what a first build says (a compiler's own warnings may come between), and no wait
        assert re.search(r"^manualnn: compiling the native CPU runner \(once, about 30 s; 'manualnn build-native' does "
                         r"it ahead of time\) into \S+ \.\.\.$(.|\n)*^manualnn: built the native runner in \d+\.\d s$",
                         proc.stderr, re.M), proc.stderr
        assert "waiting for" not in proc.stderr, proc.stderr
    assert sorted(os.listdir(cache)) == sorted([os.path.basename(folder), os.path.basename(folder) + ".lock"])
    assert native.is_built(src, cache)   # the next load compiles nothing


def test_a_build_killed_mid_compile_does_not_block_the_next(tiny):
    """Item 7 of 'Nothing lost, round two': SIGTERM during the first compile left a lock on which every
    later build waited forever."""
    src, cache, folder = tiny
    interrupt_a_build(src, cache, signal.SIGTERM, 0.3)
    check_the_next_build_completes(src, cache, folder)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL, signal.SIGHUP])
def test_a_signal_at_any_moment_of_the_build(tiny, sig):
    src, cache, folder = tiny
    rng = random.Random(sig)
    for _ in range(4):
        interrupt_a_build(src, cache, sig, rng.uniform(0, 1.5))
        check_the_next_build_completes(src, cache, folder)
        native.shutil.rmtree(cache)


def test_a_lock_left_by_an_older_version_is_taken_over(tiny):
    """Torch's own lock file in a half-built folder (as the compile-in-place builds left it)."""
    src, cache, folder = tiny
    os.makedirs(folder)
    open(os.path.join(folder, "lock"), "w").close()
    check_the_next_build_completes(src, cache, folder)


def test_a_live_build_is_waited_for_and_said_once(tiny, monkeypatch):
    src, cache, folder = tiny
    os.makedirs(cache)
    with open(folder + ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)   # another open of the file: as another process would hold it
        held.write("4242\n")
        held.flush()
        monkeypatch.setattr(native, "LOCK_WAIT", 0.5)
        log = BuildLog()
        with pytest.raises(native.NativeBuildError, match=r"process 4242 has been compiling the runner into .* for "
                                                          r"over 0.5 s; stop it or let it finish"):
            native.load(src, cache, log=log)
    assert log.text == f"manualnn: waiting for process 4242, which is compiling the native runner into {folder} ...\n"


@pytest.fixture
def read_only(tmp_path):
    """A folder on a read-only file system (a read-only tmpfs for root, whom permissions do not stop)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_a_read_only_cache_is_one_line(read_only, monkeypatch, capsys):
    """Item 10: XDG_CACHE_HOME on a read-only file system was an OSError traceback."""
    monkeypatch.delenv(native.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(read_only))
    assert main(["build-native"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(r"^manualnn build-native: error: backend 'native': the runner is not "
                                              r"built yet and its cache folder .*ro/manualnn/native cannot be written "
                                              r"\((Read-only file system|Permission denied)\); set "
                                              r"MANUALNN_NATIVE_CACHE to a writable folder", err), err
    assert main(["train", "--backend", "native", "--device", "cpu", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(r"'native' cannot run on device cpu: it is not built yet and its cache "
                                              r"folder cannot be written \(.*ro; set MANUALNN_NATIVE_CACHE\)", err), err
