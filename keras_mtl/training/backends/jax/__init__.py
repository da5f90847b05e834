"""The JAX training engine: each step is one stateless function of the model's values.

Keras' JAX trainer calls `train_step(state, data)` with the values of the
trainable, non-trainable, optimizer and metrics variables, and expects
`(logs, new state)`; nothing is assigned during a step (Keras 3.15's
`keras/src/backend/jax/trainer.py`). The engine follows it:

- Loss weightings: one `jax.grad` of `Σ w_k L_k + R`, the weights from the
  global losses with the gradient stopped.
- Gradient methods, parameter mode: one forward pass and `jax.vjp` of the K
  task losses, then K vector-Jacobian products (a loop: on a CPU it beats
  `jax.vmap` over the one-hot cotangents, see `keras3.md`). The shared
  parameters are those that two tasks' losses depend on, read from the
  step's jaxpr (or the layers named in `shared_layers`); every other
  parameter gets its one task's gradient.
- Methods that draw several batches per step (`batch_parts` > 1) also get
  each part of the batch's Jacobian: a forward pass and K vector-Jacobian
  products per part (`parts`).
- Representation mode: the heads' K vector-Jacobian products at the shared
  representation, then one through the trunk with the combined direction.
- SAM / F-MTL and look-ahead passes evaluate the model at other parameters
  with the step's starting non-trainable values (the same dropout masks),
  keeping nothing they would update.

Under `keras.distribution.DataParallel` the step sees global arrays, so the
losses, Gramians and directions are the global batch's without any explicit
reduction, and every device computes the same update.

Faults. A compiled JAX function cannot raise. Every check of the TensorFlow
engine (`keras_mtl.training.backends.tensorflow.faults`) becomes a flag: a step with a fault
changes nothing (parameters, optimizer, method state, batch statistics),
and the step's logs carry the index of the first failed check, from which
`MultiTaskMixin`'s epoch callback raises the same error, naming the task,
right after the step. Under a `LossScaleOptimizer` a non-finite gradient
skips the step as on TensorFlow (the loss scale halves) and is counted in
`skipped_steps`.
"""

import jax.numpy as jnp
import keras
from keras import ops

from keras_mtl.training import tasks
from keras_mtl.training.backends.jax.bilevel import meta_weighted_step, sample_weighted_step
from keras_mtl.training.backends.jax.checks import check_losses, check_state
from keras_mtl.training.backends.jax.penalty import gradient_penalty_step
from keras_mtl.training.backends.jax.sam import sharpness_aware_step
from keras_mtl.training.backends.jax.sharing import output_dependencies  # noqa: F401 (the engine's interface)
from keras_mtl.training.backends.jax.steps import task_gradients_step, weighted_loss_step
from keras_mtl.training.backends.jax.values import Values, forward, read_optimizer, sum_of


# The log entry that carries the index of a step's first failed check out of
# the compiled step, where nothing can raise.
FAULT_LOG = "keras_mtl_fault"


class StepFault(ValueError):
    """A training step's fault, raised right after the compiled step that found it (and applied nothing)."""


def train_step(model, state, data):
    """Keras' JAX `train_step`: one step of the method's kind, applied only if every check passes."""
    trainable, non_trainable, optimizer_values, metrics_values = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    method = model.multi_task_method
    values = Values(model, trainable, non_trainable)
    scale, values.learning_rate = read_optimizer(model, optimizer_values)
    result = _STEPS[method.train_step_kind](model, method, values, x, y, sample_weight, scale)
    overflowed, fault = result.checks.verdict()
    # Known when the step is traced; the epoch callback raises the failed one's message.
    model.multi_task_state.fault_messages = result.checks.messages()
    applied = (~overflowed) & (fault < 0)
    gradients = result.gradients
    if result.checks.loss_scaled:
        # LossScaleOptimizer skips a step when it sees a non-finite gradient
        # (and halves its scale); a step found at fault elsewhere is shown as NaN.
        marker = jnp.where(applied, 1.0, jnp.nan)
        gradients = [g * ops.cast(marker, g.dtype) for g in gradients]
    new_trainable, new_optimizer = model.optimizer.stateless_apply(optimizer_values, gradients, trainable)
    new_trainable, new_non_trainable = values.with_state(result.new_state, new_trainable, result.non_trainable)
    new_trainable, new_non_trainable = _after_update(model, method, values, new_trainable, new_non_trainable, x, y, sample_weight, result)
    # A fault changes nothing at all; an overflow only the loss scale (as LossScaleOptimizer does).
    keep = lambda old, new: [jnp.where(applied, n, o) for o, n in zip(old, new)]
    new_trainable = keep(trainable, new_trainable)
    new_non_trainable = keep(non_trainable, new_non_trainable)
    if not result.checks.loss_scaled:
        new_optimizer = keep(optimizer_values, new_optimizer)
    else:
        new_optimizer = [jnp.where(fault < 0, n, o) for o, n in zip(optimizer_values, new_optimizer)]
    logs, metrics_values = _logs(model, metrics_values, x, y, result, applied, sample_weight)
    logs[FAULT_LOG] = fault
    return logs, (new_trainable, new_non_trainable, new_optimizer, metrics_values)


