"""The benchmarks: ``python -m benchmarks.<name>`` (README, "Benchmarks")."""
import argparse
import contextlib
import os
import sys


def at_least_one(text):
    """An argparse type: a whole number of 1 or more (steps, rounds, repeats, rows)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text}")
    return value


def run_main(main):
    """A benchmark's exit status: ``main()``'s, or 141 when stdout's reader went away (``| head``): then
    quietly, as Unix tools stop, with every file the benchmark had written kept (they are written before
    its table is printed)."""
    try:
        return main()
    except BrokenPipeError:
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
