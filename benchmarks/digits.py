"""The digits workload: mini-batch training on a real data set, manualnn beside PyTorch autograd.

    python -m benchmarks.digits                  # CPU: 64 -> 256 -> 10, batch 32, lr 5e-4 (< 1 min)
    python -m benchmarks.digits --device cuda    # adds manualnn's Triton backend

scikit-learn's digits (1,797 8x8 images; 1,438 training rows after the default 20% validation
split, 45 steps per epoch), the network and settings `manualnn train --data digits` uses. Every
contender walks the same batches (manualnn's seeded order) from the same initial weights:

- manualnn (torch backend, and triton on CUDA): ``manualnn.Trainer(batch_size=32)``;
- autograd: ``nn.Sequential(Linear, ReLU, Linear)`` (no bias) + ``torch.optim.SGD`` (foreach), the
  loss ``((model(x) - y)**2).sum()``, the batch gathered by indexing, as a PyTorch user writes it;
  on the CPU also with torch's threads set to 1, as manualnn sets them for steps this small.

Each is first judged against the float64 mini-batch reference loop (``manualnn.testing.judge``);
then timed round-robin (one run of --epochs epochs each, --repeats rounds) so drift hits all alike.
Prints a table and writes digits.json and digits.md under --out.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
from torch import nn

import manualnn
from manualnn.data import init_weights, load_data, split
from manualnn.testing import judge
from manualnn.trainer import _cpu_threads, batch_order

from .run import device_name, git_commit, slug, sync, versions

HIDDEN, BATCH, LR, SEED = 256, 32, 5e-4, 0


class Workload:
    def __init__(self, device):
        data = load_data("digits")
        x, labels, _, _ = split(data.x, data.y, 0.2, SEED)
        self.x, self.labels = x.to(device), labels.to(device)
        self.targets = torch.nn.functional.one_hot(labels, 10).float().to(device)
        self.w0 = [w.to(device) for w in
                   init_weights([64, HIDDEN, 10], "kaiming", generator=torch.Generator().manual_seed(SEED))]
        self.device = device
        self.epoch = 0


def manualnn_contender(backend):
    def make(work):
        trainer = manualnn.Trainer(work.x, work.labels, work.w0, lr=LR, batch_size=BATCH, shuffle_seed=SEED,
                                   backend=backend)

        def run(epochs):
            trainer.run(epochs)
            return trainer
        return run, lambda: (trainer.losses, trainer.weights)
    return make


def autograd_contender(work):
    model = nn.Sequential(nn.Linear(64, HIDDEN, bias=False), nn.ReLU(), nn.Linear(HIDDEN, 10, bias=False))
    model.to(work.device)
    with torch.no_grad():  # nn.Linear stores out x in: the transpose of the seed's layout
        model[0].weight.copy_(work.w0[0].t())
        model[2].weight.copy_(work.w0[1].t())
    opt = torch.optim.SGD(model.parameters(), lr=LR, foreach=True)
    n = work.x.shape[0]
    state = {"epoch": 0, "losses": []}

    def run(epochs):
        for _ in range(epochs):
            order = batch_order(n, state["epoch"], seed=SEED).to(work.device)
            total = torch.zeros((), device=work.device)
            for start in range(0, n, BATCH):
                rows = order[start:start + BATCH]
                loss = (model(work.x[rows]) - work.targets[rows]).pow(2).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.detach()
            state["losses"].append(total)
            state["epoch"] += 1

    def result():
        losses = [float(v) for v in state["losses"]]
        return losses, [model[0].weight.detach().t(), model[2].weight.detach().t()]
    return run, result


def one_thread(make):
    """The same contender run with torch's intra-op threads at 1 (as manualnn does for small steps)."""
    def made(work):
        run, result = make(work)

        def run_1(epochs):
            with _cpu_threads(1):
                run(epochs)
        return run_1, result
    return made


