"""Summaries and markdown tables of the real-data benchmark (benchmarks/realdata.py).

Scores: accuracy is shown in percent and its gaps in points; R^2 and its gaps as they are. A gap is
a contender's score minus scikit-learn's MLP on the same (data set, split, seed): "mean" over runs,
"worst" the most negative one. The bound (issue 21): a run's score at least the better of scikit-learn's
MLP (same split and seed) and the linear model (same split) minus 3 points of accuracy (0.05 of R^2).
"""
import math
import statistics

BOUND = {"classify": 3.0, "regress": 0.05}   # how far below the better baseline a run may score


def _finite(values):
    return [v for v in values if v is not None and math.isfinite(v)]


def _mean(values):
    values = _finite(values)
    return statistics.fmean(values) if values else None


def _median(values):
    values = _finite(values)
    return statistics.median(values) if values else None


def _seconds(runs, key):
    """Mean and median of ``key`` over the runs whose train command finished (exit 0): a run that
    diverged at epoch 0 took no time worth comparing. Over all runs when none finished."""
    finished = [r for r in runs if r.get("train_rc") == 0] or runs
    values = [r.get(key) for r in finished]
    return {"mean": _mean(values), "median": _median(values), "over": "finished" if finished is not runs or
            all(r.get("train_rc") == 0 for r in runs) else "all (none finished)"}


def _run_id(r):
    split = r.get("split", r["seed"])
    return f"seed {r['seed']}" if split == r["seed"] and "part" not in r else f"split {split} seed {r['seed']}"


def summarize(runs, sklearn, task):
    """Per data set figures for one contender's runs (records with score, failed, split, seed, timings)."""
    from .sklearn_mlp import baseline
    scale = 100.0 if task == "classify" else 1.0
    scores = [r["score"] for r in runs]
    finite = _finite(scores)
    gaps, best_gaps, below, bases = [], [], [], []
    for r in runs:
        split = r.get("split", r["seed"])
        sk = sklearn.get((r["dataset"], split, r["seed"]))
        base, _ = baseline(sklearn, r["dataset"], split, r["seed"])
        bases.append(base)
        ok = r["score"] is not None and math.isfinite(r["score"])
        if ok and sk is not None:
            gaps.append((r["score"] - sk["score"]) * scale)
        if base is not None:
            gap = (r["score"] - base) * scale if ok else -math.inf
            best_gaps.append(gap)
            if gap < -BOUND[task] - 1e-9:
                below.append(_run_id(r))
    return {"runs": len(runs), "scored": len(finite), "failed": sum(bool(r["failed"]) for r in runs),
            "mean": statistics.fmean(finite) if finite else None, "min": min(finite) if finite else None,
            "mean_gap": statistics.fmean(gaps) if gaps else None, "worst_gap": min(gaps) if gaps else None,
            "gaps_over": len(gaps), "gap_unit": "points" if task == "classify" else "R2",
            "baseline_mean": _mean(bases), "baseline_min": min(_finite(bases), default=None),
            "worst_baseline_gap": min(best_gaps) if best_gaps else None, "below_bound": below,
            "train_wall_s": _seconds(runs, "train_wall_s"), "train_loop_s": _seconds(runs, "train_loop_s"),
            "failures": {_run_id(r): r["reasons"] for r in runs if r["failed"]},
            "notes": sorted({note for r in runs for note in r.get("notes", [])})}


