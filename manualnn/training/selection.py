"""The L2 of a small data set, and whether it wants hidden layers at all, chosen by cross-validation.

Below spec.VAL_ROWS_MIN validation rows a run trains on every row and L2 holds overfitting back
(spec.data_settings). Its strength C / rows with one C for every data set was the best single rule of
the sweeps, but at a few dozen rows the sets want different strengths: a nearly exact law (longley) wants
less, noisy labels (spector) or values (stackloss) want more. So below spec.CV_ROWS training rows the
strength is chosen on the data: the rows are dealt into spec.CV_FOLDS folds (a stratified deal for
classes), each C of spec.CV_STRENGTHS trains on all folds but one with L2 C / (those rows) and is scored
by its validation loss on the one left out, and the C with the lowest loss over every fold (ties: the
smaller C) trains the run with L2 C / rows. Each fit is the run's own (its initial weights and step)
for CV_EPOCHS epochs, whatever the run's length: so the choice does not depend on --epochs, and a run
resumed to more epochs trains as one run to that many would. It costs CV_FOLDS x len(CV_STRENGTHS) fits
of two thirds of the rows: 12 fits. On the native runner they are one call that runs them side by side on
the run's threads, each fit on one (the same numbers as a train() call per fit, which the other backends
make) (README, "How the defaults were chosen", for what it costs).

choose_network: for a regression of up to spec.LINEAR["rows"] training rows (one batch), where the hidden
layers and the step (lr, epochs, optimizer, reduction, batch size) are the defaults, the same folds also fit a network with no hidden layer (ridge
regression) for each C of spec.LINEAR["strengths"], at its own rate and length (spec.LINEAR), and the run
takes whichever of the two networks had the lower validation loss, with its C. From CV_ROWS rows on the
hidden layers' L2 is not searched (the rule's C alone: 3 fits, not 12, as fits of more rows cost more);
the linear fits (one output) are cheap at any of these sizes. On a few dozen noisy values of a nearly
linear law the linear model is the better one, and the folds see it.
"""
import math
import time
import warnings

import torch

from ..spec import CV_EPOCHS, CV_FOLDS, CV_ROWS, CV_STRENGTHS, LINEAR
from .metrics import evaluate
from .trainer import NonFiniteLossError, Trainer, train


def searches(rows, val_split, weight_decay, sklearn=False, patience=None):
    """True when a run's L2 is to be chosen by cross-validation: not given, no validation split, and at
    least CV_FOLDS but fewer than CV_ROWS training rows (never with scikit-learn's defaults, nor with a
    patience, which without a validation split the run refuses)."""
    return _no_l2_given(val_split, weight_decay, sklearn, patience) and CV_FOLDS <= int(rows) < CV_ROWS


def weighs_linear(rows, task, val_split, weight_decay, sklearn=False, patience=None, batch_size=None):
    """True when the folds may also weigh a network with no hidden layer (choose_network), where the caller
    leaves the hidden layers and the step (lr, epochs, optimizer, reduction, batch size) to the defaults: a
    regression ("regress"), searches()' conditions, CV_FOLDS to LINEAR["rows"] training rows, in one batch."""
    return task == "regress" and _no_l2_given(val_split, weight_decay, sklearn, patience) and \
        CV_FOLDS <= int(rows) <= LINEAR["rows"] and (batch_size is None or int(batch_size) >= int(rows))


def _no_l2_given(val_split, weight_decay, sklearn, patience):
    return weight_decay is None and not val_split and not sklearn and patience is None


def folds(n, k, seed, labels=None):
    """``k`` disjoint index tensors covering range(n): a shuffled deal of the rows, or of each class's
    rows in turn (``labels``: int64 [n]) so that every fold holds its share of each class."""
    gen = torch.Generator().manual_seed(int(seed))
    if labels is None:
        order = torch.randperm(n, generator=gen)
    else:
        labels = labels.cpu()
        order = torch.cat([members[torch.randperm(len(members), generator=gen)]
                           for members in (torch.nonzero(labels == c).flatten() for c in torch.unique(labels))])
    return [order[i::k] for i in range(k)]