def _after_update(model, method, values, trainable, non_trainable, x, y, sample_weight, result):
    """The method's `after_update` from the state the step left, with the losses after the step if it asks."""
    losses_after = None
    if method.needs_losses_after_update:
        y_pred, _, _ = forward(model, model, trainable, values.non_trainable, x)
        losses_after = ops.stop_gradient(ops.stack(tasks.task_losses(model, y, y_pred, sample_weight)))
        check_losses(model, result.checks, losses_after, when="after the step")
    state = values.method_state(trainable, non_trainable)
    new_state = method.after_update(state, result.losses, losses_after)
    check_state(method, result.checks, new_state)
    return values.with_state(new_state, trainable, non_trainable)


def updated_metrics(model, metrics_values, x, y, y_pred, sample_weight, total, losses, weights, skipped=0.0, penalty=None):
    """The trackers and compiled metrics, updated statelessly as Keras' JAX trainer does: (logs, new metrics values)."""
    with keras.StatelessScope(state_mapping=list(zip(model.metrics_variables, metrics_values))) as scope:
        tasks.update_trackers(model, x, total, losses, weights, skipped)
        if penalty is not None:
            tasks.update_penalty_tracker(model, x, penalty, skipped)
        logs = model.compute_metrics(x, y, y_pred, sample_weight)
    updated = [scope.get_current_value(v) for v in model.metrics_variables]
    return logs, [v.value if new is None else new for v, new in zip(model.metrics_variables, updated)]


def _logs(model, metrics_values, x, y, result, applied, sample_weight):
    skipped = 1.0 - ops.cast(applied, "float32")
    logs, new_values = updated_metrics(model, metrics_values, x, y, result.y_pred, sample_weight, result.total, result.losses, result.weights, skipped, result.penalty)
    if not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer):
        logs.pop(model.multi_task_state.skipped_steps_tracker.name)
    return logs, new_values


def test_step(model, state, data):
    """Keras' JAX `test_step`: the losses, the weighting's weights (no state change) and the metrics."""
    trainable, non_trainable, metrics_values = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    values = Values(model, trainable, non_trainable)
    y_pred, non_trainable, regularization_losses = model.stateless_call(trainable, non_trainable, x, training=False, return_losses=True)
    regularization = sum_of(regularization_losses)
    losses = ops.stack(tasks.task_losses(model, y, y_pred, sample_weight))
    weights, total = evaluation_total(model, losses, regularization, values.method_state())
    logs, metrics_values = updated_metrics(model, metrics_values, x, y, y_pred, sample_weight, total, losses, weights)
    return tasks.evaluation_logs(model, logs, weights), (trainable, non_trainable, metrics_values)


def evaluation_total(model, losses, regularization, state_values):
    """(weights, total) outside training: the weighting's weights (None for a gradient method) and the total they make."""
    weighting = model.multi_task_method.weighting()
    if weighting is None:
        return None, ops.sum(losses) + regularization
    weights, _ = weighting.weights(ops.stop_gradient(losses), state_values, training=False)
    return weights, ops.sum(weights * losses) + weighting.regularization(state_values) + regularization


def compute_loss(model, y, y_pred, sample_weight):
    losses = ops.stack(tasks.task_losses(model, y, y_pred, sample_weight))
    return evaluation_total(model, losses, sum_of(model.losses), model.multi_task_state.values())[1]


def first_batch_to_build(model, iterator, data_batch):
    return iterator, data_batch


def after_batch(model, logs):
    """Takes the fault entry out of a step's `logs` (or an epoch's); raises the failed check's error.

    Keras' JAX `fit` keeps the step's values outside the model during an
    epoch; they are put back first (`jax_state_sync`), so the model the
    error leaves behind holds the values from before the faulty step.
    """
    fault = logs.pop(FAULT_LOG, None) if logs is not None else None
    if fault is not None and int(fault) >= 0:
        if getattr(model, "_jax_state", None) is not None:
            model.jax_state_sync()
        raise StepFault(model.multi_task_state.fault_messages[int(fault)] + " (the step was not applied: nothing changed)")


_STEPS = {
    "weighted_loss": weighted_loss_step,
    "task_gradients": task_gradients_step,
    "sharpness_aware": sharpness_aware_step,
    "gradient_penalty": gradient_penalty_step,
    "meta_weighted": meta_weighted_step,
    "sample_weighted": sample_weighted_step,
}
