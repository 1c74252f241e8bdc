"""The command line: ``manualnn train``, ``manualnn predict`` and ``manualnn bench``.

With no options ``manualnn train`` runs the seed: 100 x 1000 -> 100 -> 10, 20 epochs, lr 1e-6,
printing ``Epoch:{i}, Loss:{loss:.4f}`` once per epoch on stdout and nothing else there. With
``--data`` it trains on a file or on scikit-learn's digits, with mini-batches and a validation
split. Errors, progress and messages go to stderr.
"""
import argparse
import json
import math
import os
import platform
import secrets
import sys
import tempfile
import time

import torch

from . import __version__, distributed
from ._checks import BACKENDS, GRAD_MODES, PRECISIONS
from .backends import BackendUnavailableError
from .checkpoint import CheckpointError, atomic_open, load_checkpoint, save_checkpoint
from .data import INITS, TASKS, DataError, data_checksum, init_weights, load_data, seed_data, split
from .trainer import NonFiniteLossError, Trainer, evaluate

DTYPES = {"float32": torch.float32, "float64": torch.float64}
# The seed's run; options left at None take these (or, with --resume, the checkpoint's values).
SEED_DEFAULTS = {"batch": 100, "features": 1000, "hidden": [100], "out": 10, "epochs": 20, "lr": 1e-6,
                 "grad": "relu", "dtype": "float32", "init": "randn", "batch_size": None, "shuffle": True,
                 "val_split": 0.0}
# A run on --data: a network, init and step size that train on problems other than the seed's.
DATA_DEFAULTS = {"hidden": [256], "epochs": 200, "lr": 5e-4, "grad": "relu", "dtype": "float32",
                 "init": "kaiming", "batch_size": 32, "shuffle": True, "val_split": 0.2, "target_cols": 1,
                 "task": "auto", "standardize": None}   # standardize: on for files, off for digits (pre-scaled)
# What a resumed run must share with the run that wrote the checkpoint.
SEED_IDENTITY = ("batch", "features", "hidden", "out", "lr", "grad", "dtype", "seed", "init", "batch_size",
                 "shuffle", "val_split", "backend", "precision")
DATA_IDENTITY = ("hidden", "lr", "grad", "dtype", "seed", "init", "batch_size", "shuffle", "val_split",
                 "target_cols", "task", "standardize", "backend", "precision")
# What checkpoints of manualnn 0.1 (seed problem only) ran with, by the settings added since.
LEGACY_DEFAULTS = {"init": "randn", "batch_size": None, "shuffle": True, "val_split": 0.0, "backend": "auto",
                   "precision": "ieee"}
SEED_MAX = 2 ** 63 - 1
EPILOG = ("exit status: 0 done; 1 the loss became NaN/Inf (the last finite weights are saved with --save); "
          "2 bad options or data; 3 a distributed run lost a rank; 130 interrupted (Ctrl-C); "
          "141 stdout closed early (e.g. piped into head)")


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


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def seed_int(text):
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 2**63-1, got {text!r}")
    return value


