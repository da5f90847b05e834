"""The layer that holds a multi-task method's variables inside the model."""

import warnings

import keras
import numpy as np


def method_configuration(method, task_names):
    """What a method's state belongs to: its whole serialized configuration and the tasks.

    Two compiles with equal configurations (e.g. `UW` twice, whatever the
    optimizer) share the state; any difference (`SAM(uw)` and `SAM(pcgrad)`,
    another temperature, seed or loss) means another state.
    """
    return keras.saving.serialize_keras_object(method), tuple(task_names)


@keras.saving.register_keras_serializable(package="keras_mtl")
class MultiTaskState(keras.layers.Layer):
    """Holds what a multi-task method learns or remembers, and its log trackers.

    The model holds one as its `multi_task_state` attribute, so its trainable
    variables are trained with the model's, and everything is saved and
    restored by `model.save`, `save_weights` and `BackupAndRestore`. It is
    never called; `configure` fills it for one method configuration, once.
    A model compiled with another configuration gets a fresh one.

    Weights loaded before the model is compiled (so before the state has any
    variable) are kept and restored by `configure`, when the method that
    compile brings keeps variables of the same shapes. Loaded state that does
    not fit the configured method is skipped with a warning, as Keras skips
    a mismatched optimizer's variables.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self._variables_by_name = {}
        self.configuration = None
        self._method_name = None
        self._loaded_before_configure = None
        self.loss_trackers = []
        self.weight_trackers = []
        # Training steps skipped for an overflow under a loss scale (keras_mtl.training.steps.faults).
        self.skipped_steps_tracker = keras.metrics.Sum(name="skipped_steps")
        self.fault = PendingFault()
        # The messages of the checks of the step last traced, indexed as `fault` counts them.
        self.fault_messages = []
        # The value of a gradient penalty (`train_step_kind = "gradient_penalty"`), logged as `{method id}_penalty`.
        self.penalty_tracker = None
        # The paths of the shared variables the parameter-sized state has a column for (None: it has none).
        self.parameter_columns = None
        self._parameter_count = None
        self._shared_parameters = None
        # Never called, so never built by Keras; it has no input to build from.
        self.built = True

    def for_method(self, method, task_names, shared_parameters=None):
        """The state `method` trains with: this one if it holds the same configuration, else a fresh one.

        A parameter-sized state is kept only while the model shares the same
        variables. Weights loaded into this state before any compile pass on
        to the fresh one. Nothing changes here: the caller installs the result.
        """
        if self.configuration == method_configuration(method, task_names) and self._sized_for(shared_parameters):
            method.build_state(self, task_names)  # finds its variables again, binds the new method object to them
            return self
        state = MultiTaskState(name=self.name)
        state._loaded_before_configure = self._loaded_before_configure
        state.configure(method, task_names, shared_parameters)
        return state

    def _sized_for(self, shared_parameters):
        """Whether the parameter-sized state (if any) has a column per parameter of `shared_parameters()`."""
        return self.parameter_columns is None or tuple(v.path for v in shared_parameters()) == self.parameter_columns

    def configure(self, method, task_names, shared_parameters=None):
        """Creates the trackers and the method's variables (`method.build_state`).

        `shared_parameters`, a function returning the shared trainable
        variables (`keras_mtl.training.sharing.shared_parameters`), is called
        only if the method declares a `parameter_variable`. Called once, on a
        fresh state: an error from the method leaves the state unused, and
        the model keeps its current one.
        """
        if self.configuration is not None:
            raise ValueError("This MultiTaskState is already configured; a new configuration needs a new state.")
        self.loss_trackers = [keras.metrics.Mean(name=f"{task}_loss") for task in task_names]
        self.weight_trackers = [keras.metrics.Mean(name=f"{task}_weight") for task in task_names]
        if method.train_step_kind == "gradient_penalty":
            self.penalty_tracker = keras.metrics.Mean(name=f"{method.method_id}_penalty")
        self._shared_parameters = shared_parameters
        method.build_state(self, task_names)
        if self.parameter_columns is not None and not method.parameter_mode_only:
            raise TypeError(
                f"{method.display_name} declares a parameter_variable, so it must set parameter_mode_only (a representation has no parameter columns)."
            )
        self.configuration = method_configuration(method, task_names)
        self._method_name = type(method).__name__
        if self._loaded_before_configure is not None:
            self._assign_loaded(self._loaded_before_configure)
            self._loaded_before_configure = None

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

    def parameter_variable(self, name, rows, initializer="zeros"):
        """Returns the float32, non-trainable (rows, P) state variable `name`, creating it on first use.

        P is the number of shared parameters: the columns of
        `TaskGradients.jacobian` in parameter mode, in its order. They are
        found the first time a method asks, at compile
        (`keras_mtl.training.sharing`), and every traced step checks that
        they did not change. A method that declares one sets
        `parameter_mode_only`.
        """
        if self.parameter_columns is None:
            if self._shared_parameters is None:
                raise ValueError(
                    f"parameter_variable {name!r}: this state was configured without a model, so the shared parameters are unknown."
                )
            shared = self._shared_parameters()
            self._parameter_count = sum(int(np.prod(variable.shape)) for variable in shared)
            self.parameter_columns = tuple(variable.path for variable in shared)
        return self.variable(name, (rows, self._parameter_count), initializer)

    def __getitem__(self, name):
        return self._variables_by_name[name]

    def named_variables(self):
        """The method's state variables, `{name: variable}`, in declaration order."""
        return dict(self._variables_by_name)

    def values(self):
        """The method's view of its state: `{name: current value}` (read where the caller differentiates)."""
        # Copies, read now: on TensorFlow `variable.value` (and even
        # `convert_to_tensor(variable)`) is read where it is used, so a method
        # returning it as its weights would log the step's new state.
        return {name: keras.ops.copy(variable) for name, variable in self._variables_by_name.items()}

    def updated(self, new_values):
        """`(variable, new value)` pairs for a method's returned state, or an error naming an unknown entry."""
        unknown = sorted(set(new_values) - set(self._variables_by_name))
        if unknown:
            raise ValueError(
                f"{self._method_name} returned state {unknown} it never declared in build_state; it declared {sorted(self._variables_by_name)}."
            )
        return [(self._variables_by_name[name], value) for name, value in new_values.items()]

    def load_own_variables(self, store):
        values = [np.array(store[str(i)]) for i in range(len(store.keys()))]
        if self.configuration is None:
            # No method yet (`load_weights` before `compile`): `configure` restores them.
            self._loaded_before_configure = values
            return
        self._assign_loaded(values)

    def _assign_loaded(self, values):
        """Assigns loaded values, in Keras' saving order, or warns and keeps the state if they do not fit."""
        # `weights` lists the trainable, then the non-trainable variables:
        # the order of Keras' own `save_own_variables`, which writes them.
        variables = self.weights
        if [tuple(v.shape) for v in variables] != [value.shape for value in values]:
            warnings.warn(
                f"Skipping the multi-task state in the loaded weights: it holds {len(values)} variable(s) of shapes "
                f"{[value.shape for value in values]}, but {self._method_name} keeps {len(variables)} "
                f"({[v.name for v in variables]}); the loaded values are ignored and its state is left as it was.",
                stacklevel=3,
            )
            return
        for variable, value in zip(variables, values):
            variable.assign(value)


class PendingFault(keras.metrics.Metric):
    """The index of the first failed check of a faulty training step, -1 while there is none.

    For engines whose compiled steps cannot raise (JAX): the step records its
    fault here, every later step sees it pending and applies nothing, and the
    host reads it when the value is there without waiting (`after_batch`), at
    the latest when the epoch or `train_on_batch` ends, and raises. A metric,
    so that Keras threads it through the steps of a `steps_per_execution`
    group like every metric (and saves none of it); never reset by Keras, so
    a pending fault outlives `reset_metrics` (validation, a new epoch) until
    it is raised.
    """

    def __init__(self):
        super().__init__(name="keras_mtl_pending_fault", dtype="int32")
        self.index = self.add_variable(
            shape=(), initializer=keras.initializers.Constant(-1), dtype="int32", name="index"
        )

    def update_state(self, *args, **kwargs):
        raise NotImplementedError("The training step sets the pending fault as a value (see the engine).")

    def result(self):
        return {}  # never in the logs

    def reset_state(self):
        """Keras resets metrics at every epoch and evaluation; a pending fault stays until `clear`."""

    def clear(self):
        self.index.assign(-1)
