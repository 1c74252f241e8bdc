"""manualnn's side of the real-data benchmark: the two commands a user types, per (data set, seed).

    manualnn train --data seedS-train.npz --seed S --save model.pt --json run.json [extra options]
    manualnn predict --model model.pt --data seedS-test.npz --output predictions.npz

Two ways to run them, with the same numbers:

- ``cli``: each command as ``python -m manualnn ...`` in a child process (what a user sees; the
  train command's wall time includes starting Python and importing torch);
- ``inprocess``: both through ``manualnn.cli.main(argv)`` in this process, stdout and stderr
  captured, so torch is imported once (for sweeps over many settings).

The score is parsed from predict's stdout (``Accuracy:`` or ``R2:``); it is also computed from
the predictions file, which checks the printed figure and stands in for it while predict prints
no R2 for regression. ``--json`` is output only: it adds the training loop's own seconds and the
task manualnn chose. A run fails when train diverges (NaN/Inf loss), a command exits non-zero or
crashes, the task manualnn chose is not the data set's, there is no score, or the score is at
chance (accuracy <= max(1/K, the largest class's share) + 0.05, R^2 <= 0.05).
"""
import contextlib
import io
import json
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

from .suite import load_test

MODES = ("cli", "inprocess")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NONFINITE = re.compile(r"(?i)\b(?:nan|[-+]?inf(?:inity)?)\b")
SCORE = {"accuracy": re.compile(r"Accuracy:\s*([-+]?[0-9.]+(?:[eE][-+]?\d+)?|nan|[-+]?inf)", re.I),
         "R2": re.compile(r"\bR2:\s*([-+]?[0-9.]+(?:[eE][-+]?\d+)?|nan|[-+]?inf)", re.I)}
INTERRUPTED = 130


class CommandResult:
    def __init__(self, rc, stdout, stderr, seconds):
        self.rc, self.stdout, self.stderr, self.seconds = rc, stdout, stderr, seconds


def run_cli(argv, timeout):
    """``python -m manualnn ARGV`` in a child process."""
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "manualnn", *argv], capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT)
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = "timeout", _text(e.stdout), _text(e.stderr) + f"\n(killed after {timeout} s)"
    seconds = time.perf_counter() - started
    if rc == INTERRUPTED:
        raise KeyboardInterrupt
    return CommandResult(rc, out, err, seconds)


def _text(data):
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def run_inprocess(argv, timeout=None):
    """``manualnn.cli.main(ARGV)`` here, stdout/stderr captured; a crash becomes rc "exception"."""
    from manualnn.cli import main
    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(argv))
        except SystemExit as e:   # argparse errors exit 2
            rc = e.code if isinstance(e.code, int) else 2
        except KeyboardInterrupt:
            raise
        except Exception:   # noqa: BLE001 - one broken run must not end a sweep: it is recorded
            rc = "exception"
            traceback.print_exc(file=err)
    seconds = time.perf_counter() - started
    if rc == INTERRUPTED:   # main() turns Ctrl-C into exit 130; a sweep must stop, not record it
        raise KeyboardInterrupt
    return CommandResult(rc, out.getvalue(), err.getvalue(), seconds)


RUNNERS = {"cli": run_cli, "inprocess": run_inprocess}


def parse_score(stdout, metric):
    m = SCORE[metric].search(stdout or "")
    return float(m.group(1)) if m else None


def printed_nonfinite_loss(stdout):
    """Whether an epoch line printed a NaN/Inf loss (train or validation)."""
    for line in (stdout or "").splitlines():
        for key in ("Loss:", "Val loss:"):
            if key in line:
                value = line.split(key, 1)[1].split(",", 1)[0].strip()
                if NONFINITE.fullmatch(value):
                    return True
    return False


def diverged_message(stderr):
    return bool(re.search(r"(?i)loss became (nan|inf)", stderr or ""))


