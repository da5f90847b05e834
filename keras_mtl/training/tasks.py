"""The backend-neutral parts of multi-task training: matching tasks to outputs, their losses, the logs, the split.

Written in `keras.ops`; both training engines (`keras_mtl.training.backends`)
use them.
"""

from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from keras_mtl.training import targets


def task_losses(model, y, y_pred, sample_weight):
    """The per-task losses, a list of K float32 scalars, each times its `loss_weights` entry.

    Like every Keras loss, each is already divided by the number of
    replicas in sync under a `tf.distribute` strategy. A list, not a stacked
    vector: a task's loss taken back out of a stack would seem to reach
    every task's head (with a zero gradient), and the heads would look shared.
    """
    y, y_pred, sample_weight = by_task(model, y, y_pred, sample_weight)
    return [
        ops.cast(loss_fn(y[k], y_pred[k], sample_weight=sample_weight[k]), "float32") * model._task_loss_weights[k]
        for k, loss_fn in enumerate(model._task_loss_fns)
    ]


def by_task(model, y, y_pred, sample_weight):
    """Targets, outputs and sample weights as lists in task order; a target that would broadcast is refused (at trace time)."""
    y = per_task(y, model.task_names, "y", required=True)
    y_pred = per_task(y_pred, model.task_names, "the model's outputs", required=True)
    targets.check_shapes(model.task_names, model._task_loss_fns, y, y_pred)
    return y, y_pred, per_task(sample_weight, model.task_names, "sample_weight", required=False)


def batch_parts(x, y, sample_weight, parts):
    """The step's batch dealt into `parts` interleaved parts: a list of (x, y, sample_weight).

    For methods that need several independent batches per step (MoDo,
    SDMGrad, Auto-Lambda, SLGrad's hold-out): `fit` shuffles the samples, so
    the parts of one batch are independent batches of the training set.
    Part i holds samples i, i + parts, i + 2·parts, … (sizes differing by at
    most one). Dealt rather than cut into consecutive blocks, so that under a
    `tf.distribute` strategy, where each replica deals its own consecutive
    shard, the replicas' parts i together are exactly the one-device part i
    whenever every shard's size is a multiple of `parts`. Works on dynamic
    batch sizes.
    """

    def part(i):
        cut = lambda value: None if value is None else value[i::parts]
        return tuple(
            keras.tree.map_structure(cut, data) if data is not None else None for data in (x, y, sample_weight)
        )

    return [part(i) for i in range(parts)]


def per_sample_task_losses(model, y, y_pred, sample_weight):
    """Per task, its (n,) per-sample losses, each times its `loss_weights` entry and its sample weight.

    The values that the task's `sum_over_batch_size` loss averages (a loss
    with several values per sample gives their mean), not divided by the
    number of replicas: on one device their mean is `task_losses`'s entry.
    A loss with another `reduction` reduces its values otherwise; its
    per-sample values are still these.
    """
    y, y_pred, sample_weight = by_task(model, y, y_pred, sample_weight)
    losses = []
    for k, loss_fn in enumerate(model._task_loss_fns):
        # Keras' own call (dtypes, sample weights) with its reduction off, for this call only (at trace time).
        reduction, loss_fn.reduction = loss_fn.reduction, "none"
        try:
            values = ops.cast(loss_fn(y[k], y_pred[k], sample_weight=sample_weight[k]), "float32")
        finally:
            loss_fn.reduction = reduction
        per_sample = ops.mean(ops.reshape(values, (ops.shape(values)[0], -1)), axis=1)
        losses.append(per_sample * model._task_loss_weights[k])
    return losses


def training_part_sample_losses(model, y, sample_weight, y_pred, parts):
    """(K, n) per-sample losses of every part of the dealt batch but the last (the hold-out part)."""
    dealt = batch_parts(y_pred, y, sample_weight, parts)[:-1]
    return ops.concatenate(
        [
            ops.stack(per_sample_task_losses(model, part_y, part_pred, part_weight))
            for part_pred, part_y, part_weight in dealt
        ],
        axis=1,
    )


