"""Base classes shared by every keras_mtl method.

A method is a `keras.losses.Loss` that wraps the per-task losses, so that it is
chosen where Keras users choose a loss: `model.compile(loss=method)`. It holds
no variables (Keras neither trains nor saves variables created in a `Loss`);
whatever a method learns or remembers lives in the model's
`MultiTaskState` layer, whose variables the method declares in `build_state`.

The protocol is pure, as in Optax: every hook receives `state`, a read-only
dict `{name: tensor}` of the current values of the variables the method
declared, and returns the new values of those it changes, as a dict (empty
when nothing changes). A method never assigns a variable and never orders
updates; the training engine of the backend in use checks what the method
returned (finite weights, finite state), then assigns the state, in order.
Methods are written in `keras.ops`, so they run on every supported backend.
"""

import math
import random

import keras


def _resolve_loss(identifier):
    loss = keras.losses.get(identifier)
    if loss is None:
        raise ValueError(f"Unknown loss {identifier!r}.")
    if isinstance(loss, keras.losses.Loss):
        return loss
    # A plain function reduces nothing; wrap it as `compile` does, so that
    # sample weights, masks and the replica scaling behave as in stock `fit`.
    return _FunctionLoss(loss)


class _FunctionLoss(keras.losses.Loss):
    """A per-sample loss function as a reducing `Loss` (Keras' own wrapper is private).

    Like Keras' `LossFunctionWrapper`, it first aligns targets and outputs
    whose ranks differ by a trailing axis of size 1, so that targets of
    shape (n,) against an (n, 1) output give one loss per sample rather than
    an n×n broadcast.
    """

    def __init__(self, fn):
        super().__init__(name=getattr(fn, "__name__", None))
        self.fn = fn

    def call(self, y_true, y_pred):
        return self.fn(*_same_rank(y_true, y_pred))


def _same_rank(y_true, y_pred):
    """Keras 3.15's `squeeze_or_expand_to_same_rank`, the rule of its loss wrapper.

    When one tensor has one more axis than the other and that last axis has
    size 1: a rank-1 other tensor gains that axis, else the axis is squeezed.
    """
    true_rank, pred_rank = len(y_true.shape), len(y_pred.shape)
    if pred_rank == true_rank + 1 and y_pred.shape[-1] == 1:
        if true_rank == 1:
            return keras.ops.expand_dims(y_true, -1), y_pred
        return y_true, keras.ops.squeeze(y_pred, -1)
    if true_rank == pred_rank + 1 and y_true.shape[-1] == 1:
        if pred_rank == 1:
            return y_true, keras.ops.expand_dims(y_pred, -1)
        return keras.ops.squeeze(y_true, -1), y_pred
    return y_true, y_pred


