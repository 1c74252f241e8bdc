"""``manualnn train``: one process, or one rank of a torchrun launch (data parallel).

Before any epoch everything that can be known is checked (options, paths, data, memory); after
training, the weights are never lost: a failed --save keeps the old file and writes the run to a
rescue file (manualnn.cli.saving), and Ctrl-C, SIGTERM, SIGHUP or a closed stdout stop the run after
its last finished epoch, which --save then writes (manualnn.cli.signals).
"""
import math
import os
import secrets
import sys
import time
from dataclasses import dataclass
from typing import Optional

import torch

from .. import __version__, distributed
from ..backends import BackendUnavailableError
from ..data import DataError, init_weights
from ..files import OutputPathError, check_distinct, check_output_path, describe_os_error
from ..problem import build_problem
from ..spec import LINEAR
from ..training import NonFiniteLossError, Trainer
from ..training.batches import batch_sizes
from ..training.selection import search as choose_search
from ..training.selection import note as selection_note
from .config import STEP_KEYS, UsageError, resolve_device, run_config
from .limits import check_float32_steps, check_memory
from .report import Progress, epoch_line, val_figures, write_json
from .saving import Saver
from .signals import SIGNALS, Interrupted, Signals, print_lines, say

# Raising inside the trainer's device work is safe: it rewinds to the last finished epoch on any
# exception. Its bookkeeping between epochs is not (see manualnn.cli.signals).
DEVICE_WORK = [f.__code__ for f in (getattr(Trainer, "_chunk", None),) if f is not None]

API_TO_OPTION = {"lr": "--lr", "val_split": "--val-split", "batch_size": "--batch-size", "epochs": "--epochs",
                 "momentum": "--momentum", "eps": "--eps", "weight_decay": "--weight-decay", "patience": "--patience"}


@dataclass
class Outcome:
    status: str = "ok"                 # ok, diverged, interrupted
    message: Optional[str] = None
    warning: Optional[str] = None
    best_epoch: Optional[int] = None
    saved_to: Optional[str] = None     # where the last checkpoint went (--save, or a rescue file)


def as_option(message):
    """An API error ("lr: expected ...") as the option the user typed ("--lr: expected ...")."""
    name, sep, rest = message.partition(": ")
    if sep and name in API_TO_OPTION:
        return f"{API_TO_OPTION[name]}: {rest}"
    return message.replace("backend 'torch'", "--backend torch")


def train_command(args):
    """Train on one process, or as one rank of a torchrun launch. Returns the exit status."""
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
        except KeyboardInterrupt:   # reading the data or the search: no epoch had begun, nothing to save
            say("interrupted before the first epoch (while reading the data or choosing the network and its L2); "
                "nothing was trained and no file was written")
            return 130
        if multi:   # every rank checks every other's settings and data before any step
            try:
                distributed.agree(run.fingerprint() if run else {}, error)
            except distributed.DistributedError as e:
                if rank != 0:   # rank 0 says it once, for everyone
                    sys.exit(2)
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
    except ValueError as e:     # RANK and WORLD_SIZE set, but not the rest of torchrun's variables
        raise UsageError(f"RANK and WORLD_SIZE are set, as torchrun sets them, but the ranks cannot meet: "
                         f"{str(e).splitlines()[0].split(': ', 1)[-1][:300]} (launch with torchrun, or unset RANK "
                         f"and WORLD_SIZE)") from None
    if args.seed is None and not args.resume:   # one random seed for all ranks, drawn by rank 0
        seed = [secrets.randbits(63)]
        torch.distributed.broadcast_object_list(seed, src=0)
        args.seed = seed[0]
    return device


class PreparedRun:
    """What a training run needs after its options are checked: config, checkpoint, trainer, rows."""

    def __init__(self, config, checkpoint, trainer, rows, l2_search=None):
        self.config, self.checkpoint, self.trainer, self.rows = config, checkpoint, trainer, rows
        self.l2_search = l2_search   # training.selection's record, where the run's L2 was searched for

    def fingerprint(self):
        """What every rank of a distributed run must share: settings, data and starting weights."""
        settings = {key: value for key, value in self.config.items() if key != "data"}  # paths may differ
        return {**settings, "start_epoch": self.trainer.epoch, "device_type": self.trainer.device.type,
                "backend_used": self.trainer.backend_name,
                "weights": [float(w.double().sum()) for w in self.trainer.weights], "manualnn": __version__}