def fraction(text):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction from 0 up to (not including) 1, got {text!r}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="manualnn", description="Train small ReLU networks with hand-written gradients.", epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"manualnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    t = sub.add_parser(
        "train", help="train the seed's network (the default job), or a network on your data (--data)",
        description="Train x[N, features] -> hidden (ReLU) ... -> out with sum-of-squares loss and SGD, printing "
                    "'Epoch:{i}, Loss:{loss:.4f}' on stdout (with --data, the validation figures follow on the "
                    "same line). With no options: the seed tutorial's run on random data. Defaults marked "
                    "'seed:' apply to the random seed problem, 'data:' to --data runs.", epilog=EPILOG)
    g = t.add_argument_group("data")
    g.add_argument("--data", metavar="PATH",
                   help="train on a .npz (arrays x, y), .pt (dict with x, y) or .csv file (the last --target-cols "
                        "columns are the targets; one optional header row), or 'digits' (scikit-learn's bundled "
                        "handwritten digits; pip install \"manualnn[data]\"). Without it: the seed's random problem")
    g.add_argument("--target-cols", type=positive_int, metavar="K", help="CSV: the last K columns are targets (default 1)")
    g.add_argument("--task", choices=TASKS,
                   help="auto (default): one target column of whole numbers >= 0 (or integer y) is class labels, "
                        "trained as one-hot targets with accuracy reported; classify/regress force it")
    g.add_argument("--standardize", action=argparse.BooleanOptionalAction,
                   help="shift and scale every feature to mean 0, std 1, with statistics of the training rows "
                        "(kept in --save for predict); on for data files, off for digits (already scaled)")
    g.add_argument("--val-split", type=fraction, metavar="F",
                   help="fraction of the rows held out for validation, seeded by --seed (data: 0.2; seed: 0)")
    g.add_argument("--batch", type=positive_int,
                   help="seed problem only: how many random samples to draw (default 100); see --batch-size")
    g.add_argument("--features", type=positive_int, help="seed problem only: input features (default 1000)")
    g.add_argument("--out", type=positive_int, help="seed problem only: outputs (default 10)")
    m = t.add_argument_group("network and training")
    m.add_argument("--hidden", type=positive_int, nargs="+", metavar="WIDTH",
                   help="hidden layer widths, one per hidden layer (seed: 100; data: 256)")
    m.add_argument("--init", choices=INITS,
                   help="randn: the seed's unscaled torch.randn; kaiming: He-normal, std sqrt(2/fan_in) "
                        "(seed: randn; data: kaiming)")
    m.add_argument("--epochs", type=int, help="total epochs; with --resume, the total to reach (seed: 20; data: 200)")
    m.add_argument("--lr", type=float, help="SGD learning rate on the summed loss (seed: 1e-6; data: 5e-4)")
    m.add_argument("--batch-size", type=positive_int, metavar="B",
                   help="rows per SGD step; an epoch is ceil(N/B) steps, its loss the sum of theirs "
                        "(seed: all rows, one step; data: 32)")
    m.add_argument("--no-shuffle", action="store_true",
                   help="take the batches in row order (default: each epoch's order drawn from --seed)")
    m.add_argument("--grad", choices=GRAD_MODES,
                   help="relu (default): the correct ReLU backward (= autograd); tutorial: the seed's clamp of "
                        "the gradient's values")
    m.add_argument("--seed", type=seed_int,
                   help="seed problem: torch.manual_seed(S), then x, y, w1, w2... drawn with torch.randn as the "
                        "seed does; data: the weights, the split and the shuffle (default: a random seed, "
                        "recorded in --json and --save)")
    r = t.add_argument_group("running")
    r.add_argument("--backend", choices=BACKENDS,
                   help="auto (default): triton on CUDA when available, else torch; native: the compiled CPU "
                        "runner (built once, see manualnn build-native)")
    r.add_argument("--device", default="auto", help="auto (default: cuda if available, else cpu), cpu, cuda, cuda:N")
    r.add_argument("--dtype", choices=sorted(DTYPES), help="tensor dtype (default float32)")
    r.add_argument("--no-graph", action="store_true",
                   help="on CUDA, step eagerly instead of replaying chunks of epochs as CUDA graphs")
    r.add_argument("--timeout", type=positive_float, default=distributed.DEFAULT_TIMEOUT, metavar="SECONDS",
                   help="under torchrun: how long a rank waits for the others in one exchange before it stops "
                        "with an error naming the missing rank (default %(default)g)")
    r.add_argument("--precision", choices=PRECISIONS,
                   help="matmul precision of the triton backend: ieee fp32 (default), tf32, or bf16 operands")
    o = t.add_argument_group("output")
    o.add_argument("--log-every", type=positive_int, default=1, metavar="N",
                   help="print every N-th epoch and the last (default 1)")
    o.add_argument("--json", metavar="PATH", help="write config, per-epoch losses, timing, device, versions")
    o.add_argument("--plot", metavar="PATH", help="write a PNG of the loss (and accuracy) per epoch "
                                                  "(pip install \"manualnn[plot]\")")
    o.add_argument("--save", metavar="PATH", help="write a checkpoint at the end (atomically)")
    o.add_argument("--save-every", type=positive_int, metavar="N", help="with --save, also every N epochs")
    o.add_argument("--resume", metavar="PATH", help="continue the run in this checkpoint up to --epochs")

    p = sub.add_parser("predict", help="score a saved model on data, or write its predictions",
                       description="Load a checkpoint written by 'manualnn train --save' and run it on --data: "
                                   "prints the loss (and accuracy for class labels) when the data has targets; "
                                   "--output writes the predictions.", epilog=EPILOG)
    p.add_argument("--model", metavar="PATH", required=True, help="a checkpoint written by manualnn train --save")
    p.add_argument("--data", metavar="PATH", required=True,
                   help="'digits', or a .npz/.pt/.csv file (targets optional: a CSV with exactly the model's "
                        "input width has none)")
    p.add_argument("--output", metavar="PATH", help="write predictions to a .csv, .npz or .pt file")
    p.add_argument("--target-cols", type=positive_int, metavar="K", help="CSV: the last K columns are targets "
                                                                         "(default: as in training)")
    p.add_argument("--task", choices=TASKS, help="as in train (default: as in training)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    nb = sub.add_parser("build-native", help="compile the native CPU runner now (once; later runs load it)",
                        description="Compile the native CPU runner (kernels/native/*.cpp) into its cache folder, "
                                    "$MANUALNN_NATIVE_CACHE or ~/.cache/manualnn/native.")
    nb.add_argument("--verbose", action="store_true", help="show the compiler's commands and output")
    sub.add_parser("bench", add_help=False, help="the side-by-side benchmark (needs a source checkout); "
                                                 "options: manualnn bench --help")
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
        if args.command == "predict":
            return predict_command(args)
        return train_command(args)
    except UsageError as e:
        print(f"manualnn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (e.g. '| head'): stop quietly, as Unix tools do
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141
    except KeyboardInterrupt:
        saved = getattr(args, "_saved_epoch", None)
        note = f" (the checkpoint {args.save!r} written by --save-every at epoch {saved} is intact)" if saved else ""
        print(f"manualnn {args.command}: interrupted{note}", file=sys.stderr)
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
    # results go under the current folder, never over the committed ones in the source tree
    return bench_main(argv, prog="manualnn bench", default_out=os.path.join(os.getcwd(), "manualnn-bench"))


def resolve_device(name, option="--device"):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"{option}: expected auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"{option}: manualnn trains on cpu or cuda devices, got {name!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"{option}: {name!r} was asked for but no CUDA device is available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"{option}: {name!r} was asked for but there are {torch.cuda.device_count()} CUDA devices")
    return device


def check_writable(option, path):
    """Fail before training, not after it, when an output path cannot be written."""
    if path is None:
        return
    if os.path.isdir(path):
        raise UsageError(f"{option}: {path!r} is a folder; expected a file path")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{option}: cannot write {path!r}: the folder {folder!r} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".probe", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UsageError(f"{option}: cannot write {path!r}: {e.strerror or e}") from None


def run_config(args):
    """The run's identity: the options, or with --resume the checkpoint's (conflicts are errors)."""
    config, checkpoint = {}, None
    given = {key: getattr(args, key, None) for key in set(SEED_IDENTITY) | set(DATA_IDENTITY)}
    given["shuffle"] = False if args.no_shuffle else None
    if args.resume:
        try:
            checkpoint = load_checkpoint(args.resume)
        except CheckpointError as e:
            raise UsageError(f"--resume: {e}") from None
        config = dict(checkpoint.config)
        for key, value in LEGACY_DEFAULTS.items():  # checkpoints written before these options existed
            if "seed" in config:
                config.setdefault(key, value)
        identity = DATA_IDENTITY if config.get("data") is not None else SEED_IDENTITY
        if config.get("data") is None and args.data is not None:
            raise UsageError("--data: the checkpoint's run trained the seed's random problem, not a data set; "
                             "a resumed run keeps its data")
        for key in identity:
            if key not in config:
                raise UsageError(f"--resume: checkpoint {args.resume!r} has no {key!r} in its config; "
                                 f"it was not written by this version of 'manualnn train'")
            if given[key] is not None and given[key] != config[key]:
                option = "--no-shuffle" if key == "shuffle" else "--" + key.replace("_", "-")
                raise UsageError(f"{option}: the checkpoint's run used {config[key]!r}, got {given[key]!r}; "
                                 f"a resumed run keeps its settings")
    # a given --data may name the checkpoint's data at another path: the data's hash must still match
    data = args.data if args.data is not None else config.get("data")
    if data is not None:
        for option in ("batch", "features", "out"):
            if getattr(args, option) is not None:
                raise UsageError(f"--{option}: sets the seed problem's random data; with --data the data "
                                 f"decides it (see --batch-size for the rows per step)")
        defaults = DATA_DEFAULTS
    else:
        for option in ("target_cols", "task", "standardize"):
            if getattr(args, option) is not None:
                raise UsageError(f"--{option.replace('_', '-')}: applies to --data only")
        defaults = SEED_DEFAULTS
    config["data"] = data
    for key, default in defaults.items():
        value = given.get(key) if key in given else getattr(args, key, None)
        config[key] = value if value is not None else config.get(key, default)
    config["backend"] = args.backend or config.get("backend", "auto")
    config["precision"] = args.precision or config.get("precision", "ieee")
    if config.get("seed") is None:
        config["seed"] = args.seed if args.seed is not None else secrets.randbits(63)
    return config, checkpoint


def build_problem(config, device):
    """(x, y, weights, val_data) for the seed's random problem or for --data."""
    dtype = DTYPES[config["dtype"]]
    if config["data"] is None:
        x, y, weights = seed_data(config["seed"], batch=config["batch"], features=config["features"],
                                  hidden=config["hidden"], out=config["out"], device=device, dtype=dtype,
                                  init=config["init"])
        x_val = y_val = None
        if config["val_split"]:
            x, y, x_val, y_val = split(x, y, config["val_split"], config["seed"])
        return x, y, weights, (x_val, y_val), data_checksum(x, y)
    try:
        dataset = load_data(config["data"], target_cols=config["target_cols"], task=config["task"])
    except DataError as e:
        raise UsageError(f"--data: {e}") from None
    x, y = dataset.x, dataset.y
    checksum = data_checksum(x, y)
    config["features"], config["out"] = x.shape[1], dataset.out
    config["classes"] = dataset.classes
    config["task_used"] = "classify" if dataset.classes else "regress"   # what predict must do again
    x_train, y_train, x_val, y_val = split(x, y, config["val_split"], config["seed"])
    if config["standardize"] is None:
        config["standardize"] = config["data"] != "digits"
    if config["standardize"]:
        mean, std = x_train.mean(0), x_train.std(0, unbiased=False)
        std = torch.where(std > 0, std, torch.ones_like(std))   # a constant feature is only shifted
        config["x_mean"], config["x_std"] = mean.tolist(), std.tolist()
        x_train, x_val = standardize(x_train, config), standardize(x_val, config)
    sizes = [x.shape[1], *config["hidden"], dataset.out]
    # the split above used its own generator: the weights come from the seed alone
    weights = init_weights(sizes, config["init"], generator=torch.Generator().manual_seed(config["seed"]))
    to = lambda t: None if t is None else t.to(device, dtype if t.is_floating_point() else t.dtype)  # noqa: E731
    return to(x_train), to(y_train), [to(w) for w in weights], (to(x_val), to(y_val)), checksum


def standardize(x, config):
    """x with the training rows' feature statistics applied (as stored in a run's config)."""
    if x is None or not config.get("standardize"):
        return x
    mean = torch.tensor(config["x_mean"], dtype=x.dtype)
    std = torch.tensor(config["x_std"], dtype=x.dtype)
    return (x - mean) / std


API_TO_OPTION = {"lr": "--lr", "val_split": "--val-split", "batch_size": "--batch-size", "epochs": "--epochs"}


def as_option(message):
    """An API error ("lr: expected ...") as the option the user typed ("--lr: expected ...")."""
    name, sep, rest = message.partition(": ")
    return f"{API_TO_OPTION[name]}: {rest}" if sep and name in API_TO_OPTION else message


def epoch_line(i, loss, val_loss=None, val_acc=None):
    line = f"Epoch:{i}, Loss:{loss:.4f}"
    if val_loss is not None:
        line += f", Val loss:{val_loss:.4f}"
    if val_acc is not None:
        line += f", Val accuracy:{val_acc:.4f}"
    return line


def train_command(args):
    """Train on one process, or as one rank of a torchrun launch (data parallel, see distributed.py)."""
    rank, multi = 0, distributed.launched()
    device = None
    if multi:
        device = start_distributed(args)
        rank = torch.distributed.get_rank()
    try:
        error, run = None, None
        try:
            run = prepare_run(args, device, rank)
        except UsageError as e:
            if not multi:
                raise
            error = str(e)
        if multi:   # every rank checks every other's settings and data before any step
            try:
                distributed.agree(run.fingerprint() if run else {}, error)
            except distributed.DistributedError as e:
                raise UsageError(str(e)) from None
        return train_loop(args, run, rank)
    except RuntimeError as e:
        if not multi or isinstance(e, NonFiniteLossError):
            raise
        print(f"manualnn train: {distributed.describe_failure(e)}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        # the process group is broken: tearing it down (even at interpreter exit) can hang or abort
        os._exit(3)
    finally:
        if multi:
            distributed.shutdown()


def start_distributed(args):
    """Join torchrun's process group; agree on a seed if none was given. Returns this rank's device."""
    if args.device not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device: under torchrun every rank takes cuda:LOCAL_RANK (or the cpu); expected auto, "
                         f"cpu or cuda, got {args.device!r}")
    resolve_device(args.device)
    try:
        device = distributed.init(args.device, timeout=args.timeout)
    except distributed.DistributedError as e:
        raise UsageError(str(e)) from None
    except RuntimeError as e:   # the rendezvous failed (another rank never came, or the port is taken)
        raise UsageError(f"could not join the other ranks: {str(e).splitlines()[0][:300]}") from None
    if args.seed is None and not args.resume:   # one random seed for all ranks, drawn by rank 0
        seed = [secrets.randbits(63)]
        torch.distributed.broadcast_object_list(seed, src=0)
        args.seed = seed[0]
    return device


class PreparedRun:
    """What a training run needs after its options are checked: config, checkpoint, data, trainer."""

    def __init__(self, config, checkpoint, trainer, train_rows, val_rows):
        self.config, self.checkpoint, self.trainer = config, checkpoint, trainer
        self.train_rows, self.val_rows = train_rows, val_rows

    def fingerprint(self):
        """What every rank of a distributed run must share: settings, data and starting weights."""
        settings = {key: value for key, value in self.config.items() if key != "data"}  # paths may differ
        return {**settings, "start_epoch": self.trainer.epoch, "device_type": self.trainer.device.type,
                "backend_used": self.trainer.backend_name,
                "weights": [float(w.double().sum()) for w in self.trainer.weights], "manualnn": __version__}


def prepare_run(args, device=None, rank=0):
    config, checkpoint = run_config(args)
    device = device or resolve_device(args.device)
    if args.save_every and not args.save:
        raise UsageError("--save-every: needs --save PATH")
    if rank == 0:   # only rank 0 writes
        for option, path in (("--json", args.json), ("--save", args.save), ("--plot", args.plot)):
            check_writable(option, path)
        if args.plot:
            from .plot import PlotUnavailableError, require_matplotlib
            try:
                require_matplotlib()
            except PlotUnavailableError as e:
                raise UsageError(f"--plot: {e}") from None
    try:
        x, y, weights, (x_val, y_val), checksum = build_problem(config, device)
        trainer = Trainer(x, y, weights, lr=config["lr"], grad=config["grad"], backend=config["backend"],
                          precision=config["precision"], batch_size=config["batch_size"],
                          shuffle=config["shuffle"], shuffle_seed=config["seed"],
                          val_data=None if x_val is None else (x_val, y_val), distributed=distributed.active(),
                          graph=False if args.no_graph else None)
    except (ValueError, TypeError, BackendUnavailableError, distributed.DistributedError) as e:
        raise UsageError(as_option(str(e))) from None
    config["checksum"] = checksum
    if checkpoint is not None:
        if not same_data(checkpoint.config.get("checksum"), config["checksum"], x, y):
            what = f"the data in {config['data']!r}" if config["data"] else f"the data regenerated from seed {config['seed']}"
            raise UsageError(f"--resume: {what} differs from the data the checkpoint was trained on; "
                             f"cannot resume exactly")
        try:
            trainer.load_state_dict({"weights": checkpoint.weights, "epoch": checkpoint.epoch,
                                     "losses": checkpoint.losses, "val_losses": checkpoint.val_losses,
                                     "val_accuracies": checkpoint.val_accuracies})
        except ValueError as e:
            raise UsageError(f"--resume: {e}") from None
    remaining = config["epochs"] - trainer.epoch
    if checkpoint is None and remaining < 1:
        raise UsageError(f"--epochs: expected an integer >= 1, got {config['epochs']}")
    if remaining < 1:
        if args.epochs is None:
            raise UsageError(f"--epochs: the checkpoint has done all {trainer.epoch} epochs of its run; give "
                             f"--epochs N with N above {trainer.epoch} to train further")
        raise UsageError(f"--epochs: expected a total above the {trainer.epoch} epochs the checkpoint has done, "
                         f"got {config['epochs']}")
    return PreparedRun(config, checkpoint, trainer, x.shape[0], 0 if x_val is None else x_val.shape[0])


def train_loop(args, run, rank=0):
    """Train to --epochs; rank 0 prints the lines and writes --save, --json and --plot."""
    config, trainer = run.config, run.trainer
    remaining = config["epochs"] - trainer.epoch
    log_every = args.log_every
    progress = Progress(config["epochs"]) if rank == 0 and sys.stderr.isatty() and log_every > 1 else None
    last_epoch = config["epochs"] - 1

    def on_chunk(first, losses):
        if rank != 0:
            return
        if progress:
            progress.clear()
        val_losses = trainer.val_losses[first:] or [None] * len(losses)
        val_accs = trainer.val_accuracies[first:] or [None] * len(losses)
        for i, loss, vl, va in zip(range(first, first + len(losses)), losses, val_losses, val_accs):
            if i % log_every == 0 or i == last_epoch:
                print(epoch_line(i, loss, vl, va))
        sys.stdout.flush()
        if progress:
            progress.show(first + len(losses), losses[-1])

    status, message = "ok", None
    started = time.perf_counter()
    start_epoch = trainer.epoch
    try:
        run_in_chunks(trainer, remaining, on_chunk, args, config)
    except NonFiniteLossError as e:
        status, message = "diverged", str(e)
    seconds = time.perf_counter() - started
    if progress:
        progress.clear()
    if args.save:
        save(trainer, args.save, config)
    if rank == 0 and args.json:
        write_json(args.json, trainer, config, status, message, seconds, start_epoch, run.train_rows, run.val_rows)
    if rank == 0 and args.plot:
        from .plot import write_training_plot
        title = f"manualnn: {config['data'] or 'seed problem'}, {config['hidden']} hidden"
        write_training_plot(args.plot, trainer.losses, trainer.val_losses, trainer.val_accuracies,
                            train_rows=run.train_rows, val_rows=run.val_rows, title=title)
    if status != "ok":
        if rank == 0:
            print(f"manualnn train: {message}", file=sys.stderr)
        return 1
    return 0


def run_in_chunks(trainer, epochs, on_chunk, args, config, target_seconds=0.25):
    """Train ``epochs`` epochs in chunks that each take about ``target_seconds``.

    The host waits for the device once per chunk (not per epoch), and the epoch lines of a chunk are
    printed together; chunks end on --save-every boundaries so checkpoints land where asked. Chunk
    lengths are powers of two, so a CUDA-graph run captures few graphs.
    """
    done, chunk = 0, 1
    while done < epochs:
        n = min(chunk, epochs - done)
        if args.save_every:
            n = min(n, args.save_every - trainer.epoch % args.save_every)
        started = time.perf_counter()
        trainer.run(n, callback=on_chunk)
        elapsed = time.perf_counter() - started
        done += n
        if args.save_every and trainer.epoch % args.save_every == 0:
            save(trainer, args.save, config)
            args._saved_epoch = trainer.epoch
        wanted = max(1, min(4 * chunk, int(n * target_seconds / max(elapsed, 1e-6))))
        chunk = 1 << (wanted.bit_length() - 1)   # a power of two: few chunk lengths, so few CUDA graphs


def predict_command(args):
    from .model import load
    device = resolve_device(args.device)
    check_writable("--output", args.output)
    if args.output and os.path.splitext(args.output)[1].lower() not in PREDICTION_FORMATS:
        raise UsageError(f"--output: expected a .csv, .npz or .pt path, got {args.output!r}")
    try:
        model = load(args.model, device=device)
    except CheckpointError as e:
        raise UsageError(f"--model: {e}") from None
    config = model.config
    target_cols = args.target_cols or config.get("target_cols", 1)
    task = args.task or config.get("task_used") or config.get("task", "auto")
    try:
        dataset = load_data(args.data, target_cols=target_cols, task=task, need_y=False,
                            features=model.sizes[0])
    except DataError as e:
        raise UsageError(f"--data: {e}") from None
    if dataset.x.shape[1] != model.sizes[0]:
        raise UsageError(f"--data: {dataset.source!r} has {dataset.x.shape[1]} feature columns; the model expects "
                         f"{model.sizes[0]}")
    x = standardize(dataset.x, config).to(device, model.weights[0].dtype)
    if dataset.y is None and not args.output:
        raise UsageError(f"--data: {dataset.source!r} has no targets to score against; give --output PATH "
                         f"to write the predictions")
    outputs = model.predict(x)
    if dataset.y is not None:
        try:
            result = evaluate(model, x, dataset.y.to(device) if dataset.classes else dataset.y.to(device, x.dtype))
        except (ValueError, TypeError) as e:
            raise UsageError(f"--data: {e}") from None
        line = f"Loss:{result.loss:.4f}"
        if result.accuracy is not None:
            line += f", Accuracy:{result.accuracy:.4f}"
        print(f"{line} ({result.samples} samples)")
    if args.output:
        classes = config.get("classes") or (model.sizes[-1] if dataset.classes else None)
        write_predictions(args.output, outputs.cpu(), classify=classes is not None)
        print(f"manualnn predict: wrote {x.shape[0]} predictions to {args.output}", file=sys.stderr)
    return 0


PREDICTION_FORMATS = (".csv", ".npz", ".pt")


def write_predictions(path, outputs, *, classify):
    """Predictions to .csv (one row per sample), .npz or .pt; atomically, like every output."""
    ext = os.path.splitext(path)[1].lower()   # one of PREDICTION_FORMATS: predict_command checked it first
    record = {"outputs": outputs}
    if classify:
        record["classes"] = outputs.argmax(1)
    with atomic_open(path, "wb") as f:
        if ext == ".pt":
            torch.save(record, f)
        elif ext == ".npz":
            import numpy as np
            np.savez(f, **{k: v.numpy() for k, v in record.items()})
        else:
            cols = (["class"] if classify else []) + [f"output_{j}" for j in range(outputs.shape[1])]
            lines = [",".join(cols)]
            for i, row in enumerate(outputs.tolist()):
                cells = ([str(int(record["classes"][i]))] if classify else []) + [repr(v) for v in row]
                lines.append(",".join(cells))
            f.write(("\n".join(lines) + "\n").encode())


def same_data(recorded, checksum, x, y):
    """Whether the data equals the checkpoint's: a hash of its bytes (0.1 checkpoints: two sums)."""
    if isinstance(recorded, list):
        return recorded == [float(x.double().sum()), float(y.double().sum())]
    return recorded == checksum


def save(trainer, path, config):
    """Write a checkpoint; in a distributed run rank 0 writes it once every rank has reached it."""
    if distributed.active():
        distributed.barrier()   # every rank finished these epochs: the weights are the run's, not one rank's
        if torch.distributed.get_rank() != 0:
            return
    state = trainer.state_dict()
    save_checkpoint(path, weights=state["weights"], epoch=state["epoch"], losses=state["losses"],
                    val_losses=state["val_losses"], val_accuracies=state["val_accuracies"], config=config)


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


def write_json(path, trainer, config, status, message, seconds, start_epoch, train_rows, val_rows):
    losses = trainer.losses
    epochs_run = trainer.epoch - start_epoch
    record = {
        "config": {**config, "backend_used": trainer.backend_name, "device": str(trainer.device)},
        "status": status, "message": message,
        "start_epoch": start_epoch, "epochs_run": epochs_run, "losses": losses,
        "val_losses": trainer.val_losses, "val_accuracies": trainer.val_accuracies,
        "rows": {"train": train_rows, "val": val_rows},
        "timing": {"seconds": seconds, "seconds_per_epoch": seconds / epochs_run if epochs_run else None},
        "device": device_info(trainer.device), "versions": versions(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with atomic_open(path, "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")


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
