"""Scalarization: fixed task weights, and the brute-force search over them."""

import itertools
from dataclasses import dataclass

import keras

from keras_mtl.arguments import PerTask, Real, declare_arguments, per_task
from keras_mtl.methods import LossWeighting
from keras_mtl.registry import register


@register("scalarization")
@declare_arguments(weights=PerTask(Real(minimum=0)))
class Scalarization(LossWeighting):
    """Fixed task weights: `total = Σ_k w_k L_k`.

    With well-tuned weights a plain scalarization matches most elaborate
    methods (Xin et al. 2022); `grid_search` finds them by brute force.

    Args:
        losses: the per-task losses.
        weights: one finite, non-negative weight per task, not all zero: a
            dict `{task: w}` or a list in the model's output order. None
            means all 1.
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.Scalarization({"a": "mse", "b": "mse"}, weights={"a": 0.7, "b": 0.3})
    """

    min_tasks = 1

    def __init__(self, losses=None, weights=None, name=None):
        super().__init__(losses, name=name)
        # Not `self.weights`: that is the hook that returns them.
        self.fixed_weights = _checked_weights(weights, type(self).__name__)

    def build_state(self, state, task_names):
        fixed = self.fixed_weights
        self._vector = (
            [1.0] * len(task_names) if fixed is None else per_task(fixed, task_names, "weights", type(self).__name__)
        )

    def weights(self, losses, state, training):
        return keras.ops.convert_to_tensor(self._vector, dtype=losses.dtype), {}

    def get_config(self):
        return {**super().get_config(), "weights": self.fixed_weights}


def _checked_weights(weights, owner):
    """`weights` (already checked against their declaration), refused when all zero: nothing would train."""
    values = [] if weights is None else list(weights.values()) if isinstance(weights, dict) else weights
    if values and not any(values):
        raise ValueError(
            f"{owner}: `weights` are all zero ({values}): the total loss would be 0 and nothing would train."
        )
    return weights


def scalarization_grid(num_tasks, step=0.1, minimum=0.1):
    """Every weight vector on the simplex with entries `minimum, minimum+step, …`.

    On the default 0.1 grid with every weight at least 0.1 there are 9 points
    for 2 tasks and 36 for 3 (Kirchdorfer et al. 2024's brute-force reference).

    Args:
        num_tasks: K, at least 1.
        step: the grid's spacing, which must divide 1 and `minimum`; default 0.1.
        minimum: the least weight, default 0.1.

    Returns:
        A list of K-tuples that sum to 1.

    Examples:
        >>> scalarization_grid(2, step=0.25, minimum=0.25)
        [(0.25, 0.75), (0.5, 0.5), (0.75, 0.25)]
    """
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be at least 1, got {num_tasks}.")
    units = round(1.0 / step)
    low = round(minimum / step)
    if abs(units * step - 1.0) > 1e-9 or abs(low * step - minimum) > 1e-9:
        raise ValueError(f"step ({step}) must divide 1 and minimum ({minimum}).")
    points = []
    for counts in itertools.product(range(low, units + 1), repeat=num_tasks):
        if sum(counts) == units:
            points.append(tuple(round(c * step, 10) for c in counts))
    return points


@dataclass(frozen=True)
class GridSearchResult:
    """The outcome of `grid_search`: the best weights and every point's score."""

    weights: dict
    score: float
    scores: list  # (weights dict, score) for every grid point, in grid order


def grid_search(
    build_model,
    losses,
    x,
    y=None,
    validation_data=None,
    optimizer="adam",
    monitor="val_loss",
    mode="min",
    step=0.1,
    minimum=0.1,
    **fit_kwargs,
):
    """Trains one model per point of `scalarization_grid` and keeps the best.

    Args:
        build_model: a function returning a fresh, uncompiled multi-task model
            (a `MultiTaskModel` or a model with the mixin); called once per point.
        losses: the per-task losses, a dict keyed by task.
        x: the training inputs, passed to `fit`.
        y: the training targets, passed to `fit` (None when `x` is a dataset).
        validation_data: passed to `fit`; needed for a `val_` monitor.
        optimizer: an optimizer identifier, or a function returning a new
            optimizer (an optimizer instance cannot be shared between models).
        monitor: the `fit` log to compare, e.g. `"val_loss"` or `"val_left_accuracy"`.
        mode: `"min"` or `"max"`; a point's score is its best epoch.
        step: the grid's spacing (see `scalarization_grid`), default 0.1.
        minimum: the least weight, default 0.1.
        **fit_kwargs: the other `fit` arguments (`epochs`, `batch_size`, ...).

    Returns:
        A `GridSearchResult`.
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}.")
    if not isinstance(losses, dict):
        raise TypeError("grid_search needs the losses as a dict keyed by task.")
    task_names = sorted(losses)
    scores = []
    for point in scalarization_grid(len(task_names), step, minimum):
        weights = dict(zip(task_names, point))
        model = build_model()
        model.compile(
            optimizer=optimizer() if callable(optimizer) else keras.optimizers.get(optimizer),
            loss=Scalarization(losses, weights),
        )
        history = model.fit(x, y, validation_data=validation_data, **fit_kwargs).history
        if monitor not in history:
            raise ValueError(f"fit logged no {monitor!r}; it logged {sorted(history)}.")
        scores.append((weights, (min if mode == "min" else max)(history[monitor])))
    best = (min if mode == "min" else max)(scores, key=lambda item: item[1])
    return GridSearchResult(weights=best[0], score=best[1], scores=scores)