def summarize_sklearn(records, task, chance, linear=()):
    """scikit-learn's MLP over its records (and the linear model's mean and min over ``linear``, per split)."""
    scores = [r["score"] for r in records]
    linear_scores = _finite([r["score"] for r in linear])
    finite = _finite(scores)
    failed = [r for r in records if not r.get("finite", True) or not math.isfinite(r["score"]) or r["score"] <= chance]
    return {"runs": len(records), "mean": statistics.fmean(finite) if finite else None,
            "min": min(finite) if finite else None, "max": max(finite) if finite else None,
            "stdev": statistics.stdev(finite) if len(finite) > 1 else None, "failed": len(failed),
            "not_converged": sum(not r["converged"] for r in records),
            "threads_differ": sum(r.get("score_default_threads") not in (None, r["score"]) for r in records),
            "fit_s_1_thread": {"mean": _mean([r["fit_s_1_thread"] for r in records]),
                               "median": _median([r["fit_s_1_thread"] for r in records])},
            "fit_s_default_threads": {"mean": _mean([r.get("fit_s_default_threads") for r in records]),
                                      "median": _median([r.get("fit_s_default_threads") for r in records])},
            "mean_epochs": _mean([r["n_iter"] for r in records]),
            "linear_mean": _mean(linear_scores), "linear_min": min(linear_scores, default=None),
            "linear_model": linear[0]["model"] if linear else None}


def fmt_score(value, task):
    if value is None:
        return "—"
    if not math.isfinite(value):
        return str(value)
    if task == "classify":
        return f"{value * 100:.1f}"
    return f"{value:.3f}" if abs(value) < 1000 else f"{value:.2e}"   # a diverged regression: short


def fmt_gap(value, task):
    if value is None:
        return "—"
    if task == "classify":
        return f"{value:+.1f} pt"
    return f"{value:+.3f}" if abs(value) < 1000 else f"{value:+.2e}"


def fmt_s(value):
    if value is None:
        return "—"
    return f"{value:.2f}" if value < 10 else f"{value:.0f}"


def header_lines(meta, title):
    v = meta["versions"]
    return [f"## {title}", "",
            f"{meta['machine']}; load average {meta['loadavg']}; Python {v['python']}, torch {v['torch']}, "
            f"manualnn {v['manualnn']}, scikit-learn {v['sklearn']}, numpy {v['numpy']}; {meta['date']}; "
            f"commit {meta['git_commit']}.", ""] + (
        [f"`{' '.join(meta['command'])}`", ""] if meta.get("command") else [])


def failure_lines(per_dataset, name):
    lines = []
    for ds, s in per_dataset.items():
        for run, reasons in s["failures"].items():
            lines.append(f"{ds} {run}: {', '.join(reasons)}")
    if not lines:
        return []
    return [f"{name} failed runs:", ""] + [f"- {line}" for line in lines] + [""]


