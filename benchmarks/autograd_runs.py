"""The "PyTorch autograd" contender of the real-data benchmark: what a PyTorch user writes for the
same run as ``manualnn train --data FILE --seed S``: ``nn.Linear`` + ``nn.ReLU`` layers, the loss from
``torch.nn.functional``, ``torch.optim``, the batch gathered by indexing.

It trains on exactly manualnn's inputs (``manualnn.problem.build_problem``: the same split,
standardization, initial weights and biases, and the same seeded batch order), so its per-epoch
losses must equal manualnn's to float32 rounding: the record says how far they are apart. Where
manualnn chose its L2 by cross-validation (fewer than 50 training rows), or its network (a regression
of up to 200 rows: no hidden layer, trained at its own lr and epochs), it trains what manualnn's run
chose (from its record), and its time leaves that search out.
"""
import math
import time

import numpy as np
import torch
from torch import nn

from .suite import load_test

COMPARED_EPOCHS = 20   # where the two runs' losses must agree (later, float32 rounding may grow under Adam)


def config_for(entry, extra):
    from manualnn.cli.config import run_config
    from manualnn.cli.options import build_parser
    args = build_parser().parse_args(["train", "--data", entry.train, "--seed", str(entry.seed), *extra])
    return run_config(args)[0]


def train_autograd(config, problem):
    """(model, per-epoch losses as manualnn reports them, seconds of the training loop)."""
    from manualnn.training import batch_order
    layers = []
    for w in problem.weights:
        lin = nn.Linear(w.shape[0], w.shape[1], bias=config["bias"])
        with torch.no_grad():
            lin.weight.copy_(w.t())
            if config["bias"]:
                lin.bias.zero_()   # manualnn's biases start at zero
        layers += [lin, nn.ReLU()]
    model = nn.Sequential(*layers[:-1])
    decay = [m.weight for m in model if isinstance(m, nn.Linear)]
    rest = [m.bias for m in model if isinstance(m, nn.Linear) and m.bias is not None]
    groups = [{"params": decay, "weight_decay": config["weight_decay"]}, {"params": rest, "weight_decay": 0.0}]
    if config["optimizer"] == "adam":
        opt = torch.optim.Adam(groups, lr=config["lr"], betas=tuple(config["betas"]), eps=config["eps"])
    else:
        opt = torch.optim.SGD(groups, lr=config["lr"],
                              momentum=config["momentum"] if config["optimizer"] == "momentum" else 0)
    x, y, n = problem.x, problem.y, problem.x.shape[0]
    batch, mean = config["batch_size"] or n, config["reduction"] == "mean"

    def loss_of(z, t):
        if config["loss"] == "ce":
            return nn.functional.cross_entropy(z, t, reduction="sum")
        return nn.functional.mse_loss(z, t, reduction="sum")

    losses, best, started = [], None, time.perf_counter()
    for epoch in range(config["epochs"]):
        order, total = batch_order(n, epoch, shuffle=config["shuffle"], seed=config["seed"]), 0.0
        for rows in torch.tensor_split(order, -(-n // batch)):   # manualnn's even batches
            loss = loss_of(model(x[rows]), y[rows])
            opt.zero_grad(set_to_none=True)
            (loss / len(rows) if mean else loss).backward()
            opt.step()
            total += loss.item()
        losses.append(total / n if mean else total)
        if not math.isfinite(losses[-1]):
            break
        if config.get("patience") and problem.x_val is not None:   # manualnn's --patience: the best epoch's weights
            with torch.no_grad():
                val = loss_of(model(problem.x_val), problem.y_val).item()
            if best is None or val < best[1]:
                best = (epoch, val, [p.detach().clone() for p in model.parameters()])
            elif epoch - best[0] >= config["patience"]:
                with torch.no_grad():
                    for p, s in zip(model.parameters(), best[2]):
                        p.copy_(s)
                break
    return model, losses, time.perf_counter() - started


def run_autograd(entry, extra, manualnn_record=None):
    """Train and score one (data set, seed) the autograd way; a record like manualnn_runs.run_one's."""
    from manualnn.data import load_data
    from manualnn.problem import apply_features, build_problem, unstandardize_targets
    torch.set_num_threads(1)
    started = time.perf_counter()
    config = config_for(entry, list(extra))
    chosen = manualnn_record or {}
    if chosen.get("hidden") == []:   # manualnn's search chose no hidden layer: that network, its rate and length
        config.update(hidden=[], lr=chosen["lr"], epochs=chosen["epochs"])   # (drawn by build_problem as the CLI does)
    problem = build_problem(config, torch.device("cpu"))
    if (problem.search_l2 or problem.weighs_linear) and chosen.get("weight_decay") is not None:
        config["weight_decay"] = chosen["weight_decay"]   # the L2 manualnn's search chose (not timed here)
    model, losses, loop_s = train_autograd(config, problem)
    test = load_data(entry.test, task=config["task_used"], class_names=config.get("class_names"))
    with torch.no_grad():
        out = model(apply_features(test.x, config).to(problem.x.dtype))
    if entry.task == "classify":
        score = float((out.argmax(1) == test.y).double().mean())
    else:
        pred = unstandardize_targets(out, config)[:, 0].double().numpy()
        _, y = load_test(entry)
        score = float(1.0 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())
    diverged = not all(math.isfinite(v) for v in losses)
    record = {"dataset": entry.dataset, "seed": entry.seed, "task": entry.task, "metric": entry.metric,
              "score": score, "train_rc": 0, "train_wall_s": time.perf_counter() - started, "train_loop_s": loop_s,
              "epochs_run": len(losses), "diverged": diverged, "notes": []}
    theirs = (manualnn_record or {}).get("losses")
    if theirs:
        k = min(COMPARED_EPOCHS, len(theirs), len(losses))
        record["loss_rel_diff"] = max(abs(a - b) / max(abs(b), 1e-30) for a, b in zip(losses[:k], theirs[:k]))
    failed = diverged or not np.isfinite(score) or score <= entry.chance
    record["failed"], record["reasons"] = failed, (["diverged"] if diverged else []) + (
        ["at chance"] if not diverged and score <= entry.chance else [])
    return record
