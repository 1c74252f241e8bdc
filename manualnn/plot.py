"""--plot: the loss per epoch (per sample, log scale) and the validation accuracy, as a PNG."""
from .files import atomic_open

LOSS_NAMES = {"sse": "sum of squares", "ce": "cross-entropy"}


class PlotUnavailableError(RuntimeError):
    """matplotlib, an optional extra, is not installed."""


def require_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailableError('needs matplotlib, an optional extra: pip install "manualnn[plot]"') from None


def per_sample(values, rows, reduction):
    """A history's losses per sample: a "sum" loss divided by its rows; a "mean" loss already is one."""
    return [v / rows for v in values] if reduction == "sum" else list(values)


def write_training_plot(path, history, *, loss="sse", reduction="sum", train_rows, val_rows=0, title="",
                        kept_epoch=None):
    """Write the PNG atomically (a temp file in the same folder, then a rename).

    ``history``: the trainer's lists (``losses``, ``val_losses``, ``val_accuracies``), as recorded with
    ``loss`` ("sse" or "ce") and ``reduction`` ("sum" or "mean"). Training and validation losses share
    one axis, per sample. ``kept_epoch``: the epoch whose weights the run kept (early stopping; default
    the last), whose accuracy the accuracy panel's title gives and marks.
    """
    require_matplotlib()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses, val_losses = history.get("losses", []), history.get("val_losses", [])
    val_accuracies = history.get("val_accuracies", [])
    kept = len(losses) - 1 if kept_epoch is None else kept_epoch
    panels = 2 if val_accuracies else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
    ax = axes[0][0]
    ax.plot(range(len(losses)), per_sample(losses, train_rows, reduction),
            label=f"training ({train_rows} rows; before each step)")
    if val_losses:
        ax.plot(range(len(val_losses)), per_sample(val_losses, val_rows, reduction),
                label=f"validation ({val_rows} rows; after each epoch)")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"loss per sample ({LOSS_NAMES.get(loss, loss)})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    if val_accuracies:
        ax = axes[0][1]
        ax.plot(range(len(val_accuracies)), [100 * a for a in val_accuracies], color="tab:green")
        if 0 <= kept < len(val_accuracies):
            ax.axvline(kept, color="gray", linestyle=":", label=f"kept: epoch {kept}")
            ax.set_title(f"kept epoch {kept}: {100 * val_accuracies[kept]:.2f}% "
                         f"(best {100 * max(val_accuracies):.2f}%)")
            ax.legend(loc="lower right")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(True, alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    try:
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format="png", dpi=100)
    finally:
        plt.close(fig)
    return path