def too_small_batch_message(method, size):
    """The error for a batch with fewer samples than `method.batch_parts` (`size`: its number of samples, or words)."""
    parts = method.batch_parts
    return (
        f"keras_mtl: {method.display_name} draws {parts} batches per step, cut from the batch `fit` gives it, "
        f"so every batch needs at least {parts} samples; this one has {size}. Set fit's batch_size to {parts} times "
        f"the size of the batches the method should draw (e.g. batch_size={32 * parts} for {parts} batches of 32)."
    )


def bound_message(method, task, bound, when):
    """The error for a loss below the method's lower bound (`MultiTaskLoss.loss_lower_bounds`)."""
    if bound == 0:
        return f"keras_mtl: {method.display_name} needs non-negative losses; task '{task}' has a negative one ({when})"
    return f"keras_mtl: {method.display_name}: the loss of task '{task}' ({when}) is below its lower bound {bound}"


def update_trackers(model, x, total, losses, weights, skipped=0.0):
    """Logs the total and, per task, its loss and weight, each batch weighted by its size as in stock fit.

    A step skipped under a loss scale (`skipped` 1, counted once over the
    replicas) counts in `skipped_steps` and leaves the weight averages
    alone: its weights were computed from overflowed gradients and never
    used. Its losses, a measurement of the model, are logged as stock Keras
    logs them.
    """
    batch_size = ops.cast(ops.shape(keras.tree.flatten(x)[0])[0], "float32")
    state = model.multi_task_state
    # Keras' own loss tracker, so that `loss` means what it means in stock fit.
    model._loss_tracker.update_state(total, sample_weight=batch_size)
    skipped = ops.cast(skipped, "float32")
    state.skipped_steps_tracker.update_state(skipped)
    for k in range(len(model.task_names)):
        state.loss_trackers[k].update_state(losses[k], sample_weight=batch_size)
        if weights is not None:
            # A skipped step's weights may be NaN (from overflowed gradients), and NaN × 0 would still reach the mean.
            weight = ops.where(skipped > 0, 0.0, ops.stop_gradient(weights[k]))
            state.weight_trackers[k].update_state(weight, sample_weight=batch_size * (1.0 - skipped))


def update_penalty_tracker(model, x, penalty, skipped):
    """Logs a gradient penalty's value (`{method id}_penalty`), each applied step weighted by its batch size."""
    batch_size = ops.cast(ops.shape(keras.tree.flatten(x)[0])[0], "float32")
    model.multi_task_state.penalty_tracker.update_state(
        ops.stop_gradient(penalty), sample_weight=batch_size * (1.0 - ops.cast(skipped, "float32"))
    )


def evaluation_logs(model, logs, weights):
    """`evaluate`'s logs: no skipped steps, and no task weights or penalty for a gradient method.

    A gradient method has no gradients in evaluation, so no task weights
    (nor a gradient penalty's value): they are left out of the logs rather
    than reported as a stale 0.
    """
    left_out = {model.multi_task_state.skipped_steps_tracker.name}
    if weights is None:
        left_out |= {tracker.name for tracker in model.multi_task_state.weight_trackers}
    if model.multi_task_state.penalty_tracker is not None:
        left_out.add(model.multi_task_state.penalty_tracker.name)
    return {name: value for name, value in logs.items() if name not in left_out}


def last_layer_columns(shared_variables):
    """Column indices (in the flat shared Jacobian) of the last shared layer's parameters."""
    owners = [v.path.rsplit("/", 1)[0] for v in shared_variables]
    columns, start = [], 0
    for variable, owner in zip(shared_variables, owners):
        size = int(np.prod(variable.shape))
        if owner == owners[-1]:
            columns.extend(range(start, start + size))
        start += size
    return np.array(columns, "int32")


