"""Side-by-side CPU timing: the seed's loop (verbatim, printing nothing) vs manualnn's torch backend.

    python -m benchmarks.seed_vs_torch [--repeats 30]

Both train 20 epochs at the seed shape from the same inputs; runs are interleaved and the medians
(with the interquartile range) printed. The full matrix lives in benchmarks/run.py.
"""
import argparse
import statistics
import time

import torch

import manualnn


def seed_loop(x, y, w1, w2, epoch_n=20, learning_rate=1e-6):
    for epoch in range(epoch_n):
        h1 = torch.mm(x, w1)
        h1 = h1.clamp(min=0)
        y_pred = h1.mm(w2)
        loss = (y_pred - y).pow(2).sum()
        grad_y_pred = 2 * (y_pred - y)
        grad_w2 = torch.mm(h1.t(), grad_y_pred)
        grad_h = grad_y_pred.clone()
        grad_h = torch.mm(grad_h, w2.t())
        grad_h.clamp_(min=0)
        grad_w1 = torch.mm(x.t(), grad_h)
        w1 -= learning_rate * grad_w1
        w2 -= learning_rate * grad_w2
    return loss


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args()
    x, y, weights = manualnn.seed_data(0)
    contenders = {
        "seed loop (verbatim)": lambda: seed_loop(x, y, weights[0].clone(), weights[1].clone()),
        "manualnn torch backend": lambda: manualnn.train(x, y, weights, epochs=20, grad="tutorial",
                                                         backend="torch"),
    }
    times = {name: [] for name in contenders}
    for fn in contenders.values():
        fn()  # warm up
    for _ in range(args.repeats):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    print(f"20 epochs at 100x1000->100->10, fp32, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.repeats} interleaved repeats")
    base = statistics.median(times["seed loop (verbatim)"])
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=4)
        med = statistics.median(ts)
        print(f"  {name:26s} median {med * 1e3:7.3f} ms  IQR [{q[0] * 1e3:.3f}, {q[2] * 1e3:.3f}]  "
              f"speed-up vs seed {base / med:.2f}x")


if __name__ == "__main__":
    main()
