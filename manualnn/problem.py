"""A run's problem from its config: the seed's random data, or a data set split, standardized and
sized, with the network's starting weights. What training decides about the data (its task, the
classes' names, the standardization statistics) goes into the config, so a checkpoint carries it
and ``predict`` repeats it."""
from dataclasses import dataclass
from typing import List, Optional

import torch

from .columns import Columns
from .data import data_checksum, init_weights, load_data, seed_data, split
# standardizing lives beside the model, which applies it again at predict time (names kept importable here)
from .preprocessing import apply_features, fit_standardizer, standardize, unstandardize_targets  # noqa: F401
from .spec import DTYPES, data_settings  # noqa: F401  (DTYPES: importable from here, as before)
from .training.selection import searches, weighs_linear


@dataclass
class Problem:
    x: torch.Tensor
    y: torch.Tensor                  # float targets [N, out], or int64 class labels [N]
    weights: List[torch.Tensor]
    x_val: Optional[torch.Tensor]
    y_val: Optional[torch.Tensor]
    checksum: str
    note: Optional[str] = None       # what the data loader decided, and why (for stderr)
    search_l2: bool = False          # the L2 is to be chosen by cross-validation (training.selection)
    weighs_linear: bool = False      # the folds may weigh no hidden layer too (selection.weighs_linear)


def footprint(sizes, rows, batch_rows, *, element=4, optimizer="sgd", data_columns=0):
    """Bytes a run will hold, roughly: {"parameters": ..., "activations": ..., "data": ...}.

    Parameters with biases, counted ~6 times (the trainer's copy, the caller's, up to two optimizer
    buffers, a gradient, a snapshot per chunk); activations of a batch ~3 times per layer (values,
    gradients, the output error) plus the validation pass; the data twice (as given, and with its column
    of ones)."""
    params = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))
    copies = 4 + {"sgd": 0, "momentum": 1, "adam": 2}.get(optimizer, 2)
    return {"parameters": params * copies * element,
            "activations": 3 * max(batch_rows, min(rows, 4096)) * sum(sizes[1:]) * element,
            "data": 2 * rows * (data_columns or sizes[0] + sizes[-1]) * element}


def build_problem(config, device, check=None):
    """(Problem) for the seed's random problem or for config["data"]; fills the config with what the
    data decided: features, out, task_used, classes, class_names, loss, statistics. Raises DataError.
    ``check(sizes, rows)`` is called before the network's tensors are made (the CLI refuses there a
    run that cannot fit in memory)."""
    dtype = DTYPES[config["dtype"]]
    check = check or (lambda sizes, rows: None)
    if config["data"] is None:
        check([config["features"], *config["hidden"], config["out"]], config["batch"])
        x, y, weights = seed_data(config["seed"], batch=config["batch"], features=config["features"],
                                  hidden=config["hidden"], out=config["out"], device=device, dtype=dtype,
                                  init=config["init"])
        x_val = y_val = None
        if config["val_split"]:
            x, y, x_val, y_val = split(x, y, config["val_split"], config["seed"])
        return Problem(x, y, weights, x_val, y_val, data_checksum(x, y))
    # reading the file: its columns, as chosen, and its missing cells, as the policy says
    columns = Columns(target=config.get("target"), ignore=config.get("ignore") or [], id=config.get("id"))
    dataset = load_data(config["data"], target_cols=config["target_cols"], task=config["task"], columns=columns,
                        missing=config.get("missing", "refuse"))
    x, y = dataset.x, dataset.y
    check([x.shape[1], *config["hidden"], dataset.out], x.shape[0])
    checksum = data_checksum(x, y)
    config["features"], config["out"] = x.shape[1], dataset.out
    config["classes"], config["class_names"] = dataset.classes, dataset.class_names
    config["task_used"] = dataset.task            # what predict must do again
    config["feature_names"], config["target_names"] = dataset.feature_names, dataset.target_names
    config["id_name"] = dataset.id_name
    if dataset.fill_values is not None:
        config["fill_values"] = dataset.fill_values
    if config.get("loss") is None:
        config["loss"] = "ce" if dataset.task == "classify" else "sse"
    # the validation split, L2 and patience not given follow from the rows (manualnn.spec.data_settings); on
    # few rows the L2 is searched for (training.selection: the caller runs it, with the run's step)
    given_l2 = config["weight_decay"]
    config.update(data_settings(x.shape[0], dataset.task, batch_size=config["batch_size"],
                                val_split=config["val_split"], weight_decay=config["weight_decay"],
                                patience=config["patience"], sklearn=config.get("sklearn_defaults", False)))
    x_train, y_train, x_val, y_val = split(x, y, config["val_split"], config["seed"])
    if config["standardize"] is None:
        config["standardize"] = config["data"] != "digits"
    if config["standardize"]:
        config["x_mean"], config["x_std"] = fit_standardizer(x_train)
        x_train, x_val = apply_features(x_train, config), apply_features(x_val, config)
        if dataset.task == "regress":
            config["y_mean"], config["y_std"] = fit_standardizer(y_train)
            y_train = standardize(y_train, config["y_mean"], config["y_std"])
            y_val = None if y_val is None else standardize(y_val, config["y_mean"], config["y_std"])
    sizes = [x.shape[1], *config["hidden"], dataset.out]
    # the split above used its own generator: the weights come from the seed alone
    weights = init_weights(sizes, config["init"], generator=torch.Generator().manual_seed(config["seed"]))
    to = lambda t: None if t is None else t.to(device, dtype if t.is_floating_point() else t.dtype)  # noqa: E731
    rows, given = x_train.shape[0], (config["val_split"], given_l2, config.get("sklearn_defaults", False),
                                     config["patience"])
    search_l2 = searches(rows, *given)
    linear = weighs_linear(rows, dataset.task, *given, batch_size=config["batch_size"])
    return Problem(to(x_train), to(y_train), [to(w) for w in weights], to(x_val), to(y_val), checksum,
                   note="\n".join(dataset.notes + [f"{dataset.source}: {dataset.task_reason}"]), search_l2=search_l2,
                   weighs_linear=linear)
