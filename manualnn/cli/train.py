"""``manualnn train``: one process, or one rank of a torchrun launch (data parallel).

Before any epoch everything that can be known is checked (options, paths, data, memory); after
training, the weights are never lost: a failed --save keeps the old file and writes the run to a
fallback path, and Ctrl-C or SIGTERM with --save write the last finished epoch before exiting.
"""
import contextlib
import os
import secrets
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Optional

import torch

from .. import __version__, distributed
from ..backends import BackendUnavailableError
from ..checkpoint import save_checkpoint
from ..data import DataError
from ..files import OutputPathError, check_distinct, check_output_path, describe_os_error
from ..problem import build_problem, footprint
from ..safeio import human, memory_budget
from ..training import NonFiniteLossError, Trainer
from .config import STEP_KEYS, UsageError, resolve_device, run_config
from .report import Progress, epoch_line, val_figures, write_json

API_TO_OPTION = {"lr": "--lr", "val_split": "--val-split", "batch_size": "--batch-size", "epochs": "--epochs",
                 "momentum": "--momentum", "eps": "--eps", "weight_decay": "--weight-decay", "patience": "--patience"}


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (exit 143 instead of 130)."""


class Signals:
    """SIGINT and SIGTERM become KeyboardInterrupt / Terminated, except inside ``held()``: there the
    signal waits until the block ends (an epoch's lines and a save are finished first)."""

    def __init__(self):
        self.depth, self.pending, self.previous = 0, None, {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum, frame):
        if self.depth:
            self.pending = signum
        else:
            self._raise(signum)

    @staticmethod
    def _raise(signum):
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    @contextlib.contextmanager
    def held(self):
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth and self.pending is not None:
                signum, self.pending = self.pending, None
                self._raise(signum)


@dataclass
class Outcome:
    status: str = "ok"                 # ok, diverged, interrupted
    message: Optional[str] = None
    warning: Optional[str] = None
    best_epoch: Optional[int] = None
    saved_to: Optional[str] = None
    save_failed: bool = False


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
    if args.seed is None and not args.resume:   # one random seed for all ranks, drawn by rank 0
        seed = [secrets.randbits(63)]
        torch.distributed.broadcast_object_list(seed, src=0)
        args.seed = seed[0]
    return device


class PreparedRun:
    """What a training run needs after its options are checked: config, checkpoint, trainer, rows."""

    def __init__(self, config, checkpoint, trainer, rows):
        self.config, self.checkpoint, self.trainer, self.rows = config, checkpoint, trainer, rows

    def fingerprint(self):
        """What every rank of a distributed run must share: settings, data and starting weights."""
        settings = {key: value for key, value in self.config.items() if key != "data"}  # paths may differ
        return {**settings, "start_epoch": self.trainer.epoch, "device_type": self.trainer.device.type,
                "backend_used": self.trainer.backend_name,
                "weights": [float(w.double().sum()) for w in self.trainer.weights], "manualnn": __version__}


def check_paths(args, rank):
    """Outputs that cannot be written, or that would overwrite an input or each other: refused now."""
    if args.save_every and not args.save:
        raise UsageError("--save-every: needs --save PATH")
    named = [("--data", args.data if args.data != "digits" else None, False), ("--resume", args.resume, False),
             ("--save", args.save, True), ("--json", args.json, True), ("--plot", args.plot, True)]
    try:   # --resume and --save may name one file: continuing a run in place is what they are for
        check_distinct([n for n in named if n[0] != "--resume"])
        check_distinct([n for n in named if n[0] not in ("--save", "--data")])
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


def prepare_run(args, device=None, rank=0):
    config, checkpoint = run_config(args)
    device = device or resolve_device(args.device)
    check_paths(args, rank)
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
    try:
        trainer = Trainer(problem.x, problem.y, problem.weights, bias=config["bias"], precision=config["precision"],
                          backend=config["backend"], batch_size=config["batch_size"], shuffle=config["shuffle"],
                          shuffle_seed=config["seed"], patience=config["patience"],
                          val_data=None if problem.x_val is None else (problem.x_val, problem.y_val),
                          target_scale=config.get("y_std"), distributed=distributed.active(),
                          graph=False if args.no_graph else None, threads=args.threads, **step)
    except (ValueError, TypeError, BackendUnavailableError, distributed.DistributedError) as e:
        raise UsageError(as_option(str(e))) from None
    config["checksum"] = problem.checksum
    if checkpoint is not None:
        resume(trainer, checkpoint, config, args, problem)
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
    return PreparedRun(config, checkpoint, trainer, rows)


def check_memory(config, device, sizes, rows):
    """Refuse, before allocating, a run whose tensors cannot fit in the device's free memory."""
    element = 8 if config["dtype"] == "float64" else 4
    need = footprint(sizes, rows, config["batch_size"] or rows, element=element, optimizer=config["optimizer"])
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = memory_budget()
    total = sum(need.values())
    if total <= free:
        return
    biggest = max(need, key=need.get)
    option = {"parameters": "--hidden", "activations": "--batch-size" if config["data"] else "--batch",
              "data": "--data" if config["data"] else "--batch"}[biggest]
    detail = ", ".join(f"{name} {human(n)}" for name, n in need.items())
    raise UsageError(f"{option}: this run needs about {human(total)} of memory ({detail}); {device} has "
                     f"{human(free)} free")


def resume(trainer, checkpoint, config, args, problem):
    recorded = checkpoint.config.get("checksum")
    same = recorded == problem.checksum
    if isinstance(recorded, list):   # 0.1 checkpoints: two sums
        same = recorded == [float(problem.x.double().sum()), float(problem.y.double().sum())]
    if not same:
        what = ("the data regenerated from seed " + str(config["seed"]) if config["data"] is None else
                f"the data in {config['data']!r}" + ("" if args.data else " (the file the checkpoint names; "
                                                     "give --data PATH if it moved)"))
        raise UsageError(f"--resume: {what} differs from the data the checkpoint was trained on; cannot resume exactly")
    state = {"weights": checkpoint.weights, "biases": checkpoint.biases, "optimizer": checkpoint.optimizer,
             "epoch": checkpoint.epoch, "losses": checkpoint.losses, "val_losses": checkpoint.val_losses,
             "val_accuracies": checkpoint.val_accuracies, "val_rmse": checkpoint.val_rmse, "val_r2": checkpoint.val_r2,
             "best": checkpoint.best, "stopped_early": checkpoint.stopped_early}
    try:
        trainer.load_state_dict(state)
    except ValueError as e:
        raise UsageError(f"--resume: {e}") from None


def train_loop(args, run, rank=0):
    """Train to --epochs; rank 0 prints the lines and writes --save, --json and --plot."""
    config, trainer = run.config, run.trainer
    log_every, last_epoch = args.log_every, config["epochs"] - 1
    progress = Progress(config["epochs"]) if rank == 0 and sys.stderr.isatty() and log_every > 1 else None
    outcome = Outcome()

    def on_chunk(first, losses):
        with signals.held():   # the chunk's lines and its checkpoint are written whole, then a signal counts
            report(first, losses)

    def report(first, losses):
        if args.save_every and trainer.epoch % args.save_every == 0:
            save(trainer, args.save, config, outcome)
        if rank != 0:
            return
        if progress:
            progress.clear()
        for i, loss in zip(range(first, first + len(losses)), losses):
            if i % log_every == 0 or i == last_epoch:
                print(epoch_line(i, loss, val_figures(trainer, i)))
        sys.stdout.flush()
        if progress:
            progress.show(first + len(losses), losses[-1])

    started, start_epoch = time.perf_counter(), trainer.epoch
    code = 0
    with Signals() as signals:
        try:
            trainer.run(config["epochs"] - trainer.epoch, every="auto", align=args.save_every, callback=on_chunk)
        except NonFiniteLossError as e:
            outcome.status, outcome.message, code = "diverged", str(e), 1
        except KeyboardInterrupt as e:   # Ctrl-C or SIGTERM: the last finished epoch's state is in the trainer
            outcome.status, code = "interrupted", 143 if isinstance(e, Terminated) else 130
            outcome.message = f"interrupted ({'SIGTERM' if code == 143 else 'Ctrl-C'}) after {trainer.epoch} epochs"
    if progress:
        progress.clear()
    if outcome.status == "ok":
        outcome.warning = trainer.diagnose()
        if trainer.stopped_early:
            outcome.best_epoch = trainer.best_epoch
    return finish(args, run, rank, outcome, time.perf_counter() - started, start_epoch, code)


def finish(args, run, rank, outcome, seconds, start_epoch, code):
    """Save, write --json and --plot, and say how the run ended (once the signals are ignored)."""
    config, trainer = run.config, run.trainer
    interrupted = outcome.status == "interrupted"
    old = [signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)]   # let the saves finish
    try:
        if args.save:
            save(trainer, args.save, config, outcome, barrier=not interrupted)
        if rank != 0:
            return code
        say = lambda text: print(f"manualnn train: {text}", file=sys.stderr)  # noqa: E731
        if trainer.stopped_early:
            kept = ", ".join(f"{name[4:]} {value:.4f}"
                             for name, value in val_figures(trainer, outcome.best_epoch).items() if value is not None)
            say(f"stopped at epoch {trainer.epoch - 1}: the validation loss has not improved for {trainer.patience} "
                f"epochs; kept the weights of epoch {outcome.best_epoch} (validation {kept})")
        if outcome.warning:
            say(f"warning: {outcome.warning}")
        if args.json:
            try:
                write_json(args.json, trainer, config, outcome, seconds, start_epoch, run.rows)
            except OSError as e:
                say(f"--json: cannot write {args.json!r}: {describe_os_error(e)}")
                code = code or 4
        if args.plot and not interrupted:
            from ..plot import write_training_plot
            title = f"manualnn: {config['data'] or 'seed problem'}, {config['hidden']} hidden"
            try:
                write_training_plot(args.plot, trainer.losses, trainer.val_losses, trainer.val_accuracies,
                                    train_rows=run.rows["train"], val_rows=run.rows["val"], title=title)
            except OSError as e:
                say(f"--plot: cannot write {args.plot!r}: {describe_os_error(e)}")
                code = code or 4
        if outcome.message:
            saved = f"; saved them to {outcome.saved_to}" if interrupted and outcome.saved_to else ""
            say(outcome.message + saved)
        if outcome.save_failed:
            code = code or 4
        return code
    finally:
        for s, handler in zip((signal.SIGINT, signal.SIGTERM), old):
            signal.signal(s, handler)


