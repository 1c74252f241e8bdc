"""rules.json (rules_proto.py's runs) judged by rules for choosing between the hidden layers and no hidden
layer: per set, the runs below the report's bound and the mean R2 of each rule.
python benchmarks/results/realdata/remaining-misses/rules_analyze.py benchmarks/results/realdata/remaining-misses/rules.json"""
import json, sys, numpy as np, collections
rows = json.load(open(sys.argv[1]))
def se_rule(r, k=1.0):
    n = np.array(r["fold_sizes"], float)
    d = (np.array(r["fold_lin"]) - np.array(r["fold_net"])) / n
    mean = (sum(r["fold_lin"]) - sum(r["fold_net"])) / n.sum()
    se = d.std(ddof=1) / np.sqrt(len(d))
    return "linear" if mean <= k * se else "hidden"
rules = {
  "default": lambda r: r["default"],
  "lower": lambda r: r["lin"] if r["cv_lin"] < r["cv_net"] else r["net"],
  "net": lambda r: r["net"], "lin": lambda r: r["lin"], "avg": lambda r: r["avg"],
  "m1.1": lambda r: r["lin"] if r["cv_lin"] < 1.1 * r["cv_net"] else r["net"],
  "m1.25": lambda r: r["lin"] if r["cv_lin"] < 1.25 * r["cv_net"] else r["net"],
  "se1": lambda r: r["lin"] if se_rule(r) == "linear" else r["net"],
  "se0.5": lambda r: r["lin"] if se_rule(r, .5) == "linear" else r["net"],
  "avg_if_1.25": lambda r: (r["avg"] if r["cv_lin"] < 1.25 * r["cv_net"] and r["cv_net"] < 1.25 * r["cv_lin"] else (r["lin"] if r["cv_lin"] < r["cv_net"] else r["net"])),
  "avg_if_1.5": lambda r: (r["avg"] if r["cv_lin"] < 1.5 * r["cv_net"] and r["cv_net"] < 1.5 * r["cv_lin"] else (r["lin"] if r["cv_lin"] < r["cv_net"] else r["net"])),
  "avg_or_lin": lambda r: (r["lin"] if r["cv_lin"] < r["cv_net"] else r["avg"] if r["cv_lin"] < 1.5 * r["cv_net"] else r["net"]),
  "oracle": lambda r: max(r["net"], r["lin"]),   # the better of the two on the test rows: no rule can beat it
}
sets = list(dict.fromkeys(r["ds"] for r in rows))
print("%-17s" % "set" + "".join("%12s" % k for k in rules))
tot = collections.Counter(); mean = collections.defaultdict(list)
for s in sets:
    rs = [r for r in rows if r["ds"] == s]
    line = "%-17s" % s
    for k, f in rules.items():
        below = sum(f(r) < r["bound"] - 1e-9 for r in rs); tot[k] += below
        m = np.mean([f(r) for r in rs]); mean[k].append(m)
        line += "%6d %5.2f" % (below, m)
    print(line)
print("%-17s" % "TOTAL" + "".join("%12d" % tot[k] for k in rules))
