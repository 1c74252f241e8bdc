"""The benchmarks: ``python -m benchmarks.<name>`` (README, "Benchmarks")."""
# an argparse type for counts of steps, rounds, repeats and rows: a whole number of 1 or more (the CLI's own)
from manualnn.cli.options import positive_int as at_least_one  # noqa: F401
from manualnn.cli.signals import silence_stdout


def run_main(main):
    """A benchmark's exit status: ``main()``'s, or 141 when stdout's reader went away (``| head``): then
    quietly, as Unix tools stop, with every file the benchmark had written kept (they are written before
    its table is printed)."""
    try:
        return main()
    except BrokenPipeError:
        silence_stdout()
        return 141
