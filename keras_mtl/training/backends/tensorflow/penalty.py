"""The train step of gradient penalties: the gradient of `Σ_k L_k + R + P(task gradients)`, second order.

The clean pass and its per-task gradients (`gradients.clean_pass`) run
inside an outer tape, which then differentiates the method's penalty P of
the tasks' shared-parameter gradients (double backprop). P sees the global,
unscaled gradients, as a gradient method does. Every parameter's update is
`Σ_k ∇L_k + ∇R + ∇P`, checked as a gradient method's step is
(`keras_mtl.training.backends.tensorflow.faults`), the penalty's gradient as
an overflow under a loss scale. A penalty method keeps no state; the
penalty's value is logged (`tasks.update_penalty_tracker`).

Replicas: each replica's task gradients are all-reduced before P, and the
gradient of an all-reduce sum is the all-reduce sum of the (equal) upstream
gradients, so each replica's `∇P` comes out `num_replicas` times its share;
dividing by it makes the optimizer's sum over replicas the global `∇P`.
"""

import tensorflow as tf

from keras_mtl.training import tasks
from keras_mtl.training.backends.tensorflow.faults import StepGuard
from keras_mtl.training.backends.tensorflow.gradients import (
    add_gradients,
    clean_pass,
    make_task_gradients,
    own_gradients,
    shared_indices,
)
from keras_mtl.training.backends.tensorflow.jacobians import per_task_gradients, shared_jacobian
from keras_mtl.training.backends.tensorflow.losses import total_for_logs
from keras_mtl.training.backends.tensorflow.replicas import num_replicas
from keras_mtl.training.steps.faults import gramian_check, task_gradient_checks, update_checks, variable_gradient_checks


def gradient_penalty_step(model, x, y, sample_weight):
    """One training step; returns (y_pred, global losses, task weights (1 each), logged total, applied)."""
    method, optimizer = model.multi_task_method, model.optimizer
    guard = StepGuard(model)
    with tf.GradientTape() as outer:
        clean = clean_pass(model, x, y, sample_weight)
        variables, loss_scale = clean.variables, clean.loss_scale
        per_task = per_task_gradients(model, clean.tape, clean.scaled_losses, variables)
        shared = shared_indices(model, per_task)
        jacobian = shared_jacobian(per_task, variables, shared, loss_scale)
        gradients = make_task_gradients(
            jacobian, clean.global_losses, [variables[i] for i in shared], learning_rate=optimizer.learning_rate
        )
        penalty = method.penalty(gradients)
        scaled_penalty = optimizer.scale_loss(penalty) / num_replicas()
    penalty_gradients = outer.gradient(scaled_penalty, variables)
    updates = own_gradients(per_task)
    checks = task_gradient_checks(jacobian, model.task_names, "the shared parameters") + variable_gradient_checks(
        updates, variables
    )
    checks.append(gramian_check(gradients.gramian, "the shared parameters"))
    checks += variable_gradient_checks(penalty_gradients, variables, f"{method.display_name}'s penalty gradient")
    add_gradients(updates, penalty_gradients)
    regularization_gradients = clean.tape.gradient(clean.scaled_regularization, variables)
    checks += variable_gradient_checks(regularization_gradients, variables, "the regularisation gradient")
    add_gradients(updates, regularization_gradients)
    weights = tf.ones([len(model.task_names)])
    logged_total = total_for_logs(model, clean.global_losses, weights, clean.regularization)
    applied = guard.verdict(checks + update_checks(updates, variables))
    with tf.control_dependencies([clean.global_losses, applied]):
        checked = guard.apply(updates, variables, applied)
    with tf.control_dependencies([checked]):
        tasks.update_penalty_tracker(model, x, penalty, 1.0 - tf.cast(applied, tf.float32))
    return clean.y_pred, clean.global_losses, weights, logged_total, applied
