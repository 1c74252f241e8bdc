"""The command line's options: the parser, its value types and the defaults of the two kinds of run."""
import argparse
import math

from .. import __version__
from ..checks import BACKENDS
from ..distributed import DEFAULT_TIMEOUT
from ..spec import DATA_DEFAULTS as STEP_DEFAULTS
from ..spec import (CV_FOLDS, CV_ROWS, L2_FADE_ROWS, LINEAR, PATIENCE_EPOCHS, PATIENCE_STEPS, VAL_ROWS_MIN, VAL_SPLIT,
                    WEIGHT_DECAY_ROWS)
from ..spec import SKLEARN_DEFAULTS as SKLEARN_STEP_DEFAULTS
from ..spec import DTYPES as DTYPE_NAMES
from ..spec import GRAD_MODES, INITS, LOSSES, OPTIMIZERS, PRECISIONS, REDUCTIONS, TASKS

MISSING = ("refuse", "drop", "mean")     # manualnn.missing.POLICIES (not imported: it needs numpy at start-up)
DTYPES = tuple(DTYPE_NAMES)
SEED_MAX = 2 ** 63 - 1
# The seed's run (no --data); options left at None take these (or, with --resume, the checkpoint's).
SEED_DEFAULTS = {"batch": 100, "features": 1000, "hidden": [100], "out": 10, "epochs": 20, "lr": 1e-6,
                 "grad": "relu", "dtype": "float32", "init": "randn", "batch_size": None, "shuffle": True,
                 "val_split": 0.0, "bias": False, "loss": "sse", "reduction": "sum", "optimizer": "sgd",
                 "momentum": 0.9, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0, "patience": None}
# A run on --data: the sweeps' choice (manualnn.spec.DATA_DEFAULTS; README, "How the defaults were chosen").
DATA_DEFAULTS = {"hidden": STEP_DEFAULTS["hidden"], "epochs": STEP_DEFAULTS["epochs"], "lr": STEP_DEFAULTS["lr"],
                 "grad": "relu", "dtype": "float32", "init": "kaiming", "batch_size": STEP_DEFAULTS["batch_size"],
                 "shuffle": True, "val_split": None, "target_cols": 1, "target": None, "ignore": None, "id": None,
                 "missing": "refuse", "task": "auto", "standardize": None,
                 "bias": True, "loss": None, "reduction": STEP_DEFAULTS["reduction"],
                 "optimizer": STEP_DEFAULTS["optimizer"], "momentum": 0.9, "betas": [0.9, 0.999], "eps": 1e-8,
                 "weight_decay": None, "patience": None}
# (standardize: on for files, off for digits; loss: ce for classes, sse for values; val_split, weight_decay and
# patience: from the data's rows, manualnn.spec.data_settings)
# --sklearn-defaults: scikit-learn's MLP defaults (manualnn.spec.SKLEARN_DEFAULTS) in place of the sweeps' choice.
SKLEARN_DATA_DEFAULTS = {**DATA_DEFAULTS, **{key: SKLEARN_STEP_DEFAULTS[key] for key in
                                             ("hidden", "lr", "batch_size", "epochs", "val_split")}}
TRAIN_EXITS = ("exit status: 0 done; 1 the loss became NaN/Inf (the last finite epoch is saved with --save); "
               "2 bad options or data (nothing trained); 3 a distributed run lost a rank; 4 trained, but the last "
               "--save could not be written (the run was saved elsewhere, the message says where); 130 interrupted "
               "by Ctrl-C, 143 by SIGTERM, 129 by SIGHUP, 141 stdout closed early (e.g. piped into head): with "
               "--save, the last finished epoch is saved first")