def references(work, epochs):
    out = []
    n = work.x.shape[0]
    for dt in (torch.float64, torch.float32):
        out.append(manualnn.minibatch_reference_loop(
            work.x.cpu().to(dt), work.targets.cpu().to(dt), [w.cpu().to(dt) for w in work.w0], epochs=epochs, lr=LR,
            batch_size=BATCH, order=lambda e: batch_order(n, e, seed=SEED)))
    return tuple(out)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.digits", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--epochs", type=int, default=5, help="epochs per timed run (default 5)")
    p.add_argument("--repeats", type=int, default=9, help="timed rounds (default 9)")
    p.add_argument("--out", help="output folder (default benchmarks/results/<device-slug>/)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device: cuda was asked for but no CUDA device is available")
    contenders = {"manualnn (torch backend)": manualnn_contender("torch"), "autograd + SGD (foreach)": autograd_contender}
    if device.type == "cuda":
        contenders["manualnn (triton backend)"] = manualnn_contender("triton")
    else:
        contenders["autograd + SGD (foreach), 1 thread"] = one_thread(autograd_contender)

    # judged first, on a fresh instance each: 3 epochs against the float64 mini-batch loop
    check_epochs = 3
    work = Workload(device)
    refs = references(work, check_epochs)
    verdicts = {}
    for name, make in contenders.items():
        run, result = make(Workload(device))
        run(check_epochs)
        losses, weights = result()
        verdict = judge(losses, weights, work.x, work.targets, work.w0, epochs=check_epochs, lr=LR, grad="relu",
                        refs=refs)
        verdicts[name] = verdict
        print(f"{name}: {verdict.summary()}", file=sys.stderr)

    runners = {name: make(Workload(device))[0] for name, make in contenders.items() if verdicts[name].ok}
    for run in runners.values():   # warm-up
        run(1)
    sync(device)
    times = {name: [] for name in runners}
    for _ in range(args.repeats):
        for name, run in runners.items():
            sync(device)
            started = time.perf_counter()
            run(args.epochs)
            sync(device)
            times[name].append(time.perf_counter() - started)
    steps = args.epochs * -(-work.x.shape[0] // BATCH)
    base = statistics.median(times["autograd + SGD (foreach)"]) if "autograd + SGD (foreach)" in times else None
    rows = []
    for name in contenders:
        if name not in times:
            rows.append({"contender": name, "status": "wrong", "verdict": verdicts[name].summary()})
            continue
        med = statistics.median(times[name])
        rows.append({"contender": name, "status": "ok", "seconds_per_run": med, "us_per_step": med / steps * 1e6,
                     "runs": times[name], "vs_autograd": med / base if base else None,
                     "verdict": verdicts[name].summary()})
    record = {"meta": {"device": device_name(device), "versions": versions(), "commit": git_commit(),
                       "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "threads": torch.get_num_threads(),
                       "workload": f"digits 1438 rows, 64 -> {HIDDEN} -> 10, batch {BATCH}, lr {LR}",
                       "epochs_per_run": args.epochs, "steps_per_run": steps, "repeats": args.repeats},
              "rows": rows}
    lines = [f"digits workload on {record['meta']['device']}: {record['meta']['workload']}, "
             f"{args.epochs} epochs ({steps} steps) per run, median of {args.repeats} round-robin runs",
             "", "| contender | ms/run | µs/step | × autograd |", "|---|---|---|---|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['contender']} | wrong: not timed | | |")
            continue
        lines.append(f"| {r['contender']} | {r['seconds_per_run'] * 1e3:.1f} | {r['us_per_step']:.0f} | "
                     f"{r['vs_autograd']:.2f} |")
    table = "\n".join(lines)
    print(table)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   slug(f"{device.type}-{record['meta']['device']}"))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "digits.json"), "w") as f:
        json.dump(record, f, indent=2)
    with open(os.path.join(out, "digits.md"), "w") as f:
        f.write(table + "\n")
    print(f"wrote {out}/digits.json, digits.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
