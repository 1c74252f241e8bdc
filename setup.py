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
    packages=["manualnn", "manualnn.backends", "manualnn.kernels"],
    package_dir={"manualnn.kernels": "kernels"},
    install_requires=[
        "torch>=2.4,<3",
        "triton>=3.0; sys_platform == 'linux'",
    ],
    extras_require={
        # numpy: the Triton interpreter (Triton 3.6's needs numpy < 2.4); matplotlib: the bench smoke test
        "test": ["pytest>=7", "numpy<2.4", "matplotlib"],
        "bench": ["matplotlib", "numpy"],
    },
    entry_points={"console_scripts": ["manualnn=manualnn.cli:main"]},
)
