"""Hard parameter sharing: one shared bottom network, one tower per task."""

import keras

from keras_mtl.architectures._common import check_tasks, towers, units_tuple
from keras_mtl.training.model import MultiTaskModel


def shared_bottom(
    inputs,
    tasks,
    bottom_units=(32,),
    bottom_activation="relu",
    tower_units=(8,),
    tower_activation="relu",
    representation=False,
    **model_kwargs,
):
    """The shared-bottom model (hard parameter sharing): y_k = h_k(f(x)).

    Caruana 1997; the baseline of Ma et al. 2018 (eq. 1): a bottom network f
    that every task uses (Dense layers `bottom_1`, …, `bottom_L`), and per
    task k a tower h_k (Dense layers `{k}_tower_i`) ending in a linear Dense
    named k, the model's output for task k.

    The bottom's output is the single tensor all tasks share, so gradient
    methods can work on it: `representation=True` names `bottom_L` as the
    model's `representation` (much cheaper than parameter mode; see the
    guide Gradient methods). In parameter mode the bottom's variables are
    found shared and the towers task-specific.

    Args:
        inputs: a `keras.Input` of shape (features,).
        tasks: dict {task name: output units}; outputs are linear (use
            `from_logits=True` losses for classification).
        bottom_units: widths of the shared Dense layers (at least one), default `(32,)`.
        bottom_activation: their activation, default `"relu"`.
        tower_units: the widths of each tower's hidden Dense layers (`{task}_tower_i`; may be
            empty), default `(8,)`.
        tower_activation: their activation, default `"relu"`.
        representation: whether the model balances gradients at `bottom_L`
            (representation mode), default `False`.
        **model_kwargs: passed to `keras_mtl.MultiTaskModel` (e.g. `name`).

    Returns:
        A `keras_mtl.MultiTaskModel` with one output per task.

    Examples:
        ```python
        inputs = keras.Input((100,))
        model = keras_mtl.architectures.shared_bottom(inputs, {"y1": 1, "y2": 1}, bottom_units=(113,), representation=True)
        model.compile("adam", loss=keras_mtl.get("mgda", {"y1": "mse", "y2": "mse"}))
        ```
    """
    tasks = check_tasks(tasks, "shared_bottom")
    bottom_units = units_tuple(bottom_units, "shared_bottom: bottom_units")
    tower_units = units_tuple(tower_units, "shared_bottom: tower_units", allow_empty=True)
    feature = inputs
    for i, width in enumerate(bottom_units, start=1):
        feature = keras.layers.Dense(width, activation=bottom_activation, name=f"bottom_{i}")(feature)
    outputs = towers([feature] * len(tasks), tasks, tower_units, tower_activation)
    if representation:
        model_kwargs["representation"] = f"bottom_{len(bottom_units)}"
    return MultiTaskModel(inputs, outputs, **model_kwargs)
