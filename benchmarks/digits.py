"""The digits workload: ``manualnn train --data digits`` as it trains by default, beside PyTorch autograd.

    python -m benchmarks.digits                  # CPU (< 1 min)
    python -m benchmarks.digits --device cuda    # adds manualnn's Triton backend

scikit-learn's digits (1,797 8x8 images; 1,438 training rows after the default 20% validation
split), the network and step ``manualnn train --data digits`` uses by default (manualnn.cli.options
DATA_DEFAULTS: biases, softmax cross-entropy averaged over the batch, Adam). Every contender walks
the same batches (manualnn's seeded order) from the same initial weights and biases:

- manualnn: ``manualnn.Trainer`` on the torch backend (and native when built; triton on CUDA);
- autograd: ``nn.Sequential(Linear, ReLU, Linear)`` + ``nn.CrossEntropyLoss`` + ``torch.optim.Adam``
  (foreach), the batch gathered by indexing, as a PyTorch user writes it; on the CPU also with torch's
  threads set to 1, as manualnn sets them for steps this small.

Each is first judged against the float64 reference run with the same settings
(``manualnn.testing.judge``); then timed round-robin (one run of --epochs epochs each, --repeats
rounds) so drift hits all alike. Prints a table and writes digits.json and digits.md under --out.
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
from manualnn.cli.options import DATA_DEFAULTS
from manualnn.data import init_weights, load_data, split
from manualnn.spec import data_settings
from manualnn.testing import judge
from manualnn.training import batch_order, cpu_threads

from . import at_least_one, run_main
from .run import device_name, git_commit, slug, sync, versions

HIDDEN, BATCH, LR, SEED = DATA_DEFAULTS["hidden"][0], DATA_DEFAULTS["batch_size"], DATA_DEFAULTS["lr"], 0
STEP = dict(loss="ce", reduction=DATA_DEFAULTS["reduction"], optimizer=DATA_DEFAULTS["optimizer"],
            betas=tuple(DATA_DEFAULTS["betas"]), eps=DATA_DEFAULTS["eps"],
            weight_decay=data_settings(1797, "classify")["weight_decay"])   # digits' 1,797 rows: 0, with a split


class Workload:
    def __init__(self, device):
        data = load_data("digits")
        x, labels, _, _ = split(data.x, data.y, 0.2, SEED)
        self.x, self.labels = x.to(device), labels.to(device)
        self.targets = torch.nn.functional.one_hot(labels, 10).float().to(device)
        self.w0 = [w.to(device) for w in
                   init_weights([64, HIDDEN, 10], "kaiming", generator=torch.Generator().manual_seed(SEED))]
        self.b0 = [torch.zeros(w.shape[1], device=device) for w in self.w0]
        self.device = device


def manualnn_contender(backend):
    def make(work):
        trainer = manualnn.Trainer(work.x, work.labels, work.w0, biases=work.b0, lr=LR, batch_size=BATCH,
                                   shuffle_seed=SEED, backend=backend, **STEP)

        def run(epochs):
            trainer.run(epochs)
        return run, lambda: (trainer.losses, trainer.weights, trainer.biases)
    return make


def autograd_contender(work):
    model = nn.Sequential(nn.Linear(64, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 10)).to(work.device)
    with torch.no_grad():  # nn.Linear stores out x in: the transpose of the seed's layout
        for layer, w, b in zip((model[0], model[2]), work.w0, work.b0):
            layer.weight.copy_(w.t())
            layer.bias.copy_(b)
    opt = torch.optim.Adam(model.parameters(), lr=LR, betas=STEP["betas"], eps=STEP["eps"], foreach=True)
    loss_fn = nn.CrossEntropyLoss()
    n = work.x.shape[0]
    state = {"epoch": 0, "losses": []}

    def run(epochs):
        for _ in range(epochs):
            order = batch_order(n, state["epoch"], seed=SEED).to(work.device)
            total = torch.zeros((), device=work.device)
            for rows in torch.tensor_split(order, -(-n // BATCH)):   # manualnn's even batches
                loss = loss_fn(model(work.x[rows]), work.labels[rows])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.detach() * len(rows)
            state["losses"].append(total / n)
            state["epoch"] += 1

    def result():
        losses = [float(v) for v in state["losses"]]
        return (losses, [model[0].weight.detach().t(), model[2].weight.detach().t()],
                [model[0].bias.detach(), model[2].bias.detach()])
    return run, result


def one_thread(make):
    """The same contender run with torch's intra-op threads at 1 (as manualnn does for small steps)."""
    def made(work):
        run, result = make(work)

        def run_1(epochs):
            with cpu_threads(1):
                run(epochs)
        return run_1, result
    return made


