"""Seed ensembles: K networks (seeds seed*100 .. seed*100+K-1) at the run's L2, their predictions (values) or
class probabilities averaged, against the single default run; the sets of at most 200 training rows named,
splits 0-2, seeds 0-9. Values where the search chose no hidden layer keep it (rules.json says which).
python benchmarks/results/realdata/remaining-misses/seed_ensemble.py stackloss,...,grunfeld OUT.json K"""
import os, sys, json, warnings, numpy as np, torch
warnings.filterwarnings("ignore")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, '..', '..', '..', '..'))
sys.path.insert(0, ROOT)
from benchmarks.suite import write_suite, load_train, load_test, parse_datasets
from benchmarks.sklearn_mlp import sklearn_results, baseline
from manualnn import MLPRegressor, MLPClassifier
from sklearn.metrics import r2_score
torch.set_num_threads(1)
K = int(sys.argv[3])
from manualnn.spec import data_settings
def chosen_wd(m, n, task):
    rec = m.model_.l2_search
    return data_settings(n, task, val_split=0.0)["weight_decay"] if rec is None else rec["chosen"] / n
def main(sets, out):
    entries = write_suite(datasets=parse_datasets(sets), splits=[0, 1, 2], seeds=list(range(10)))
    sk = sklearn_results(entries, os.path.join(ROOT, 'benchmarks', 'results', 'realdata', 'sklearn-cache.json'))
    prior = {(r["ds"], r["split"], r["seed"]): r for r in json.load(open(os.path.join(HERE, 'rules.json')))}
    rows = []
    for e in entries:
        x, y = load_train(e); xt, yt = load_test(e)
        if x.shape[0] > 200:
            continue
        b, _ = baseline(sk, e.dataset, e.split_id, e.seed)
        if e.task == "regress":
            p = prior[(e.dataset, e.split_id, e.seed)]
            n = x.shape[0]
            C = None
            m0 = MLPRegressor(random_state=e.seed).fit(x, y)
            wd = chosen_wd(m0, n, "regress")
            preds = [MLPRegressor(random_state=e.seed * 100 + k, weight_decay=wd).fit(x, y).predict(xt) for k in range(K)] if p["chosen"] == "hidden" else [m0.predict(xt)]
            single = r2_score(yt, m0.predict(xt)); ens = r2_score(yt, np.mean(preds, 0)); bound = b - 0.05
        else:
            m0 = MLPClassifier(random_state=e.seed).fit(x, y)
            wd = chosen_wd(m0, x.shape[0], "classify")
            probs = [MLPClassifier(random_state=e.seed * 100 + k, weight_decay=wd).fit(x, y).predict_proba(xt) for k in range(K)]
            single = float((m0.predict(xt) == yt).mean())
            ens = float((m0.classes_[np.mean(probs, 0).argmax(1)] == yt).mean()); bound = b - 0.03
        r = dict(ds=e.dataset, split=e.split_id, seed=e.seed, single=single, ens=ens, bound=bound)
        rows.append(r)
        print(f"{e.dataset:18s} {e.split_id} {e.seed} single {single:.3f} ens {ens:.3f} bound {bound:.3f}", flush=True)
    json.dump(rows, open(out, "w"))
    for s in dict.fromkeys(r["ds"] for r in rows):
        rs = [r for r in rows if r["ds"] == s]
        print(f"{s:18s} below {sum(r['single'] < r['bound'] - 1e-9 for r in rs):2d} -> {sum(r['ens'] < r['bound'] - 1e-9 for r in rs):2d}  mean {np.mean([r['single'] for r in rs]):.3f} -> {np.mean([r['ens'] for r in rs]):.3f}")
main(sys.argv[1], sys.argv[2])
