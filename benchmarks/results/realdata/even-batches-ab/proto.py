"""Prototype: score variants per (set, split, seed) against the per-seed bound."""
import os, sys, time, json, numpy as np, torch
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, *[os.pardir] * 4))   # the checkout
from benchmarks.suite import write_suite, load_train, load_test
from benchmarks.sklearn_mlp import sklearn_results, baseline
from manualnn import MLPClassifier, MLPRegressor
torch.set_num_threads(1)
BOUND = {"classify": 0.03, "regress": 0.05}

def fit_predict(e, seed, variant):
    x, y = load_train(e); xt, yt = load_test(e)
    K = variant.get("K", 1); kw = dict(variant.get("kw", {}))
    cls = MLPClassifier if e.task == "classify" else MLPRegressor
    outs = []
    for j in range(K):
        rs = seed if j == 0 else 1000 + seed * 37 + j
        m = cls(random_state=rs, **kw).fit(x, y)
        outs.append(m.predict_proba(xt) if e.task == "classify" else m.predict(xt))
    o = np.mean(outs, 0)
    if e.task == "classify":
        pred = m.classes_[o.argmax(1)]
        return float((pred == yt).mean())
    from sklearn.metrics import r2_score
    return float(r2_score(yt, o))

def main(sets, variants, seeds=range(10), splits=(0, 1, 2)):
    entries = write_suite(datasets=sets, splits=list(splits), seeds=list(seeds))
    sk = sklearn_results(entries, os.path.join(HERE, os.pardir, 'sklearn-cache.json'))
    for name, v in variants.items():
        t0 = time.perf_counter(); below = []; scores = {}
        for e in entries:
            s = fit_predict(e, e.seed, v)
            b, _ = baseline(sk, e.dataset, e.split_id, e.seed)
            scores.setdefault(e.dataset, []).append(s)
            if s < b - BOUND[e.task] - 1e-9: below.append((e.dataset, e.split_id, e.seed, round(s - b, 3)))
        dt = time.perf_counter() - t0
        means = ' '.join(f"{d}:{np.mean(v_):.3f}/{np.min(v_):.3f}" for d, v_ in scores.items())
        print(f"{name}: below {len(below)}/{len(entries)} {dt:.0f}s | {means}", flush=True)
        for b_ in below: print("   ", b_)

if __name__ == "__main__":
    sets = sys.argv[1].split(',')
    variants = eval(sys.argv[2])
    main(sets, variants)
