"""Turn a results.json record into a markdown table and a PNG plot."""


def _ms(s):
    return "" if s is None else (f"{s * 1e3:.3f}" if s < 10 else f"{s * 1e3:.0f}")


def _fmt(v, spec):
    return "" if v is None else format(v, spec)


def write_markdown(record, path):
    meta = record["meta"]
    v = meta["versions"]
    lines = [f"Device: **{meta['device_name']}**; torch {v['torch']}, triton {v['triton']}, python {v['python']}; "
             f"commit {meta['git_commit']}; {meta['date']}; {meta['epochs']} epochs per run"
             + (" (quick smoke run: one repeat, not a measurement)" if meta["quick"] else ""), ""] + (
        [f"`{meta.get('prog', 'python -m benchmarks.run')} {' '.join(meta['argv'])}`", ""]
        if meta.get("argv") is not None else [])
    lines += ["Time per run: median [IQR] of warm runs. × seed: time over the verbatim seed loop's (no print); "
              "× floor: time over the bare matmuls'. Cold: first epoch, compilation included.", ""]
    header = ("| shape | precision | contender | status | ms/run [IQR] | µs/step | TFLOP/s | cold s | "
              "peak MiB | × seed | × floor | check (max loss rel err) |")
    lines += [header, "|---" * (header.count("|") - 1) + "|"]
    for r in record["rows"]:
        run = r["run_s"]
        t = f"{_ms(run['median'])} [{_ms(run['q1'])}, {_ms(run['q3'])}]" if run else ""
        chk = r["check"] or {}
        check = ("floor" if chk.get("ok") is None and chk else
                 f"{'ok' if chk.get('ok') else 'WRONG'} {chk.get('max_loss_rel_err', 0):.1e}" if chk else "")
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['reason']}"
        mem = None if r["peak_mem_bytes"] is None else r["peak_mem_bytes"] / 2 ** 20
        lines.append(f"| {r['shape']} | {r['precision']} | {r['contender']} | {status} | {t} | "
                     f"{_fmt(r['step_s'] and r['step_s'] * 1e6, '.1f')} | {_fmt(r['tflops'], '.3f')} | "
                     f"{_fmt(r['cold_s'], '.2f')} | {_fmt(mem, '.1f')} | {_fmt(r['vs_seed'], '.2f')} | "
                     f"{_fmt(r['vs_floor'], '.2f')} | {check} |")
    text = "\n".join(lines) + "\n"
    with open(path, "w") as f:
        f.write(text)
    return text


def grouped_bars(ax, rows, groups, group_of, value_of, is_floor, span=0.8):
    """One bar per contender in each group (groups in their order on the x axis), the floor hatched."""
    names = list(dict.fromkeys(r["contender"] for r in rows))
    width = span / max(1, len(names))
    for i, name in enumerate(names):
        xs, ys = [], []
        for j, g in enumerate(groups):
            hit = [r for r in rows if group_of(r) == g and r["contender"] == name]
            if hit:
                xs.append(j + (i - (len(names) - 1) / 2) * width)
                ys.append(value_of(hit[0]))
        ax.bar(xs, ys, width=width, label=name, hatch="//" if is_floor(name) else None)


def write_plot(record, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in record["rows"] if r["status"] == "ok"]
    groups = sorted({(r["shape"], r["precision"]) for r in rows}, key=lambda g: [r["shape"] for r in rows].index(g[0]))
    fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(groups) + 4), 4.5))
    grouped_bars(ax, rows, groups, lambda r: (r["shape"], r["precision"]), lambda r: r["step_s"] * 1e6,
                 lambda name: name == "matmul-floor")
    ax.set_yscale("log")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{s}\n{p}" for s, p in groups])
    ax.set_ylabel("time per step (µs, log scale)")
    ax.set_title(f"manualnn vs alternatives — {record['meta']['device_name']}", fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
