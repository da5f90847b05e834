"""The train step of `keras_mtl.SAM`: plain SAM/ASAM and per-task SAM (F-MTL).

Checked as the other steps (`keras_mtl.training.backends.tensorflow.faults`), and also: the
perturbation ε (a fault: it is bounded by ρ when the gradient is finite) and
the gradients at the perturbed parameters (an overflow under a loss scale,
an error otherwise), before the update.
"""

import tensorflow as tf

from keras_mtl.training import tasks
from keras_mtl.training.backends.tensorflow.faults import StepGuard
from keras_mtl.training.backends.tensorflow.gradients import (
    add_gradients,
    clean_pass,
    make_task_gradients,
    place,
    place_state_gradients,
    shared_indices,
    split_like,
)
from keras_mtl.training.backends.tensorflow.jacobians import flat, per_task_gradients, shared_jacobian
from keras_mtl.training.backends.tensorflow.losses import regularization_loss, task_loss_vector, total_for_logs
from keras_mtl.training.backends.tensorflow.perturb import perturbed, snapshot
from keras_mtl.training.backends.tensorflow.replicas import num_replicas, sum_over_replicas
from keras_mtl.training.backends.tensorflow.weighted import apply_step, weighted_gradients
from keras_mtl.training.steps.faults import (
    gramian_check,
    method_checks,
    perturbed_gradient_checks,
    task_gradient_checks,
    update_checks,
    variable_gradient_checks,
)


def sam_train_step(model, x, y, sample_weight):
    """One SAM step; returns (y_pred, global losses, task weights, logged total, applied)."""
    sam = model.multi_task_method
    if model.representation is not None:
        raise ValueError("SAM perturbs parameters; it does not support representation mode.")
    guard = StepGuard(model)
    before_step = snapshot(model)
    step = _per_task_step if sam.is_gradient_method else _total_loss_step
    y_pred, global_losses, weights, logged_total, updates, variables, new_state, checks = step(
        model, sam, x, y, sample_weight, before_step
    )
    applied = guard.verdict(checks)
    # No state update and no step before the checks pass, nor before every
    # perturbed pass has read the parameters that the step updates.
    apply_step(model, sam.method, guard, updates, variables, new_state, applied, x, y, sample_weight, global_losses)
    return y_pred, global_losses, weights, logged_total, applied


def _total_loss_step(model, sam, x, y, sample_weight, before_step):
    """Plain SAM on the weighted total: the clean pass sets the weights and updates the state.

    Returns (y_pred, global losses, weights, logged total, updates, variables, checks).
    """
    method, state, optimizer = sam.method, model.multi_task_state, model.optimizer
    y_pred, global_losses, weights, logged_total, variables, updates, new_state, checks = weighted_gradients(
        model, method, x, y, sample_weight
    )
    loss_scale = optimizer.scale_loss(tf.constant(1.0))
    # The model's parameters are perturbed; the weighting's own variables
    # keep their clean gradient.
    weighting_ids = {id(v) for v in state.trainable_variables}
    perturbed_indices = [i for i, v in enumerate(variables) if id(v) not in weighting_ids and updates[i] is not None]
    params = [variables[i] for i in perturbed_indices]
    global_gradients = [sum_over_replicas(updates[i]) / loss_scale for i in perturbed_indices]
    deltas, delta_checks = sam.perturbation(global_gradients, params, params)
    fixed_weights = tf.stop_gradient(weights)

    def perturbed_gradients(values):
        with tf.GradientTape() as inner_tape:
            inner_tape.watch(values)
            inner_losses = task_loss_vector(model, y, model(x, training=True), sample_weight)
            inner_total = tf.tensordot(fixed_weights, inner_losses, 1) + regularization_loss(model)
            inner_scaled = optimizer.scale_loss(inner_total)
        return inner_tape.gradient(inner_scaled, values)

    sam_gradients = perturbed(model, before_step, params, deltas, perturbed_gradients)
    checks += delta_checks + perturbed_gradient_checks(sam_gradients, params)
    place(updates, perturbed_indices, sam_gradients)
    return y_pred, global_losses, weights, logged_total, updates, variables, new_state, checks