class MultiTaskLoss(keras.losses.Loss):
    """Base of every multi-task method: the per-task losses and their names.

    Args:
        losses: a dict `{task: loss}` keyed by the model's output names, or one
            loss used for every task. A loss is anything `keras.losses.get`
            accepts: a string, a `keras.losses.Loss` or a function.
        name: the method's name.

    Passing a method to a plain `keras.Model` is an error: such a model applies
    a loss to each output separately, while a multi-task method must see every
    task's loss at once. Mix `keras_mtl.MultiTaskMixin` into the model (or use
    `keras_mtl.MultiTaskModel`).
    """

    # Methods that compare or balance tasks need at least two of them.
    min_tasks = 2
    # Methods that take logs or ratios of the losses cannot take negative ones
    # (the engine checks the global batch's losses before anything changes).
    needs_non_negative_losses = False
    # Methods whose `after_update` compares the batch's losses before and
    # after the optimizer step (FAMO): the engine then recomputes them.
    needs_losses_after_update = False
    # Which of the engine's training steps trains the method: "weighted_loss"
    # (the gradient of Σ w_k L_k), "task_gradients" (per-task gradients,
    # combined), "sharpness_aware" (SAM around either), "meta_weighted"
    # (weights learned through a virtual step on a second part of the
    # batch) or "sample_weighted" (per-sample weights from a held-out part).
    # The engine knows methods by this declaration only.
    train_step_kind = None
    # Methods that need the shared parameters' gradients, not a shared
    # representation's: `compile` refuses them with `representation`.
    parameter_mode_only = False

    def __init__(self, losses=None, name=None):
        super().__init__(name=name or self.method_id)
        if isinstance(losses, (list, tuple)):
            raise TypeError("Give the per-task losses as a dict {task: loss}, keyed by output name, not a list.")
        self.losses = losses

    def task_losses(self, task_names):
        """Resolves the per-task `keras.losses.Loss` objects, in `task_names` order."""
        if self.losses is None:
            raise ValueError(
                f"{type(self).__name__} has no per-task losses. Pass them first: "
                f'{type(self).__name__}({{"task_a": "mse", ...}}) or keras_mtl.get("{self.method_id}", losses).'
            )
        if not isinstance(self.losses, dict):
            return [_resolve_loss(self.losses) for _ in task_names]
        missing = sorted(set(task_names) - set(self.losses))
        unknown = sorted(set(self.losses) - set(task_names))
        if missing or unknown:
            raise ValueError(
                f"The losses of {type(self).__name__} do not match the model's outputs {sorted(task_names)}: "
                + (f"no loss for {missing}" if missing else "")
                + ("; " if missing and unknown else "")
                + (f"no output named {unknown}" if unknown else "")
                + "."
            )
        return [_resolve_loss(self.losses[name]) for name in task_names]

    def check_num_tasks(self, num_tasks):
        if num_tasks < self.min_tasks:
            raise ValueError(f"{type(self).__name__} needs at least {self.min_tasks} tasks; the model has {num_tasks}.")

    def build_state(self, state, task_names):
        """Declares the method's variables on `state` (a `MultiTaskState`) with `state.variable`.

        Also the place to check the method's arguments against the tasks.
        This is the only hook that sees the layer; the others see values.
        """

    def loss_lower_bounds(self, num_tasks):
        """The values each task's loss must not fall below, or None.

        The engine checks the global batch's losses against them before
        anything changes (and the losses after the step, for methods that
        need them), and names the task that falls below. Zeros for methods
        that need non-negative losses.
        """
        return [0.0] * num_tasks if self.needs_non_negative_losses else None

    def begin_epoch(self, state):
        """At the start of every `fit` epoch: the new state, dropping what an interrupted epoch left."""
        return {}

    def end_epoch(self, state):
        """At the end of every training epoch: the new state (for epoch-level methods)."""
        return {}

    def after_update(self, state, losses_before, losses_after):
        """After the optimizer step: the new state.

        `losses_before` (K,) are the step's global losses; `losses_after`
        (K,) the same batch's losses with the updated parameters when
        `needs_losses_after_update` is set, else None.
        """
        return {}

    @property
    def works_per_epoch(self):
        """Whether the method needs `end_epoch` (then `train_on_batch` alone never moves it on)."""
        return type(self).end_epoch is not MultiTaskLoss.end_epoch

    @property
    def display_name(self):
        """How errors and logs name the method."""
        return type(self).__name__

    def weighting(self):
        """The loss weighting whose weights make the total loss (evaluation, logs); None for gradient methods.

        A method, not a property: Keras' saving walks every attribute, and a
        weighting's own is itself.
        """
        return None

    def call(self, y_true, y_pred):
        raise TypeError(
            f"{type(self).__name__} is a multi-task method: it needs the losses of all tasks at once, "
            "which a plain keras.Model cannot give it (it would apply the loss to each output alone). "
            "Mix keras_mtl.MultiTaskMixin into your model, before keras.Model, or use keras_mtl.MultiTaskModel."
        )

    def get_config(self):
        return {"name": self.name, "losses": _serialize_losses(self.losses)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["losses"] = _deserialize_losses(config.get("losses"))
        return cls(**config)


def inner_method(method, losses, wrapper, check=None):
    """The method a wrapper (`wrapper`: "SAM", "CRMOGM") applies, sharing its per-task losses.

    `method` is an instance or anything `keras_mtl.get` accepts; the losses
    may be given to the wrapper or to an inner instance, not to both.
    `check(method)` may refuse the method before anything is assigned to it.
    """
    from keras_mtl.registry import get  # the registry's classes import this module

    if isinstance(method, MultiTaskLoss):
        if method.losses is not None and losses is not None and method.losses is not losses:
            raise ValueError(f"Give the losses to {wrapper} or to its inner method, not both.")
    else:
        method = get(method, losses)
    if check is not None:
        check(method)
    method.losses = losses if losses is not None else method.losses
    return method


class WrappingMethod:
    """A mixin for methods around another method (`self.method`): SAM, CR-MOGM.

    Every hook and declaration is the inner method's, forwarded; a wrapper
    overrides what it adds. Its config holds the inner method's (without
    the losses, which the wrapper holds). Put it first in the bases, before
    the `MultiTaskLoss` family the wrapper belongs to.
    """

    @property
    def needs_non_negative_losses(self):
        return self.method.needs_non_negative_losses

    @property
    def needs_losses_after_update(self):
        return self.method.needs_losses_after_update

    @property
    def works_per_epoch(self):
        return self.method.works_per_epoch

    @property
    def parameter_mode_only(self):
        return self.method.parameter_mode_only

    def check_num_tasks(self, num_tasks):
        self.method.check_num_tasks(num_tasks)

    def loss_lower_bounds(self, num_tasks):
        return self.method.loss_lower_bounds(num_tasks)

    def build_state(self, state, task_names):
        self.method.build_state(state, task_names)

    def begin_epoch(self, state):
        return self.method.begin_epoch(state)

    def end_epoch(self, state):
        return self.method.end_epoch(state)

    def after_update(self, state, losses_before, losses_after):
        return self.method.after_update(state, losses_before, losses_after)

    def get_config(self):
        inner = keras.saving.serialize_keras_object(self.method)
        inner["config"].pop("losses", None)
        return {**super().get_config(), "method": inner}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["method"] = keras.saving.deserialize_keras_object(config["method"])
        return super().from_config(config)


def positive(value, what):
    """`value` as a float, or a ValueError naming `what` if it is not finite and > 0."""
    value = float(value)
    if not 0 < value < math.inf:
        raise ValueError(f"{what} must be > 0 and finite, got {value}.")
    return value


def draw_seed(seed):
    """`seed` as an int, or a random one when None (kept in the method's config, so a reloaded model repeats)."""
    return int(seed) if seed is not None else random.randrange(2**31)


class RandomStream:
    """Reproducible random draws for a method, as a pure function of its state.

    Declared in `build_state` (`self.stream = RandomStream(state, "rng",
    seed)`), it keeps a `keras.random.SeedGenerator`'s state in the method's
    state variable `name`, so draws repeat for a given seed, agree on every
    replica (all draw the same numbers), are saved with the model and
    continue where a resumed run stopped. Each backend draws its own numbers
    for a seed: a seed repeats a run on one backend, not across backends.

    Example, in a method's hook:

    >>> z, new_state = self.stream.draw(state, lambda seed: keras.random.normal((k,), seed=seed))
    """

    def __init__(self, state, name, seed):
        # The generator's own variable is never read or written: `draw` maps
        # it to the method's state value in a StatelessScope.
        self._generator = keras.random.SeedGenerator(seed)
        self.name = name
        initial = keras.ops.convert_to_numpy(self._generator.state.value)
        state.variable(name, initial.shape, initializer=lambda shape, dtype: initial, dtype=self._generator.state.dtype)

    def draw(self, state, sample):
        """`sample(seed_generator)` with the generator at `state[name]`; returns (draw, {name: next state})."""
        with keras.StatelessScope(state_mapping=[(self._generator.state, state[self.name])]) as scope:
            result = sample(self._generator)
            advanced = scope.get_current_value(self._generator.state)
        return result, {self.name: advanced}


def _serialize_losses(losses):
    if isinstance(losses, dict):
        return {task: _serialize_losses(loss) for task, loss in losses.items()}
    if losses is None or isinstance(losses, str):
        return losses
    return keras.saving.serialize_keras_object(losses)


def _deserialize_losses(losses):
    if isinstance(losses, dict) and "class_name" not in losses:
        return {task: _deserialize_losses(loss) for task, loss in losses.items()}
    if isinstance(losses, dict):
        return keras.saving.deserialize_keras_object(losses)
    return losses


class LossWeighting(MultiTaskLoss):
    """A method that needs only the K loss values: total = Σ_k w_k L_k + R.

    Subclasses compute the task weights `w` from the batch losses (with the
    gradient stopped) and their state, and optionally a regulariser `R` of
    their learnable variables. Writing every weighting this way keeps
    multi-replica training exact: the weights are computed from the global
    losses, and the total stays linear in each replica's losses.

    Args:
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        name: the method's name, default None (its registered id).
    """

    train_step_kind = "weighted_loss"

    def weights(self, losses, state, training):
        """(w, new state): the weights w (K,) from the losses (K,), gradient stopped.

        `training` is True once per training step: the only time a method may
        update running statistics (outside training it returns `{}`).
        """
        raise NotImplementedError

    def regularization(self, state):
        """A term of the method's learnable variables (trainable state, differentiable here) added to the total."""
        return 0.0

    def weighting(self):
        return self
