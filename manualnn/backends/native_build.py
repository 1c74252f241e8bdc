"""Build and load the native CPU runner: the C++ sources in kernels/native/ (manualnn.kernels.native).

The extension is compiled once with torch.utils.cpp_extension and ninja into a cache folder:
``$MANUALNN_NATIVE_CACHE``, else ``$XDG_CACHE_HOME/manualnn/native`` (``~/.cache/manualnn/native``).
Each build lives in a subfolder named by a hash of the sources, the compiler flags and the torch
and Python versions, so a change to any of them builds afresh, and an unchanged build is imported
straight from its shared library (no compiler needed then, and no ninja run). The first build says
so on stderr, with how long it took; ``manualnn build-native`` does it ahead of time.
"""
import contextlib
import glob
import hashlib
import importlib.util
import os
import platform
import shutil
import sys
import sysconfig
import time

import torch

from . import BackendUnavailableError

try:
    import fcntl
except ImportError:   # not POSIX: builds are not locked against each other
    fcntl = None

CACHE_ENV = "MANUALNN_NATIVE_CACHE"


def _cpu_features():
    """This CPU's instruction-set flags (Linux), so a build for one CPU is never loaded on another."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].split() for line in f if line.startswith(("flags", "Features"))), [])
    except OSError:
        return []


# -ffp-contract=off: no multiply-add is fused unless the source says so (std::fma), so the numbers match
# torch's separately rounded ops; -fno-math-errno: std::sqrt is then one (vectorised) instruction, as in
# torch's own build; -march=native on x86-64: the element-wise loops in this CPU's widest vectors (the build
# is for this machine: its key holds the CPU's flags). Vectorising changes no number (no reassociation).
EXTRA_CFLAGS = ("-O3", "-ffp-contract=off", "-fno-math-errno") + (
    ("-march=native", "-mprefer-vector-width=512") if platform.machine() in ("x86_64", "AMD64") else ())
# the element-wise loops run on torch's own OpenMP threads (at::parallel_for): the library's libgomp.so.1 is
# the one torch has loaded (a shared object is loaded once per soname), so there is one thread pool
# (tuples: torch's cpp_extension.load appends its own flags to the lists it is given)
OPENMP = ("-fopenmp",) if torch.backends.openmp.is_available() else ()
_loaded = {}   # library path -> module, so a process imports each build once
LOCK_WAIT = 900   # seconds to wait for another process's compile before giving up on it


class NativeBuildError(BackendUnavailableError):
    """The native runner is not built and cannot be built here (a missing tool, or a failed compile)."""


def source_dir():
    """kernels/native/ of the installed manualnn.kernels package (found without importing Triton)."""
    spec = importlib.util.find_spec("manualnn.kernels")
    return os.path.join(list(spec.submodule_search_locations)[0], "native")


def cpu_sources(src=None):
    """The C++ files that make the CPU extension."""
    return sorted(glob.glob(os.path.join(src or source_dir(), "*.cpp")))


def cache_root():
    if os.environ.get(CACHE_ENV):
        return os.path.abspath(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "manualnn", "native")


_own_key = []   # the installed sources' key: each Trainer asks twice, and they do not change under a process


def build_key(src=None):
    """A hash of everything the shared library depends on: the sources and any headers beside them
    (``*.cpp``, ``*.h``), the flags, torch and Python (and the CPU: -march=native)."""
    if src is None and _own_key:
        return _own_key[0]
    folder = src or source_dir()
    h = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(folder, "*.cpp")) + glob.glob(os.path.join(folder, "*.h"))):
        h.update(os.path.basename(path).encode() + b"\0")
        with open(path, "rb") as f:
            h.update(f.read() + b"\0")
    h.update(repr((EXTRA_CFLAGS, OPENMP, torch.__version__, sys.version_info[:2], sysconfig.get_platform(),
                   sorted(_cpu_features()) if "-march=native" in EXTRA_CFLAGS else None)).encode())
    key = h.hexdigest()[:16]
    if src is None:
        _own_key.append(key)
    return key


def _paths(src=None, cache=None):
    name = f"manualnn_native_{build_key(src)}"
    folder = os.path.join(cache or cache_root(), name)
    return name, folder, os.path.join(folder, name + ".so"), os.path.join(folder, "BUILT")


def is_built(src=None, cache=None):
    """True when the current sources are built in the cache (loading them then takes no compile)."""
    _, _, library, stamp = _paths(src, cache)
    return os.path.isfile(stamp) and os.path.isfile(library)


def missing_tools():
    """What a build needs and this machine lacks: a C++ compiler ($CXX, else c++) and ninja."""
    missing = []
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        missing.append(f"a C++ compiler ({cxx!r} is not on PATH; install g++ or clang++, or set CXX)")
    if shutil.which("ninja") is None:
        missing.append("ninja (pip install ninja)")
    return missing


def unavailable_reason(src=None, cache=None):
    """Why the native runner cannot be had here, or None (it is built, or can be built)."""
    if is_built(src, cache):
        return None
    missing = missing_tools()
    if missing:
        return f"it is not built yet and building it needs {' and '.join(missing)}"
    folder = cache or cache_root()
    while not os.path.exists(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    if not os.access(folder, os.W_OK):
        return f"it is not built yet and its cache folder cannot be written ({folder}; set {CACHE_ENV})"
    return None


def load(src=None, cache=None, *, verbose=False, log=sys.stderr):
    """The extension module, built first if needed (a one-time compile, announced on ``log``)."""
    name, folder, library, stamp = _paths(src, cache)
    if library in _loaded:
        return _loaded[library]
    if os.path.isfile(stamp) and os.path.isfile(library):
        module = _import(name, library)
    else:
        module = _build(name, folder, src, verbose, log)
    _loaded[library] = module
    return module


def _import(name, library):
    spec = importlib.util.spec_from_file_location(name, library)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(name, folder, src, verbose, log):
    """Compile into a folder of this process's own, then rename it to ``folder``: a build killed at any
    moment (its compiler may run on) leaves ``folder`` absent or whole, never half-built or locked."""
    missing = missing_tools()
    if missing:
        raise NativeBuildError(f"backend 'native': the runner is not built yet ({folder}) and building it needs "
                               f"{' and '.join(missing)}")
    from torch.utils.cpp_extension import load as cpp_load

    with _build_lock(folder, log):
        if os.path.isfile(os.path.join(folder, "BUILT")):   # built by the process this one waited for
            return _import(name, os.path.join(folder, name + ".so"))
        work = _work_folder(folder)
        print(f"manualnn: compiling the native CPU runner (once, about 30 s; 'manualnn build-native' does it ahead "
              f"of time) into {folder} ...", file=log, flush=True)
        started = time.perf_counter()
        try:
            try:
                # (whatever shapes the library must be in build_key: a build is found by that key alone)
                module = cpp_load(name, cpu_sources(src), extra_cflags=list(EXTRA_CFLAGS + OPENMP),
                                  extra_ldflags=list(OPENMP), build_directory=work, verbose=verbose)
            except (RuntimeError, OSError, ImportError) as e:
                raise NativeBuildError(f"backend 'native': compiling {src or source_dir()} failed: {e}") from e
            with open(os.path.join(work, "BUILT"), "w") as f:
                f.write(f"built in {time.perf_counter() - started:.1f} s with torch {torch.__version__}\n")
            os.rename(work, folder)
        except BaseException:   # a failed compile, or Ctrl-C: nothing half-built stays
            shutil.rmtree(work, ignore_errors=True)
            raise
    print(f"manualnn: built the native runner in {time.perf_counter() - started:.1f} s", file=log, flush=True)
    return module


def _work_folder(folder):
    """A fresh folder for this process's compile. Under the lock, any other one was left by a killed
    build (its compiler may still be writing there): removed, as is a ``folder`` left unfinished by an
    older version of this module, which compiled in place."""
    for stale in glob.glob(glob.escape(folder) + ".building-*") + [folder]:
        shutil.rmtree(stale, ignore_errors=True)
    work = f"{folder}.building-{os.getpid()}"
    os.makedirs(work)
    return work


@contextlib.contextmanager
def _build_lock(folder, log):
    """One compile at a time per build folder: an flock on ``FOLDER.lock``. The kernel drops it when its
    holder exits or is killed, so it is never stale; a live holder is waited for (said once on ``log``),
    up to LOCK_WAIT seconds."""
    cache = os.path.dirname(folder)
    try:
        os.makedirs(cache, exist_ok=True)
        fd = os.open(folder + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise NativeBuildError(f"backend 'native': the runner is not built yet and its cache folder {cache} cannot "
                               f"be written ({e.strerror or e}); set {CACHE_ENV} to a writable folder") from None
    try:
        if not _try_lock(fd):
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            print(f"manualnn: waiting for process {holder}, which is compiling the native runner into {folder} ...",
                  file=log, flush=True)
            deadline = time.monotonic() + LOCK_WAIT
            while not _try_lock(fd):
                if time.monotonic() > deadline:
                    raise NativeBuildError(f"backend 'native': process {holder} has been compiling the runner into "
                                           f"{folder} for over {LOCK_WAIT:g} s; stop it or let it finish, then run "
                                           f"again")
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)   # who holds it, for a waiter's message
        yield
    finally:
        os.close(fd)   # releases the lock


def _try_lock(fd):
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def build_command(verbose=False):
    """``manualnn build-native``: build the runner now (or say where the existing build is). Exit status."""
    _, folder, _, _ = _paths()
    if is_built():
        print(f"manualnn build-native: already built in {folder}", file=sys.stderr)
        return 0
    try:
        load(verbose=verbose)
    except NativeBuildError as e:
        print(f"manualnn build-native: error: {e}", file=sys.stderr)
        return 2
    return 0