PREDICT_EXITS = ("exit status: 0 done; 2 bad options, model or data; 4 --output could not be written; 130 interrupted; "
                 "141 stdout closed early (--output - | head)")


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def number(low=None, high=None, low_open=False, high_open=False):
    """An argparse type: a finite float within the given ends."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        ok = math.isfinite(value) and (low is None or (value > low if low_open else value >= low)) \
            and (high is None or (value < high if high_open else value <= high))
        if not ok and low == 0 and low_open and high is None:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        if not ok:
            lo = "-inf" if low is None else f"{low:g}"
            hi = "inf" if high is None else f"{high:g}"
            ends = ("(" if low_open or low is None else "[") + f"{lo}, {hi}" + (")" if high_open or high is None else "]")
            raise argparse.ArgumentTypeError(f"expected a number in {ends}, got {text!r}")
        return value
    return parse


def column_list(text):
    """"species" or "a,b,3": column names or 1-based positions (told apart when the file's header is read)."""
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise argparse.ArgumentTypeError(f"expected column names or positions separated by commas, got {text!r}")
    return items


def seed_int(text):
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 2**63-1, got {text!r}")
    return value


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (the usage is a --help away), and exits 2 as before."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but an option the command does not know is that command's error (``manualnn train:
        error: unrecognized arguments: --bogus (see manualnn train --help)``), not the top level's."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            commands = getattr(self, "commands", {})
            (commands.get(getattr(parsed, "command", None)) or self).error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed


