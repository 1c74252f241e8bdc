"""benchmarks/cpu.py's record as cpu.json, a markdown report (cpu.md) and a plot (cpu.png)."""
import json
import os
import statistics

from .report import _fmt as _format, grouped_bars

DEFAULT = "manualnn default (auto)"


def _fmt(v, spec=".1f"):
    return _format(v, spec)


def _steps_tables(rows, loads):
    lines = []
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    for w in workloads:
        mine = [r for r in rows if r["workload"] == w]
        get = {(r["contender"], r["load"]): r.get("us_per_step") for r in mine}
        names = list(dict.fromkeys(r["contender"] for r in mine))
        floors = {load: min([v for (n, lo), v in get.items() if lo == load and n.startswith("GEMM floor") and v]
                            or [None], key=lambda v: v or float("inf")) for load in loads}
        jax = {load: get.get(("JAX jit + lax.scan", load)) for load in loads}
        lines += [f"**{w}** (µs per step; in brackets: × the GEMM floor, the faster of its 1 and all threads)", "",
                  "| contender | " + " | ".join(f"{lo} busy" if lo else "idle" for lo in loads) + " |",
                  "|---" * (len(loads) + 1) + "|"]
        for n in names:
            cells = []
            for lo in loads:
                v = get.get((n, lo))
                cells.append(f"{v:.1f} ({v / floors[lo]:.2f})" if v and floors[lo] else _fmt(v))
            verdict = next(r["verdict"] for r in mine if r["contender"] == n)
            note = "" if any(get.get((n, lo)) for lo in loads) else f" — {verdict[:80]}"
            lines.append(f"| {n}{note} | " + " | ".join(cells) + " |")
        d = {lo: get.get((DEFAULT, lo)) for lo in loads}
        facts = []
        if d.get(0) and jax.get(0):
            facts.append(f"JAX / manualnn default, idle: {jax[0] / d[0]:.2f}×")
        for lo in loads[1:]:
            if d.get(lo) and d.get(0):
                facts.append(f"default with {lo} busy / idle: {d[lo] / d[0]:.2f}")
            if d.get(lo) and jax.get(lo):
                facts.append(f"JAX / default with {lo} busy: {jax[lo] / d[lo]:.2f}×")
        lines += ["", "; ".join(facts), ""]
    return lines


def _default_table(rows, loads):
    get = {(r["variant"], r["load"]): r["seconds"] for r in rows}
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    lines = ["**The default run** (`manualnn train --data digits --seed 0`, training seconds from --json, "
             "median)", "", "| variant | " + " | ".join(f"{lo} busy" if lo else "idle" for lo in loads) + " |",
             "|---" * (len(loads) + 1) + "|"]
    for v in variants:
        lines.append(f"| {v} | " + " | ".join(_fmt(get.get((v, lo)), ".3f") for lo in loads) + " |")
    chosen = variants[0]
    facts = []
    for lo in loads:
        fixed = [get[(v, lo)] for v in variants[1:] if (v, lo) in get]
        if fixed and (chosen, lo) in get:
            facts.append(f"{'idle' if not lo else f'{lo} busy'}: default / better fixed count "
                         f"{get[(chosen, lo)] / min(fixed):.2f}")
        if lo and (chosen, lo) in get and (chosen, 0) in get:
            facts.append(f"{lo} busy / idle {get[(chosen, lo)] / get[(chosen, 0)]:.2f}")
    return lines + ["", "; ".join(facts), ""]


def _realdata_table(rows):
    lines = ["**Real-data suite** (training seconds, median over seeds; idle)", "",
             "| data set | manualnn | scikit-learn, 1 thread | scikit-learn, default threads | "
             "manualnn / faster scikit-learn |", "|---|---|---|---|---|"]
    for name in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == name]
        med = {k: statistics.median(r[k] for r in mine) for k in ("manualnn_s", "sklearn_1_thread_s",
                                                                   "sklearn_default_threads_s")}
        best = min(med["sklearn_1_thread_s"], med["sklearn_default_threads_s"])
        lines.append(f"| {name} | {med['manualnn_s']:.3f} | {med['sklearn_1_thread_s']:.3f} | "
                     f"{med['sklearn_default_threads_s']:.3f} | {med['manualnn_s'] / best:.2f} |")
    return lines + [""]


def write_plot(record, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in record.get("steps", []) if r.get("us_per_step")]
    if not rows:
        return False
    groups = list(dict.fromkeys((r["workload"], r["load"]) for r in rows))
    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(groups) + 4), 5))
    grouped_bars(ax, rows, groups, lambda r: (r["workload"], r["load"]), lambda r: r["us_per_step"],
                 lambda name: name.startswith("GEMM floor"), span=0.85)
    ax.set_yscale("log")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{w.split(' (')[0]}\n{'idle' if not lo else f'{lo} busy'}" for w, lo in groups], fontsize=8)
    ax.set_ylabel("µs per optimizer step (log scale)")
    meta = record["meta"]
    ax.set_title(f"digits workload, {meta['machine']}, commit {meta['commit']}", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _csv_table(csv):
    if "median" not in csv:
        return [f"**CSV reading**: {csv.get('status', 'not run')}", ""]
    lines = [f"**CSV reading** ({csv['rows']:,} rows x {csv['cols']} columns, {csv['bytes'] / 1e6:.0f} MB; median "
             f"of {csv['repeats']}; idle)", "", "| reader | seconds | × pandas.read_csv |", "|---|---|---|"]
    for name, seconds in csv["median"].items():
        ratio = csv["ratio_to_pandas"].get(name)
        lines.append(f"| {name} | {seconds:.3f} | {'' if ratio is None else f'{ratio:.2f}'} |")
    return lines + [""]


def write_cpu_report(record, out):
    """Write cpu.json, cpu.md and (where there are steps to plot and matplotlib) cpu.png under ``out``:
    (the markdown, the names of the files written). A cpu.png of an earlier run without steps is removed."""
    meta = record["meta"]
    loads = meta["loads"]
    lines = [f"CPU benchmark: {meta['machine']}, {meta['threads']} threads; torch {meta['versions'].get('torch')}; "
             f"commit {meta['commit']}; {meta['date']}; load average at start {meta['loadavg_at_start']}"
             + (" (quick smoke run: not a measurement)" if meta["quick"] else ""),
             f"`{' '.join(meta['command'])}`", ""]
    if record.get("steps"):
        lines += _steps_tables(record["steps"], loads)
    if record.get("default"):
        lines += _default_table(record["default"], loads)
    if record.get("realdata"):
        lines += _realdata_table(record["realdata"])
    if record.get("csv"):
        lines += _csv_table(record["csv"])
    if record.get("setup"):
        lines += ["**Setup at the seed's shape** (a whole `manualnn.train(x, y, [w1, w2], epochs=20)` call, "
                  "median; idle)", "", "| call | ms | × the seed's loop |", "|---|---|---|"]
        lines += [f"| {r['call']} | {r['ms']:.2f} | {r['x_seed']:.2f} |" for r in record["setup"]] + [""]
    text = "\n".join(lines)
    with open(os.path.join(out, "cpu.json"), "w") as f:
        json.dump(record, f, indent=2)
    with open(os.path.join(out, "cpu.md"), "w") as f:
        f.write(text + "\n")
    written, plot = ["cpu.json", "cpu.md"], os.path.join(out, "cpu.png")
    try:
        if write_plot(record, plot) is not False:
            written.append("cpu.png")
    except ImportError:
        pass
    if "cpu.png" not in written and os.path.exists(plot):   # not this run's: it would be read as this run's
        os.remove(plot)
    return text, written
