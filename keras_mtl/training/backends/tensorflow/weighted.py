"""The train step of loss weightings: the gradient of `Σ w_k L_k + R`.

The weights, the weighted losses, the total and the method's new state are
checked before the gradient is taken (a fault of the method, named, on every
step); the gradient is checked per variable (an overflow that skips the step
under a loss scale, an error otherwise): see `keras_mtl.training.backends.tensorflow.faults`.
"""

import tensorflow as tf

from keras_mtl.training.backends.tensorflow.faults import StepGuard
from keras_mtl.training.backends.tensorflow.losses import (
    global_task_losses,
    regularization_loss,
    task_loss_vector,
    total_for_logs,
)
from keras_mtl.training.backends.tensorflow.replicas import num_replicas
from keras_mtl.training.steps.faults import (
    learned_state_checks,
    state_checks,
    total_check,
    variable_gradient_checks,
    weight_checks,
)


def weighted_gradients(model, method, x, y, sample_weight):
    """The clean pass of a loss weighting (its state updates once, here).

    Returns (y_pred, global losses, weights, logged total, variables, scaled
    gradients, new state, checks): the checks of the weights and state, then
    of the gradients, for `StepGuard.verdict`.
    """
    state = model.multi_task_state
    with tf.GradientTape() as tape:
        y_pred = model(x, training=True)
        losses = task_loss_vector(model, y, y_pred, sample_weight)
        global_losses = global_task_losses(model, losses)
        # Read on the tape: the regulariser differentiates the learned state.
        values = state.values()
        weights, new_state = method.weights(global_losses, values, training=True)
        regularization = regularization_loss(model)
        method_regularization = method.regularization(values)
        total = tf.tensordot(weights, losses, 1) + method_regularization / num_replicas() + regularization
        scaled_total = model.optimizer.scale_loss(total)
    logged_total = total_for_logs(model, global_losses, weights, regularization, method_regularization)
    # Read after the forward pass, which builds an unbuilt subclassed model.
    variables = model.trainable_variables
    gradients = tape.gradient(scaled_total, variables)
    checks = (
        state_checks(method, new_state)
        + weight_checks(method, weights, global_losses, model.task_names, weighted_losses=True)
        + [total_check(method, logged_total)]
        + variable_gradient_checks(gradients, variables)
        + learned_state_checks(method, state, gradients, variables, model.optimizer.scale_loss(tf.constant(1.0)))
    )
    return y_pred, global_losses, weights, logged_total, variables, gradients, new_state, checks


def update_after_step(model, method, guard, x, y, sample_weight, global_losses, applied):
    """The method's `after_update`, from the state the step left (and the losses after it, if it asks)."""
    losses_after = None
    if method.needs_losses_after_update:
        losses_after = global_task_losses(
            model, task_loss_vector(model, y, model(x, training=True), sample_weight), when="after the step"
        )
    with tf.control_dependencies([applied]):
        new_state = method.after_update(model.multi_task_state.values(), global_losses, losses_after)
    return guard.commit(new_state, applied)


def weighted_loss_step(model, x, y, sample_weight):
    """One training step of a loss weighting; returns (y_pred, global losses, weights, logged total, applied)."""
    method = model.multi_task_method
    guard = StepGuard(model)
    y_pred, global_losses, weights, logged_total, variables, gradients, new_state, checks = weighted_gradients(
        model, method, x, y, sample_weight
    )
    applied = guard.verdict(checks)
    apply_step(model, method, guard, gradients, variables, new_state, applied, x, y, sample_weight, global_losses)
    return y_pred, global_losses, weights, logged_total, applied


def apply_step(
    model, method, guard, updates, variables, new_state, applied, x, y, sample_weight, global_losses, wait_for=()
):
    """Applies the updates and commits the method's state if the step `applied`, then runs the method's `after_update`.

    Graph mode runs independent ops in any order: the step (the optimizer's
    iteration count included) waits for the loss check and for `wait_for`
    (tensors whose reads of the model must come first).
    """
    with tf.control_dependencies([global_losses, applied, *wait_for]):
        checked = guard.apply(updates, variables, applied)
    with tf.control_dependencies([checked]):
        committed = guard.commit(new_state, applied)
    with tf.control_dependencies([committed]):
        update_after_step(model, method, guard, x, y, sample_weight, global_losses, applied)
