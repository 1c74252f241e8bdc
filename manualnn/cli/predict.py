"""``manualnn predict``: score a saved model on data, or write its predictions."""
import os
import sys

import torch

from ..checkpoint import CheckpointError
from ..data import DataError, load_data
from ..files import OutputPathError, atomic_open, check_distinct, check_output_path, describe_os_error
from ..preprocessing import decode_labels
from .config import UsageError, check_config, resolve_device

PREDICTION_FORMATS = (".csv", ".npz", ".pt")


def predict_command(args):
    from ..model import load
    device = resolve_device(args.device)
    if args.output:
        try:
            check_distinct([("--output", args.output, True), ("--model", args.model, False),
                            ("--data", None if args.data == "digits" else args.data, False)])
            check_output_path(args.output)
        except OutputPathError as e:
            raise UsageError(str(e) if str(e).startswith("--") else f"--output: {e}") from None
        if os.path.splitext(args.output)[1].lower() not in PREDICTION_FORMATS:
            raise UsageError(f"--output: expected a .csv, .npz or .pt path, got {args.output!r}")
    try:
        model = load(args.model, device=device)
    except CheckpointError as e:
        raise UsageError(f"--model: {e}") from None
    config = model.config
    config.setdefault("features", model.sizes[0])
    config.setdefault("out", model.sizes[-1])
    check_config(config, f"--model: checkpoint {args.model!r}")
    names = config.get("class_names")
    task = args.task or config.get("task_used") or config.get("task", "auto")
    try:
        dataset = load_data(args.data, target_cols=args.target_cols or config.get("target_cols", 1), task=task,
                            need_y=False, features=model.sizes[0], class_names=names if task == "classify" else None)
    except DataError as e:
        raise UsageError(f"--data: {e}") from None
    if dataset.x.shape[1] != model.sizes[0]:
        raise UsageError(f"--data: {dataset.source!r} has {dataset.x.shape[1]} feature columns; the model expects "
                         f"{model.sizes[0]}")
    if dataset.y is None and not args.output:
        raise UsageError(f"--data: {dataset.source!r} has no targets to score against; give --output PATH "
                         f"to write the predictions")
    # the model applies what its run learned about the data: feature statistics, target scale, class labels
    outputs = model.outputs(dataset.x)
    if dataset.y is not None:
        print(score_line(model, dataset))
    if args.output:
        classify = dataset.task == "classify" or config.get("task_used") == "classify" or bool(config.get("classes"))
        values = outputs.cpu()
        try:
            write_predictions(args.output, values, classify=classify, class_names=names)
        except OSError as e:
            print(f"manualnn predict: --output: cannot write {args.output!r}: {describe_os_error(e)}", file=sys.stderr)
            return 4
        print(f"manualnn predict: wrote {outputs.shape[0]} predictions to {args.output}", file=sys.stderr)
    return 0


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


def write_predictions(path, outputs, *, classify, class_names=None):
    """Predictions to .csv (one row per sample), .npz or .pt; atomically, like every output.

    Classifiers: a ``class`` column (the class's name when training had names) before the outputs."""
    ext = os.path.splitext(path)[1].lower()   # one of PREDICTION_FORMATS: predict_command checked it first
    record = {"outputs": outputs}
    if classify:
        record["classes"] = outputs.argmax(1)
    names = [class_names[i] for i in record["classes"].tolist()] if classify and class_names else None
    with atomic_open(path, "wb") as f:
        if ext == ".pt":
            torch.save({**record, **({"class_names": names} if names else {})}, f)
        elif ext == ".npz":
            import numpy as np
            extra = {"class_names": np.array([str(n) for n in names])} if names else {}
            np.savez(f, **{k: v.numpy() for k, v in record.items()}, **extra)
        else:
            cols = (["class"] if classify else []) + [f"output_{j}" for j in range(outputs.shape[1])]
            lines = [",".join(cols)]
            for i, row in enumerate(outputs.tolist()):
                label = str(names[i]) if names else str(int(record["classes"][i])) if classify else None
                cells = ([csv_cell(label)] if classify else []) + [repr(v) for v in row]
                lines.append(",".join(cells))
            f.write(("\n".join(lines) + "\n").encode())


def csv_cell(text):
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text
