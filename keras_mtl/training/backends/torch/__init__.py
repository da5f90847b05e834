"""The PyTorch training engine: the JAX engine's stateless steps, run eagerly, assigned once at the end.

Keras' torch trainer calls `train_step(data)` and expects the model's
variables updated when it returns (Keras 3.15's
`keras/src/backend/torch/trainer.py`). The engine reads the variables'
values, runs the step as a function of values, as the JAX engine does
(`model.stateless_call`, `optimizer.stateless_apply`), with PyTorch's
autograd in place of JAX's transforms (`autodiff`), and assigns the result
only if every check passed:

- Loss weightings: one backward pass of `Σ w_k L_k + R`.
- Gradient methods, parameter mode: one forward pass and K backward passes
  of the task losses on its graph (`task_gradients="batched"`: one batched
  backward pass, autograd's `is_grads_batched`). The shared parameters are
  those that two tasks' losses reach in that graph (or the layers named in
  `shared_layers`).
- Representation mode, SAM / F-MTL, several batches per step, the bilevel
  methods and gradient penalties: as on JAX (a penalty's gradient through
  the K task gradients by double backward).

Faults. The step is eager, so its checks are read once it has computed
everything (one device synchronisation) and a failed one raises at once:
nothing is assigned (parameters, optimizer, method state, batch
statistics, metrics). Under a `LossScaleOptimizer` a non-finite gradient
skips the step as on TensorFlow (the loss scale halves) and is counted in
`skipped_steps`. Keras' torch trainer runs one step per call
(`steps_per_execution` > 1 is refused by Keras).

One device: Keras 3.15 has no distribution for PyTorch (`replicas`).
"""

import keras
from keras import ops

from keras_mtl.training import tasks
from keras_mtl.training.backends.torch import replicas
from keras_mtl.training.backends.torch.bilevel import meta_weighted_step, sample_weighted_step
from keras_mtl.training.backends.torch.checks import Checks
from keras_mtl.training.backends.torch.penalty import gradient_penalty_step
from keras_mtl.training.backends.torch.sam import sharpness_aware_step
from keras_mtl.training.backends.torch.sharing import output_dependencies  # noqa: F401 (the engine's interface)
from keras_mtl.training.backends.torch.steps import task_gradients_step, weighted_loss_step
from keras_mtl.training.backends.torch.values import Values, forward, read_optimizer, sum_of
from keras_mtl.training.steps.faults import StepFault, fault_message, loss_checks, result_checks, state_checks


def _values(variables):
    return [variable.value.detach() for variable in variables]


def train_step(model, data):
    """Keras' torch `train_step`: one step of the method's kind, assigned only if every check passes."""
    replicas.check_one_device()
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    method = model.multi_task_method
    trainable, non_trainable = _values(model.trainable_variables), _values(model.non_trainable_variables)
    optimizer_values, metrics_values = _values(model.optimizer.variables), _values(model.metrics_variables)
    values = Values(model, trainable, non_trainable)
    scale, values.learning_rate = read_optimizer(model, optimizer_values)
    result = _STEPS[method.train_step_kind](model, method, values, x, y, sample_weight, scale)
    overflowed, fault = result.checks.verdict()
    _raise(result.checks, fault)
    gradients = [g.detach() for g in result.gradients]
    if overflowed:
        # LossScaleOptimizer skips a step when it sees a non-finite gradient and halves its scale; nothing else changes.
        _, new_optimizer = _stateless_apply(model, optimizer_values, [g * float("nan") for g in gradients], trainable)
        new_trainable, new_non_trainable = trainable, non_trainable
    else:
        new_trainable, new_optimizer = _stateless_apply(model, optimizer_values, gradients, trainable)
        new_trainable, new_non_trainable = values.with_state(result.new_state, new_trainable, result.non_trainable)
        # The checks of what the step would leave: the method's `after_update`, the new parameters and optimizer state.
        after = Checks(result.checks.loss_scaled)
        new_trainable, new_non_trainable = _after_update(
            model, method, values, new_trainable, new_non_trainable, x, y, sample_weight, result, after
        )
        after.extend(
            result_checks(method, model.optimizer.variables, new_optimizer, model.trainable_variables, new_trainable)
        )
        _raise(after, after.verdict()[1])
    logs, metrics_values = _logs(model, metrics_values, x, y, result, not overflowed, sample_weight)
    for variables, new in (
        (model.trainable_variables, new_trainable),
        (model.non_trainable_variables, new_non_trainable),
        (model.optimizer.variables, new_optimizer),
        (model.metrics_variables, metrics_values),
    ):
        for variable, value in zip(variables, new):
            variable.assign(value)
    return logs


def _stateless_apply(model, optimizer_values, gradients, trainable):
    """`optimizer.stateless_apply` on copies: Keras' torch optimizers update the values they get in place
    (`torch._foreach_*` on what the stateless scope maps each variable to, Keras 3.15), and the values
    read from the variables share their memory."""
    copies = lambda values: [value.clone() for value in values]
    return model.optimizer.stateless_apply(copies(optimizer_values), gradients, copies(trainable))


def _raise(checks, fault):
    if fault >= 0:
        raise StepFault(fault_message(checks.messages()[fault]))


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
    """The trackers and compiled metrics, updated statelessly: (logs, new metrics values)."""
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


def test_step(model, data):
    """Keras' torch `test_step`: the losses, the weighting's weights (no state change) and the metrics."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    y_pred = model(x, training=False)
    losses = ops.stack(tasks.task_losses(model, y, y_pred, sample_weight))
    weights, total = evaluation_total(model, losses, sum_of(model.losses), model.multi_task_state.values())
    tasks.update_trackers(model, x, total, losses, weights)
    logs = model.compute_metrics(x, y, y_pred, sample_weight)
    return tasks.evaluation_logs(model, logs, weights)


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
    """Nothing to do: a faulty step has raised already."""


_STEPS = {
    "weighted_loss": weighted_loss_step,
    "task_gradients": task_gradients_step,
    "sharpness_aware": sharpness_aware_step,
    "gradient_penalty": gradient_penalty_step,
    "meta_weighted": meta_weighted_step,
    "sample_weighted": sample_weighted_step,
}
