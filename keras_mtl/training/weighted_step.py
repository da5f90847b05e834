"""The train step of loss weightings: the gradient of `Σ w_k L_k + R`.

The weights, the weighted losses, the total and the method's new state are
checked before the gradient is taken (a fault of the method, named, on every
step); the gradient is checked per variable (an overflow that skips the step
under a loss scale, an error otherwise): see `keras_mtl.training.faults`.
"""

import tensorflow as tf

from keras_mtl.training.faults import Check, StepGuard, learned_state_checks, method_name, state_checks, variable_gradient_checks, weight_checks
from keras_mtl.training.replicas import num_replicas


def weighted_gradients(model, method, x, y, sample_weight):
    """The clean pass of a loss weighting (its state updates once, here).

    Returns (y_pred, global losses, weights, logged total, variables, scaled
    gradients, checks): the checks of the weights and state, then of the
    gradients, for `StepGuard.verdict`.
    """
    state = model.multi_task_state
    with tf.GradientTape() as tape:
        y_pred = model(x, training=True)
        losses = model.task_loss_vector(y, y_pred, sample_weight)
        global_losses = model.global_task_losses(losses)
        weights = method.task_weights(global_losses, state, training=True)
        regularization = model.regularization_loss()
        total = tf.tensordot(weights, losses, 1) + method.regularization(state) / num_replicas() + regularization
        scaled_total = model.optimizer.scale_loss(total)
    logged_total = model.logged_total(global_losses, weights, regularization)
    # Read after the forward pass, which builds an unbuilt subclassed model.
    variables = model.trainable_variables
    gradients = tape.gradient(scaled_total, variables)
    checks = (
        state_checks(method, state)
        + weight_checks(method, weights, global_losses, model.task_names, weighted_losses=True)
        + [Check(logged_total, f"keras_mtl: {method_name(method)}'s weighted total loss is not finite", ("total:", logged_total))]
        + variable_gradient_checks(gradients, variables)
        + learned_state_checks(method, state, gradients, variables, model.optimizer.scale_loss(tf.constant(1.0)))
    )
    return y_pred, global_losses, weights, logged_total, variables, gradients, checks


def update_after_step(model, method, x, y, sample_weight, global_losses):
    """For methods that compare the batch's losses before and after the step (FAMO)."""
    if method.updates_after_step:
        losses_after = model.global_task_losses(model.task_loss_vector(y, model(x, training=True), sample_weight))
        method.after_step(model.multi_task_state, global_losses, losses_after)


def weighted_loss_step(model, x, y, sample_weight):
    """One training step of a loss weighting; returns (y_pred, global losses, weights, logged total, applied)."""
    method = model.multi_task_method
    guard = StepGuard(model)  # first: it copies the method's state
    y_pred, global_losses, weights, logged_total, variables, gradients, checks = weighted_gradients(model, method, x, y, sample_weight)
    applied = guard.verdict(checks)
    # Graph mode runs independent ops in any order: the step (the optimizer's
    # iteration count included) must wait for the loss check to pass.
    with tf.control_dependencies([global_losses, applied]):
        guard.apply(gradients, variables, applied)
    update_after_step(model, method, x, y, sample_weight, global_losses)
    guard.finish(applied)
    return y_pred, global_losses, weights, logged_total, applied
