"""`MultiTaskMixin`: multi-task training for any Keras model."""

import inspect
import warnings
from dataclasses import dataclass

import keras
import tensorflow as tf

from keras_mtl.flat.sam import SAM
from keras_mtl.gradients.base import GradientMethod
from keras_mtl.methods import MultiTaskLoss
from keras_mtl.training.faults import method_name
from keras_mtl.training.gradient_step import gradient_train_step
from keras_mtl.training.replicas import num_replicas, on_first_replica, sum_over_replicas
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

    A non-finite task loss, or a negative one for a method that needs
    non-negative losses, stops training with an error that names the task,
    before the step can change any weight or running statistic. Non-finite
    gradients behind finite losses are an error that names the task or
    variable, or, under a `LossScaleOptimizer` (mixed precision), an
    overflow: the step is skipped, the method's state kept, and `fit` logs
    the epoch's `skipped_steps` and leaves their task weights out of the
    averages. Non-finite weights or state are an error that names the
    method (see `keras_mtl.training.faults`).

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
        representation: optional name of the layer whose output the heads
            share (not the input layer).
        shared_layers: optional list of the names of the layers whose
            variables are shared; each must serve two tasks or more (a layer
            that one task uses alone is its head, and is refused).
    """

    def __init__(self, *args, representation=None, shared_layers=None, **kwargs):
        if isinstance(shared_layers, str):
            raise TypeError(f"shared_layers must be a list of layer names, not a string: pass [{shared_layers!r}].")
        super().__init__(*args, **kwargs)
        self.representation = representation
        self.shared_layers = None if shared_layers is None else list(shared_layers)
        self.multi_task_state = MultiTaskState(name="multi_task_state")
        self.multi_task_method = None
        self.task_names = None
        self.multi_task_split = None
        self._warned_about_epochs = False

    def get_config(self):
        return {**super().get_config(), "representation": self.representation, "shared_layers": self.shared_layers}

    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, **kwargs):
        """Compiles the model with a multi-task method as `loss`.

        Re-compiling with the same method configuration (its whole config,
        losses included) keeps the method's state: a learned weighting
        survives a new learning rate. Another configuration drops that state
        and the new method starts fresh; the model's weights stay, and so
        does the optimizer given, if it can train the new state. Everything
        is checked before anything changes: a refused compile leaves the
        model as it was.
        """
        if loss is None:
            raise ValueError("Give a multi-task method as `loss`, e.g. keras_mtl.get('uw_so', {task: loss, ...}).")
        method = loss if isinstance(loss, MultiTaskLoss) else EqualWeighting(loss)
        task_names = self._resolve_task_names(method)
        method.check_num_tasks(len(task_names))
        task_loss_fns = method.task_losses(task_names)
        task_loss_weights = _loss_weight_vector(loss_weights, task_names)
        if self.shared_layers is not None:
            _check_shared_layers(self, self.shared_layers)
        split = _split_at(self, self.representation) if isinstance(method, GradientMethod) and self.representation is not None else None
        state = self.multi_task_state.for_method(method, task_names)
        _check_optimizer_can_train(optimizer, self.multi_task_state, state, method)
        # Keras gets no loss: its CompileLoss would apply the method to each
        # output alone, and, never built, would force a symbolic build under
        # every tf.distribute strategy (which fails under
        # MultiWorkerMirroredStrategy in Keras 3.15). The method is saved
        # through `get_compile_config` instead.
        super().compile(optimizer=optimizer, loss=None, loss_weights=loss_weights, **kwargs)
        self._task_loss_fns = task_loss_fns
        self._task_loss_weights = task_loss_weights
        self.multi_task_method = method
        self.task_names = task_names
        self.multi_task_split = split
        _install_state(self, state)

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
        arguments["callbacks"] = [_EpochBoundaries()] + list(arguments.get("callbacks") or [])
        return super().fit(**arguments)

    def end_epoch(self):
        """Ends a training epoch for the methods that work per epoch (DWA, STCH).

        `fit` calls it after every epoch; call it yourself after each epoch
        you train with `train_on_batch`. The epoch is the training steps since
        the last one ended; an epoch without steps changes nothing.
        """
        if self.multi_task_method is None:
            raise ValueError("end_epoch: compile the model with a multi-task method first.")
        self.multi_task_method.end_epoch(self.multi_task_state)

    def train_on_batch(self, *args, **kwargs):
        method = self.multi_task_method
        if method is not None and method.works_per_epoch and not self._warned_about_epochs:
            self._warned_about_epochs = True
            warnings.warn(
                f"{type(method).__name__} updates its weights at the end of each training epoch, and "
                "train_on_batch never ends one: call model.end_epoch() after each of your epochs.",
                stacklevel=2,
            )
        return super().train_on_batch(*args, **kwargs)

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
        None where task k does not reach variable i). A named layer with a
        variable that one task alone reaches is a head: an error, raised while
        the first step is traced, before it runs.
        """
        if self.shared_layers is not None:
            index = {id(v): i for i, v in enumerate(self.trainable_variables)}
            shared = []
            for name in self.shared_layers:
                for variable in self.get_layer(name).trainable_variables:
                    i = index[id(variable)]
                    tasks = [task for task, gradients in zip(self.task_names, per_task_gradients) if gradients[i] is not None]
                    if len(tasks) == 1:
                        raise ValueError(
                            f"shared_layers names {name!r}, but only task {tasks[0]!r} reaches its variable {variable.path!r}: "
                            "a layer that one task uses alone is that task's head. Leave it out of shared_layers."
                        )
                    shared.append(i)
            return sorted(set(shared))
        reached = [sum(task[i] is not None for task in per_task_gradients) for i in range(len(self.trainable_variables))]
        return [i for i, count in enumerate(reached) if count >= 2]

    def global_task_losses(self, losses):
        """The global batch's losses: summed over replicas, gradient stopped, checked.

        A non-finite loss, or a negative one for a method that takes logs or
        ratios (`needs_non_negative_losses`: loss weightings and gradient
        methods alike, also inside SAM), raises an error that names the task.
        Everything a step updates must wait for these losses (a control
        dependency).
        """
        global_losses = tf.stop_gradient(sum_over_replicas(losses))
        method = self.multi_task_method
        # SAM takes its inner method's losses; the flag is that method's.
        method = method.method if isinstance(method, SAM) else method
        checked = []
        for k, name in enumerate(self.task_names):
            loss = tf.debugging.check_numerics(global_losses[k], f"keras_mtl: the loss of task '{name}' is not finite")
            if method.needs_non_negative_losses:
                message = f"keras_mtl: {method_name(self.multi_task_method)} needs non-negative losses; task '{name}' has a negative one"
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
        y_pred, global_losses, weights, total, applied = step(self, x, y, sample_weight)
        self._update_trackers(x, total, global_losses, weights, applied)
        logs = self.compute_metrics(x, y, y_pred, sample_weight)
        if not isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            # Only a loss scale skips steps; without one a fault is an error.
            logs.pop(self.multi_task_state.skipped_steps_tracker.name)
        return _for_multi_worker_reduction(logs)

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
        # Evaluation skips no step.
        left_out = {self.multi_task_state.skipped_steps_tracker.name}
        if weights is None:
            left_out |= {tracker.name for tracker in self.multi_task_state.weight_trackers}
        return _for_multi_worker_reduction({name: value for name, value in logs.items() if name not in left_out})

    def _update_trackers(self, x, total, global_losses, weights, applied=True):
        """Logs the total and, per task, its loss and weight, each batch weighted by its size as in stock fit.

        A step skipped under a loss scale (`applied` False) counts in
        `skipped_steps` and leaves the weight averages alone: its weights were
        computed from overflowed gradients and never used. Its losses, a
        measurement of the model, are logged as stock Keras logs them.
        """
        batch_size = tf.cast(tf.shape(tf.nest.flatten(x)[0])[0], tf.float32)
        state = self.multi_task_state
        # Keras' own loss tracker, so that `loss` means what it means in stock fit.
        self._loss_tracker.update_state(total, sample_weight=batch_size)
        skipped = 1.0 - tf.cast(applied, tf.float32)
        state.skipped_steps_tracker.update_state(on_first_replica(skipped))
        for k in range(len(self.task_names)):
            state.loss_trackers[k].update_state(global_losses[k], sample_weight=batch_size)
            if weights is not None:
                state.weight_trackers[k].update_state(tf.stop_gradient(weights[k]), sample_weight=batch_size * (1.0 - skipped))