def save(trainer, path, config, outcome, barrier=True):
    """Write a checkpoint; a failed write keeps the old file and puts the run in a fallback file.

    In a distributed run rank 0 writes, after a barrier (every rank has finished those epochs)."""
    if distributed.active():
        if barrier:
            distributed.barrier()
        if torch.distributed.get_rank() != 0:
            return
    state = trainer.state_dict()
    checkpoint = dict(weights=state["weights"], biases=state["biases"], optimizer=state["optimizer"],
                      epoch=state["epoch"], losses=state["losses"], config=config, best=state["best"],
                      stopped_early=state["stopped_early"],
                      **{key: state[key] for key in ("val_losses", "val_accuracies", "val_rmse", "val_r2")})
    try:
        outcome.saved_to = save_checkpoint(path, **checkpoint)
        return
    except ValueError as e:   # non-finite weights: never written over a finite checkpoint
        print(f"manualnn train: --save: {e}", file=sys.stderr)
        outcome.save_failed = True
        return
    except OSError as e:
        reason = describe_os_error(e)
    for folder in (tempfile.gettempdir(), os.path.join(os.path.expanduser("~"), ".cache", "manualnn", "rescued")):
        fallback = os.path.join(folder, f"manualnn-rescued-{os.path.basename(path)}-{time.strftime('%Y%m%d-%H%M%S')}"
                                        f"-{os.getpid()}.pt")
        try:
            os.makedirs(folder, exist_ok=True)
            outcome.saved_to = save_checkpoint(fallback, **checkpoint)
        except OSError:
            continue
        print(f"manualnn train: --save: cannot write {path!r}: {reason}; the previous file is untouched, and this "
              f"run (epoch {state['epoch']}) was saved to {fallback} instead", file=sys.stderr)
        outcome.save_failed = True
        return
    print(f"manualnn train: --save: cannot write {path!r}: {reason}, nor a fallback copy in "
          f"{tempfile.gettempdir()} or ~/.cache/manualnn/rescued; the trained weights could not be kept",
          file=sys.stderr)
    outcome.save_failed = True
