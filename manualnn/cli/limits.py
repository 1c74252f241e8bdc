"""What a run needs of the machine and of its dtype, checked before anything is allocated or stepped:
memory (naming the option that makes it too big) and step sizes a float32 run can hold."""
import torch

from ..problem import footprint
from ..safeio import human, memory_budget
from .config import UsageError


def check_memory(config, device, sizes, rows):
    """Refuse, before allocating, a run whose tensors cannot fit in the device's free memory.

    ``sizes``: [features, hidden..., outputs]; ``rows``: the data's rows (a batch holds at most them)."""
    element = 8 if config["dtype"] == "float64" else 4
    batch_rows = min(config["batch_size"] or rows, rows)
    need = footprint(sizes, rows, batch_rows, element=element, optimizer=config["optimizer"])
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else memory_budget()
    total = sum(need.values())
    if total <= free:
        return
    option = culprit(max(need, key=need.get), sizes, rows, batch_rows, config)
    detail = ", ".join(f"{name} {human(n)}" for name, n in need.items())
    raise UsageError(f"{option}: this run needs about {human(total)} of memory ({detail}); {device} has "
                     f"{human(free)} free")


def culprit(part, sizes, rows, batch_rows, config):
    """The option behind the largest part of a run's memory: the larger of the two sizes it multiplies."""
    data = config["data"] is not None
    width_options = {0: "--data" if data else "--features", len(sizes) - 1: "--data" if data else "--out"}
    rows_option = "--data" if data else "--batch"
    if part == "parameters":   # the largest layer's wider side
        layer = max(range(len(sizes) - 1), key=lambda i: (sizes[i] + 1) * sizes[i + 1])
        side = layer if sizes[layer] >= sizes[layer + 1] else layer + 1
        return width_options.get(side, "--hidden")
    if part == "activations":  # a batch's rows times the layers' widths
        if sum(sizes[1:-1]) >= max(batch_rows, sizes[-1]):
            return "--hidden"
        if sizes[-1] > batch_rows:
            return width_options[len(sizes) - 1]
        return "--batch-size" if config["batch_size"] or data else rows_option
    return width_options[0] if sizes[0] > rows else rows_option   # the data: rows times columns


def check_float32_steps(config):
    """A float32 run multiplies by lr (twice it, for a sum of squares), the weight decay and their
    product in float32: each must be a float32 number, or the first step fails."""
    if config["dtype"] != "float32":
        return
    largest = torch.finfo(torch.float32).max
    lr, decay = config["lr"], config["weight_decay"] or 0.0   # None: from the data's rows later, at most 30
    for option, value, limit in (("--lr", lr, largest / 2), ("--weight-decay", decay, largest),
                                 ("--eps", config["eps"], largest)):
        if value > limit:
            raise UsageError(f"{option}: expected at most {limit:.3g} in a float32 run, got {value:g}")
    if lr * decay > largest:
        raise UsageError(f"--weight-decay: --lr times --weight-decay must be at most {largest:.3g} in a float32 "
                         f"run, got {lr:g} x {decay:g}")