def search(x, y, weights, *, seed, grid, rule, linear_weights=None, biases=None, classes=False, **options):
    """What a run searches for before it trains, one call for the command line and MLP.fit: (linear, weight
    decay, record). ``grid``: searches() is true (the network's L2 over CV_STRENGTHS), else the network keeps
    ``rule``, the rule's L2; ``linear_weights``: the network with no hidden layer to weigh as well, drawn as
    the caller draws its networks (None: not weighed; weighs_linear() says where it is). ``linear``: the run
    is to train ``linear_weights`` (zero biases where ``biases`` is not None) for LINEAR["epochs"] epochs at
    LINEAR["lr"]. Where the network wins without a grid, the weight decay is ``rule`` itself."""
    found = dict(seed=seed, classes=classes, biases=biases, **options)
    if linear_weights is None:
        return (False,) + choose_weight_decay(x, y, weights, **found)
    linear_biases = None if biases is None else [biases[-1].new_zeros(linear_weights[-1].shape[1])]
    linear, decay, record = choose_network(x, y, weights, linear_weights, linear_biases=linear_biases,
                                           strengths=CV_STRENGTHS if grid else (rule * x.shape[0],), **found)
    return linear, decay if linear or grid else rule, record


def choose_network(x, y, weights, linear_weights, *, seed, biases=None, linear_biases=None, classes=False,
                   strengths=CV_STRENGTHS, **options):
    """(linear, weight decay, record): whether the run is to train ``linear_weights`` (a network with no
    hidden layer, [in, out]) in place of ``weights``, and its L2, by the lower of the two networks' best
    validation losses over the same folds (ties: the hidden layers). The network's fits are
    choose_weight_decay's over ``strengths`` (from CV_ROWS rows on, the rule's C alone: its L2 is not
    searched there); the linear one's train LINEAR["epochs"] epochs at LINEAR["lr"] for each C of
    LINEAR["strengths"]. ``record``: the chosen network's choose_weight_decay record (its "chosen" is the
    run's C), plus "network" ("linear" or "hidden": which it is), "candidates" (both records, by those
    names) and "seconds" (both searches')."""
    started = time.perf_counter()
    decay, hidden = choose_weight_decay(x, y, weights, seed=seed, biases=biases, classes=classes,
                                        strengths=strengths, **options)
    linear_decay, linear = choose_linear_weight_decay(x, y, linear_weights, seed=seed, biases=linear_biases,
                                                      classes=classes, **options)
    chosen = "linear" if _best(linear) < _best(hidden) else "hidden"
    record = dict(linear if chosen == "linear" else hidden, network=chosen,
                  candidates={"hidden": hidden, "linear": linear}, seconds=time.perf_counter() - started)
    return chosen == "linear", linear_decay if chosen == "linear" else decay, record


def choose_linear_weight_decay(x, y, weights, **options):
    """choose_weight_decay for a network with no hidden layer: its fits at LINEAR["lr"] for LINEAR["epochs"]
    epochs, over C of LINEAR["strengths"] (``options``' own lr is replaced)."""
    return choose_weight_decay(x, y, weights, strengths=LINEAR["strengths"], epochs=LINEAR["epochs"],
                               **dict(options, lr=LINEAR["lr"]))


def _best(record):
    return min((loss for loss in record["losses"] if loss is not None), default=math.inf)


def choose_weight_decay(x, y, weights, *, seed, biases=None, classes=False, strengths=CV_STRENGTHS, epochs=CV_EPOCHS,
                        **options):
    """(weight decay, record) for training ``weights`` on (``x``, ``y``): the C of ``strengths``, as C / rows,
    whose fits (``epochs`` each) had the lowest validation loss (summed over the rows left out) over CV_FOLDS
    folds. ``y``: class labels [N] (``classes``) or targets [N, out] as the run trains on them; ``options``:
    the run's train() keywords (its step, batch size, backend, ...), without weight_decay, epochs or callbacks.
    ``record``: {"strengths", "folds", "losses" (the mean validation loss per row of each C; None where a fit
    diverged), "chosen", "seconds"}."""
    started, n = time.perf_counter(), x.shape[0]
    splits = []   # (the rows trained on, the rows left out) of each fold
    for held in folds(n, CV_FOLDS, seed, y if classes else None):
        keep = torch.ones(n, dtype=torch.bool)
        keep[held] = False
        splits.append((torch.nonzero(keep).flatten().to(x.device), held.to(x.device)))
    grid = _native_grid(x, y, weights, biases, splits, strengths, epochs, options)
    if grid is None:   # each fit a train() call; steps of a few rows gain nothing from more threads
        options["threads"] = options.get("threads") or 1
        grid = [[_fit_loss(x, y, weights, biases, strength, epochs, rows, held, options) for rows, held in splits]
                for strength in strengths]
    totals = [sum(row) for row in grid]
    losses = [total / n if math.isfinite(total) else math.inf for total in totals]
    chosen = strengths[min(range(len(losses)), key=lambda i: (losses[i], i))]
    record = {"strengths": list(strengths), "folds": CV_FOLDS,   # (JSON has no infinity: None)
              "losses": [loss if math.isfinite(loss) else None for loss in losses], "chosen": chosen,
              "seconds": time.perf_counter() - started}
    return chosen / n, record


