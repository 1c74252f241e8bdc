"""What this checkout's setup.py declares (read from the file, not from whichever install is active)."""
import os

import setuptools

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def declared(monkeypatch):
    seen = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kw: seen.update(kw))
    monkeypatch.chdir(ROOT)
    exec(compile(open(os.path.join(ROOT, "setup.py")).read(), "setup.py", "exec"), {"__name__": "__main__"})
    return seen


def names(requirements):
    return {r.split(";")[0].replace(" ", "").split("<")[0].split(">")[0].split("=")[0] for r in requirements}


def test_the_runtime_needs_numpy_and_ninja_and_no_more_than_it_uses(monkeypatch):
    setup = declared(monkeypatch)
    # no Triton: CUDA builds of torch bring their own, and a CPU-only install cannot use it
    assert names(setup["install_requires"]) == {"torch", "numpy", "ninja"}
    test = setup["extras_require"]["test"]
    assert any("sys_platform" in r for r in test if r.startswith("triton"))   # the interpreter tests; Linux only
    assert {"scikit-learn", "pandas"} <= names(test) and names(setup["extras_require"]["sklearn"]) == {"scikit-learn"}


def test_the_test_extra_keeps_numpy_below_2_4_for_the_triton_36_interpreter(monkeypatch):
    extra = declared(monkeypatch)["extras_require"]["test"]
    assert [r for r in extra if r.startswith("numpy")] == ["numpy<2.4"]
    assert "pytest-xdist" in extra   # pyproject.toml's addopts run the suite with -n auto


def test_every_kernel_source_ships_with_the_package(monkeypatch):
    setup = declared(monkeypatch)
    assert setup["package_dir"]["manualnn.kernels"] == "kernels"
    sources = [f for f in os.listdir(os.path.join(ROOT, "kernels", "native")) if not f.startswith(".")]
    patterns = setup["package_data"]["manualnn.kernels"]
    assert sources and all(any(f.endswith(p.split("*")[-1]) for p in patterns) for f in sources), (sources, patterns)
    packages = {os.path.relpath(root, ROOT).replace(os.sep, ".") for root, _, files in os.walk(os.path.join(ROOT, "manualnn"))
                if "__init__.py" in files}
    assert packages <= set(setup["packages"]), packages - set(setup["packages"])