class _EpochBoundaries(keras.callbacks.Callback):
    """Tells epoch-level methods (DWA) where each `fit` epoch begins and ends.

    Beginning an epoch drops what an interrupted one left (a KeyboardInterrupt,
    or a BackupAndRestore backup taken mid-epoch, which Keras 3.15 resumes at
    the start of that epoch).
    """

    def on_epoch_begin(self, epoch, logs=None):
        self.model.multi_task_method.begin_epoch(self.model.multi_task_state)

    def on_epoch_end(self, epoch, logs=None):
        self.model.end_epoch()


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


def _is_functional(model):
    return getattr(model, "inputs", None) is not None


def _named_layer(model, name, argument):
    """`model.get_layer(name)`, or an error that names the constructor argument that named it."""
    try:
        return model.get_layer(name)
    except ValueError:
        raise ValueError(f"{argument} names {name!r}, but the model has no such layer; its layers are {[layer.name for layer in model.layers]}.") from None


def _split_at(model, layer_name):
    if not _is_functional(model):
        raise ValueError("`representation` needs a functional model (keras_mtl.MultiTaskModel or a functional subclass).")
    layer = _named_layer(model, layer_name, "representation")
    if isinstance(layer, keras.layers.InputLayer):
        raise ValueError(
            f"representation names the input layer {layer_name!r}: name the last layer the tasks share, "
            "whose output the heads compute from."
        )
    representation = layer.output
    try:
        heads = keras.Model(representation, model.outputs)
    except ValueError as error:
        raise ValueError(f"The heads cannot be computed from the output of layer {layer_name!r} alone: {error}") from error
    return _Split(trunk=keras.Model(model.inputs, representation), heads=heads)


