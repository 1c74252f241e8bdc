"""The small regressions (at most 200 training rows) of the suite, splits 0-2, seeds 0-9: each run fit as
MLPRegressor's defaults do (the search of choose_network, patched to record both candidates and their
per-fold losses), then both candidates refit at their chosen L2 (the hidden layers; no hidden layer at
spec.LINEAR's rate and length), and the test R2 of each and of their average. rules_analyze.py judges it.
python benchmarks/results/realdata/remaining-misses/rules_proto.py stackloss,engel,...,friedman1_tiny OUT.json"""
import os, sys, json, math, time, warnings, numpy as np, torch
warnings.filterwarnings("ignore")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, '..', '..', '..', '..'))
sys.path.insert(0, ROOT)
from benchmarks.suite import write_suite, load_train, load_test, specs
from benchmarks.sklearn_mlp import sklearn_results, baseline
from manualnn import MLPRegressor
import manualnn.training.selection as sel
from sklearn.metrics import r2_score
torch.set_num_threads(1)
CAP = {}
orig_grid = sel._native_grid
def grid_wrap(*a, **k):
    g = orig_grid(*a, **k)
    CAP.setdefault("grids", []).append(g)
    CAP.setdefault("splits", []).append([len(h) for _, h in a[4]])
    return g
sel._native_grid = grid_wrap
orig_choose = sel.choose_network
def choose_wrap(*a, **k):
    out = orig_choose(*a, **k)
    CAP["record"] = out[2]
    return out
sel.choose_network = choose_wrap

def main(parts, out):
    from benchmarks.suite import parse_datasets
    entries = write_suite(datasets=parse_datasets(parts), splits=[0, 1, 2], seeds=list(range(10)))
    sk = sklearn_results(entries, os.path.join(ROOT, 'benchmarks', 'results', 'realdata', 'sklearn-cache.json'))
    rows = []
    for e in entries:
        if e.task != "regress":
            continue
        x, y = load_train(e); xt, yt = load_test(e)
        if x.shape[0] > 200:
            continue
        CAP.clear()
        m = MLPRegressor(random_state=e.seed).fit(x, y)
        rec = CAP["record"]; n = x.shape[0]
        h, l = rec["candidates"]["hidden"], rec["candidates"]["linear"]
        gh, gl = CAP["grids"][0], CAP["grids"][1]
        ih = h["strengths"].index(h["chosen"]); il = l["strengths"].index(l["chosen"])
        fh = list(gh[ih]); fl = list(gl[il]); sizes = CAP["splits"][0]
        net = MLPRegressor(random_state=e.seed, weight_decay=h["chosen"] / n).fit(x, y)
        lin = MLPRegressor(random_state=e.seed, hidden_layer_sizes=(), learning_rate_init=0.1, max_iter=500,
                           weight_decay=l["chosen"] / n).fit(x, y)
        pn, pl = net.predict(xt), lin.predict(xt)
        b, _ = baseline(sk, e.dataset, e.split_id, e.seed)
        r = dict(ds=e.dataset, split=e.split_id, seed=e.seed, n=n, bound=b - 0.05, default=r2_score(yt, m.predict(xt)),
                 net=r2_score(yt, pn), lin=r2_score(yt, pl), avg=r2_score(yt, (pn + pl) / 2), chosen=rec["network"],
                 fold_net=fh, fold_lin=fl, fold_sizes=sizes, cv_net=min(v for v in h["losses"] if v is not None),
                 cv_lin=min(v for v in l["losses"] if v is not None))
        rows.append(r)
        print(f"{e.dataset:18s} {e.split_id} {e.seed} n={n:3d} {rec['network']:6s} net {r['net']:.3f} lin {r['lin']:.3f} avg {r['avg']:.3f} bound {r['bound']:.3f} cv {r['cv_net']:.4g}/{r['cv_lin']:.4g}", flush=True)
    json.dump(rows, open(out, "w"), indent=0)

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
