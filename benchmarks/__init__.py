"""The benchmarks: ``python -m benchmarks.<name>`` (README, "Benchmarks")."""
import contextlib
import os
import sys

# an argparse type for counts of steps, rounds, repeats and rows: a whole number of 1 or more (the CLI's own)
from manualnn.cli.options import positive_int as at_least_one  # noqa: E402,F401


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
