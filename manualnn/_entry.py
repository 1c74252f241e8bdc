"""The console script's entry: a Ctrl-C at any point, torch's import included, ends quietly."""
import os
import sys


def main(argv=None):
    if "RANK" in os.environ:   # a torchrun rank: the CLI reports a lost rank itself, without torch's C++ stack dumps
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    try:
        # numpy first: when torch imports it from C, a Ctrl-C landing inside is silently swallowed
        import numpy  # noqa: F401
        from .cli import main as cli_main
        return cli_main(argv)
    except KeyboardInterrupt:   # the CLI handles its own during training; this covers start-up
        print("manualnn: interrupted", file=sys.stderr)
        return 130


def run():
    sys.exit(main())
