"""nn.Module wrappers: a ReLU MLP that trains itself with manualnn and carries what it learned about its data.

An ``MLP`` holds its layers in the seed's layout (``weights[i]`` [in, out]) plus its preprocessing: the
features' mean and std, a regression's target scale (float64 buffers, so they follow ``.to(device)`` and
``state_dict``), and the task, class labels and feature names (its extra state). ``forward``, ``predict``,
``predict_proba`` and ``evaluate`` take raw rows; ``fit`` learns the preprocessing on its first call.
"""
import numbers

import numpy as np
import torch
from torch import nn

from . import preprocessing as prep
from .data import init_weights
from .spec import DATA_DEFAULTS, LINEAR, LOSSES, REDUCTIONS, check_choice, data_settings, patience_for
from .training import evaluate as evaluate_weights
from .training import train
from .training.selection import choose_linear_weight_decay, search, searches, weighs_linear


class MLP(nn.Module):
    """ReLU network ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``, with biases unless ``bias=False``.

    ``weights[i]`` has shape ``(sizes[i], sizes[i+1])`` (in x out, the seed's layout, so the layer
    computes ``x @ w + b``); ``biases[i]`` has shape ``(sizes[i+1],)`` and starts at zero (None
    without biases). ``init`` is "kaiming" (He-normal, std sqrt(2/fan_in): the default, it trains
    on any problem) or "randn" (the seed's unscaled torch.randn). Pass ``generator`` or ``seed`` for
    a reproducible draw.

    - ``fit(x, y)`` trains in place with hand-written gradients and the ``--data`` defaults (Adam,
      mean loss, batches of 200, cross-entropy for labels), standardizing the features (and a
      regression's targets) with the first fit's rows. x and y may be tensors, numpy arrays, pandas
      frames or lists; labels may be any whole numbers or text (``classes`` lists them in output order).
    - ``forward(x)`` (differentiable), ``outputs(x)``, ``predict(x)``, ``predict_proba(x)`` and
      ``evaluate(x, y)`` take raw rows: the model applies its own feature statistics. ``forward`` and
      ``outputs`` give a classifier's logits, a regressor's values in the targets' units; ``predict``
      gives labels (for classes) or values.
    - ``save(path)`` / ``manualnn.load(path)``; ``to_sequential()`` / ``MLP.from_sequential(seq)`` for a
      plain ``nn.Sequential`` of ``nn.Linear`` and ``nn.ReLU``.
    """

    def __init__(self, sizes, *, bias=True, init="kaiming", generator=None, seed=None, device=None, dtype=None):
        super().__init__()
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
            raise TypeError(f"sizes: expected integer widths [in, ..., out], got {sizes!r}")
        if any(isinstance(n, bool) or not isinstance(n, numbers.Integral) for n in sizes):
            raise TypeError(f"sizes: expected integer widths [in, ..., out], got {list(sizes)}")
        sizes = [int(n) for n in sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"sizes: expected at least two positive widths [in, ..., out], got {sizes}")
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(int(seed))
        dtype = dtype or torch.get_default_dtype()
        self.sizes, self.init = sizes, init
        self.weights = nn.ParameterList(
            nn.Parameter(w.to(device)) for w in init_weights(sizes, init, generator=generator, dtype=dtype))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(n, dtype=dtype, device=device)) for n in sizes[1:]) \
            if bias else None
        # identity until a fit (or a checkpoint) sets them; float64 so that they equal the checkpoint's numbers
        stats = dict(dtype=torch.float64, device=device)
        self.register_buffer("x_mean", torch.zeros(sizes[0], **stats))
        self.register_buffer("x_std", torch.ones(sizes[0], **stats))
        self.register_buffer("y_mean", torch.zeros(sizes[-1], **stats))
        self.register_buffer("y_std", torch.ones(sizes[-1], **stats))
        self.scaled = {"x": False, "y": False}     # whether the statistics above were learned
        self.task = None                 # "classify", "regress", or None (not fit: predict gives the outputs)
        self.class_names = None          # the label of each output, for a classifier
        self.feature_names = None        # the input columns' names, when fit on a named table
        self.loss, self.reduction = "sse", "sum"   # what it was trained with (evaluate scores so)
        self.config, self.epoch, self.losses = {}, 0, []
        self.checkpoint_optimizer = None   # a loaded checkpoint's optimizer state, written again by save()
        self.history = {name: [] for name in ("val_losses", "val_accuracies", "val_rmse", "val_r2")}
        self.l2_search = None            # the last fit's L2 search (training.selection), where it searched

    # -- state_dict carries the preprocessing that is not a tensor --------------------------------
    def get_extra_state(self):
        return {"task": self.task, "class_names": self.class_names, "feature_names": self.feature_names,
                "loss": self.loss, "reduction": self.reduction, "scaled": dict(self.scaled)}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """load_state_dict's per-module step: the feature and target statistics are checked first (as a
        checkpoint's are), so a zero or NaN spread cannot turn every prediction into NaN or Inf."""
        for key, width in (("x_mean", self.sizes[0]), ("x_std", self.sizes[0]),
                           ("y_mean", self.sizes[-1]), ("y_std", self.sizes[-1])):
            value = state_dict.get(prefix + key)
            if isinstance(value, torch.Tensor) and tuple(value.shape) == (width,):   # (other shapes: torch's error)
                if not bool(torch.isfinite(value).all()):
                    raise ValueError(f"state_dict: {key}: expected finite numbers, got NaN or Inf")
                if key.endswith("std") and not bool((value > 0).all()):
                    raise ValueError(f"state_dict: {key}: expected positive numbers (each column's spread), got "
                                     f"{float(value.min()):g} among them")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def set_extra_state(self, state):
        fields = prep.read_config({"task_used": state.get("task"), "class_names": state.get("class_names"),
                                   "feature_names": state.get("feature_names")}, self.sizes[0], self.sizes[-1],
                                  lambda key, problem: _raise(ValueError, f"state_dict: {key}: {problem}"))
        self.task, self.class_names, self.feature_names = fields["task"], fields["class_names"], fields["feature_names"]
        self.loss = check_choice("state_dict: loss", state.get("loss", "sse"), LOSSES)
        self.reduction = check_choice("state_dict: reduction", state.get("reduction", "sum"), REDUCTIONS)
        self.scaled = {"x": bool(state.get("scaled", {}).get("x")), "y": bool(state.get("scaled", {}).get("y"))}

    # -- raw rows in, the user's units out -------------------------------------------------------
    def inputs(self, x, name="x", *, dtype=None):
        """Raw rows (any array) as the network's input: standardized in their own dtype (float64 stays
        float64 for it), then in the model's dtype (or ``dtype``) and device, as ``manualnn predict`` does."""
        names = prep.column_names(x)
        if names is not None and self.feature_names is not None and names != self.feature_names:
            raise ValueError(f"{name}: columns {names} differ from the {len(self.feature_names)} the model was fit on: "
                             f"{self.feature_names}")
        w0 = self.weights[0]
        x = prep.as_features(name, x, self.sizes[0]).to(w0.device)
        return prep.standardize(x, self.x_mean, self.x_std).to(dtype or w0.dtype)

    def _units(self, z):
        return z * self.y_std.to(z.dtype) + self.y_mean.to(z.dtype) if self.scaled["y"] else z

    def _layers(self):
        return list(self.weights), list(self.biases) if self.biases is not None else None

    def forward(self, x):
        """The network on raw rows, differentiable: a classifier's logits, a regressor's values in its units.
        A tensor passes as torch layers take one (no copy, no check of its values: autograd reaches it); any
        other array (numpy, pandas, lists) is read and checked as ``predict`` reads it."""
        if not isinstance(x, torch.Tensor):
            return self._units(_network(self.inputs(x), *self._layers()))
        prep.check_width("x", x, self.sizes[0], kind="tensor")
        if x.dtype == self.weights[0].dtype and not self.scaled["x"]:
            h = x   # nothing to standardize: autograd reaches the caller's tensor
        else:
            h = prep.standardize(x, self.x_mean, self.x_std).to(self.weights[0].dtype)
        return self._units(_network(h, *self._layers()))

    @torch.no_grad()
    def outputs(self, x, *, dtype=None):
        """``forward`` without autograd, for any array of raw rows [N, sizes[0]]. ``dtype=torch.float64``
        computes in float64 from the trained weights: a row's outputs then do not depend on which rows came
        with it (float32 GEMMs round differently for different batch sizes)."""
        weights, biases = self._layers()
        if dtype is not None:
            weights = [w.to(dtype) for w in weights]
            biases = None if biases is None else [b.to(dtype) for b in biases]
        return self._units(_network(self.inputs(x, dtype=dtype), weights, biases))

    @torch.no_grad()
    def predict(self, x):
        """Class labels for a classifier (an int64 tensor, or a numpy array for text labels); values
        [N, out] in the targets' units otherwise (and before any fit: the network's outputs)."""
        out = self.outputs(x)
        return prep.decode_labels(out.argmax(1), self.class_names) if self.task == "classify" else out

    @torch.no_grad()
    def predict_proba(self, x):
        """A classifier's class probabilities [N, classes] (softmax of the outputs, float64, rows sum to 1)."""
        if self.task != "classify":
            raise ValueError(f"predict_proba: the model is not a classifier (task {self.task!r}); use predict")
        return torch.softmax(self.outputs(x).double(), dim=1)

    def targets(self, y, name="y"):
        """The user's targets as the network was trained on them: class indices, or standardized values."""
        if self.task == "classify":
            if self.class_names is None:   # class indices, as given
                return torch.as_tensor(prep.label_array(name, y).astype(np.int64), device=self.weights[0].device)
            return prep.encode_labels(name, y, self.class_names).to(self.weights[0].device)
        if self.task is None and not (y.is_floating_point() if isinstance(y, torch.Tensor) else
                                      np.asarray(y).dtype.kind in "fc"):
            return prep.label_array(name, y) if not isinstance(y, torch.Tensor) else y   # class indices, as given
        y = prep.as_tensor(name, y).to(self.weights[0].device)
        y = y.reshape(-1, 1) if y.dim() == 1 and self.sizes[-1] == 1 else y
        if self.scaled["y"]:
            y = prep.standardize(y, self.y_mean, self.y_std)
        return y.to(self.weights[0].dtype)

    def evaluate(self, x, y, **options):
        """Loss, accuracy (classes) or RMSE and R^2 (values, RMSE in the targets' units) on raw rows and the
        user's targets, scored as trained (``loss``, ``reduction``: to score otherwise): see manualnn.evaluate."""
        options.setdefault("target_scale", self.y_std.tolist() if self.scaled["y"] else None)
        return evaluate_weights(self, self.inputs(x), self.targets(y), **options)

    # -- training -------------------------------------------------------------------------------
    def fit(self, x, y, *, epochs=DATA_DEFAULTS["epochs"], standardize=True, classes=None, val_data=None,
            linear_candidate=False, **options):
        """Train this model's parameters in place; returns the TrainResult (losses per epoch).

        Takes train()'s keywords (the step's ``lr``, ``loss``, ``optimizer``, ..., ``batch_size``,
        ``shuffle``, ``shuffle_seed``, ``patience``, ``backend``). Those not given follow ``manualnn
        train --data`` (manualnn.spec.DATA_DEFAULTS), not train()'s seed step: Adam, lr 3e-3, the mean
        over batches of 200 rows, cross-entropy for labels and the sum of squares for values; with
        ``val_data=(x_val, y_val)`` a patience of 100 optimizer steps' worth of epochs (at least 5), without
        it L2 of 10 (classes; 1500 / rows² above 150 rows) or 30 (values) / rows
        (manualnn.spec.data_settings); below 50 rows (spec.CV_ROWS) of C / rows for the C that
        cross-validation prefers (manualnn.training.selection, its record in ``model.l2_search``).

        - ``linear_candidate``: the caller's word that the hidden layers and the step (lr, epochs, optimizer,
          reduction, batch size) are the defaults', as ``MLPRegressor`` passes it: then for values (a
          regression) of up to 200 training rows (spec.LINEAR["rows"]) in one batch, without a validation
          set or a given L2, the same folds also weigh a network with no hidden layer (ridge regression)
          and, where its validation loss is lower, this model, untrained (epoch 0), becomes it (``sizes``
          [in, out], its weights drawn from ``shuffle_seed``), trained at spec.LINEAR's lr and epochs in
          place of ``lr`` and ``epochs``, as ``manualnn train --data`` does. A model that became linear so
          and is fit again with ``linear_candidate`` keeps that rate and length and searches its L2 again
          over spec.LINEAR's strengths.

        - y: labels [N] (integer or text: a classifier) or float values [N] or [N, out] (a regressor).
          Labels 0..out-1 are the outputs' indices; other labels (1..K, text) name the outputs in
          sorted order, or in the order of ``classes``. A later fit keeps the first fit's labels.
        - ``standardize``: the first fit of an untrained model standardizes the features, and a
          regressor's targets, with its rows' mean and std (kept in the model); a model that has trained
          (fit before, or loaded) keeps what it has, as its weights were trained on that scale.
        """
        first = self.epoch == 0 and not any(self.scaled.values())
        x_raw, names = x, prep.column_names(x)
        x = prep.as_features("x", x, self.sizes[0]).to(self.weights[0].device)
        task = self._fit_task(y, options.get("loss"), classes)
        y_fit = self._fit_labels(y, classes, x.shape[0]) if task == "classify" else self._fit_values(y, x.shape[0])
        if standardize and first:
            self._learn(x, y_fit if task == "regress" else None)
        self.task = task
        if self.feature_names is None:
            self.feature_names = names
        x = self.inputs(x_raw)   # a later fit on a table with other columns is refused here
        y_fit = y_fit if task == "classify" else self.targets(y_fit)
        if val_data is not None:
            if not isinstance(val_data, (list, tuple)) or len(val_data) != 2:
                raise TypeError(f"val_data: expected a pair (x_val, y_val), got {type(val_data).__name__}")
            batch = options.get("batch_size", DATA_DEFAULTS["batch_size"])
            options.setdefault("patience", patience_for(x.shape[0], batch))   # manualnn.spec.data_settings' rule
            val_data = (self.inputs(val_data[0], "val_data[0]"), self.targets(val_data[1], "val_data[1]"))
        options.setdefault("loss", "ce" if task == "classify" else "sse")
        for key in ("lr", "optimizer", "reduction", "batch_size"):
            options.setdefault(key, DATA_DEFAULTS[key])
        if self.scaled["y"]:
            options.setdefault("target_scale", self.y_std.tolist())
        weights, biases = self._layers()
        self.l2_search = None
        if val_data is None and options.get("weight_decay") is None:   # nothing to stop on: L2 holds overfitting
            options.pop("weight_decay", None)                           # back, chosen by cross-validation on few rows
            rows, patience = x.shape[0], options.get("patience")
            grid = searches(rows, 0.0, None, patience=patience)
            rule = data_settings(rows, task, val_split=0.0)["weight_decay"]
            linear_ok = linear_candidate and weighs_linear(rows, task, 0.0, None, patience=patience,
                                                           batch_size=options.get("batch_size"))
            step = {k: v for k, v in options.items() if k not in ("callback", "every")}   # the run's alone
            found = dict(seed=options.get("shuffle_seed", 0), classes=task == "classify",
                         biases=None if biases is None else [b.detach() for b in biases])
            weights = [w.detach() for w in weights]
            if linear_ok and len(self.sizes) == 2:   # the search's linear model, fit again: its own L2 search,
                options["weight_decay"], self.l2_search = choose_linear_weight_decay(   # rate and length
                    x, y_fit, weights, **found, **step)
                options["lr"], epochs = LINEAR["lr"], LINEAR["epochs"]
            elif grid or (linear_ok and self.epoch == 0):
                linear = None if not linear_ok or self.epoch else [   # drawn as __init__ draws (seed: the run's)
                    w.to(weights[0].device) for w in init_weights(
                        [self.sizes[0], self.sizes[-1]], self.init, dtype=weights[0].dtype,
                        generator=torch.Generator().manual_seed(int(found["seed"])))]
                chosen, options["weight_decay"], self.l2_search = search(
                    x, y_fit, weights, grid=grid, rule=rule, linear_weights=linear, **found, **step)
                if chosen:
                    self._become_linear(linear, found["biases"])
                    weights, biases = self._layers()
                    options["lr"], epochs = LINEAR["lr"], LINEAR["epochs"]
            else:
                options["weight_decay"] = rule
        with torch.no_grad():
            result = train(x, y_fit, [w.detach() for w in weights], epochs=epochs, inplace=True, val_data=val_data,
                           biases=None if biases is None else [b.detach() for b in biases], **options)
        self.loss, self.reduction = options["loss"], options["reduction"]
        self.epoch, self.losses = self.epoch + len(result.losses), self.losses + list(result.losses)
        for name, values in self.history.items():
            values.extend(getattr(result, name))
        self.checkpoint_optimizer = None   # a loaded checkpoint's optimizer state no longer matches
        return result

    def _become_linear(self, weights, biases):
        """This untrained model as a network with no hidden layer, starting from ``weights`` and zero biases."""
        device = self.weights[0].device
        self.sizes = [self.sizes[0], self.sizes[-1]]
        self.weights = nn.ParameterList(nn.Parameter(w.clone().to(device)) for w in weights)
        if self.biases is not None:
            self.biases = nn.ParameterList([nn.Parameter(biases[-1].new_zeros(self.sizes[-1]))])

    def _fit_task(self, y, loss, classes):
        if self.task == "classify" or classes is not None or loss == "ce":
            return "classify"
        if isinstance(y, torch.Tensor):
            return "regress" if y.is_floating_point() else "classify"
        kind = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y).dtype.kind
        return "regress" if kind in "fc" else "classify"

    def _fit_labels(self, y, classes, rows):
        out = self.sizes[-1]
        names = self.class_names
        if classes is not None:
            names = [prep.plain_label(c) for c in classes]
            if self.class_names is not None and names != self.class_names:
                raise ValueError(f"classes: the model was fit on classes {self.class_names}, got {names}")
        if names is None:
            seen = prep.distinct_labels("y", y)
            indices = all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < out for c in seen)
            names = list(range(out)) if indices else seen
        if len(names) != out:
            raise ValueError(f"y: {len(names)} distinct labels ({', '.join(map(repr, names[:10]))}) for a network of "
                             f"{out} outputs; expected labels 0..{out - 1} or {out} distinct labels, or "
                             f"classes=[...] naming the {out} outputs in order (integers are class labels: pass "
                             f"floats for a regression)")
        labels = prep.encode_labels("y", y, names)
        if labels.shape[0] != rows:
            raise ValueError(f"y: expected {rows} labels (the rows of x), got {labels.shape[0]}")
        self.class_names = names
        return labels.to(self.weights[0].device)

    def _fit_values(self, y, rows):
        y = prep.as_tensor("y", y, rows=rows).to(self.weights[0].device)
        given, out = tuple(y.shape), self.sizes[-1]
        y = y.reshape(-1, 1) if y.dim() == 1 else y
        if y.dim() != 2 or y.shape[1] != out:
            shapes = f"[{rows}] or [{rows}, 1]" if out == 1 else f"[{rows}, {out}]"
            raise ValueError(f"y: expected {rows} targets of {out} value{'s' if out > 1 else ''} (shape {shapes}), got "
                             f"shape {given}")
        return y

    def _learn(self, x, y=None):
        """The first fit's statistics: the features', and a regression's targets'."""
        for key, values in (("x", x), ("y", y)):
            if values is None:
                continue
            mean, std = prep.fit_standardizer(values)
            getattr(self, f"{key}_mean").copy_(torch.tensor(mean, dtype=torch.float64))
            getattr(self, f"{key}_std").copy_(torch.tensor(std, dtype=torch.float64))
            self.scaled[key] = True

    # -- files and other modules ----------------------------------------------------------------
    def save(self, path):
        """Write this model to a checkpoint (``manualnn.load`` and ``manualnn predict`` read it); returns the path."""
        from .exchange import save_model
        return save_model(self, path)

    def to_sequential(self):
        """A plain ``nn.Sequential`` of ``nn.Linear`` and ``nn.ReLU`` (standard layout: weight [out, in]) that
        computes ``forward``: the feature statistics are folded into the first Linear, the target scale into
        the last. A copy: training one does not change the other."""
        from .exchange import to_sequential
        return to_sequential(self)

    @classmethod
    def from_sequential(cls, sequential, **preprocessing):
        """An MLP computing ``sequential`` (``nn.Linear`` layers with ``nn.ReLU`` between them); keywords
        ``class_names``, ``feature_names`` make it a classifier with those labels / name its inputs."""
        from .exchange import from_sequential
        return from_sequential(cls, sequential, **preprocessing)

    def extra_repr(self):
        task = f", task={self.task!r}" if self.task else ""
        return f"sizes={self.sizes}, bias={self.biases is not None}{task}"


