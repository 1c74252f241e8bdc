import json, subprocess, statistics, sys, os, tempfile
R = "/root/.cache/manualnn/realdata/sklearn-1.9.1"
sets = ["ccard", "statecrime", "engel", "macrodata", "iris"]
py = "/work/main/.venv/bin/python"
def one(tree, s):
    out = tempfile.mktemp(suffix=".json")
    subprocess.run([py, "-m", "manualnn", "train", "--data", f"{R}/{s}/split0-train.npz", "--seed", "0", "--json", out],
                   cwd=tree, capture_output=True, env=dict(os.environ, PYTHONPATH=tree))
    d = json.load(open(out)); os.remove(out)
    return d["timing"]["seconds"], d["config"]["hidden"]
for s in sets:
    t = {"old": [], "new": []}; h = {}
    for rep in range(4):
        for name, tree in (("old", "/work/old"), ("new", "/work/main")):
            sec, hid = one(tree, s); t[name].append(sec); h[name] = hid
    print(f"{s:11s} old {statistics.median(t['old']):.4f} s ({h['old']})  new {statistics.median(t['new']):.4f} s ({h['new']})  ratio {statistics.median(t['new'])/statistics.median(t['old']):.2f}", flush=True)