def score_from_predictions(path, entry):
    """Accuracy or R^2 computed here from predict's --output file (None if there is none)."""
    if not os.path.exists(path):
        return None
    _, y = load_test(entry)
    with np.load(path, allow_pickle=False) as f:
        if entry.task == "classify":
            if "classes" not in f.files:
                return None
            return float((f["classes"].reshape(-1) == y).mean())
        outputs = f["outputs"].reshape(len(y), -1)
    if outputs.shape[1] != 1:
        return None
    if not np.isfinite(outputs).all():
        return float("nan")
    pred = outputs[:, 0].astype(np.float64)
    return float(1.0 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def _read_json(path, record):
    """train's --json record, or None (with a note when it exists but cannot be read)."""
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            run = json.load(f)
        return run if isinstance(run, dict) else None
    except (OSError, ValueError) as e:
        record["notes"].append(f"could not read train's --json: {e}")
        return None


def _tail(text, n=600):
    text = (text or "").strip()
    return text if len(text) <= n else "…" + text[-n:]


def run_one(entry, extra=(), mode="cli", timeout=900):
    """Train and score one (data set, seed); returns a JSON-able record (never raises for a bad run)."""
    runner = RUNNERS[mode]
    extra = shlex.split(extra) if isinstance(extra, str) else list(extra)
    with tempfile.TemporaryDirectory(prefix="realdata-") as tmp:
        model, info, preds = (os.path.join(tmp, n) for n in ("model.pt", "run.json", "predictions.npz"))
        train_argv = ["train", "--data", entry.train, "--seed", str(entry.seed), "--save", model, "--json", info,
                      *extra]
        train = runner(train_argv, timeout)
        record = {"dataset": entry.dataset, "split": entry.split_id, "seed": entry.seed, "part": entry.part,
                  "task": entry.task, "metric": entry.metric,
                  "mode": mode, "extra": extra, "train_rc": train.rc, "train_wall_s": train.seconds,
                  "train_loop_s": None, "epochs_run": None, "best_epoch": None, "final_loss": None, "task_used": None,
                  "diverged": printed_nonfinite_loss(train.stdout) or diverged_message(train.stderr),
                  "predict_rc": None, "score": None, "score_printed": None, "score_from_predictions": None,
                  "notes": []}
        run = _read_json(info, record)
        if run is not None:
            record["train_loop_s"] = (run.get("timing") or {}).get("seconds")
            record["epochs_run"] = run.get("epochs_run")
            record["best_epoch"] = run.get("best_epoch")
            losses = run.get("losses") or []
            record["final_loss"] = losses[-1] if losses else None
            record["losses"] = losses
            record["task_used"] = (run.get("config") or {}).get("task_used")
            record["weight_decay"] = (run.get("config") or {}).get("weight_decay")   # the L2 the run trained with
            for key in ("hidden", "lr", "epochs"):   # the network and step its search chose (spec.LINEAR)
                record[key] = (run.get("config") or {}).get(key)
            record["l2_search_s"] = (run.get("timing") or {}).get("l2_search_seconds")
            record["diverged"] = record["diverged"] or run.get("status") == "diverged" or \
                any(not math.isfinite(v) for v in losses if isinstance(v, (int, float)))
        if os.path.exists(model):   # a diverged run still saves its last finite weights: score them too
            predict = runner(["predict", "--model", model, "--data", entry.test, "--output", preds], timeout)
            record["predict_rc"] = predict.rc
            record["score_printed"] = parse_score(predict.stdout, entry.metric)
            try:
                record["score_from_predictions"] = score_from_predictions(preds, entry)
            except (OSError, ValueError, KeyError) as e:   # a predictions file in a format this harness misreads
                record["notes"].append(f"could not score {os.path.basename(preds)}: {type(e).__name__}: {e}")
            if predict.rc != 0:
                record["predict_stderr"] = _tail(predict.stderr)
        if train.rc != 0:
            record["train_stderr"] = _tail(train.stderr)
    printed, computed = record["score_printed"], record["score_from_predictions"]
    record["score"] = printed if printed is not None else computed
    if printed is None and computed is not None:
        record["notes"].append(f"predict printed no {entry.metric}: score computed from its --output predictions")
    if printed is not None and computed is not None and not (abs(printed - computed) <= 1e-4 or
                                                             (math.isnan(printed) and math.isnan(computed))):
        record["notes"].append(f"printed {entry.metric} {printed} differs from the predictions' {computed}")
    record["failed"], record["reasons"] = judge(record, entry)
    return record


def judge(record, entry):
    """(failed, reasons): diverged, a non-zero exit, the wrong task, no score, or a score at chance."""
    reasons = []
    if record.get("diverged"):
        reasons.append("diverged")
    if record.get("train_rc") not in (0, None):
        reasons.append(f"train exit {record['train_rc']}")
    if record.get("predict_rc") not in (0, None):
        reasons.append(f"predict exit {record['predict_rc']}")
    used = record.get("task_used")
    if used is not None and used != entry.task:
        reasons.append(f"trained as {used}")
    score = record.get("score")
    if score is None:
        reasons.append("no score")
    elif not math.isfinite(score) or score <= entry.chance:
        reasons.append("at chance")
    return bool(reasons), reasons


def describe(record):
    score = record["score"]
    text = "none" if score is None else f"{score:.4f}" if abs(score) < 1000 else f"{score:.3e}"
    state = "FAILED (" + ", ".join(record["reasons"]) + ")" if record["failed"] else "ok"
    return (f"manualnn {record['dataset']} split {record.get('split', record['seed'])} seed {record['seed']} "
            f"[{record['mode']}]: {record['metric']} {text}, "
            f"train {record['train_wall_s']:.2f} s, {state}")
