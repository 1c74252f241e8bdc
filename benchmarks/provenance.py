"""Where numbers come from: machine, package versions, BLAS threads, git commit; torch is not imported here."""
import importlib.metadata
import os
import platform
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))


def machine_name():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu} ({os.cpu_count()} logical CPUs)"


def git_commit():
    try:   # "+dirty": tracked files differed from the commit when the numbers were taken
        return subprocess.run(["git", "describe", "--always", "--abbrev=7", "--dirty=+dirty"], capture_output=True,
                              text=True, timeout=10, cwd=HERE).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def versions():
    """Package versions read from their metadata (cli mode keeps torch out of the harness's process)."""
    out = {"python": platform.python_version()}
    for key, dist in (("torch", "torch"), ("manualnn", "manualnn"), ("sklearn", "scikit-learn"),
                      ("numpy", "numpy"), ("threadpoolctl", "threadpoolctl"), ("triton", "triton")):
        try:
            out[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[key] = None
    return out


def blas_info():
    """[{api, library, threads}] for the thread pools threadpoolctl sees in this process."""
    from threadpoolctl import threadpool_info
    return [{"api": p.get("internal_api"), "library": os.path.basename(p.get("filepath", "")),
             "threads": p.get("num_threads")} for p in threadpool_info()]


def loadavg():
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