@dataclass(frozen=True)
class Split:
    """The model cut at its shared representation. A plain object, so that
    Keras does not track (and count twice) the layers it shares with the model."""

    trunk: keras.Model
    heads: keras.Model


def is_functional(model):
    return getattr(model, "inputs", None) is not None


def named_layer(model, name, argument):
    """`model.get_layer(name)`, or an error that names the constructor argument that named it."""
    try:
        return model.get_layer(name)
    except ValueError:
        raise ValueError(
            f"{argument} names {name!r}, but the model has no such layer; its layers are {[layer.name for layer in model.layers]}."
        ) from None


def split_at(model, layer_name):
    if not is_functional(model):
        raise ValueError(
            "`representation` needs a functional model (keras_mtl.MultiTaskModel or a functional subclass)."
        )
    layer = named_layer(model, layer_name, "representation")
    if isinstance(layer, keras.layers.InputLayer):
        raise ValueError(
            f"representation names the input layer {layer_name!r}: name the last layer the tasks share, "
            "whose output the heads compute from."
        )
    representation = layer.output
    try:
        heads = keras.Model(representation, model.outputs)
    except ValueError as error:
        raise ValueError(
            f"The heads cannot be computed from the output of layer {layer_name!r} alone: {error}"
        ) from error
    return Split(trunk=keras.Model(model.inputs, representation), heads=heads)


def check_shared_layers(model, names):
    """Each layer in `shared_layers` exists and, in a functional model, feeds two outputs or more.

    A layer that feeds one output only is that task's head: named as shared,
    it would take the combined update instead of its task's own gradient. A
    subclassed model's graph is known only once traced:
    `shared_variable_indices` checks it then, before the first step.
    """
    layers = [named_layer(model, name, "shared_layers") for name in names]
    if not is_functional(model):
        return
    on_path = {
        output: {layer.name for layer in keras.Model(model.inputs, tensor).layers}
        for output, tensor in zip(model.output_names, model.outputs)
    }
    for layer in layers:
        outputs = [output for output, path in on_path.items() if layer.name in path]
        if len(outputs) < 2:
            raise ValueError(
                f"shared_layers names {layer.name!r}, but "
                + (f"only output {outputs[0]!r}" if outputs else "no output")
                + " depends on it: a layer that one task uses alone is that task's head. Leave it out of shared_layers."
            )


def loss_weight_vector(loss_weights, task_names):
    if loss_weights is None:
        return [1.0] * len(task_names)
    if isinstance(loss_weights, dict):
        unknown = sorted(set(loss_weights) - set(task_names))
        if unknown:
            raise ValueError(f"loss_weights names {unknown}, which are not outputs of the model ({task_names}).")
        return [float(loss_weights.get(name, 1.0)) for name in task_names]
    if len(loss_weights) != len(task_names):
        raise ValueError(f"loss_weights has {len(loss_weights)} entries for {len(task_names)} tasks {task_names}.")
    return [float(w) for w in loss_weights]


def per_task(values, task_names, what, required):
    """Splits targets, predictions or sample weights into one entry per task."""
    if values is None:
        if required:
            raise ValueError(f"{what} is missing.")
        return [None] * len(task_names)
    if isinstance(values, dict):
        missing = [name for name in task_names if name not in values]
        unknown = sorted(set(values) - set(task_names))
        if unknown or (required and missing):
            raise ValueError(
                f"{what} is keyed by {sorted(values)}, but the tasks are {task_names}"
                + (f": no task named {unknown}" if unknown else "")
                + (f": missing {missing}" if required and missing else "")
                + "."
            )
        return [values.get(name) for name in task_names]
    if isinstance(values, (list, tuple)):
        if len(values) != len(task_names):
            raise ValueError(f"{what} has {len(values)} entries for {len(task_names)} tasks {task_names}.")
        return list(values)
    if len(task_names) == 1 or not required:
        # One array for a one-task model, or one sample weight for all tasks.
        return [values] * len(task_names)
    raise ValueError(f"{what} must be a dict keyed by task ({task_names}), not a single array.")
