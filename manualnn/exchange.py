"""An MLP to and from other forms: a checkpoint file (``MLP.save``, ``manualnn.load``) and a plain
``nn.Sequential`` of ``nn.Linear``/``nn.ReLU`` (``MLP.to_sequential``, ``MLP.from_sequential``).

The checkpoint keeps the model's preprocessing in its config, under the keys ``manualnn train`` writes
(``x_mean``, ``x_std``, ``y_mean``, ``y_std``, ``task_used``, ``classes``, ``class_names``,
``feature_names``, ``loss``, ``reduction``), so ``manualnn predict`` reads a saved model and
``manualnn.load`` reads a trained run alike.
"""
import os

import torch
from torch import nn

from . import preprocessing as prep
from .checkpoint import HISTORIES, CheckpointError, load_checkpoint, save_checkpoint
from .spec import LOSSES, REDUCTIONS

PREPROCESSING_KEYS = ("x_mean", "x_std", "y_mean", "y_std", "task_used", "classes", "class_names", "feature_names")


def assemble(cls, weights, biases, *, device=None):
    """An MLP holding exactly these weights [in, out] and biases [out] (None: no biases), moved to ``device``."""
    sizes = [weights[0].shape[0]] + [w.shape[1] for w in weights]
    model = cls(sizes, bias=biases is not None, dtype=weights[0].dtype, device="meta")   # meta: nothing drawn
    device = torch.device(device) if device is not None else weights[0].device
    model.weights = nn.ParameterList(nn.Parameter(w.to(device)) for w in weights)
    if biases is not None:
        model.biases = nn.ParameterList(nn.Parameter(b.to(device)) for b in biases)
    for name, fill, width in (("x_mean", 0.0, sizes[0]), ("x_std", 1.0, sizes[0]),
                              ("y_mean", 0.0, sizes[-1]), ("y_std", 1.0, sizes[-1])):
        setattr(model, name, torch.full((width,), fill, dtype=torch.float64, device=device))
    return model


def set_preprocessing(model, fields):
    """Put read_config's fields into the model (statistics as float64 buffers)."""
    for key in ("x", "y"):
        if fields[f"{key}_mean"] is not None:
            device = getattr(model, f"{key}_mean").device
            for part in ("mean", "std"):
                setattr(model, f"{key}_{part}", torch.tensor(fields[f"{key}_{part}"], dtype=torch.float64, device=device))
            model.scaled[key] = True
    model.task, model.class_names, model.feature_names = fields["task"], fields["class_names"], fields["feature_names"]


def load_model(cls, path, *, device=None):
    """See manualnn.load."""
    checkpoint = load_checkpoint(path)
    where = f"checkpoint {os.fspath(path)!r}"

    def fail(key, problem):
        raise CheckpointError(f"{where}: config field {key!r}: {problem}")

    config = dict(checkpoint.config)
    model = assemble(cls, checkpoint.weights, checkpoint.biases, device=device)
    set_preprocessing(model, prep.read_config(config, model.sizes[0], model.sizes[-1], fail))
    model.loss, model.reduction = config.get("loss") or "sse", config.get("reduction") or "sum"
    if model.loss not in LOSSES or model.reduction not in REDUCTIONS:
        fail("loss" if model.loss not in LOSSES else "reduction", f"expected one of "
             f"{LOSSES if model.loss not in LOSSES else REDUCTIONS}, got {model.loss!r}/{model.reduction!r}")
    model.config, model.epoch, model.losses = config, checkpoint.epoch, list(checkpoint.losses)
    model.history = {name: list(getattr(checkpoint, name)) for name in HISTORIES}
    model.checkpoint_optimizer = checkpoint.optimizer or None
    return model


