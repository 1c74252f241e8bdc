from setuptools import setup

setup(
    name="manualnn",
    version="0.1.0",
    description="Small ReLU networks trained with hand-written gradients: fused Triton kernels on "
                "NVIDIA GPUs, plain PyTorch ops elsewhere.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    # kernels/ is installed as manualnn.kernels: a top-level name "kernels" would collide with
    # an unrelated package of that name.
    packages=["manualnn", "manualnn.backends", "manualnn.cli", "manualnn.training", "manualnn.kernels"],
    package_dir={"manualnn.kernels": "kernels"},
    # the native runner's C++ sources are compiled on first use (manualnn.backends.native_build), so they ship as data
    package_data={"manualnn.kernels": ["native/*.cpp", "native/*.h"]},
    # No Triton here: the CUDA builds of torch bring the Triton they were built with, and a CPU-only install
    # cannot use it (the kernels then run only under the test suite's interpreter: the test extra asks for it).
    install_requires=[
        "torch>=2.4,<3",
        "numpy",  # reading .npz data, and the Triton interpreter; torch warns on every run without it
        "ninja",  # builds the native CPU runner (torch.utils.cpp_extension)
    ],
    extras_require={
        "data": ["scikit-learn"],  # --data digits: the bundled handwritten digits (nothing is downloaded)
        "plot": ["matplotlib"],    # --plot
        "sklearn": ["scikit-learn>=1.6"],   # manualnn.MLPClassifier / MLPRegressor
        "fast-csv": ["pandas>=3"],  # big CSV files read by pandas' C parser, ~3x numpy's (manualnn/csvfast.py)
        # triton: the kernels' tests run under its CPU interpreter; numpy < 2.4: Triton 3.6's interpreter needs it;
        # matplotlib: the bench smoke test writes a plot; scikit-learn: the digits tests, README examples and the
        # estimators; pandas: the estimators' DataFrame tests (scikit-learn's own checks skip theirs without it)
        # pytest-xdist: the suite runs on every core (pyproject.toml's -n auto), half the time on two
        "test": ["pytest>=7", "pytest-xdist", "triton>=3.6; sys_platform == 'linux'", "numpy<2.4", "matplotlib",
                 "scikit-learn>=1.6", "pandas"],
        # statsmodels, palmerpenguins: data sets of the real-data suite (bundled in the packages)
        "bench": ["matplotlib", "scikit-learn", "statsmodels", "palmerpenguins"],
    },
    entry_points={"console_scripts": ["manualnn=manualnn._entry:run"]},
)
