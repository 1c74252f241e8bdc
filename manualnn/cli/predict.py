"""``manualnn predict``: score a saved model on data, or write its predictions."""
import os
import sys

import torch

from ..checkpoint import CheckpointError
from ..columns import Columns
from ..data import DataError, load_data
from ..files import OutputPathError, atomic_open, check_distinct, check_output_path, describe_os_error
from ..preprocessing import decode_labels
from .config import UsageError, check_config, resolve_device

PREDICTION_FORMATS = (".csv", ".npz", ".pt")


def predict_command(args):
    from ..model import load
    device = resolve_device(args.device)
    if args.output and args.output != "-":
        try:
            check_distinct([("--output", args.output, True), ("--model", args.model, False),
                            ("--data", None if args.data == "digits" else args.data, False)])
            check_output_path(args.output)
        except OutputPathError as e:
            raise UsageError(str(e) if str(e).startswith("--") else f"--output: {e}") from None
        if os.path.splitext(args.output)[1].lower() not in PREDICTION_FORMATS:
            raise UsageError(f"--output: expected a .csv, .npz or .pt path (or - for stdout), got {args.output!r}")
    try:
        model = load(args.model, device=device)
    except CheckpointError as e:
        raise UsageError(f"--model: {e}") from None
    if model.epoch == 0 and model.config.get("epochs"):   # a manualnn train run's, in which no epoch finished
        print(f"manualnn predict: warning: {args.model!r} was saved before any epoch of training finished: its "
              f"weights are the untrained starting ones", file=sys.stderr)
    config = model.config
    config.setdefault("features", model.sizes[0])
    config.setdefault("out", model.sizes[-1])
    check_config(config, f"--model: checkpoint {args.model!r}")
    names = config.get("class_names")
    task = args.task or config.get("task_used") or config.get("task", "auto")
    dataset = read_data(args, config, model, task, names)
    if dataset.x.shape[1] != model.sizes[0]:
        raise UsageError(f"--data: {dataset.source!r} has {dataset.x.shape[1]} feature columns; the model expects "
                         f"{model.sizes[0]}")
    if dataset.y is None and not args.output:
        raise UsageError(f"--data: {dataset.source!r} has no targets to score against; give --output PATH "
                         f"to write the predictions")
    # the model applies what its run learned about the data: feature statistics, target scale, class labels
    outputs = model.outputs(dataset.x)
    if dataset.y is not None:   # on stderr when stdout carries the predictions
        print(score_line(model, dataset), file=sys.stderr if args.output == "-" else sys.stdout)
    if args.output:
        classify = dataset.task == "classify" or config.get("task_used") == "classify" or bool(config.get("classes"))
        values = outputs.cpu()
        try:
            write_predictions(args.output, values, classify=classify, class_names=names, ids=dataset.ids,
                              id_name=dataset.id_name, probabilities=config.get("loss") == "ce",
                              target_names=config.get("target_names"))
        except BrokenPipeError:   # '--output - | head': the reader went away; stop quietly (the command line: 141)
            raise
        except OSError as e:
            print(f"manualnn predict: --output: cannot write {args.output!r}: {describe_os_error(e)}", file=sys.stderr)
            return 4
        where = "stdout" if args.output == "-" else args.output
        print(f"manualnn predict: wrote {outputs.shape[0]} predictions to {where}", file=sys.stderr)
    return 0


def read_data(args, config, model, task, class_names):
    """The --data rows, their columns found by the names training kept (a header) or by position."""
    columns = Columns(ignore=args.ignore or [], id=args.id, features=config.get("feature_names"),
                      targets=config.get("target_names"), model_id=None if args.id else config.get("id_name"),
                      model_ignored=config.get("ignore") or [])
    missing = args.missing or ("mean" if config.get("fill_values") else "refuse")
    if missing == "mean" and not config.get("fill_values"):
        raise UsageError("--missing: mean fills with the training rows' means, and this model was not trained with "
                         "--missing mean; give --missing drop, or fill the cells")
    try:
        dataset = load_data(args.data, target_cols=args.target_cols or target_cols(config, model, task), task=task,
                            need_y=False, features=model.sizes[0], columns=columns, missing=missing,
                            fill=config.get("fill_values"),
                            class_names=class_names if task == "classify" else None)
    except DataError as e:
        raise UsageError(f"--data: {e}") from None
    for note in dataset.notes:
        print(f"manualnn predict: {note}", file=sys.stderr)
    return dataset