def model_config(model):
    """The model's config with its preprocessing as ``manualnn train`` writes it."""
    config = {k: v for k, v in model.config.items() if k not in PREPROCESSING_KEYS}
    config.update(features=model.sizes[0], out=model.sizes[-1], loss=model.loss, reduction=model.reduction,
                  standardize=model.scaled["x"])
    for key in ("x", "y"):
        if model.scaled[key]:
            config[f"{key}_mean"] = getattr(model, f"{key}_mean").tolist()
            config[f"{key}_std"] = getattr(model, f"{key}_std").tolist()
    if model.task is not None:
        config["task_used"] = model.task
        config.setdefault("target_cols", 1 if model.task == "classify" else model.sizes[-1])
    if model.task == "classify" and model.class_names is not None:
        config["classes"], config["class_names"] = len(model.class_names), list(model.class_names)
    if model.feature_names is not None:
        config["feature_names"] = list(model.feature_names)
    return config


def save_model(model, path):
    """See MLP.save: a checkpoint with the weights, biases, epochs' losses, preprocessing and config."""
    weights, biases = model._layers()
    epoch = len(model.losses)
    histories = {name: values for name, values in getattr(model, "history", {}).items() if len(values) == epoch}
    return save_checkpoint(path, weights=[w.detach() for w in weights],
                           biases=None if biases is None else [b.detach() for b in biases], epoch=epoch,
                           losses=model.losses, optimizer=model.checkpoint_optimizer, config=model_config(model),
                           **histories)


@torch.no_grad()
def to_sequential(model):
    """See MLP.to_sequential. The folding is done in float64, then rounded to the model's dtype."""
    weights, biases = model._layers()
    layers, last = [], len(weights) - 1
    for i, w in enumerate(weights):
        weight = w.detach().double().t()                        # nn.Linear's [out, in]
        bias = biases[i].detach().double() if biases is not None else None
        if i == 0 and model.scaled["x"]:                        # W ((x - m) / s) + b = (W / s) x + (b - (W / s) m)
            weight = weight / model.x_std.to(weight.device)
            bias = (0 if bias is None else bias) - weight @ model.x_mean.to(weight.device)
        if i == last and model.scaled["y"]:                     # (W x + b) s + m
            std, mean = model.y_std.to(weight.device), model.y_mean.to(weight.device)
            weight = weight * std[:, None]
            bias = (0 if bias is None else bias) * std + mean
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, dtype=w.dtype, device=w.device)
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
        layers.append(linear)
        if i < last:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def from_sequential(cls, sequential, *, class_names=None, feature_names=None):
    """See MLP.from_sequential."""
    modules = list(sequential.children()) if isinstance(sequential, nn.Module) else list(sequential)
    linears = []
    for i, module in enumerate(modules):
        want = nn.Linear if i % 2 == 0 else nn.ReLU
        if type(module) is not want:   # a subclass may compute something else
            raise TypeError(f"sequential[{i}]: expected nn.{want.__name__} (Linear layers with ReLU between them), "
                            f"got {type(module).__name__}")
        if want is nn.Linear:
            linears.append(module)
    if not linears or len(modules) % 2 == 0:
        raise ValueError(f"sequential: expected Linear, ReLU, Linear, ..., ending with a Linear; got {len(modules)} "
                         f"modules" + (" ending with a ReLU" if modules else ""))
    for i, (a, b) in enumerate(zip(linears[:-1], linears[1:])):
        if a.out_features != b.in_features:
            raise ValueError(f"sequential[{2 * i + 2}]: in_features {b.in_features} does not follow the previous "
                             f"Linear's out_features {a.out_features}")
    weights = [m.weight.detach().t().contiguous().clone() for m in linears]
    has_bias = any(m.bias is not None for m in linears)
    biases = [m.bias.detach().clone() if m.bias is not None else torch.zeros_like(w[0]) for m, w in zip(linears, weights)]
    model = assemble(cls, weights, biases if has_bias else None)
    if class_names is not None:
        class_names = [prep.plain_label(c) for c in class_names]
    fields = prep.read_config({"class_names": class_names, "feature_names": feature_names,
                               "task_used": "classify" if class_names is not None else None},
                              model.sizes[0], model.sizes[-1], lambda key, problem: _fail(key, problem))
    set_preprocessing(model, fields)
    if class_names is not None:
        model.loss, model.reduction = "ce", "mean"
    return model


def _fail(key, problem):
    raise ValueError(f"{key}: {problem}")