def check_paths(args, config, rank):
    """Outputs that cannot be written, or that would overwrite an input or each other: refused now.
    The data is the file the run reads: --data, or the one a resumed checkpoint names."""
    if args.save_every and not args.save:
        raise UsageError("--save-every: needs --save PATH")
    data = config["data"] if config["data"] != "digits" else None
    data_label = "--data" if args.data else "the checkpoint's data file"
    named = [(data_label, data, False), ("--resume", args.resume, False),
             ("--save", args.save, True), ("--json", args.json, True), ("--plot", args.plot, True)]
    try:   # --resume and --save may name one file: continuing a run in place is what they are for
        check_distinct([n for n in named if n[0] != "--resume"])
        check_distinct([n for n in named if n[0] not in ("--save", data_label)])
    except OutputPathError as e:
        raise UsageError(str(e)) from None
    if rank != 0:   # only rank 0 writes
        return
    for option, path, writes in named:
        if writes and path is not None:
            try:
                check_output_path(path)
            except OutputPathError as e:
                raise UsageError(f"{option}: {e}") from None
    if args.plot:
        from ..plot import PlotUnavailableError, require_matplotlib
        try:
            require_matplotlib()
        except PlotUnavailableError as e:
            raise UsageError(f"--plot: {e}") from None


# what must be left to the defaults for the search to weigh a network with no hidden layer (spec.LINEAR)
LINEAR_DEFAULTS_ONLY = ("hidden", "lr", "epochs", "optimizer", "reduction", "batch_size")


def prepare_run(args, device=None, rank=0):
    config, checkpoint = run_config(args)
    device = device or resolve_device(args.device)
    check_paths(args, config, rank)
    check_float32_steps(config)
    try:
        problem = build_problem(config, device, check=lambda sizes, rows: check_memory(config, device, sizes, rows))
    except DataError as e:
        raise UsageError(f"--data: {e}") from None
    except ValueError as e:   # a split that leaves a part empty
        raise UsageError(as_option(str(e))) from None
    if problem.note and rank == 0:
        for line in problem.note.splitlines():   # what reading the data decided, a line each
            print(f"manualnn train: {line}", file=sys.stderr)
    step = {key: config[key] for key in STEP_KEYS if key != "bias"}
    step["betas"] = tuple(step["betas"])
    common = dict(bias=config["bias"], precision=config["precision"], backend=config["backend"],
                  batch_size=config["batch_size"], shuffle=config["shuffle"], shuffle_seed=config["seed"],
                  threads=args.threads, graph=False if args.no_graph else None)
    search = None
    try:
        # the network and its L2 chosen by cross-validation: for values of up to 200 rows the hidden layers or none
        # where the network and its step are left to the defaults, and below 50 rows the L2 where it is not given
        linear_ok = problem.weighs_linear and all(getattr(args, key) is None for key in LINEAR_DEFAULTS_ONLY)
        if problem.search_l2 or linear_ok:
            rule = step.pop("weight_decay")
            hidden = [w.shape[1] for w in problem.weights[:-1]]   # (named in the note, whichever wins)
            linear = None if not linear_ok else [   # drawn as build_problem draws the network's
                w.to(problem.x.device, problem.x.dtype) for w in init_weights(
                    [problem.x.shape[1], problem.weights[-1].shape[1]], config["init"],
                    generator=torch.Generator().manual_seed(config["seed"]))]
            chosen, step["weight_decay"], search = choose_search(
                problem.x, problem.y, problem.weights, seed=config["seed"], grid=problem.search_l2, rule=rule,
                linear_weights=linear, classes=config["task_used"] == "classify", **common, **step)
            if chosen:   # (a checkpoint keeps the network, its lr and epochs: a resumed run does not search)
                problem.weights, config["hidden"] = linear, []
                step["lr"], config["lr"], config["epochs"] = LINEAR["lr"], LINEAR["lr"], LINEAR["epochs"]
            config["weight_decay"] = step["weight_decay"]   # (a checkpoint keeps it: a resumed run does not search)
            if rank == 0:
                print(f"manualnn train: {selection_note(search, problem.x.shape[0], hidden)}", file=sys.stderr)
        trainer = Trainer(problem.x, problem.y, problem.weights, patience=config["patience"],
                          val_data=None if problem.x_val is None else (problem.x_val, problem.y_val),
                          target_scale=config.get("y_std"), distributed=distributed.active(), **common, **step)
    except (ValueError, TypeError, BackendUnavailableError, distributed.DistributedError) as e:
        raise UsageError(as_option(str(e))) from None
    config["checksum"] = problem.checksum
    if checkpoint is not None:
        resume(trainer, checkpoint, config, args, problem, rank)
    if trainer.stopped_early:
        raise UsageError(f"--resume: the checkpoint's run stopped early at epoch {trainer.epoch - 1} (its validation "
                         f"loss had not improved for {trainer.patience} epochs) and holds the weights of epoch "
                         f"{trainer.best_epoch}; it is finished (start a new run to train again)")
    remaining = config["epochs"] - trainer.epoch
    if remaining < 1:
        if args.epochs is None:
            raise UsageError(f"--epochs: the checkpoint has done all {trainer.epoch} epochs of its run; give "
                             f"--epochs N with N above {trainer.epoch} to train further")
        raise UsageError(f"--epochs: expected a total above the {trainer.epoch} epochs the checkpoint has done, "
                         f"got {config['epochs']}")
    rows = {"train": problem.x.shape[0], "val": 0 if problem.x_val is None else problem.x_val.shape[0]}
    return PreparedRun(config, checkpoint, trainer, rows, search)


