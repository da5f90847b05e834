"""The PyTorch steps of methods that learn from a second batch in the step: `meta_weighted` (Auto-Lambda) and `sample_weighted` (SLGrad).

As on TensorFlow (`keras_mtl.training.backends.tensorflow.bilevel`): one
forward pass of the whole batch, whose outputs are dealt into the parts
(`tasks.batch_parts`); passes at other parameters or along a tangent start
from the step's non-trainable values and keep nothing. Under
`DataParallel` the step sees the global batch, so every sum is already
global. Checks are flags (`checks.Checks`), in TensorFlow's order.
"""

import keras
from keras import ops

from keras_mtl.training import tasks
from keras_mtl.training.backends.torch import autodiff
from keras_mtl.training.backends.torch.checks import Checks
from keras_mtl.training.backends.torch.sam import replaced
from keras_mtl.training.backends.torch.steps import (
    StepResult,
    finish_updates,
    input_dependencies,
    shared_variable_indices,
)
from keras_mtl.training.backends.torch.values import flat, forward, split_like
from keras_mtl.training.steps.faults import (
    alignment_check,
    loss_checks,
    main_gradient_check,
    outer_checks,
    state_checks,
    task_gradient_checks,
    variable_gradient_checks,
    weight_checks,
)


def meta_weighted_step(model, method, values, x, y, sample_weight, scale):
    """A weighting learned through a virtual step (see `keras_mtl.AutoLambda`)."""
    checks = Checks(isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer))
    variables = model.trainable_variables
    num_tasks = len(model.task_names)
    _, (outer_x, outer_y, outer_weight) = tasks.batch_parts(x, y, sample_weight, 2)

    def scaled_losses(trainable):
        y_pred, non_trainable, regularization = forward(model, model, trainable, values.non_trainable, x)
        losses = ops.stack(tasks.task_losses(model, y, y_pred, sample_weight))
        inner_pred, inner_y, inner_weight = tasks.batch_parts(y_pred, y, sample_weight, 2)[0]
        inner = ops.stack(tasks.task_losses(model, inner_y, inner_pred, inner_weight))
        return (losses * scale, inner * scale, regularization * scale), (y_pred, non_trainable, losses, regularization)

    _, vjp, (y_pred, non_trainable, losses, regularization) = autodiff.vjp(
        scaled_losses, values.trainable, has_aux=True
    )
    losses = ops.stop_gradient(losses)
    checks.extend(loss_checks(model, losses))
    no_tasks, one_hot = ops.zeros((num_tasks,)), ops.eye(num_tasks)
    pull = lambda batch, inner, regularizer: vjp((batch, inner, ops.convert_to_tensor(regularizer, "float32")))[0]
    jacobian = ops.stack([flat(pull(no_tasks, one_hot[k], 0.0)) for k in range(num_tasks)]) / scale
    checks.extend(
        task_gradient_checks(jacobian, model.task_names, "the model's parameters on the inner part of the batch")
    )
    regularization_gradients = pull(no_tasks, no_tasks, 1.0)
    checks.extend(variable_gradient_checks(regularization_gradients, variables, "the regularisation gradient"))

    state = values.method_state()
    weights, _ = method.weights(losses, state, training=True)
    virtual_step = values.learning_rate * (ops.matmul(weights, jacobian) + flat(regularization_gradients) / scale)
    moved = [
        value - ops.cast(delta, value.dtype)
        for value, delta in zip(values.trainable, split_like(virtual_step, variables))
    ]
    outer_weights = ops.convert_to_tensor(method.outer_weights())

    def scaled_outer_loss(trainable):
        outer_pred, _, _ = forward(model, model, trainable, values.non_trainable, outer_x)
        loss = ops.sum(outer_weights * ops.stack(tasks.task_losses(model, outer_y, outer_pred, outer_weight)))
        return loss * scale, loss

    outer_gradients, outer_loss = autodiff.grad(scaled_outer_loss, moved, has_aux=True)
    outer_direction = flat(outer_gradients) / scale
    checks.extend(outer_checks(method, outer_loss, outer_direction))
    new_state = method.meta_update(state, ops.matmul(jacobian, outer_direction), values.learning_rate)
    new_weights, _ = method.weights(losses, {**state, **new_state}, training=True)
    new_weights = ops.stop_gradient(new_weights)
    checks.extend(
        state_checks(method, new_state)
        + weight_checks(method, new_weights, losses, model.task_names, weighted_losses=True)
    )
    gradients = pull(new_weights, no_tasks, 0.0)
    checks.extend(variable_gradient_checks(gradients, variables))
    updates = finish_updates(model, checks, gradients, regularization_gradients, {}, values, scale)
    total = ops.sum(new_weights * losses) + ops.stop_gradient(regularization)
    return StepResult(y_pred, losses, new_weights, total, updates, non_trainable, new_state, checks)


