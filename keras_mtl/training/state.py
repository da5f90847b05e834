"""The layer that holds a multi-task method's variables inside the model."""

import keras


@keras.saving.register_keras_serializable(package="keras_mtl")
class MultiTaskState(keras.layers.Layer):
    """Holds what a multi-task method learns or remembers, and its log trackers.

    The mixin creates one in the model's constructor, so the model tracks it:
    its trainable variables are trained with the model's, and everything is
    saved and restored by `model.save`, `save_weights` and `BackupAndRestore`.
    It is never called; `compile` fills it through `configure`.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self._variables_by_name = {}
        self._configured_for = None
        self.loss_trackers = []
        self.weight_trackers = []
        # Never called, so never built by Keras; it has no input to build from.
        self.built = True

    def configure(self, method, task_names):
        """Creates the trackers and the method's variables, once per model.

        Re-compiling with the same kind of method and tasks keeps the variables
        (a learned weighting survives a change of learning rate); changing them
        would leave stale state behind, so it is refused.
        """
        signature = (type(method).__name__, tuple(task_names))
        if self._configured_for not in (None, signature):
            raise ValueError(
                f"This model was compiled with {self._configured_for[0]} for tasks {list(self._configured_for[1])}; "
                f"it cannot be re-compiled with {signature[0]} for tasks {list(task_names)}. "
                "Build a new model (e.g. keras.models.clone_model) for another method."
            )
        if self._configured_for is None:
            self.loss_trackers = [keras.metrics.Mean(name=f"{task}_loss") for task in task_names]
            self.weight_trackers = [keras.metrics.Mean(name=f"{task}_weight") for task in task_names]
        method.build_state(self, task_names)
        # Only once the method accepted the tasks: a refused compile can be retried.
        self._configured_for = signature

    def variable(self, name, shape=(), initializer="zeros", trainable=False, dtype="float32"):
        """Returns the state variable `name`, creating it on first use.

        Non-trainable state is assigned identically on every replica from
        all-reduced losses, hence `only_first_replica` aggregation.
        """
        if name not in self._variables_by_name:
            self._variables_by_name[name] = self.add_weight(
                name=name,
                shape=shape,
                initializer=initializer,
                trainable=trainable,
                dtype=dtype,
                aggregation="none" if trainable else "only_first_replica",
            )
        return self._variables_by_name[name]

    def __getitem__(self, name):
        return self._variables_by_name[name]
