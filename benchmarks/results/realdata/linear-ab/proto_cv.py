"""Prototype: small-set CV chooses between the 512-net (C grid) and a linear network (C grid)."""
import sys, time, json, math, numpy as np, torch, warnings
warnings.filterwarnings("ignore")
sys.path.insert(0, '/work/main')
from benchmarks.suite import write_suite, load_train, load_test
from benchmarks.sklearn_mlp import sklearn_results, baseline
from manualnn import MLPClassifier, MLPRegressor, MLP
import manualnn.model as mm
import manualnn.training.selection as sel
torch.set_num_threads(1)
BOUND = {"classify": 0.03, "regress": 0.05}
ORIG = sel.choose_weight_decay
CV_ROWS = int(sys.argv[3]) if len(sys.argv) > 3 else 50
LIN = eval(sys.argv[4]) if len(sys.argv) > 4 else dict(lr=0.1, epochs=500, strengths=(0.1, 1.0, 3.0, 10.0, 30.0))
MARGIN = float(sys.argv[5]) if len(sys.argv) > 5 else 1.0   # linear wins if its loss <= MARGIN * net's
sel.CV_FOLDS = int(sys.argv[6]) if len(sys.argv) > 6 else 3
DETAIL = len(sys.argv) > 7
DECISION = {}

def wrapper(x, y, weights, *, seed, biases=None, classes=False, **options):
    wd, rec = ORIG(x, y, weights, seed=seed, biases=biases, classes=classes, **options)
    lin = MLP([x.shape[1], weights[-1].shape[1]], seed=DECISION["seed"])
    lw, lb = lin._layers()
    old = sel.CV_EPOCHS, sel.CV_STRENGTHS
    sel.CV_EPOCHS, sel.CV_STRENGTHS = LIN["epochs"], LIN["strengths"]
    try:
        lopt = dict(options, lr=LIN["lr"])
        lwd, lrec = ORIG(x, y, [w.detach() for w in lw], seed=seed, biases=[b.detach() for b in lb], classes=classes, **lopt)
    finally:
        sel.CV_EPOCHS, sel.CV_STRENGTHS = old
    net_loss = min(l for l in rec["losses"] if l is not None)
    lin_loss = min(l for l in lrec["losses"] if l is not None)
    DECISION.update(net=net_loss, lin=lin_loss, lin_c=lrec["chosen"], linear=lin_loss <= MARGIN * net_loss, n=x.shape[0])
    return wd, rec

mm.choose_weight_decay = wrapper
mm.searches = lambda rows, val_split, wd, sklearn=False, patience=None: wd is None and not val_split and not sklearn \
    and patience is None and 3 <= int(rows) < CV_ROWS

def score(e, m, xt, yt):
    if e.task == "classify":
        return float((m.predict(xt) == yt).mean())
    from sklearn.metrics import r2_score
    return float(r2_score(yt, m.predict(xt)))

def run(e):
    x, y = load_train(e); xt, yt = load_test(e)
    cls = MLPClassifier if e.task == "classify" else MLPRegressor
    DECISION.clear(); DECISION["seed"] = e.seed
    m = cls(random_state=e.seed).fit(x, y)
    base = score(e, m, xt, yt)
    if DECISION.get("linear"):
        lm = cls(hidden_layer_sizes=(), learning_rate_init=LIN["lr"], max_iter=LIN["epochs"],
                 weight_decay=DECISION["lin_c"] / DECISION["n"], random_state=e.seed).fit(x, y)
        return base, score(e, lm, xt, yt), True
    return base, base, False

def main(sets, seeds=range(10), splits=(0, 1, 2)):
    entries = write_suite(datasets=sets, splits=list(splits), seeds=list(seeds))
    sk = sklearn_results(entries, '/work/main/benchmarks/results/realdata/sklearn-cache.json')
    t0 = time.perf_counter(); per = {}
    for e in entries:
        b, _ = baseline(sk, e.dataset, e.split_id, e.seed)
        s0, s1, lin = run(e)
        d = per.setdefault(e.dataset, dict(b0=0, b1=0, lin=0, s0=[], s1=[], n=0))
        d["n"] += 1; d["lin"] += lin; d["s0"].append(s0); d["s1"].append(s1)
        if DETAIL: print(f"   {e.dataset} split {e.split_id} seed {e.seed}: bound {b - BOUND[e.task]:.3f} net {s0:.3f} chosen {s1:.3f} lin={lin} cv net {DECISION.get('net',0):.4f} lin {DECISION.get('lin',0):.4f}", flush=True)
        d["b0"] += s0 < b - BOUND[e.task] - 1e-9; d["b1"] += s1 < b - BOUND[e.task] - 1e-9
    tot0 = tot1 = 0
    for k, d in per.items():
        tot0 += d["b0"]; tot1 += d["b1"]
        print(f"{k:22s} linear {d['lin']:2d}/{d['n']}  below {d['b0']:2d} -> {d['b1']:2d}   mean {np.mean(d['s0']):.3f} -> {np.mean(d['s1']):.3f}  min {np.min(d['s0']):.3f} -> {np.min(d['s1']):.3f}", flush=True)
    print(f"TOTAL below {tot0} -> {tot1}  ({time.perf_counter()-t0:.0f}s)  CV_ROWS={CV_ROWS} LIN={LIN} MARGIN={MARGIN} FOLDS={sel.CV_FOLDS}")

if __name__ == "__main__":
    main(sys.argv[1].split(','), seeds=range(int(sys.argv[2]) if len(sys.argv) > 2 else 10))
