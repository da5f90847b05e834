"""The train step of loss weightings: the gradient of `Σ w_k L_k + R`."""

import tensorflow as tf

from keras_mtl.training.replicas import num_replicas


def weighted_gradients(model, method, x, y, sample_weight):
    """The clean pass of a loss weighting (its state updates once, here).

    Returns (y_pred, global losses, weights, logged total, variables, scaled
    gradients).
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
    return y_pred, global_losses, weights, logged_total, variables, tape.gradient(scaled_total, variables)


def update_after_step(model, method, x, y, sample_weight, global_losses):
    """For methods that compare the batch's losses before and after the step (FAMO)."""
    if method.updates_after_step:
        losses_after = model.global_task_losses(model.task_loss_vector(y, model(x, training=True), sample_weight))
        method.after_step(model.multi_task_state, global_losses, losses_after)


def weighted_loss_step(model, x, y, sample_weight):
    """One training step of a loss weighting; returns (y_pred, global losses, weights, logged total)."""
    method = model.multi_task_method
    y_pred, global_losses, weights, logged_total, variables, gradients = weighted_gradients(model, method, x, y, sample_weight)
    # Graph mode runs independent ops in any order: the step (the optimizer's
    # iteration count included) must wait for the loss check to pass.
    with tf.control_dependencies([global_losses]):
        model.optimizer.apply(gradients, variables)
    update_after_step(model, method, x, y, sample_weight, global_losses)
    return y_pred, global_losses, weights, logged_total