def _check_shared_layers(model, names):
    """Each layer in `shared_layers` exists and, in a functional model, feeds two outputs or more.

    A layer that feeds one output only is that task's head: named as shared,
    it would take the combined update instead of its task's own gradient. A
    subclassed model's graph is known only once traced:
    `shared_variable_indices` checks it then, before the first step.
    """
    layers = [_named_layer(model, name, "shared_layers") for name in names]
    if not _is_functional(model):
        return
    on_path = {output: {layer.name for layer in keras.Model(model.inputs, tensor).layers} for output, tensor in zip(model.output_names, model.outputs)}
    for layer in layers:
        outputs = [output for output, path in on_path.items() if layer.name in path]
        if len(outputs) < 2:
            raise ValueError(
                f"shared_layers names {layer.name!r}, but " + (f"only output {outputs[0]!r}" if outputs else "no output")
                + " depends on it: a layer that one task uses alone is that task's head. Leave it out of shared_layers."
            )


def _check_optimizer_can_train(optimizer, current_state, new_state, method):
    """Refuses a built optimizer when a change of method adds or removes trainable state.

    A Keras optimizer keeps slots for the variables it was built for, and
    cannot take others (a new method's trainable state); kept, the slots of
    the old method's would be saved with the model and make its file
    mismatch a model compiled with the new method directly.
    """
    if new_state is current_state or not (isinstance(optimizer, keras.optimizers.Optimizer) and optimizer.built):
        return
    changed = [v.name for v in current_state.trainable_weights + new_state.trainable_weights]
    if changed:
        raise ValueError(
            f"The optimizer {optimizer.name!r} is already built for this model's variables, and compiling with "
            f"{type(method).__name__} changes its trainable state ({changed}). Pass a new optimizer, e.g. "
            "`type(optimizer).from_config(optimizer.get_config())` or a string such as 'adam'."
        )


def _install_state(model, state):
    """Makes `state` the model's `multi_task_state`, in place of the current one.

    Keras 3.15 (private API, used here only): assigning a layer attribute
    tracks the new layer but leaves the old one in the model's layer list,
    hence in `weights` and saved files; and a built subclassed model's
    tracker refuses new layers. Both are handled as Keras' own
    `Layer._untrack_variable` does.
    """
    if state is model.multi_task_state:
        return
    tracker = model._tracker
    was_locked = tracker.locked
    tracker.unlock()
    try:
        tracker.untrack(model.multi_task_state)
        model.multi_task_state = state
    finally:
        if was_locked:
            tracker.lock()


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