def build_parser():
    parser = Parser(prog="manualnn", description="Train small ReLU networks with hand-written gradients.")
    parser.add_argument("--version", action="version", version=f"manualnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    parser.commands = sub.choices   # (command name -> its parser: Parser.parse_args names the command)
    t = sub.add_parser(
        "train", help="train the seed's network (the default job), or a network on your data (--data)",
        description="Train x[N, features] -> hidden (ReLU) ... -> out with hand-written gradients, printing "
                    "'Epoch:{i}, Loss:{loss:.4f}' on stdout (with --data, the validation figures follow on the "
                    "same line). With no options: the seed tutorial's run on random data. Defaults marked "
                    "'seed:' apply to the random seed problem, 'data:' to --data runs.", epilog=TRAIN_EXITS)
    g = t.add_argument_group("data")
    g.add_argument("--data", metavar="PATH",
                   help="train on a .npz (arrays x, y), .pt (dict with x, y), .csv or .tsv file (the last "
                        "--target-cols columns are the targets; a header row is detected), or 'digits' "
                        "(scikit-learn's bundled handwritten digits; pip install \"manualnn[data]\"). Without it: "
                        "the seed's random problem")
    g.add_argument("--target-cols", type=positive_int, metavar="K", help="CSV: the last K columns are targets (default 1)")
    g.add_argument("--target", type=column_list, metavar="COLS",
                   help="CSV: the target column(s) by header name or 1-based position, comma-separated (instead of "
                        "--target-cols)")
    g.add_argument("--ignore", type=column_list, metavar="COLS",
                   help="CSV: columns that are not features, by name or position, comma-separated (never parsed)")
    g.add_argument("--id", metavar="COL", help="CSV: an ID column (name or position): not a feature; predict "
                                               "--output writes it beside each prediction")
    g.add_argument("--missing", choices=MISSING,
                   help="empty, NA or NaN cells: refuse (default: the rows are named), drop those rows, or mean "
                        "(fill a feature with its column's mean, kept for predict; rows without a target are "
                        "dropped)")
    g.add_argument("--task", choices=TASKS,
                   help="auto (default): classes or values by the rule in the README (the choice and its reason "
                        "are printed on stderr); classify/regress force it")
    g.add_argument("--standardize", action=argparse.BooleanOptionalAction,
                   help="scale every feature (and a regression's targets) to mean 0, std 1 with the training rows' "
                        "statistics, kept in --save for predict (on for data files; off for digits, already scaled)")
    g.add_argument("--val-split", type=number(0, 1, high_open=True), metavar="F",
                   help=f"fraction of the rows held out for validation, seeded by --seed (data: {VAL_SPLIT:g} where that "
                        f"makes {VAL_ROWS_MIN} rows or more, else 0, every row trained on; seed: 0)")
    g.add_argument("--batch", type=positive_int,
                   help="seed problem only: how many random samples to draw (default 100); see --batch-size")
    g.add_argument("--features", type=positive_int, help="seed problem only: input features (default 1000)")
    g.add_argument("--out", type=positive_int, help="seed problem only: outputs (default 10)")
    m = t.add_argument_group("network")
    m.add_argument("--hidden", type=positive_int, nargs="+", metavar="WIDTH",
                   help=f"hidden layer widths, one per hidden layer (seed: 100; data: {' '.join(map(str, STEP_DEFAULTS['hidden']))}, "
                        f"or none for values of up to {LINEAR['rows']} training rows where cross-validation prefers a line, "
                        f"with no validation split and none of --lr, --epochs, --optimizer, --reduction, --batch-size "
                        f"or --weight-decay given: it then trains {LINEAR['epochs']} epochs at lr {LINEAR['lr']:g})")
    m.add_argument("--bias", action=argparse.BooleanOptionalAction, help="biases on every layer (seed: off; data: on)")
    m.add_argument("--init", choices=INITS,
                   help="randn: the seed's unscaled torch.randn; kaiming: He-normal, std sqrt(2/fan_in) "
                        "(seed: randn; data: kaiming)")
    s = t.add_argument_group("the step")
    s.add_argument("--loss", choices=LOSSES,
                   help="sse: sum of squares; ce: softmax cross-entropy (seed: sse; data: ce for classes, sse for values)")
    s.add_argument("--reduction", choices=REDUCTIONS, help=f"sum or mean over a batch's rows (seed: sum; data: {STEP_DEFAULTS['reduction']})")
    s.add_argument("--optimizer", choices=OPTIMIZERS, help=f"sgd, momentum (heavy ball) or adam (seed: sgd; data: {STEP_DEFAULTS['optimizer']})")
    s.add_argument("--lr", type=number(0, low_open=True), help=f"learning rate (seed: 1e-6; data: {STEP_DEFAULTS['lr']:g})")
    s.add_argument("--momentum", type=number(0, 1, high_open=True), help="for --optimizer momentum (default 0.9)")
    s.add_argument("--betas", type=number(0, 1, high_open=True), nargs=2, metavar=("B1", "B2"),
                   help="Adam's betas (default 0.9 0.999)")
    s.add_argument("--eps", type=number(0, low_open=True), help="Adam's epsilon (default 1e-8)")
    s.add_argument("--weight-decay", type=number(0), metavar="L2",
                   help=f"L2 on the weights, not the biases (seed: 0; data: 0 with a validation split, else "
                        f"{WEIGHT_DECAY_ROWS['classify']:g} / training rows for classes (above {L2_FADE_ROWS['classify']} "
                        f"rows {WEIGHT_DECAY_ROWS['classify'] * L2_FADE_ROWS['classify']:g} / rows²), "
                        f"{WEIGHT_DECAY_ROWS['regress']:g} / training rows for values; from {CV_FOLDS} to {CV_ROWS - 1} rows "
                        f"chosen by {CV_FOLDS}-fold cross-validation)")
    s.add_argument("--grad", choices=GRAD_MODES,
                   help="relu (default): the correct ReLU backward (= autograd); tutorial: the seed's clamp of "
                        "the gradient's values")
    r = t.add_argument_group("training")
    r.add_argument("--epochs", type=positive_int, help=f"total epochs; with --resume, the total to reach (seed: 20; "
                                                       f"data: {STEP_DEFAULTS['epochs']})")
    r.add_argument("--batch-size", type=positive_int, metavar="B",
                   help=f"the most rows per step: an epoch is ceil(N/B) steps of equal size, give or take a row "
                        f"(seed: all rows, one step; data: "
                        f"{STEP_DEFAULTS['batch_size']})")
    r.add_argument("--no-shuffle", action="store_true",
                   help="take the batches in row order (default: each epoch's order drawn from --seed)")
    r.add_argument("--patience", type=positive_int, metavar="N",
                   help="stop when the validation loss has not improved for N epochs, keeping the best epoch's "
                        f"weights (seed: off; data: {PATIENCE_STEPS} optimizer steps' worth of epochs, at least "
                        f"{PATIENCE_EPOCHS}, with a validation split; given alone, it holds out {VAL_SPLIT:g})")
    r.add_argument("--sklearn-defaults", action="store_true",
                   help="data: scikit-learn's MLPClassifier/MLPRegressor settings instead of manualnn's (100 hidden "
                        "units, Adam lr 1e-3, L2 alpha 1e-4 as scikit-learn scales it, 200 epochs on every row, no "
                        "validation split); options given still override them")
    r.add_argument("--seed", type=seed_int,
                   help="seed problem: torch.manual_seed(S), then x, y, w1, w2... drawn with torch.randn as the "
                        "seed does; data: the weights, the split and the shuffle (default: a random seed, "
                        "recorded in --json and --save)")
    d = t.add_argument_group("running")
    d.add_argument("--backend", choices=BACKENDS,
                   help="auto (default): on the CPU the native runner (the compiled CPU runner, built once on "
                        "first use, see manualnn build-native) where it can be built, else torch; on CUDA triton "
                        "for float32 where Triton is installed, else torch")
    d.add_argument("--device", default="auto", help="auto (default: cuda if available, else cpu), cpu, cuda, cuda:N")
    d.add_argument("--dtype", choices=DTYPES, help="tensor dtype (default float32)")
    d.add_argument("--precision", choices=PRECISIONS,
                   help="matmul precision of the triton backend: ieee fp32 (default), tf32, or bf16 operands")
    d.add_argument("--threads", type=positive_int, metavar="N",
                   help="CPU: the threads every step uses (default: one or all, chosen by timing the steps as the "
                        "run goes, where the choice cannot change a number)")
    d.add_argument("--no-graph", action="store_true",
                   help="on CUDA, step eagerly instead of replaying chunks of epochs as CUDA graphs")
    d.add_argument("--timeout", type=number(0, low_open=True), default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help="under torchrun: how long a rank waits for the others in one exchange before it stops "
                        "with an error naming the missing rank (default %(default)g)")
    o = t.add_argument_group("output")
    o.add_argument("--log-every", type=positive_int, default=1, metavar="N",
                   help="print every N-th epoch and the last (default 1)")
    o.add_argument("--json", metavar="PATH", help="write config, per-epoch losses, timing, device, versions")
    o.add_argument("--plot", metavar="PATH", help="write a PNG of the loss (and accuracy) per epoch "
                                                  "(pip install \"manualnn[plot]\")")
    o.add_argument("--save", metavar="PATH", help="write a checkpoint at the end, and on Ctrl-C, SIGTERM, SIGHUP or a "
                                                  "closed stdout (atomically)")
    o.add_argument("--save-every", type=positive_int, metavar="N", help="with --save, also every N epochs")
    o.add_argument("--resume", metavar="PATH", help="continue the run in this checkpoint up to --epochs")

    p = sub.add_parser("predict", help="score a saved model on data, or write its predictions",
                       description="Load a checkpoint written by 'manualnn train --save' and run it on --data: "
                                   "prints the loss and the accuracy (classes) or RMSE and R2 (values) when the "
                                   "data has targets; --output writes the predictions.", epilog=PREDICT_EXITS)
    p.add_argument("--model", metavar="PATH", required=True, help="a checkpoint written by manualnn train --save")
    p.add_argument("--data", metavar="PATH", required=True,
                   help="'digits', or a .npz/.pt/.csv/.tsv file (targets optional: a CSV with exactly the model's "
                        "input width has none)")
    p.add_argument("--output", metavar="PATH",
                   help="write predictions to a .csv, .npz or .pt file, or - for CSV on stdout (classes: the label "
                        "and one probability column per class, named by it; an ID column first)")
    p.add_argument("--target-cols", type=positive_int, metavar="K", help="CSV: the last K columns are targets "
                                                                         "(default: as in training)")
    p.add_argument("--id", metavar="COL", help="CSV: the ID column to write with --output (default: training's --id, "
                                               "when the file has it)")
    p.add_argument("--ignore", type=column_list, metavar="COLS",
                   help="CSV without the model's column names: columns that are not features")
    p.add_argument("--missing", choices=MISSING,
                   help="missing cells (as in train): refuse, drop those rows, or mean (the training's means; "
                        "the default when the model was trained with --missing mean, else refuse)")
    p.add_argument("--task", choices=TASKS, help="as in train (default: what training decided)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    nb = sub.add_parser("build-native", help="compile the native CPU runner now (once; later runs load it)",
                        description="Compile the native CPU runner (kernels/native/*.cpp) into its cache folder, "
                                    "$MANUALNN_NATIVE_CACHE or ~/.cache/manualnn/native.",
                        epilog="exit status: 0 built (or already built); 2 it cannot be built here")
    nb.add_argument("--verbose", action="store_true", help="show the compiler's commands and output")
    return parser