def main(argv=None):
    global HIDDEN, BATCH
    p = argparse.ArgumentParser(prog="python -m benchmarks.digits", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--epochs", type=at_least_one, default=5, help="epochs per timed run (default 5)")
    p.add_argument("--repeats", type=at_least_one, default=9, help="timed rounds (default 9)")
    p.add_argument("--out", help="output folder (default benchmarks/results/<device-slug>/)")
    p.add_argument("--hidden", type=int, help=f"hidden width (default {HIDDEN}, the --data default)")
    p.add_argument("--batch-size", type=int, help=f"rows per step (default {BATCH}, the --data default)")
    p.add_argument("--name", default="digits", help="file name stem of the results (default digits)")
    args = p.parse_args(argv)
    HIDDEN, BATCH = args.hidden or HIDDEN, args.batch_size or BATCH
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device: cuda was asked for but no CUDA device is available")
    autograd = "autograd + Adam + CrossEntropyLoss (foreach)"
    contenders = {"manualnn (torch backend)": manualnn_contender("torch"), autograd: autograd_contender}
    if device.type == "cuda":
        contenders["manualnn (triton backend)"] = manualnn_contender("triton")
    else:
        from manualnn.backends import native_build
        if native_build.is_built():
            contenders["manualnn (native backend)"] = manualnn_contender("native")
        contenders[autograd + ", 1 thread"] = one_thread(autograd_contender)

    # judged first, on a fresh instance each: 3 epochs against the float64 reference run
    check_epochs = 3
    work = Workload(device)
    n = work.x.shape[0]
    verdicts = {}
    for name, make in contenders.items():
        run, result = make(Workload(device))
        run(check_epochs)
        losses, weights, biases = result()
        verdict = judge(losses, weights, work.x.cpu(), work.targets.cpu(), [w.cpu() for w in work.w0], epochs=check_epochs,
                        lr=LR, grad="relu", biases=biases, biases0=[b.cpu() for b in work.b0], batch_size=BATCH,
                        order=lambda e: batch_order(n, e, seed=SEED), **STEP)
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
    base = statistics.median(times[autograd]) if autograd in times else None
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
                       "workload": f"digits 1438 rows, 64 -> {HIDDEN} -> 10 with biases, batch {BATCH}, "
                                   f"cross-entropy ({STEP['reduction']}), {STEP['optimizer']} lr {LR}",
                       "epochs_per_run": args.epochs, "steps_per_run": steps, "repeats": args.repeats,
                       "command": ["python", "-m", "benchmarks.digits", *sys.argv[1:]]},
              "rows": rows}
    lines = [f"digits workload on {record['meta']['device']}: {record['meta']['workload']}, "
             f"{args.epochs} epochs ({steps} steps) per run, median of {args.repeats} round-robin runs; "
             f"commit {record['meta']['commit']}; {record['meta']['date']}",
             f"`{' '.join(record['meta']['command'])}`", "", "| contender | ms/run | µs/step | × autograd |", "|---|---|---|---|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['contender']} | wrong: not timed | | |")
            continue
        lines.append(f"| {r['contender']} | {r['seconds_per_run'] * 1e3:.1f} | {r['us_per_step']:.0f} | "
                     f"{r['vs_autograd']:.2f} |")
    table = "\n".join(lines)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   slug(f"{device.type}-{record['meta']['device']}"))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{args.name}.json"), "w") as f:
        json.dump(record, f, indent=2)
    with open(os.path.join(out, f"{args.name}.md"), "w") as f:
        f.write(table + "\n")
    print(f"wrote {out}/{args.name}.json, {args.name}.md", file=sys.stderr)
    print(table)   # (after the files: '| head' keeps them)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
