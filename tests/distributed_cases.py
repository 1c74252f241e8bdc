"""Run by every rank of a 2-rank launch (tests/test_distributed.py): each case trains with
manualnn.train(distributed=True) and rank 0 prints one JSON line per case (losses, parameters); every
other rank writes the same lines to rank<R>.jsonl in the working folder, so the test can see that every
rank holds the same weights. One launch serves every case: a process group starts once, and the cases
differ only in settings."""
import json
import sys

import torch

import manualnn
import manualnn.distributed

CASES = {
    # name: (data shape, train() settings) -- full and mini-batches, batches of one row (rank 1 has none),
    # both gradient modes, and the --data defaults' step (biases, cross-entropy, mean, Adam)
    "seed-tutorial": (dict(batch=100, features=50, hidden=(20,), out=4), dict(lr=1e-4, grad="tutorial")),
    "shuffled-relu": (dict(batch=64, features=50, hidden=(20,), out=4), dict(lr=1e-4, batch_size=30)),
    "odd-shards": (dict(batch=99, features=50, hidden=(20, 7), out=4), dict(lr=1e-4)),
    "batches-of-one": (dict(batch=7, features=12, hidden=(9,), out=3), dict(lr=1e-3, batch_size=1, shuffle=False)),
    "adam-ce-mean-bias": (dict(batch=64, features=12, hidden=(9,), out=3),
                          dict(lr=1e-2, batch_size=16, bias=True, loss="ce", reduction="mean", optimizer="adam",
                               weight_decay=1e-3)),
    "momentum-sse-bias": (dict(batch=64, features=12, hidden=(9,), out=3),
                          dict(lr=1e-3, batch_size=25, bias=True, reduction="mean", optimizer="momentum")),
}


def problem(shape, settings):
    x, y, w = manualnn.seed_data(3, init="kaiming", **shape)
    return x, (y.argmax(1) if settings.get("loss") == "ce" else y), w


def run(name, distributed, backend="torch"):
    shape, settings = CASES[name]
    x, y, w = problem(shape, settings)
    result = manualnn.train(x, y, w, epochs=5, shuffle_seed=4, backend=backend, distributed=distributed, **settings)
    return {"case": name, "losses": result.losses,
            "params": [t.tolist() for t in result.weights + (result.biases or [])]}


if __name__ == "__main__":
    backend = sys.argv[1] if len(sys.argv) > 1 else "torch"
    names = sys.argv[2].split(",") if len(sys.argv) > 2 else list(CASES)
    torch.set_num_threads(1)
    manualnn.distributed.init("cpu")
    rank = torch.distributed.get_rank()
    records = [json.dumps(run(name, True, backend)) for name in names]
    if rank == 0:
        print("\n".join(records), flush=True)
    else:
        with open(f"rank{rank}.jsonl", "w") as f:
            f.write("\n".join(records) + "\n")
    manualnn.distributed.shutdown()
