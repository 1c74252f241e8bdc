"""The command line: ``manualnn train`` (also ``python -m manualnn train``).

With no options it runs the seed: 100 x 1000 -> 100 -> 10, 20 epochs, lr 1e-6, printing
``Epoch:{i}, Loss:{loss:.4f}`` once per epoch on stdout and nothing else there. Errors, progress
and messages go to stderr.
"""
import argparse
import json
import os
import platform
import secrets
import sys
import tempfile
import time

import torch

from . import __version__
from ._checks import BACKENDS, GRAD_MODES, PRECISIONS
from .backends import BackendUnavailableError
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import data_checksum, seed_data
from .trainer import NonFiniteLossError, Trainer

DTYPES = {"float32": torch.float32, "float64": torch.float64}
# The seed's run; options left at None take these (or, with --resume, the checkpoint's values).
SEED_DEFAULTS = {"batch": 100, "features": 1000, "hidden": [100], "out": 10, "epochs": 20, "lr": 1e-6,
                 "grad": "relu", "dtype": "float32"}
# What a resumed run must share with the run that wrote the checkpoint.
RUN_IDENTITY = ("batch", "features", "hidden", "out", "lr", "grad", "dtype", "seed")


class UsageError(Exception):
    pass


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="manualnn", description="Train small ReLU networks with hand-written gradients.")
    parser.add_argument("--version", action="version", version=f"manualnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    t = sub.add_parser(
        "train", help="train the seed's network (the default job)",
        description="Train x[batch, features] -> hidden (ReLU) ... -> out with sum-of-squares loss and SGD, "
                    "printing 'Epoch:{i}, Loss:{loss:.4f}' on stdout. With no options: the seed tutorial's run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--batch", type=positive_int, help="samples per batch (default 100)")
    t.add_argument("--features", type=positive_int, help="input features (default 1000)")
    t.add_argument("--hidden", type=positive_int, nargs="+", metavar="WIDTH",
                   help="hidden layer widths, one per hidden layer (default 100)")
    t.add_argument("--out", type=positive_int, help="outputs (default 10)")
    t.add_argument("--epochs", type=int, help="total epochs; with --resume, the total to reach (default 20)")
    t.add_argument("--lr", type=float, help="SGD learning rate (default 1e-6)")
    t.add_argument("--grad", choices=GRAD_MODES,
                   help="'relu': the correct ReLU backward (= autograd); 'tutorial': the seed's clamp of the "
                        "gradient's values (default relu)")
    t.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto: triton on CUDA when available, native on the CPU once built "
                        "(manualnn build-native), else torch")
    t.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:N")
    t.add_argument("--dtype", choices=sorted(DTYPES), help="tensor dtype (default float32)")
    t.add_argument("--precision", choices=PRECISIONS, default="ieee",
                   help="matmul precision of the triton backend: ieee fp32, tf32, or bf16 operands")
    t.add_argument("--seed", type=int,
                   help="torch.manual_seed(S), then x, y, w1, w2... drawn with torch.randn as the seed does "
                        "(default: a random seed, recorded in --json and --save)")
    t.add_argument("--log-every", type=positive_int, default=1, metavar="N", help="print every N-th epoch")
    t.add_argument("--json", metavar="PATH", help="write config, per-epoch losses, timing, device, versions")
    t.add_argument("--save", metavar="PATH", help="write a checkpoint at the end (atomically)")
    t.add_argument("--save-every", type=positive_int, metavar="N", help="with --save, also every N epochs")
    t.add_argument("--resume", metavar="PATH", help="continue the run in this checkpoint up to --epochs")
    nb = sub.add_parser("build-native", help="compile the native CPU runner now (once; later runs load it)",
                        description="Compile the native CPU runner (kernels/native/*.cpp) into its cache folder, "
                                    "$MANUALNN_NATIVE_CACHE or ~/.cache/manualnn/native.")
    nb.add_argument("--verbose", action="store_true", help="show the compiler's commands and output")
    sub.add_parser("bench", add_help=False, help="the side-by-side benchmark (python -m benchmarks.run; "
                                                 "needs a source checkout); options: manualnn bench --help")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        return bench_command(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command == "build-native":
        from .native import build_command
        return build_command(verbose=args.verbose)
    try:
        return train_command(args)
    except UsageError as e:
        print(f"manualnn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"manualnn {args.command}: interrupted (a checkpoint written by --save-every is intact)",
              file=sys.stderr)
        return 130


def bench_command(argv):
    """A thin entry to the benchmark harness, which lives in the source tree's benchmarks/ folder."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.isfile(os.path.join(root, "benchmarks", "run.py")):
        print(f"manualnn bench: error: the benchmark harness is not here ({root}/benchmarks/run.py); "
              f"it ships with a source checkout (pip install -e .)", file=sys.stderr)
        return 2
    if root not in sys.path:
        sys.path.insert(0, root)
    from benchmarks.run import main as bench_main
    return bench_main(argv)


def resolve_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device: expected auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device: {name!r} was asked for but no CUDA device is available here")
    return device


def run_config(args):
    """The run's identity: the options, or with --resume the checkpoint's (conflicts are errors)."""
    config, checkpoint = {}, None
    if args.resume:
        try:
            checkpoint = load_checkpoint(args.resume)
        except CheckpointError as e:
            raise UsageError(f"--resume: {e}") from None
        config = dict(checkpoint.config)
        for key in RUN_IDENTITY:
            given = getattr(args, key)
            if key not in config:
                raise UsageError(f"--resume: checkpoint {args.resume!r} has no {key!r} in its config; "
                                 f"it was not written by 'manualnn train'")
            if given is not None and given != config[key]:
                raise UsageError(f"--{key}: the checkpoint's run used {config[key]!r}, got {given!r}; "
                                 f"a resumed run keeps its settings")
    for key, default in SEED_DEFAULTS.items():
        given = getattr(args, key)
        config[key] = given if given is not None else config.get(key, default)
    if config.get("seed") is None:
        config["seed"] = args.seed if args.seed is not None else secrets.randbits(63)
    return config, checkpoint


def train_command(args):
    config, checkpoint = run_config(args)
    device = resolve_device(args.device)
    if args.save_every and not args.save:
        raise UsageError("--save-every: needs --save PATH")
    try:
        x, y, weights = seed_data(config["seed"], batch=config["batch"], features=config["features"],
                                  hidden=config["hidden"], out=config["out"], device=device,
                                  dtype=DTYPES[config["dtype"]])
        trainer = Trainer(x, y, weights, lr=config["lr"], grad=config["grad"], backend=args.backend,
                          precision=args.precision)
    except (ValueError, TypeError, BackendUnavailableError) as e:
        raise UsageError(str(e)) from None
    config["checksum"] = data_checksum(x, y)
    if checkpoint is not None:
        if checkpoint.config.get("checksum") != config["checksum"]:
            raise UsageError(f"--resume: the data regenerated from seed {config['seed']} differs from the "
                             f"checkpoint's (another torch version's RNG?); cannot resume exactly")
        try:
            trainer.load_state_dict({"weights": checkpoint.weights, "epoch": checkpoint.epoch,
                                     "losses": checkpoint.losses})
        except ValueError as e:
            raise UsageError(f"--resume: {e}") from None
    remaining = config["epochs"] - trainer.epoch
    if checkpoint is None and remaining < 1:
        raise UsageError(f"--epochs: expected an integer >= 1, got {config['epochs']}")
    if remaining < 1:
        raise UsageError(f"--epochs: expected a total above the {trainer.epoch} epochs the checkpoint has done, "
                         f"got {config['epochs']}")

    log_every = args.log_every
    chunk = min(log_every, args.save_every or log_every)
    progress = Progress(config["epochs"]) if sys.stderr.isatty() and log_every > 1 else None
    if progress:
        chunk = min(chunk, max(1, config["epochs"] // 100))
    last_epoch = config["epochs"] - 1

    def on_chunk(first, losses):
        if progress:
            progress.clear()
        for i, loss in enumerate(losses, start=first):
            if i % log_every == 0 or i == last_epoch:
                print(f"Epoch:{i}, Loss:{loss:.4f}")
        sys.stdout.flush()
        if args.save_every and (first + len(losses)) // args.save_every > first // args.save_every:
            save(trainer, args.save, config)
        if progress:
            progress.show(first + len(losses), losses[-1])

    status, message = "ok", None
    started = time.perf_counter()
    start_epoch = trainer.epoch
    try:
        trainer.run(remaining, every=chunk, callback=on_chunk)
    except NonFiniteLossError as e:
        status, message = "diverged", str(e)
    seconds = time.perf_counter() - started
    if progress:
        progress.clear()
    if args.save:
        save(trainer, args.save, config)
    if args.json:
        write_json(args.json, trainer, config, args, status, message, seconds, start_epoch)
    if status != "ok":
        print(f"manualnn train: {message}", file=sys.stderr)
        return 1
    return 0


def save(trainer, path, config):
    state = trainer.state_dict()
    save_checkpoint(path, weights=state["weights"], epoch=state["epoch"], losses=state["losses"],
                    config=config)


def versions():
    out = {"python": platform.python_version(), "torch": torch.__version__, "manualnn": __version__}
    try:
        import triton
        out["triton"] = triton.__version__
    except ImportError:
        out["triton"] = None
    return out


def device_info(device):
    if device.type == "cuda":
        return {"type": "cuda", "name": torch.cuda.get_device_name(device)}
    return {"type": device.type, "name": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads()}


def write_json(path, trainer, config, args, status, message, seconds, start_epoch):
    losses = trainer.losses
    epochs_run = trainer.epoch - start_epoch
    record = {
        "config": {**config, "backend": trainer.backend_name, "precision": args.precision,
                   "device": str(trainer.device)},
        "status": status, "message": message,
        "start_epoch": start_epoch, "epochs_run": epochs_run, "losses": losses,
        "timing": {"seconds": seconds, "seconds_per_epoch": seconds / epochs_run if epochs_run else None},
        "device": device_info(trainer.device), "versions": versions(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


class Progress:
    """One self-rewriting line on stderr; only used when stderr is a terminal."""

    def __init__(self, total):
        self.total, self.started = total, time.perf_counter()

    def show(self, done, loss):
        rate = done / max(time.perf_counter() - self.started, 1e-9)
        sys.stderr.write(f"\r  epoch {done}/{self.total}  loss {loss:.6g}  {rate:.1f} epochs/s")
        sys.stderr.flush()

    def clear(self):
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
