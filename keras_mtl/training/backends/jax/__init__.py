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

Faults. A compiled JAX function cannot raise: each check
(`keras_mtl.training.steps.faults`) is a flag (`checks`). A step with a
fault changes nothing (parameters, optimizer, method state, batch
statistics, metrics) and records the index of its first failed check in
the model's state (`MultiTaskState.fault`, a metric, so that Keras carries
it through the steps of a `steps_per_execution` group); every later step
sees it pending and changes nothing either. The host never waits for it:
`after_batch` reads it when the step's value is already there, and at the
end of the epoch (or of `train_on_batch`) in any case, then raises the
failed check's message, naming the task, with the model holding the values
from before the faulty step. Under a `LossScaleOptimizer` a non-finite
gradient skips the step as on TensorFlow (the loss scale halves) and is
counted in `skipped_steps`.
"""

import jax.numpy as jnp
import keras
from keras import ops

from keras_mtl.training import tasks
from keras_mtl.training.backends.jax.bilevel import meta_weighted_step, sample_weighted_step
from keras_mtl.training.backends.jax.checks import Checks
from keras_mtl.training.backends.jax.penalty import gradient_penalty_step
from keras_mtl.training.backends.jax.sam import sharpness_aware_step
from keras_mtl.training.backends.jax.sharing import output_dependencies  # noqa: F401 (the engine's interface)
from keras_mtl.training.backends.jax.steps import task_gradients_step, weighted_loss_step
from keras_mtl.training.backends.jax.values import Values, forward, read_optimizer, sum_of
from keras_mtl.training.steps.faults import StepFault, fault_message, loss_checks, result_checks, state_checks


def train_step(model, state, data):
    """Keras' JAX `train_step`: one step of the method's kind, applied only if every check passes."""
    trainable, non_trainable, optimizer_values, metrics_values = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    method = model.multi_task_method
    values = Values(model, trainable, non_trainable)
    scale, values.learning_rate = read_optimizer(model, optimizer_values)
    result = _STEPS[method.train_step_kind](model, method, values, x, y, sample_weight, scale)
    overflowed, fault = result.checks.verdict()
    at = _pending_fault_position(model)
    pending = metrics_values[at] >= 0
    applied = ~overflowed & (fault < 0) & ~pending
    gradients = result.gradients
    if result.checks.loss_scaled:
        # LossScaleOptimizer skips a step when it sees a non-finite gradient
        # (and halves its scale); a step found at fault elsewhere is shown as NaN.
        marker = jnp.where(applied, 1.0, jnp.nan)
        gradients = [g * ops.cast(marker, g.dtype) for g in gradients]
    new_trainable, new_optimizer = model.optimizer.stateless_apply(optimizer_values, gradients, trainable)
    new_trainable, new_non_trainable = values.with_state(result.new_state, new_trainable, result.non_trainable)
    # The checks of what the step would leave: the method's `after_update`, the new parameters and optimizer state.
    after = Checks(result.checks.loss_scaled)
    new_trainable, new_non_trainable = _after_update(
        model, method, values, new_trainable, new_non_trainable, x, y, sample_weight, result, after
    )
    after.extend(
        result_checks(method, model.optimizer.variables, new_optimizer, model.trainable_variables, new_trainable)
    )
    _, late = after.verdict()
    fault = jnp.where((fault < 0) & ~overflowed & (late >= 0), late + len(result.checks.items), fault)
    # Known when the step is traced; `after_batch` raises the failed one's message.
    model.multi_task_state.fault_messages = result.checks.messages() + after.messages()
    faultless = (fault < 0) & ~pending
    applied = ~overflowed & faultless
    # A fault changes nothing at all; an overflow only the loss scale (as LossScaleOptimizer does).
    keep = lambda flag, old, new: [jnp.where(flag, n, o) for o, n in zip(old, new)]
    new_trainable = keep(applied, trainable, new_trainable)
    new_non_trainable = keep(applied, non_trainable, new_non_trainable)
    new_optimizer = keep(faultless if result.checks.loss_scaled else applied, optimizer_values, new_optimizer)
    logs, new_metrics = _logs(model, metrics_values, x, y, result, applied, sample_weight)
    new_metrics = keep(faultless, metrics_values, new_metrics)
    new_metrics[at] = jnp.where(pending, metrics_values[at], fault)
    return logs, (new_trainable, new_non_trainable, new_optimizer, new_metrics)


def _pending_fault_position(model):
    """Where `MultiTaskState.fault` is in the model's metrics variables (the step's state)."""
    index = model.multi_task_state.fault.index
    return next(i for i, variable in enumerate(model.metrics_variables) if variable is index)


def _after_update(model, method, values, trainable, non_trainable, x, y, sample_weight, result, checks):
    """The method's `after_update` from the state the step left, with the losses after the step if it asks."""
    losses_after = None
    if method.needs_losses_after_update:
        y_pred, _, _ = forward(model, model, trainable, values.non_trainable, x)
        losses_after = ops.stop_gradient(ops.stack(tasks.task_losses(model, y, y_pred, sample_weight)))
        checks.extend(loss_checks(model, losses_after, "after the step"))
    state = values.method_state(trainable, non_trainable)
    new_state = method.after_update(state, result.losses, losses_after)
    checks.extend(state_checks(method, new_state))
    return values.with_state(new_state, trainable, non_trainable)


def updated_metrics(
    model, metrics_values, x, y, y_pred, sample_weight, total, losses, weights, skipped=0.0, penalty=None
):
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
    logs, new_values = updated_metrics(
        model,
        metrics_values,
        x,
        y,
        result.y_pred,
        sample_weight,
        result.total,
        result.losses,
        result.weights,
        skipped,
        result.penalty,
    )
    if not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer):
        logs.pop(model.multi_task_state.skipped_steps_tracker.name)
    return logs, new_values


def test_step(model, state, data):
    """Keras' JAX `test_step`: the losses, the weighting's weights (no state change) and the metrics."""
    trainable, non_trainable, metrics_values = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    values = Values(model, trainable, non_trainable)
    y_pred, non_trainable, regularization_losses = model.stateless_call(
        trainable, non_trainable, x, training=False, return_losses=True
    )
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


def after_batch(model, logs, wait):
    """Raises a pending fault's error: when its value is there (`wait`: in any case), never waiting for a step.

    During Keras' JAX `fit` the step's values live outside the model
    (`_jax_state`, private, Keras 3.15); they are put back first
    (`jax_state_sync`), so the model the error leaves behind holds the
    values from before the faulty step.
    """
    pending = model.multi_task_state.fault
    jax_state = getattr(model, "_jax_state", None)
    if jax_state and not model._jax_state_synced:
        value = jax_state["metrics_variables"][_pending_fault_position(model)]
        if not wait and not value.is_ready():
            return
    else:
        value = pending.index.value
    index = int(value)
    if index < 0:
        return
    if jax_state:
        model.jax_state_sync()
    pending.clear()
    raise StepFault(fault_message(model.multi_task_state.fault_messages[index]))


_STEPS = {
    "weighted_loss": weighted_loss_step,
    "task_gradients": task_gradients_step,
    "sharpness_aware": sharpness_aware_step,
    "gradient_penalty": gradient_penalty_step,
    "meta_weighted": meta_weighted_step,
    "sample_weighted": sample_weighted_step,
}