def note(record, rows, hidden=None):
    """One line for stderr: what the search chose and why (``hidden``: the hidden layers' widths, to name them)."""
    def losses(r):
        return ", ".join(f"{c:g}: {'diverged' if loss is None else f'{loss:.4g}'}"
                         for c, loss in zip(r["strengths"], r["losses"]))

    if "network" not in record:
        where = f"{record['folds']}-fold cross-validation (fewer than {CV_ROWS} training rows"
        return (f"L2 {record['chosen']:g}/{rows} chosen by {where}; validation loss over C/{rows} for C in "
                f"{', '.join(f'{c:g}' for c in record['strengths'])}: {losses(record)}; {record['seconds']:.2f} s); "
                f"--weight-decay sets it")
    layers = "the hidden layers" + (f" ({', '.join(map(str, hidden))} units)" if hidden else "")
    line = "no hidden layer (a linear model"
    won, lost = ((f"{line}, trained {LINEAR['epochs']} epochs at lr {LINEAR['lr']:g})", layers)
                 if record["network"] == "linear" else (layers, f"{line})"))
    hidden_record, linear = record["candidates"]["hidden"], record["candidates"]["linear"]
    tried = "C" if len(hidden_record["strengths"]) > 1 else "the rule's C"
    return (f"{won} with L2 {record['chosen']:g}/{rows}, chosen over {lost} by {record['folds']}-fold "
            f"cross-validation (values, {LINEAR['rows']} training rows or fewer; validation loss with L2 C/{rows}: "
            f"hidden layers, {tried} {losses(hidden_record)}; no hidden layer, C {losses(linear)}; "
            f"{record['seconds']:.2f} s); --hidden, --weight-decay or an option of the step (--lr, --epochs, ...) "
            f"skips this choice and keeps the hidden layers")


def _fit_loss(x, y, weights, biases, strength, epochs, rows, held, options):
    """One fit's loss summed over the rows left out (inf where its training diverged)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # a fold's dead network: a bad strength
            fit = train(x[rows], y[rows], weights, biases=biases, epochs=epochs,
                        weight_decay=strength / len(rows), **options)
        # scored once, at the end: the loss summed over the rows left out
        return evaluate(fit, x[held], y[held], loss=options.get("loss"), reduction="sum").loss
    except NonFiniteLossError:
        return math.inf


def _native_grid(x, y, weights, biases, splits, strengths, epochs, options):
    """Every fit's loss [strength][fold] from one call of the native runner (the fits side by side on the
    run's threads, each fit on one: the numbers of train(..., threads=1), on any thread; the held-out loss
    summed in double, where evaluate sums in float32: the same to about 1e-7), or None where the fits are not its
    one-batch epochs (another backend, a fold larger than a batch): then each fit is a train() call."""
    from ..backends import resolve
    batch = options.get("batch_size")
    if options.get("distributed") or (batch is not None and any(len(rows) > batch for rows, _ in splits)):
        return None
    if not isinstance(x, torch.Tensor) or resolve(options.get("backend", "auto"), x.device, x.dtype) != "native":
        return None
    from ..backends.native_backend import fold_losses
    setup = dict(options, threads=1, weight_decay=strengths[0] / x.shape[0])   # (L2 > 0: the step as fits take it)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        trainer = Trainer(x, y, weights, biases=biases, **setup)   # the inputs checked and laid out as train()'s
    return fold_losses(trainer.runner.x, trainer.y, trainer.params, trainer.spec, splits, strengths,
                       epochs=epochs, threads=options.get("threads") or torch.get_num_threads())
