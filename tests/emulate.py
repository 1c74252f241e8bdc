"""The tf32/bf16 emulation lives beside the benchmark harness, which judges with it too."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.emulate import FACTOR, bounds_from_emulation, emulated_loop, mm, round_operand  # noqa: E402

__all__ = ["FACTOR", "bounds_from_emulation", "emulated_loop", "mm", "round_operand"]
