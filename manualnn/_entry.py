"""The console script's entry: a Ctrl-C at any point, torch's import included, ends quietly."""
import sys


def main(argv=None):
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
