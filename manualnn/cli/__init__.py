"""The command line: ``manualnn train``, ``manualnn predict`` and ``manualnn build-native``.

With no options ``manualnn train`` runs the seed: 100 x 1000 -> 100 -> 10, 20 epochs, lr 1e-6,
printing ``Epoch:{i}, Loss:{loss:.4f}`` once per epoch on stdout and nothing else there. With
``--data`` it trains on a file or on scikit-learn's digits. Errors, progress and messages go to
stderr, each a single line; a mistake of the user's never shows a traceback.
"""
import sys
import warnings

from .config import UsageError

OUT_OF_MEMORY = ("out of memory", "can't allocate memory", "not enough memory", "failed to allocate")
from .options import build_parser


def main(argv=None):
    with warnings.catch_warnings():   # a warning is one line on stderr, as every message here is
        warnings.showwarning = lambda message, *_, **__: print(f"manualnn: warning: {message}", file=sys.stderr)
        return _main(argv)


def _main(argv):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command == "build-native":
        from ..backends.native_build import build_command
        return build_command(verbose=args.verbose)
    try:
        if args.command == "predict":
            from .predict import predict_command
            return predict_command(args)
        from .train import train_command
        return train_command(args)
    except UsageError as e:
        print(f"manualnn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:   # torch.OutOfMemoryError is a RuntimeError
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if not isinstance(e, MemoryError) and not any(s in text.lower() for s in OUT_OF_MEMORY):
            raise
        advice = "a smaller --hidden, --batch-size or data set" if args.command == "train" else "fewer rows in --data"
        print(f"manualnn {args.command}: error: out of memory ({text[:300] or type(e).__name__}); try {advice}",
              file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (e.g. '| head'): stop quietly, as Unix tools do
        from .signals import STDOUT_CLOSED, silence_stdout
        silence_stdout()
        return STDOUT_CLOSED
    except KeyboardInterrupt:
        print(f"manualnn {args.command}: interrupted", file=sys.stderr)
        return 130