def sample_weighted_step(model, method, values, x, y, sample_weight, scale):
    """Per-sample weights from a hold-out part of the batch (see `keras_mtl.SLGrad`)."""
    checks = Checks(isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer))
    variables = model.trainable_variables
    outer_weights = ops.convert_to_tensor(method.outer_weights())

    def task_losses_at(trainable):
        return tuple(
            tasks.task_losses(model, y, forward(model, model, trainable, values.non_trainable, x)[0], sample_weight)
        )

    shared = shared_variable_indices(model, input_dependencies(task_losses_at, values.trainable))
    shared_variables = [variables[i] for i in shared]

    def scaled_losses(trainable):
        y_pred, non_trainable, regularization = forward(model, model, trainable, values.non_trainable, x)
        per_sample = tasks.training_part_sample_losses(model, y, sample_weight, y_pred, method.parts)
        holdout_pred, holdout_y, holdout_weight = tasks.batch_parts(y_pred, y, sample_weight, method.parts)[-1]
        holdout = ops.sum(outer_weights * ops.stack(tasks.task_losses(model, holdout_y, holdout_pred, holdout_weight)))
        losses = ops.stack(tasks.task_losses(model, y, y_pred, sample_weight))
        return (per_sample * scale, holdout * scale, regularization * scale), (
            y_pred,
            non_trainable,
            losses,
            regularization,
        )

    (scaled_per_sample, _, _), vjp, (y_pred, non_trainable, losses, regularization) = autodiff.vjp(
        scaled_losses, values.trainable, has_aux=True
    )
    losses = ops.stop_gradient(losses)
    checks.extend(loss_checks(model, losses))
    no_samples = ops.zeros_like(scaled_per_sample)
    pull = lambda samples, holdout, regularizer: vjp(
        (samples, ops.convert_to_tensor(holdout, "float32"), ops.convert_to_tensor(regularizer, "float32"))
    )[0]
    holdout_gradients = pull(no_samples, 1.0, 0.0)
    main_direction = flat([holdout_gradients[i] for i in shared]) / scale
    checks.add(main_gradient_check(method, main_direction))

    def training_losses_at(shared_values):
        moved_pred, _, _ = forward(model, model, replaced(values, shared, shared_values), values.non_trainable, x)
        return tasks.training_part_sample_losses(model, y, sample_weight, moved_pred, method.parts)

    # The clean pass again, along v: the same dropout masks and batch statistics.
    tangents = [
        ops.cast(t, values.trainable[i].dtype) for i, t in zip(shared, split_like(main_direction, shared_variables))
    ]
    _, scores = autodiff.jvp(training_losses_at, [values.trainable[i] for i in shared], tangents)
    checks.add(alignment_check(method, scores))
    sample_weights = ops.stop_gradient(method.sample_weights(scores, lambda total: total))
    task_weights = ops.sum(sample_weights, axis=1)
    checks.extend(weight_checks(method, task_weights, losses, model.task_names))
    gradients = pull(sample_weights, 0.0, 0.0)
    checks.extend(variable_gradient_checks(gradients, variables))
    updates = finish_updates(model, checks, gradients, pull(no_samples, 0.0, 1.0), {}, values, scale)
    total = ops.sum(losses) + ops.stop_gradient(regularization)
    return StepResult(y_pred, losses, task_weights, total, updates, non_trainable, {}, checks)