def _per_task_step(model, sam, x, y, sample_weight, before_step):
    """F-MTL: a SAM gradient per task, split into the clean part and the sharpness part.

    Returns (y_pred, global losses, weights, logged total, updates, variables, new state, checks).
    """
    method, optimizer = sam.method, model.optimizer
    values = model.multi_task_state.values()
    num_tasks = len(model.task_names)
    clean = clean_pass(model, x, y, sample_weight)
    y_pred, global_losses, variables, loss_scale = clean.y_pred, clean.global_losses, clean.variables, clean.loss_scale
    per_task = per_task_gradients(model, clean.tape, clean.scaled_losses, variables)
    regularization_gradients = clean.tape.gradient(clean.scaled_regularization, variables)
    shared = shared_indices(model, per_task)
    shared_variables = [variables[i] for i in shared]
    jacobian = shared_jacobian(per_task, variables, shared, loss_scale)
    checks = task_gradient_checks(jacobian, model.task_names, "the shared parameters")

    updates = [None] * len(variables)
    sam_rows = []
    for k in range(num_tasks):
        head = [i for i in range(len(variables)) if i not in shared and per_task[k][i] is not None]
        head_variables = [variables[i] for i in head]
        checks += variable_gradient_checks([per_task[k][i] for i in head], head_variables)
        # Shared part and head normalised separately, from global gradients.
        deltas, delta_checks = sam.perturbation(
            split_like(jacobian[k], shared_variables), shared_variables, shared_variables
        )
        if head:
            head_gradients = [sum_over_replicas(per_task[k][i]) / loss_scale for i in head]
            head_deltas, head_checks = sam.perturbation(head_gradients, head_variables, head_variables)
            deltas, delta_checks = deltas + head_deltas, delta_checks + head_checks
        checks += delta_checks

        def task_gradients_at_perturbation(values, k=k):
            with tf.GradientTape() as inner_tape:
                inner_tape.watch(values)
                scaled = optimizer.scale_loss(tasks.task_losses(model, y, model(x, training=True), sample_weight)[k])
            return inner_tape.gradient(scaled, values)

        gradients = perturbed(
            model, before_step, shared_variables + head_variables, deltas, task_gradients_at_perturbation
        )
        checks += perturbed_gradient_checks(gradients, shared_variables + head_variables)
        sam_rows.append(tf.concat([flat(g, v) for g, v in zip(gradients[: len(shared)], shared_variables)], axis=0))
        place(updates, head, gradients[len(shared) :])
    sam_jacobian = sum_over_replicas(tf.stack(sam_rows)) / loss_scale
    checks += variable_gradient_checks(regularization_gradients, variables, "the regularisation gradient")

    with tf.control_dependencies([global_losses, sam_jacobian]):
        clean_gradients = make_task_gradients(
            jacobian, global_losses, shared_variables, learning_rate=optimizer.learning_rate
        )
        checks.append(gramian_check(clean_gradients.gramian, "the shared parameters"))
        task_gradients = lambda jacobian: make_task_gradients(
            jacobian, global_losses, shared_variables, learning_rate=optimizer.learning_rate
        )
        direction, weights, new_state, gramian_checks = sam.combine_perturbed(
            clean_gradients, sam_jacobian, task_gradients, values
        )
        checks += gramian_checks
        checks += method_checks(method, new_state, weights, direction, model.task_names, global_losses)
        place(updates, shared, split_like(direction * loss_scale / num_replicas(), shared_variables))
        add_gradients(updates, regularization_gradients)
        logged_total = total_for_logs(model, global_losses, weights, clean.regularization)
        place_state_gradients(
            updates, variables, model, method.state_gradients(clean_gradients, weights, values), loss_scale
        )
    return (
        y_pred,
        global_losses,
        weights,
        logged_total,
        updates,
        variables,
        new_state,
        checks + update_checks(updates, variables),
    )
