"""Small helpers shared by the tests."""
import os

import torch

import manualnn
from manualnn.testing import judge
from manualnn.training import batch_order


TRAIN_ONLY = ("every", "callback", "threads", "inplace", "shuffle", "shuffle_seed", "biases", "bias")


def run_and_judge(x, y, weights, *, epochs, lr, grad, backend, precision="ieee", judged_as=None, **kw):
    """Train with manualnn, judge against the float64 reference run with the same settings (step, biases,
    batches and their order), and assert with a readable report."""
    result = manualnn.train(x, y, weights, epochs=epochs, lr=lr, grad=grad, backend=backend,
                            precision=precision, **kw)
    if judged_as is None:
        judged_as = {"ieee": "fp64" if x.dtype.is_floating_point and x.dtype.itemsize == 8 else "fp32",
                     "tf32": "tf32", "bf16": "bf16"}[precision]
    settings = {k: v for k, v in kw.items() if k not in TRAIN_ONLY}
    if kw.get("batch_size"):
        settings["order"] = lambda e: batch_order(x.shape[0], e, shuffle=kw.get("shuffle", True),
                                                  seed=kw.get("shuffle_seed", 0))
    biases0 = kw.get("biases")
    if kw.get("bias") and biases0 is None:
        biases0 = [torch.zeros(w.shape[1], dtype=w.dtype) for w in weights]
    verdict = judge(result.losses, result.weights, x, y, weights, epochs=epochs, lr=lr, grad=grad,
                    precision=judged_as, biases=result.biases, biases0=biases0, **settings)
    print(f"{backend}/{grad}/{precision} {tuple(x.shape)}->{[tuple(w.shape) for w in weights]}: {verdict.summary()}")
    assert verdict.ok, verdict.summary()
    return result, verdict


class BuildLog:
    """A stand-in for stderr that keeps what the native build says."""

    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def build_once(cache):
    """The native runner built into the folder ``cache`` once, by whoever asks first (an xdist worker's
    native_build fixture, or the controller's early start, conftest.pytest_sessionstart); the others wait on
    the folder's lock, then load that build. Returns (what the build said on stderr, its seconds)."""
    import fcntl
    import time

    from manualnn.backends import native_build as native
    os.makedirs(cache, exist_ok=True)
    record = os.path.join(cache, "BUILD_LOG")
    with open(os.path.join(cache, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(record):      # built already: its words and time
            with open(record) as f:
                seconds, _, text = f.read().partition("\n")
            native.load(cache=cache, log=BuildLog())
            return text, float(seconds)
        log, started = BuildLog(), time.perf_counter()
        copied = copy_built(os.environ.get("MANUALNN_TEST_BUILT_CACHE"), cache)
        native.load(cache=cache, log=log)   # a copied build loads without a word
        seconds = 0.0 if copied else time.perf_counter() - started
        with open(record, "w") as f:
            f.write(f"{seconds}\n{log.text}")
    return log.text, seconds


def copy_built(source, cache):
    """Copy the current sources' build (its shared library and BUILT stamp) from the cache folder ``source``
    into ``cache``, whole or not at all (a folder of this process's, then renamed); False where ``source``
    holds no such build, or the copy fails (the caller then compiles)."""
    import shutil

    from manualnn.backends import native_build as native
    if not source or os.path.realpath(source) == os.path.realpath(cache) or not native.is_built(cache=source):
        return False
    _, _, library, stamp = native._paths(cache=source)
    folder = native._paths(cache=cache)[1]
    work = f"{folder}.copy-{os.getpid()}"
    try:
        os.makedirs(work)
        for path in (library, stamp):
            shutil.copy2(path, work)
        os.rename(work, folder)
    except BaseException as e:   # a failed copy (or Ctrl-C) leaves nothing behind
        shutil.rmtree(work, ignore_errors=True)
        if isinstance(e, OSError):
            return False
        raise
    return True


def write(tmp_path, name, content):
    """A file in tmp_path with ``content`` (bytes or text); its path."""
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path
