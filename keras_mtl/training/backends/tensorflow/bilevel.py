"""The train steps of methods that learn from a second batch in the step: `meta_weighted` (Auto-Lambda) and `sample_weighted` (SLGrad).

Both deal the replica's batch into interleaved parts (`tasks.batch_parts`)
after one forward pass of the whole batch, whose outputs are dealt the same
way: every part's loss comes from that pass, on one tape. Passes at other
parameters or along a tangent run as the look-ahead passes do
(`perturb.perturbed`: the step's starting seeds and statistics, nothing
kept). What a method reads is global: per-task gradients, outer gradients
and alignments are all-reduced before the method sees them. Checked as the
other steps (`faults`): the batch's losses before anything, then gradients
(an overflow under a loss scale), then what the method computed.
"""

import tensorflow as tf

from keras_mtl.training import tasks
from keras_mtl.training.backends.tensorflow.faults import StepGuard
from keras_mtl.training.backends.tensorflow.gradients import add_gradients, shared_indices, split_like
from keras_mtl.training.backends.tensorflow.jacobians import global_jacobian, per_task_gradients
from keras_mtl.training.backends.tensorflow.losses import (
    global_task_losses,
    regularization_loss,
    task_loss_vector,
    total_for_logs,
)
from keras_mtl.training.backends.tensorflow.perturb import perturbed, snapshot
from keras_mtl.training.backends.tensorflow.replicas import sum_over_replicas
from keras_mtl.training.backends.tensorflow.weighted import apply_step
from keras_mtl.training.steps.faults import (
    alignment_check,
    main_gradient_check,
    outer_checks,
    state_checks,
    task_gradient_checks,
    update_checks,
    variable_gradient_checks,
    weight_checks,
)


def meta_weighted_step(model, x, y, sample_weight):
    """A weighting learned through a virtual step: inner part, virtual SGD step, outer part, meta update, real step on the batch.

    Returns (y_pred, global losses, task weights, logged total, applied).
    """
    method, optimizer = model.multi_task_method, model.optimizer
    guard = StepGuard(model)
    before_step = snapshot(model)
    values = model.multi_task_state.values()
    with tf.GradientTape(persistent=True) as tape:
        y_pred = model(x, training=True)
        losses = task_loss_vector(model, y, y_pred, sample_weight)
        scaled_losses = optimizer.scale_loss(losses)
        (inner_pred, inner_y, inner_weight), (outer_x, outer_y, outer_weight) = _dealt(x, y, sample_weight, y_pred)
        scaled_inner = [
            optimizer.scale_loss(loss) for loss in tasks.task_losses(model, inner_y, inner_pred, inner_weight)
        ]
        regularization = regularization_loss(model)
        scaled_regularization = optimizer.scale_loss(regularization)
    global_losses = global_task_losses(model, losses)
    variables = model.trainable_variables
    loss_scale = optimizer.scale_loss(tf.constant(1.0))
    jacobian = global_jacobian(per_task_gradients(model, tape, scaled_inner, variables), variables, loss_scale)
    regularization_gradients = tape.gradient(scaled_regularization, variables)
    checks = task_gradient_checks(jacobian, model.task_names, "the model's parameters on the inner part of the batch")
    checks += variable_gradient_checks(regularization_gradients, variables, "the regularisation gradient")

    learning_rate = optimizer.learning_rate
    weights, _ = method.weights(global_losses, values, training=True)
    virtual_step = learning_rate * (
        tf.linalg.matvec(jacobian, weights, transpose_a=True)
        + global_jacobian([regularization_gradients], variables, loss_scale)[0]
    )
    outer_weights = tf.constant(method.outer_weights())

    def outer_gradient(moved):
        with tf.GradientTape() as outer_tape:
            outer_tape.watch(moved)
            outer_loss = tf.tensordot(
                outer_weights, task_loss_vector(model, outer_y, model(outer_x, training=True), outer_weight), 1
            )
            scaled = optimizer.scale_loss(outer_loss)
        return outer_loss, outer_tape.gradient(scaled, moved)

    outer_loss, outer_gradients = perturbed(
        model, before_step, variables, split_like(-virtual_step, variables), outer_gradient
    )
    outer_loss = sum_over_replicas(outer_loss)
    outer_direction = global_jacobian([outer_gradients], variables, loss_scale)[0]
    checks += outer_checks(method, outer_loss, outer_direction)
    new_state = method.meta_update(values, tf.linalg.matvec(jacobian, outer_direction), learning_rate)
    new_weights, _ = method.weights(global_losses, {**values, **new_state}, training=True)
    checks += state_checks(method, new_state) + weight_checks(
        method, new_weights, global_losses, model.task_names, weighted_losses=True
    )

    updates = tape.gradient(scaled_losses, variables, output_gradients=tf.stop_gradient(new_weights))
    checks += variable_gradient_checks(updates, variables)
    add_gradients(updates, regularization_gradients)
    logged_total = total_for_logs(model, global_losses, new_weights, regularization)
    applied = guard.verdict(checks + update_checks(updates, variables))
    apply_step(model, method, guard, updates, variables, new_state, applied, x, y, sample_weight, global_losses)
    return y_pred, global_losses, new_weights, logged_total, applied