def report_markdown(meta, tasks, sk_summary, contenders, notes=()):
    """The report's table: scikit-learn beside each contender (today: manualnn in cli mode)."""
    lines = header_lines(meta, "manualnn train --data FILE (defaults) beside scikit-learn's MLP (defaults)")
    seeds = meta["seeds_text"]
    extra = " ".join(meta["extra"]) or "none"
    splits = meta.get("splits_text") or "0-2"
    splits = "one per seed (its random_state the seed)" if splits == "seed" else splits
    lines += [f"Seeds {seeds} per data set and split, splits {splits}; test rows = 25% (stratified for classes). Scores on the test rows: "
              f"accuracy in %, R² for regression. manualnn: `{meta['mode']}` mode, extra options: {extra}. "
              f"sklearn: MLPClassifier/MLPRegressor defaults on StandardScaler'd features (fitted on the training "
              f"rows), times from {meta['sklearn_timed_on']}. Gap = manualnn − sklearn on the same seed (accuracy in "
              f"points). s/fit, the median over seeds: manualnn's train command wall time (Python start and torch "
              f"import included in cli mode) / its training loop alone (the L2 search of sets under 50 rows "
              f"included), over the runs that finished; sklearn's "
              f"fit() with 1 BLAS thread / default threads (on a shared machine the default threads' times jump "
              f"when another process holds a core; the JSON has every run).", ""]
    cols = ["data set", "metric", "sklearn mean", "sklearn min"]
    for name in contenders:
        cols += [f"{name} mean", f"{name} min", f"{name} failed", "mean gap", "worst gap", f"{name} s/fit"]
    cols += ["sklearn s/fit (1 thread / default)"]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for ds, task in tasks.items():
        sk = sk_summary[ds]
        cells = [ds, "accuracy" if task == "classify" else "R²", fmt_score(sk["mean"], task), fmt_score(sk["min"], task)]
        for per_dataset in contenders.values():
            s = per_dataset[ds]
            failed = f"{s['failed']}/{s['runs']}"
            if s["scored"] < s["runs"]:
                failed += f" ({s['runs'] - s['scored']} unscored)"
            seconds = fmt_s(s["train_wall_s"]["median"])
            if s["train_loop_s"]["median"] is not None:
                seconds += f" / {fmt_s(s['train_loop_s']['median'])}"
            if s["train_wall_s"]["over"] != "finished":
                seconds += " (none finished)"
            cells += [fmt_score(s["mean"], task), fmt_score(s["min"], task), failed,
                      fmt_gap(s["mean_gap"], task), fmt_gap(s["worst_gap"], task), seconds]
        cells += [f"{fmt_s(sk['fit_s_1_thread']['median'])} / {fmt_s(sk['fit_s_default_threads']['median'])}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for name, per_dataset in contenders.items():
        lines += failure_lines(per_dataset, name)
        notes_seen = {}
        for ds, s in per_dataset.items():
            for note in s["notes"]:
                notes_seen.setdefault(note, []).append(ds)
        if notes_seen:
            lines += [f"{name} notes:", ""] + [f"- {note} ({', '.join(ds)})" for note, ds in notes_seen.items()] + [""]
    lines += list(notes)
    return "\n".join(lines).rstrip() + "\n"


def sklearn_markdown(sk_summary, tasks, seeds_text):
    """scikit-learn alone, over all its cached seeds: spread, convergence, times."""
    lines = [f"scikit-learn MLP defaults alone (seeds {seeds_text}):", "",
             "| data set | metric | mean | min | max | stdev | failed | stopped at max_iter | mean epochs | "
             "median s/fit 1 thread | median s/fit default threads |", "|" + "---|" * 11]
    for ds, task in tasks.items():
        s = sk_summary[ds]
        stdev = "—" if s["stdev"] is None else (f"{s['stdev'] * 100:.1f}" if task == "classify" else f"{s['stdev']:.3f}")
        lines.append(f"| {ds} | {'accuracy' if task == 'classify' else 'R²'} | {fmt_score(s['mean'], task)} | "
                     f"{fmt_score(s['min'], task)} | {fmt_score(s['max'], task)} | {stdev} | {s['failed']}/{s['runs']} | "
                     f"{s['not_converged']}/{s['runs']} | {s['mean_epochs']:.0f} | {fmt_s(s['fit_s_1_thread']['median'])} | "
                     f"{fmt_s(s['fit_s_default_threads']['median'])} |")
    return "\n".join(lines) + "\n"


def _bound_cells(s, task):
    below = len(s["below_bound"])
    return [fmt_gap(s["worst_baseline_gap"], task), f"{below}/{s['runs']}"]


def bound_markdown(tasks, parts, sk_summary, per_dataset, title="manualnn"):
    """Per data set: its part, the better baseline and manualnn (mean / min), failures, the worst gap to the
    better baseline and the runs below the bound; a line per part."""
    lines = [f"| data set | part | metric | MLP mean | linear mean | better baseline mean / min | {title} mean / min | "
             f"failed | worst gap to the better baseline | runs below the bound | s/train (median) |",
             "|" + "---|" * 11]
    totals = {}
    for ds, task in tasks.items():
        s, sk = per_dataset[ds], sk_summary[ds]
        t = totals.setdefault(parts[ds], [0, 0, 0])
        t[0], t[1], t[2] = t[0] + s["runs"], t[1] + s["failed"], t[2] + len(s["below_bound"])
        lines.append("| " + " | ".join([
            ds, parts[ds], "accuracy" if task == "classify" else "R²", fmt_score(sk["mean"], task),
            fmt_score(sk.get("linear_mean"), task),
            f"{fmt_score(s['baseline_mean'], task)} / {fmt_score(s['baseline_min'], task)}",
            f"{fmt_score(s['mean'], task)} / {fmt_score(s['min'], task)}", f"{s['failed']}/{s['runs']}",
            *_bound_cells(s, task), fmt_s(s["train_wall_s"]["median"])]) + " |")
    lines.append("")
    for part, (runs, failed, below) in totals.items():
        lines.append(f"- {part}: {runs} runs, {failed} failed, {below} below the bound.")
    below_runs = [f"{ds} {run}" for ds in tasks for run in per_dataset[ds]["below_bound"]]
    if below_runs:
        lines += ["", "Runs below the bound: " + ", ".join(below_runs) + "."]
    return lines


def sweep_markdown(meta, tasks, combos, sk_summary):
    """Per combination and data set; then one line per combination, fewest failures and runs below the bound
    first."""
    lines = header_lines(meta, "Sweep of manualnn train options on the real-data suite")
    extra = " ".join(meta["extra"]) or "none"
    done = meta.get("grid_points_done")   # [measured, in the grid]: an interrupted sweep's files say so
    unfinished = (f" ({done[0]} of its {done[1]} points measured so far: the sweep is not finished)"
                  if done and done[0] < done[1] else "")
    lines += [f"Grid `{meta['grid']}`{unfinished}; splits {meta.get('splits_text', 'as seeds')}, seeds {meta['seeds_text']}; "
              f"`{meta['mode']}` mode; options on every run: {extra}. Gap = manualnn − sklearn's MLP on the same "
              f"split and seed (accuracy in points, R² as is); the bound: the better of the MLP and the linear model "
              f"minus {BOUND['classify']:g} points (R²: {BOUND['regress']:g}); s/train: the train command's mean time "
              f"over the runs that finished (— : none did).", "",
              "| options | data set | mean | min | failed | s/train | mean gap | worst gap | worst gap to the better "
              "baseline | below the bound | sklearn mean |", "|" + "---|" * 11]
    ranking = []
    for combo in combos:
        opts = combo["options_text"] or "(none)"
        acc_gaps, r2_gaps, failed, runs, below, seconds = [], [], 0, 0, 0, 0.0
        for ds, task in tasks.items():
            s = combo["summary"][ds]
            failed, runs, below = failed + s["failed"], runs + s["runs"], below + len(s["below_bound"])
            seconds += (s["train_wall_s"]["mean"] or 0.0) * s["runs"]
            if s["worst_baseline_gap"] is not None:
                (acc_gaps if task == "classify" else r2_gaps).append(s["worst_baseline_gap"])
            train_s = fmt_s(s["train_wall_s"]["mean"]) if s["train_wall_s"]["over"] == "finished" else "—"
            lines.append(f"| `{opts}` | {ds} | {fmt_score(s['mean'], task)} | {fmt_score(s['min'], task)} | "
                         f"{s['failed']}/{s['runs']} | {train_s} | {fmt_gap(s['mean_gap'], task)} | "
                         f"{fmt_gap(s['worst_gap'], task)} | {' | '.join(_bound_cells(s, task))} | "
                         f"{fmt_score(sk_summary[ds]['mean'], task)} |")
        ranking.append((failed, below, -min(acc_gaps + [0.0]), -min(r2_gaps + [0.0]), opts, runs,
                        min(acc_gaps) if acc_gaps else None, min(r2_gaps) if r2_gaps else None, seconds))
    lines += ["", "By combination (fewest failed runs, then fewest below the bound, then the smallest worst gap to "
              "the better baseline):", "",
              "| options | failed | below the bound | worst accuracy gap | worst R² gap | train seconds, all runs |",
              "|---|---|---|---|---|---|"]
    for failed, below, _, _, opts, runs, acc, r2, seconds in sorted(ranking):
        lines.append(f"| `{opts}` | {failed}/{runs} | {below}/{runs} | {fmt_gap(acc, 'classify')} | "
                     f"{fmt_gap(r2, 'regress')} | {seconds:.0f} |")
    return "\n".join(lines) + "\n"