def target_cols(config, model, task):
    """A file's target columns where --target-cols does not say: the training file's count, as the checkpoint
    keeps it; for a checkpoint without one (the seed problem's run, a model saved from Python) one for classes,
    else one per output."""
    if config.get("target_cols"):
        return config["target_cols"]
    classes = "classify" in (task, model.task) or config.get("loss") == "ce" or bool(config.get("class_names"))
    return 1 if classes else model.sizes[-1]


def score_line(model, dataset):
    """``Loss:..., Accuracy:... (N samples)`` for classes, ``Loss:..., RMSE:..., R2:... (N samples)`` for
    values (RMSE and R2 in the targets' own units; the loss as trained, on standardized targets)."""
    if dataset.classes and dataset.classes > model.sizes[-1]:
        raise UsageError(f"--data: {dataset.source!r} has class labels up to {dataset.classes - 1}; the model has "
                         f"{model.sizes[-1]} outputs")
    y = dataset.y
    if dataset.classes and model.task == "classify":   # load_data numbered them by the model's labels
        y = decode_labels(y, model.class_names)
    try:
        result = model.evaluate(dataset.x, y)
    except (ValueError, TypeError) as e:
        raise UsageError(f"--data: {e}") from None
    line = f"Loss:{result.loss:.4f}"
    if result.accuracy is not None:
        line += f", Accuracy:{result.accuracy:.4f}"
    if result.rmse is not None:
        line += f", RMSE:{result.rmse:.4f}, R2:{result.r2:.4f}"
    return f"{line} ({result.samples} samples)"


def write_predictions(path, outputs, *, classify, class_names=None, ids=None, id_name=None, probabilities=False,
                      target_names=None):
    """Predictions to .csv (one row per sample; ``-``: CSV on stdout), .npz or .pt; files atomically, like
    every output.

    Classifiers: a ``class`` column (the class's name when training had names), then one column per class:
    its probability (``prob_NAME``, softmax of the outputs) for a cross-entropy model, else the raw output.
    Values: one column per target, named as the training file's header named it. With ``ids`` (an ID column
    of the data), they come first, under ``id_name``."""
    record = {"outputs": outputs}
    if classify:
        record["classes"] = outputs.argmax(1)
        if probabilities:
            record["probabilities"] = torch.softmax(outputs.double(), 1).to(outputs.dtype)
    labels = [str(class_names[i]) if class_names else str(i) for i in range(outputs.shape[1])] if classify else None
    if path == "-":
        sys.stdout.write(_csv_text(record, labels, ids, id_name, target_names))
        sys.stdout.flush()
        return
    ext = os.path.splitext(path)[1].lower()   # one of PREDICTION_FORMATS: predict_command checked it first
    names = [class_names[i] for i in record["classes"].tolist()] if classify and class_names else None
    with atomic_open(path, "wb") as f:
        if ext == ".pt":
            torch.save({**record, **({"class_names": names} if names else {}), **({"ids": ids} if ids else {})}, f)
        elif ext == ".npz":
            import numpy as np
            extra = {"class_names": np.array([str(n) for n in names])} if names else {}
            extra.update({"ids": np.array(ids)} if ids else {})
            np.savez(f, **{k: v.numpy() for k, v in record.items()}, **extra)
        else:
            f.write(_csv_text(record, labels, ids, id_name, target_names).encode())


def _csv_text(record, labels, ids, id_name, target_names):
    outputs = record["outputs"]
    if labels is not None:
        prefix, values = ("prob_", record["probabilities"]) if "probabilities" in record else ("output_", outputs)
        cols = ["class"] + [prefix + label for label in labels]
    else:
        values = outputs
        named = target_names and len(target_names) == outputs.shape[1] and all(target_names)
        cols = list(target_names) if named else [f"output_{j}" for j in range(outputs.shape[1])]
    if ids is not None:
        cols = [id_name or "id"] + cols
    lines = [",".join(map(csv_cell, cols))]
    classes = record["classes"].tolist() if labels is not None else None
    for i, row in enumerate(values.tolist()):
        cells = ([csv_cell(ids[i])] if ids is not None else []) + \
            ([csv_cell(labels[classes[i]])] if labels is not None else []) + [repr(v) for v in row]
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def csv_cell(text):
    text = str(text)
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n\r') or text != text.strip() else text