def sample_weighted_step(model, x, y, sample_weight):
    """Per-sample weights from a hold-out part: its main-task gradient v, every training sample's alignment with v, the weighted step.

    Returns (y_pred, global losses, task weights, logged total, applied).
    """
    method, optimizer = model.multi_task_method, model.optimizer
    guard = StepGuard(model)
    before_step = snapshot(model)
    outer_weights = tf.constant(method.outer_weights())
    with tf.GradientTape(persistent=True) as tape:
        y_pred = model(x, training=True)
        losses = tasks.task_losses(model, y, y_pred, sample_weight)
        per_sample = tasks.training_part_sample_losses(model, y, sample_weight, y_pred, method.parts)
        holdout_pred, holdout_y, holdout_weight = tasks.batch_parts(y_pred, y, sample_weight, method.parts)[-1]
        scaled_holdout = optimizer.scale_loss(
            tf.tensordot(outer_weights, task_loss_vector(model, holdout_y, holdout_pred, holdout_weight), 1)
        )
        regularization = regularization_loss(model)
        scaled_regularization = optimizer.scale_loss(regularization)
    global_losses = global_task_losses(model, tf.stack(losses))
    variables = model.trainable_variables
    loss_scale = optimizer.scale_loss(tf.constant(1.0))
    shared = shared_indices(model, [tape.gradient(loss, variables) for loss in losses])
    shared_variables = [variables[i] for i in shared]
    main_direction = global_jacobian([tape.gradient(scaled_holdout, shared_variables)], shared_variables, loss_scale)[0]
    checks = [main_gradient_check(method, main_direction)]

    def alignments(shared_values):
        with tf.autodiff.ForwardAccumulator(shared_values, split_like(main_direction, shared_variables)) as accumulator:
            along = tasks.training_part_sample_losses(model, y, sample_weight, model(x, training=True), method.parts)
        return accumulator.jvp(along, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    # The clean pass again, along v: the same dropout masks and batch statistics.
    scores = perturbed(model, before_step, shared_variables, [tf.zeros_like(v) for v in shared_variables], alignments)
    checks.append(alignment_check(method, scores))
    sample_weights = tf.stop_gradient(method.sample_weights(scores, sum_over_replicas))
    task_weights = sum_over_replicas(tf.reduce_sum(sample_weights, axis=1))
    checks += weight_checks(method, task_weights, global_losses, model.task_names)

    updates = tape.gradient(per_sample, variables, output_gradients=sample_weights * loss_scale)
    checks += variable_gradient_checks(updates, variables)
    regularization_gradients = tape.gradient(scaled_regularization, variables)
    checks += variable_gradient_checks(regularization_gradients, variables, "the regularisation gradient")
    add_gradients(updates, regularization_gradients)
    logged_total = total_for_logs(model, global_losses, task_weights, regularization)
    applied = guard.verdict(checks + update_checks(updates, variables))
    apply_step(model, method, guard, updates, variables, {}, applied, x, y, sample_weight, global_losses)
    return y_pred, global_losses, task_weights, logged_total, applied


def _dealt(x, y, sample_weight, y_pred):
    """(inner part's (outputs, y, sample weight), outer part's (x, y, sample weight)): the batch dealt into two."""
    inner, _ = tasks.batch_parts(y_pred, y, sample_weight, 2)
    _, outer = tasks.batch_parts(x, y, sample_weight, 2)
    return inner, outer