def _network(h, weights, biases):
    """relu(h @ w + b) per hidden layer (the fused, differentiable linear_relu: Triton's kernel where it runs),
    then h @ w + b: the one forward of forward() and outputs()."""
    from .functional import linear_relu
    biases = biases or [None] * len(weights)
    for w, b in zip(weights[:-1], biases[:-1]):
        h = linear_relu(h, w, b)
    z = h @ weights[-1]
    return z if biases[-1] is None else z + biases[-1]


def _raise(kind, message):
    raise kind(message)


class TwoLayerNet(MLP):
    """The seed's network: 1000 -> 100 (ReLU) -> 10, no bias, the seed's torch.randn init."""

    def __init__(self, in_features=1000, hidden=100, out_features=10, *, init="randn", bias=False, **kwargs):
        super().__init__([in_features, hidden, out_features], init=init, bias=bias, **kwargs)


def load(path, *, device=None):
    """A ready MLP from a checkpoint written by ``manualnn train --save``, ``MLP.save`` or ``save_checkpoint``.

    Its preprocessing (feature statistics, target scale, classes, feature names) comes with it, so
    ``load(path).predict(x)`` on raw rows answers as ``manualnn predict`` does. The checkpoint's run
    settings are in ``model.config``. Missing, truncated, foreign or inconsistent files (a bad field
    in the config too) raise CheckpointError naming the file and the field.
    """
    from .exchange import load_model
    return load_model(MLP, path, device=device)


def evaluate(model, x, y, **options):
    """Score a model on ``x`` and targets or labels ``y``: an ``MLP`` on raw rows, with its own preprocessing
    and loss (``MLP.evaluate``); a list of weights as ``manualnn.training.evaluate`` does."""
    if isinstance(model, MLP):
        return model.evaluate(x, y, **options)
    return evaluate_weights(model, x, y, **options)
