"""The benchmarks: ``python -m benchmarks.<name>`` (README, "Benchmarks")."""
import contextlib
import os
import sys


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