def resume(trainer, checkpoint, config, args, problem, rank=0):
    recorded = checkpoint.config.get("checksum")
    same = recorded == problem.checksum
    if isinstance(recorded, list):   # 0.1 checkpoints: two sums
        same = recorded == [float(problem.x.double().sum()), float(problem.y.double().sum())]
    if not same:
        what = ("the data regenerated from seed " + str(config["seed"]) if config["data"] is None else
                f"the data in {config['data']!r}" + ("" if args.data else " (the file the checkpoint names; "
                                                     "give --data PATH if it moved)"))
        raise UsageError(f"--resume: {what} differs from the data the checkpoint was trained on; cannot resume exactly")
    missing = [name for name in trainer.params.state_dict() if name not in checkpoint.optimizer]
    if missing and config["optimizer"] != "sgd":   # (plain SGD keeps no state: older checkpoints hold none)
        raise UsageError(f"--resume: checkpoint {args.resume!r}: field 'optimizer': holds no {missing[0]!r}, which "
                         f"{config['optimizer']} needs to continue exactly")
    state = {"weights": checkpoint.weights, "biases": checkpoint.biases, "optimizer": checkpoint.optimizer,
             "epoch": checkpoint.epoch, "losses": checkpoint.losses, "val_losses": checkpoint.val_losses,
             "val_accuracies": checkpoint.val_accuracies, "val_rmse": checkpoint.val_rmse, "val_r2": checkpoint.val_r2,
             "best": checkpoint.best, "stopped_early": checkpoint.stopped_early}
    try:
        trainer.load_state_dict(state)
    except ValueError as e:
        raise UsageError(f"--resume: {e}") from None
    if "batches" not in checkpoint.config and trainer.rows % trainer.batch_size and rank == 0:
        sizes = batch_sizes(trainer.rows, trainer.batch_size)
        span = str(sizes[0]) if sizes[0] == sizes[-1] else f"{sizes[-1]}-{sizes[0]}"
        full = f"{len(sizes) - 1} batch{'es' if len(sizes) > 2 else ''} of {trainer.batch_size} rows"
        say(f"--resume: checkpoint {args.resume!r} was written before batches were even: its epochs took "
            f"{full} and one of {trainer.rows % trainer.batch_size}; "
            f"from epoch {trainer.epoch} on they take {len(sizes)} of {span} rows (the weights and "
            f"the optimizer's state go on exactly; the steps after them are not those the older version takes)")


def train_loop(args, run, rank=0):
    """Train to --epochs; rank 0 prints the lines and writes --save, --json and --plot."""
    config, trainer = run.config, run.trainer
    lines = EpochLines(args.log_every, config["epochs"], trainer, rank)
    saver = Saver(args.save, config) if args.save else None
    outcome = Outcome()

    def on_chunk(first, losses):
        with signals.held():   # the chunk's lines and its checkpoint are written whole
            if args.save_every and trainer.epoch % args.save_every == 0:
                saver.save(trainer, outcome)
            lines.show(first, losses)
        signals.raise_if_received()   # the trainer's state is whole here: a signal since the last chunk stops it

    started, start_epoch, code = time.perf_counter(), trainer.epoch, 0
    with Signals(DEVICE_WORK) as signals:
        try:
            trainer.run(config["epochs"] - trainer.epoch, every="auto", align=args.save_every, callback=on_chunk)
        except NonFiniteLossError as e:
            outcome.status, outcome.message, code = "diverged", str(e), 1
        except Interrupted as e:   # the last finished epoch's state is in the trainer
            outcome.status, code = "interrupted", e.code
            outcome.message = f"interrupted ({e.name}) after {trainer.epoch} epochs"
        with signals.held():   # from here on a signal waits for the run to be written
            lines.end()
            if outcome.status == "ok":
                if trainer.stopped_early:
                    outcome.best_epoch = trainer.best_epoch
                kept = trainer.epoch - 1 if outcome.best_epoch is None else outcome.best_epoch
                outcome.warning = trainer.diagnose() or overshoot_warning(trainer, config, run.rows["train"], kept)
            code = finish(args, run, rank, saver, outcome, time.perf_counter() - started, start_epoch, code)
        if signals.received is not None and outcome.status != "interrupted":
            name, status = SIGNALS[signals.received]
            if rank == 0:
                say(f"{name} arrived as the run ended; what it finished was written first")
            code = code or status
    return code


