"""--plot: the loss per epoch (per sample, log scale) and the validation accuracy, as a PNG."""
from .files import atomic_open


class PlotUnavailableError(RuntimeError):
    """matplotlib, an optional extra, is not installed."""


def require_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailableError('needs matplotlib, an optional extra: pip install "manualnn[plot]"') from None


def write_training_plot(path, losses, val_losses=(), val_accuracies=(), *, train_rows, val_rows=0, title=""):
    """Write the PNG atomically (a temp file in the same folder, then a rename).

    Losses are divided by the number of rows they sum over, so training and validation share an axis.
    """
    require_matplotlib()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if val_accuracies else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
    ax = axes[0][0]
    epochs = range(len(losses))
    ax.plot(epochs, [v / train_rows for v in losses], label=f"training ({train_rows} rows; before each step)")
    if val_losses:
        ax.plot(range(len(val_losses)), [v / val_rows for v in val_losses],
                label=f"validation ({val_rows} rows; after each epoch)")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss per sample (sum of squares / rows)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    if val_accuracies:
        ax = axes[0][1]
        ax.plot(range(len(val_accuracies)), [100 * a for a in val_accuracies], color="tab:green")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy (%)")
        ax.set_title(f"last {100 * val_accuracies[-1]:.2f}%, best {100 * max(val_accuracies):.2f}%")
        ax.grid(True, alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    try:
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format="png", dpi=100)
    finally:
        plt.close(fig)
    return path
