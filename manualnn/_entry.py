"""The console script's entry: a Ctrl-C at any point, torch's import included, ends quietly.

While torch imports, a KeyboardInterrupt raised inside its C++ start-up can abort the process
(std::terminate) or be swallowed, so SIGINT is only recorded until the imports are done; then a
recorded Ctrl-C ends the run with exit 130 before any work starts.
"""
import os
import signal
import sys


def main(argv=None):
    if "RANK" in os.environ:   # a torchrun rank: the CLI reports a lost rank itself, without torch's C++ stack dumps
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    interrupted = []
    try:
        previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    except ValueError:   # not the main thread: signals cannot be handled here anyway
        previous = None
    try:
        from .cli import main as cli_main
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    try:
        if interrupted:
            raise KeyboardInterrupt
        return cli_main(argv)
    except KeyboardInterrupt:   # the CLI handles its own during training; this covers start-up
        print("manualnn: interrupted", file=sys.stderr)
        return 130


def run():
    code = main()
    # The run is over and written: a Ctrl-C from here on (the interpreter's teardown, its atexit callbacks
    # and torch's finalizers) could only print a traceback over a finished run, so it is ignored.
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:   # not the main thread
        pass
    sys.exit(code)
