"""`MultiTaskMixin`: multi-task training for any Keras model."""

import inspect
import warnings

import keras

from keras_mtl.methods import MultiTaskLoss
from keras_mtl.training import backends, sharing, tasks
from keras_mtl.training.state import MultiTaskState
from keras_mtl.weightings.equal import EqualWeighting

# How the engines compute the per-task gradients (`MultiTaskMixin(task_gradients=...)`).
TASK_GRADIENTS = ("sequential", "batched")


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
        task_gradients: how gradient methods get the K per-task gradients:
            `"sequential"` (default), K backward passes from one forward
            pass, or `"batched"`, one vectorised backward pass over the K
            tasks (`jax.vmap` of the VJP on JAX, `tape.jacobian` with pfor
            on TensorFlow). Same gradients; which is faster depends on the
            model and the device (on this project's CPU, sequential: see
            the docs' speed page, docs/benchmarks/speed.md).
    """

    def __init__(self, *args, representation=None, shared_layers=None, task_gradients="sequential", **kwargs):
        if isinstance(shared_layers, str):
            raise TypeError(f"shared_layers must be a list of layer names, not a string: pass [{shared_layers!r}].")
        if task_gradients not in TASK_GRADIENTS:
            raise ValueError(f"task_gradients must be one of {TASK_GRADIENTS}, got {task_gradients!r}.")
        super().__init__(*args, **kwargs)
        self.representation = representation
        self.shared_layers = None if shared_layers is None else list(shared_layers)
        self.task_gradients = task_gradients
        self.multi_task_state = MultiTaskState(name="multi_task_state")
        self.multi_task_method = None
        self.task_names = None
        self.multi_task_split = None
        self._warned_about_epochs = False
        self._method_warnings = set()

    def get_config(self):
        return {
            **super().get_config(),
            "representation": self.representation,
            "shared_layers": self.shared_layers,
            "task_gradients": self.task_gradients,
        }

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
        backends.engine()  # an unsupported backend is refused before anything changes
        if loss is None:
            raise ValueError("Give a multi-task method as `loss`, e.g. keras_mtl.get('uw_so', {task: loss, ...}).")
        method = loss if isinstance(loss, MultiTaskLoss) else EqualWeighting(loss)
        task_names = self._resolve_task_names(method)
        method.check_num_tasks(len(task_names))
        task_loss_fns = method.task_losses(task_names)
        task_loss_weights = tasks.loss_weight_vector(loss_weights, task_names)
        if self.shared_layers is not None:
            tasks.check_shared_layers(self, self.shared_layers)
        if self.representation is not None and method.parameter_mode_only:
            raise ValueError(
                f"{method.display_name} works on the gradients of the shared parameters, not of a shared representation: "
                f"build the model without `representation` (it names {self.representation!r})."
            )
        split = (
            tasks.split_at(self, self.representation)
            if method.train_step_kind == "task_gradients" and self.representation is not None
            else None
        )
        state = self.multi_task_state.for_method(method, task_names, lambda: sharing.shared_parameters(self, method))
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
        return _portable_optimizers(config)

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
        self._assign_state(self.multi_task_method.end_epoch(self.multi_task_state.values()))
        state = {
            name: keras.ops.convert_to_numpy(variable)
            for name, variable in self.multi_task_state.named_variables().items()
        }
        for message in set(self.multi_task_method.run_warnings(state)) - self._method_warnings:
            self._method_warnings.add(message)
            warnings.warn(message, stacklevel=2)

    def _assign_state(self, new_state):
        """Assigns what an epoch hook returned (outside any training step, where nothing else reads the state)."""
        for variable, value in self.multi_task_state.updated(new_state):
            variable.assign(value)

    def train_on_batch(self, *args, **kwargs):
        method = self.multi_task_method
        if method is not None and method.works_per_epoch and not self._warned_about_epochs:
            self._warned_about_epochs = True
            warnings.warn(
                f"{type(method).__name__} updates its weights at the end of each training epoch, and "
                "train_on_batch never ends one: call model.end_epoch() after each of your epochs.",
                stacklevel=2,
            )
        arguments = inspect.signature(super().train_on_batch).bind(*args, **kwargs).arguments
        return_dict = arguments.pop("return_dict", False)
        logs = super().train_on_batch(**arguments, return_dict=True)
        backends.engine().after_batch(self, logs, wait=True)
        # Keras 3.15's own ordering of a non-dict result (private API).
        return logs if return_dict else self._flatten_metrics_in_order(logs)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        iterator, data_batch = backends.engine().first_batch_to_build(self, iterator, data_batch)
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def train_step(self, *args):
        # (data) on TensorFlow, (state, data) on JAX: each backend's trainer calls its own.
        return backends.engine().train_step(self, *args)

    def test_step(self, *args):
        return backends.engine().test_step(self, *args)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The total loss Keras' own utilities ask for; never updates the method's state.

        The weighted total for a loss weighting, the plain sum for a gradient
        method, plus regularisation, as stock `compute_loss` gives it.
        """
        return backends.engine().compute_loss(self, y, y_pred, sample_weight)

    def _resolve_task_names(self, method):
        output_names = list(getattr(self, "output_names", None) or [])
        if output_names:
            return output_names
        if isinstance(method.losses, dict):
            return sorted(method.losses)
        raise ValueError("The model has no output names yet; give the losses as a dict keyed by task name.")


class _EpochBoundaries(keras.callbacks.Callback):
    """Tells epoch-level methods (DWA) where each `fit` epoch begins and ends.

    Beginning an epoch drops what an interrupted one left (a KeyboardInterrupt,
    or a BackupAndRestore backup taken mid-epoch, which Keras 3.15 resumes at
    the start of that epoch).
    """

    def on_train_begin(self, logs=None):
        # Before Keras' JAX `fit` releases the variables' values, which a step's trace-time error would lose.
        sharing.check_state_fits(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        self.model._assign_state(self.model.multi_task_method.begin_epoch(self.model.multi_task_state.values()))

    def on_train_batch_end(self, batch, logs=None):
        backends.engine().after_batch(self.model, logs, wait=False)

    def on_epoch_end(self, epoch, logs=None):
        backends.engine().after_batch(self.model, logs, wait=True)
        self.model.end_epoch()


def _portable_optimizers(config):
    """`config` with every optimizer named by its public module, so that another backend loads its own.

    Keras 3.15 on PyTorch saves its optimizers under their torch module
    (`keras.src.backend.torch.optimizers.torch_adam`), which another backend
    would then import and train with; TensorFlow and JAX save
    `keras.optimizers`, which each backend resolves to its own class.
    """
    if isinstance(config, dict):
        config = {key: _portable_optimizers(value) for key, value in config.items()}
        if str(config.get("module", "")).startswith("keras.src.backend.torch.optimizers"):
            config.update(module="keras.optimizers", registered_name=None)
    return config


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