class EpochLines:
    """The epoch lines on stdout: every ``log_every``-th, and the last one the run finishes."""

    def __init__(self, log_every, epochs, trainer, rank):
        self.log_every, self.last_epoch, self.trainer = log_every, epochs - 1, trainer
        self.on = rank == 0
        self.progress = Progress(epochs) if self.on and sys.stderr.isatty() and log_every > 1 else None
        self.printed = None    # the last epoch whose line was printed

    def show(self, first, losses):
        if not self.on:
            return
        if self.progress:
            self.progress.clear()
        epochs = [i for i in range(first, first + len(losses)) if i % self.log_every == 0 or i == self.last_epoch]
        self._print(epochs)
        if self.progress:
            self.progress.show(first + len(losses), losses[-1])

    def _print(self, epochs):
        losses = self.trainer.history["losses"]
        print_lines(epoch_line(i, losses[i], val_figures(self.trainer, i)) for i in epochs)
        if epochs:
            self.printed = epochs[-1]

    def end(self):
        """The run's last epoch gets its line, however the run ended (early stop, a signal, NaN)."""
        if self.progress:
            self.progress.clear()
        last = self.trainer.epoch - 1
        if self.on and last >= 0 and self.printed != last:
            try:
                self._print([last])
            except Interrupted:   # stdout closed just now: the run is over anyway
                pass


def overshoot_warning(trainer, config, rows, kept):
    """A warning when the kept epoch's training loss is worse than no training would give: above the
    first epoch's, or (cross-entropy) above ln(classes), the loss of guessing every class alike."""
    losses = trainer.history["losses"]
    if kept is None or not 0 < kept < len(losses) or not math.isfinite(losses[kept]):
        return None
    per_sample = losses[kept] / (rows if config["reduction"] == "sum" else 1)
    guess = math.log(trainer.weights[-1].shape[1]) if config["loss"] == "ce" else None
    if guess is not None and per_sample > guess:
        why = f"{per_sample:.4g} per sample, above the {guess:.4g} of guessing every class alike"
    elif losses[kept] > losses[0]:
        why = f"{losses[kept]:.4g}, above the first epoch's {losses[0]:.4g}"
    else:
        return None
    return f"the training loss of epoch {kept} (the weights kept) is {why}: the steps overshoot; try a smaller --lr"


def finish(args, run, rank, saver, outcome, seconds, start_epoch, code):
    """Save, write --json and --plot, and say how the run ended. Returns the exit status."""
    config, trainer = run.config, run.trainer
    interrupted = outcome.status == "interrupted"
    if saver is not None:
        if trainer.epoch > start_epoch:
            saver.save(trainer, outcome, barrier=not interrupted, final=True)
        elif rank == 0:   # untrained weights are no checkpoint, and must not replace one
            say(f"--save: no epoch finished in this run, so nothing was written to {args.save!r}")
    if rank != 0:
        return code
    if trainer.stopped_early:
        kept = ", ".join(f"{name[4:]} {value:.4f}"
                         for name, value in val_figures(trainer, outcome.best_epoch).items() if value is not None)
        say(f"stopped at epoch {trainer.epoch - 1}: the validation loss has not improved for {trainer.patience} "
            f"epochs; kept the weights of epoch {outcome.best_epoch} (validation {kept})")
    if outcome.warning:
        say(f"warning: {outcome.warning}")
    if args.json:
        try:
            write_json(args.json, trainer, config, outcome, seconds, start_epoch, run.rows, run.l2_search)
        except OSError as e:
            say(f"--json: cannot write {args.json!r}: {describe_os_error(e)}")
            code = code or 4
    if args.plot and not interrupted:
        from ..plot import write_training_plot
        title = f"manualnn: {config['data'] or 'seed problem'}, " + \
            (f"{config['hidden']} hidden" if config["hidden"] else "no hidden layer")
        try:
            write_training_plot(args.plot, trainer.history, loss=config["loss"], reduction=config["reduction"],
                                train_rows=run.rows["train"], val_rows=run.rows["val"], title=title,
                                kept_epoch=outcome.best_epoch)
        except OSError as e:
            say(f"--plot: cannot write {args.plot!r}: {describe_os_error(e)}")
            code = code or 4
    if outcome.message:
        saved = f"; saved them to {outcome.saved_to}" if interrupted and outcome.saved_to else ""
        say(outcome.message + saved)
    if saver is not None and saver.failed:
        code = code or 4
    return code
