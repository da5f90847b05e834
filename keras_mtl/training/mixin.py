"""`MultiTaskMixin`: multi-task training for any Keras model."""

import inspect
from dataclasses import dataclass

import keras
import tensorflow as tf

from keras_mtl.flat.sam import SAM
from keras_mtl.gradients.base import GradientMethod
from keras_mtl.methods import MultiTaskLoss
from keras_mtl.training.gradient_step import gradient_train_step
from keras_mtl.training.replicas import num_replicas, sum_over_replicas
from keras_mtl.training.sam_step import sam_train_step
from keras_mtl.training.state import MultiTaskState
from keras_mtl.training.weighted_step import weighted_loss_step
from keras_mtl.weightings.equal import EqualWeighting


class MultiTaskMixin:
    """Trains a multi-output model with a keras_mtl method.

    Put it before `keras.Model` in your model's bases; the tasks are the
    model's named outputs, and the method is what you pass as `loss`:

    ```python
    class MyModel(keras_mtl.MultiTaskMixin, keras.Model):
        ...

    model.compile(
        optimizer="adam",
        loss=keras_mtl.get("uw_so", {"digit": "sparse_categorical_crossentropy", "size": "mse"}),
        loss_weights={"size": 0.5},  # optional, applied to each task's loss first
    )
    model.fit(x, {"digit": digits, "size": sizes}, epochs=10)
    ```

    A plain dict of losses means equal weighting (the stock Keras sum), with
    per-task logs. `fit` and `evaluate` log, per task, its unweighted loss
    (`{task}_loss`, after `loss_weights`) and its weight (`{task}_weight`),
    both epoch averages, plus the weighted total (`loss`). Per-task
    `sample_weight` (a dict keyed by task), regularisation losses and mixed
    precision behave as in stock `fit`.

    A non-finite task loss stops training with an error that names the task,
    before the step can change any weight or running statistic.

    Gradient methods (PCGrad, MGDA, ...) work on the gradients of the shared
    parameters: those that more than one task's loss reaches, or the
    variables of the layers named in `shared_layers`. With `representation`,
    the name of the layer whose output is the shared representation (a
    functional model only), they work on the gradients of that tensor
    instead, which is much cheaper. `fit` then logs the task weights of every
    step's combination; `loss` is the plain sum of the task losses (plus
    regularisation) the gradient methods balance.

    It is a plain mixin, not a `keras.Model` subclass, because functional
    construction rewrites the bases of `keras.Model` subclasses.

    Args:
        representation: optional name of the layer whose output the heads share.
        shared_layers: optional names of the layers whose variables are shared.
    """

    def __init__(self, *args, representation=None, shared_layers=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.representation = representation
        self.shared_layers = None if shared_layers is None else list(shared_layers)
        self.multi_task_state = MultiTaskState(name="multi_task_state")
        self.multi_task_method = None
        self.task_names = None
        self.multi_task_split = None

    def get_config(self):
        return {**super().get_config(), "representation": self.representation, "shared_layers": self.shared_layers}

    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, **kwargs):
        if loss is None:
            raise ValueError("Give a multi-task method as `loss`, e.g. keras_mtl.get('uw_so', {task: loss, ...}).")
        method = loss if isinstance(loss, MultiTaskLoss) else EqualWeighting(loss)
        task_names = self._resolve_task_names(method)
        method.check_num_tasks(len(task_names))
        self._task_loss_fns = method.task_losses(task_names)
        self._task_loss_weights = _loss_weight_vector(loss_weights, task_names)
        self.multi_task_method = method
        self.task_names = task_names
        self.multi_task_state.configure(method, task_names)
        if isinstance(method, GradientMethod) and self.representation is not None:
            self.multi_task_split = _split_at(self, self.representation)
        # Keras gets no loss: its CompileLoss would apply the method to each
        # output alone, and, never built, would force a symbolic build under
        # every tf.distribute strategy (which fails under
        # MultiWorkerMirroredStrategy in Keras 3.15). The method is saved
        # through `get_compile_config` instead.
        super().compile(optimizer=optimizer, loss=None, loss_weights=loss_weights, **kwargs)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None and self.multi_task_method is not None:
            config["loss"] = keras.saving.serialize_keras_object(self.multi_task_method)
        return config

    def compile_from_config(self, config):
        # Keras skips compiling on load when `compile` is overridden; we
        # compile exactly as `Trainer.compile_from_config` would.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def fit(self, *args, **kwargs):
        arguments = inspect.signature(super().fit).bind(*args, **kwargs).arguments
        # First in the list, so that checkpointing callbacks such as
        # BackupAndRestore save the state as it is after the epoch's update.
        arguments["callbacks"] = [_EndEpoch()] + list(arguments.get("callbacks") or [])
        return super().fit(**arguments)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3.15 builds from the first batch, reduced over replicas with
        # `strategy.reduce`, which fails for MultiWorkerMirroredStrategy's
        # per-replica values; this worker's own slice of the batch builds the
        # same variables.
        if iterator is not None and isinstance(self.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    lambda value: self.distribute_strategy.experimental_local_results(value)[0], next(batches)
                )
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def _resolve_task_names(self, method):
        output_names = list(getattr(self, "output_names", None) or [])
        if output_names:
            return output_names
        if isinstance(method.losses, dict):
            return sorted(method.losses)
        raise ValueError("The model has no output names yet; give the losses as a dict keyed by task name.")

    def task_losses(self, y, y_pred, sample_weight):
        """The per-task losses, a list of K float32 scalars, each times its `loss_weights` entry.

        Like every Keras loss, each is already divided by the number of
        replicas in sync. A list, not a stacked vector: a task's loss taken
        back out of a stack would seem to reach every task's head (with a
        zero gradient), and the heads would look shared.
        """
        y = _per_task(y, self.task_names, "y", required=True)
        y_pred = _per_task(y_pred, self.task_names, "the model's outputs", required=True)
        sample_weight = _per_task(sample_weight, self.task_names, "sample_weight", required=False)
        return [
            tf.cast(loss_fn(y[k], y_pred[k], sample_weight=sample_weight[k]), tf.float32) * self._task_loss_weights[k]
            for k, loss_fn in enumerate(self._task_loss_fns)
        ]

    def task_loss_vector(self, y, y_pred, sample_weight):
        """`task_losses` as one (K,) vector."""
        return tf.stack(self.task_losses(y, y_pred, sample_weight))

    def regularization_loss(self):
        """The model's `add_loss` and regulariser terms, per replica, as stock `fit` adds them."""
        if not self.losses:
            return tf.constant(0.0)
        total = tf.cast(tf.add_n([tf.cast(loss, tf.float32) for loss in self.losses]), tf.float32)
        return total / num_replicas()

    def shared_variable_indices(self, per_task_gradients):
        """Indices in `trainable_variables` of the shared parameters.

        The variables of `shared_layers` if the model names them, else those
        that more than one task's loss reaches (`per_task_gradients[k][i]` is
        None where task k does not reach variable i).
        """
        if self.shared_layers is not None:
            shared_ids = {id(v) for name in self.shared_layers for v in self.get_layer(name).trainable_variables}
            return [i for i, v in enumerate(self.trainable_variables) if id(v) in shared_ids]
        reached = [sum(task[i] is not None for task in per_task_gradients) for i in range(len(self.trainable_variables))]
        return [i for i, count in enumerate(reached) if count >= 2]

    def global_task_losses(self, losses):
        """The global batch's losses: summed over replicas, gradient stopped, checked.

        A non-finite loss, or a negative one for a method that takes logs or
        ratios, raises an error that names the task. Everything a step
        updates must wait for these losses (a control dependency).
        """
        global_losses = tf.stop_gradient(sum_over_replicas(losses))
        checked = []
        for k, name in enumerate(self.task_names):
            loss = tf.debugging.check_numerics(global_losses[k], f"keras_mtl: the loss of task '{name}' is not finite")
            if getattr(self.loss_weighting, "needs_non_negative_losses", False):
                message = f"keras_mtl: {type(self.multi_task_method).__name__} needs non-negative losses; task '{name}' has a negative one"
                with tf.control_dependencies([tf.debugging.assert_non_negative(loss, message=message)]):
                    loss = tf.identity(loss)
            checked.append(loss)
        return tf.stack(checked)

    def logged_total(self, global_losses, weights, regularization):
        """The global batch's total loss for the logs: the weighted total for
        a loss weighting, the plain sum for a gradient method, plus
        regularisation (`regularization`: this replica's, as
        `regularization_loss` gives it). Call it before the step is applied."""
        regularization = regularization * num_replicas()
        weighting = self.loss_weighting
        if weighting is None:
            return tf.reduce_sum(global_losses) + regularization
        return tf.tensordot(tf.stop_gradient(weights), global_losses, 1) + weighting.regularization(self.multi_task_state) + regularization

    @property
    def loss_weighting(self):
        """The loss weighting in use (also inside SAM); None for gradient methods."""
        method = self.multi_task_method
        if isinstance(method, SAM):
            method = method.method
        return None if isinstance(method, GradientMethod) else method

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The total loss Keras' own utilities ask for; never updates the method's state.

        The weighted total for a loss weighting, the plain sum for a gradient
        method, plus regularisation; per replica, as stock `compute_loss`.
        """
        losses = self.task_loss_vector(y, y_pred, sample_weight)
        method = self.loss_weighting
        if method is None:
            return tf.reduce_sum(losses) + self.regularization_loss()
        weights = method.task_weights(tf.stop_gradient(sum_over_replicas(losses)), self.multi_task_state, training=False)
        return tf.tensordot(weights, losses, 1) + method.regularization(self.multi_task_state) / num_replicas() + self.regularization_loss()

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if isinstance(self.multi_task_method, SAM):
            step = sam_train_step
        elif isinstance(self.multi_task_method, GradientMethod):
            step = gradient_train_step
        else:
            step = weighted_loss_step
        y_pred, global_losses, weights, total = step(self, x, y, sample_weight)
        self._update_trackers(x, total, global_losses, weights)
        return _for_multi_worker_reduction(self.compute_metrics(x, y, y_pred, sample_weight))

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred = self(x, training=False)
        global_losses = self.global_task_losses(self.task_loss_vector(y, y_pred, sample_weight))
        weighting = self.loss_weighting
        # A gradient method has no gradients here, so no task weights: they
        # are left out of the logs rather than reported as a stale 0.
        weights = None if weighting is None else weighting.task_weights(global_losses, self.multi_task_state, training=False)
        self._update_trackers(x, self.logged_total(global_losses, weights, self.regularization_loss()), global_losses, weights)
        logs = self.compute_metrics(x, y, y_pred, sample_weight)
        if weights is None:
            weight_names = {tracker.name for tracker in self.multi_task_state.weight_trackers}
            logs = {name: value for name, value in logs.items() if name not in weight_names}
        return _for_multi_worker_reduction(logs)

    def _update_trackers(self, x, total, global_losses, weights):
        """Logs the total and, per task, its loss and weight, each batch weighted by its size as in stock fit."""
        batch_size = tf.cast(tf.shape(tf.nest.flatten(x)[0])[0], tf.float32)
        state = self.multi_task_state
        # Keras' own loss tracker, so that `loss` means what it means in stock fit.
        self._loss_tracker.update_state(total, sample_weight=batch_size)
        for k in range(len(self.task_names)):
            state.loss_trackers[k].update_state(global_losses[k], sample_weight=batch_size)
            if weights is not None:
                state.weight_trackers[k].update_state(tf.stop_gradient(weights[k]), sample_weight=batch_size)


class _EndEpoch(keras.callbacks.Callback):
    """Tells epoch-level methods (DWA) that a training epoch ended."""

    def on_epoch_end(self, epoch, logs=None):
        self.model.multi_task_method.end_epoch(self.model.multi_task_state)


def _for_multi_worker_reduction(logs):
    """Logs as (1,) vectors under MultiWorkerMirroredStrategy.

    Keras 3.15 reduces step logs across workers with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on scalars; on
    (1,) vectors it gives the scalar mean.
    """
    if not isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        return logs
    return {name: tf.reshape(value, [1]) for name, value in logs.items()}


@dataclass(frozen=True)
class _Split:
    """The model cut at its shared representation. A plain object, so that
    Keras does not track (and count twice) the layers it shares with the model."""

    trunk: keras.Model
    heads: keras.Model


def _split_at(model, layer_name):
    if not hasattr(model, "inputs") or model.inputs is None:
        raise ValueError("`representation` needs a functional model (keras_mtl.MultiTaskModel or a functional subclass).")
    representation = model.get_layer(layer_name).output
    try:
        heads = keras.Model(representation, model.outputs)
    except ValueError as error:
        raise ValueError(f"The heads cannot be computed from the output of layer {layer_name!r} alone: {error}") from error
    return _Split(trunk=keras.Model(model.inputs, representation), heads=heads)


def _loss_weight_vector(loss_weights, task_names):
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


def _per_task(values, task_names, what, required):
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
