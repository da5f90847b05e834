"""The train step of gradient methods: per-task gradients, combined, applied.

Two modes:
- parameters (default): each task's gradient with respect to the shared
  parameters, K backward passes through the whole model;
- representation: each task's gradient with respect to the shared
  representation (the output of the layer the model names), which needs only
  the heads' backward pass per task and one backward pass through the trunk.

Methods that draw several batches per step (`batch_parts` > 1) also get each
part of the batch's Jacobian (`keras_mtl.training.backends.tensorflow.parts`).

Shared parameters are those that more than one task's loss reaches (found
from which gradients exist, at trace time), unless the model names its
shared layers. Every other parameter gets the gradient of the one task that
reaches it. Regularisation losses are added once, outside the balancing.

Methods see float32, loss-scale-free, global-batch gradients (several are
not scale invariant, and all are nonlinear, so per-replica gradients are
all-reduced before they are combined); the optimizer gets scaled gradients,
so `LossScaleOptimizer` unscales them. Before the update the step checks
the tasks' gradients and their Gramian, then the method's state, weights
and direction (`keras_mtl.training.backends.tensorflow.faults`): a non-finite one is an overflow
that skips the whole step under a loss scale, the method's state included
(aggregators give zero weights on a non-finite Gramian, which alone would
have moved the heads and kept stale state), and an error otherwise.
"""

from dataclasses import dataclass

import tensorflow as tf

from keras_mtl.gradients.base import TaskGradients
from keras_mtl.training import sharing, tasks
from keras_mtl.training.backends.tensorflow.faults import StepGuard
from keras_mtl.training.backends.tensorflow.jacobians import flat, per_task_gradients, shared_jacobian
from keras_mtl.training.backends.tensorflow.losses import (
    global_task_losses,
    regularization_loss,
    shared_variable_indices,
    task_loss_vector,
    total_for_logs,
)
from keras_mtl.training.backends.tensorflow.parts import part_jacobians
from keras_mtl.training.backends.tensorflow.perturb import perturbed, snapshot
from keras_mtl.training.backends.tensorflow.replicas import num_replicas, sum_over_replicas
from keras_mtl.training.backends.tensorflow.weighted import apply_step
from keras_mtl.training.steps.faults import (
    gramian_check,
    method_checks,
    task_gradient_checks,
    update_checks,
    variable_gradient_checks,
)


def gradient_train_step(model, x, y, sample_weight):
    """One training step; returns (y_pred, global losses, task weights, logged total, applied)."""
    method, state, optimizer = model.multi_task_method, model.multi_task_state, model.optimizer
    guard = StepGuard(model)
    values = state.values()
    # Look-ahead passes rewind the seeds and statistics to this point.
    before_step = snapshot(model) if method.needs_losses_after else None
    clean = clean_pass(model, x, y, sample_weight)
    tape, representation, scaled_losses = clean.tape, clean.representation, clean.scaled_losses
    global_losses, variables, loss_scale = clean.global_losses, clean.variables, clean.loss_scale

    if model.representation is not None:
        head_variables = model.multi_task_split.heads.trainable_variables
        per_task = per_task_gradients(model, tape, scaled_losses, [representation] + head_variables)
        updates = [None] * len(variables)
        place(updates, indices_of(variables, head_variables), own_gradients([task[1:] for task in per_task]))
        jacobian = tf.stack([flat(task[0]) for task in per_task]) / loss_scale
        checks = task_gradient_checks(
            jacobian, model.task_names, "the shared representation"
        ) + variable_gradient_checks(updates, variables)
        # Rows hold this replica's samples only: the Gramian sums over
        # samples, so the global one is the sum of the replicas'.
        gramian = sum_over_replicas(tf.matmul(jacobian, jacobian, transpose_b=True))
        checks.append(gramian_check(gramian, "the shared representation"))
        task_gradients = TaskGradients(
            jacobian=jacobian,
            losses=global_losses,
            gramian=gramian,
            last_layer_gramian=gramian,
            learning_rate=optimizer.learning_rate,
        )
        direction, weights, new_state = method.combine(task_gradients, values, training=True)
        checks += method_checks(method, new_state, weights, direction, model.task_names, global_losses)
        trunk_variables = model.multi_task_split.trunk.trainable_variables
        output_gradient = tf.cast(tf.reshape(direction * loss_scale, tf.shape(representation)), representation.dtype)
        trunk_gradients = tape.gradient(representation, trunk_variables, output_gradients=output_gradient)
        # The trunk's own backward pass can overflow (or meet an inf input) too.
        checks += variable_gradient_checks(trunk_gradients, trunk_variables)
        place(updates, indices_of(variables, trunk_variables), trunk_gradients)
    else:
        per_task = per_task_gradients(model, tape, scaled_losses, variables)
        shared = shared_indices(model, per_task)
        updates = own_gradients(per_task, skip=shared)
        jacobian = shared_jacobian(per_task, variables, shared, loss_scale)
        checks = task_gradient_checks(jacobian, model.task_names, "the shared parameters") + variable_gradient_checks(
            updates, variables
        )
        losses_after = (
            _losses_after(model, x, y, sample_weight, [variables[i] for i in shared], before_step)
            if method.needs_losses_after
            else None
        )
        task_gradients = make_task_gradients(
            jacobian, global_losses, [variables[i] for i in shared], losses_after, optimizer.learning_rate
        )
        checks.append(gramian_check(task_gradients.gramian, "the shared parameters"))
        if method.batch_parts > 1:
            task_gradients.part_jacobians = part_jacobians(
                model, x, y, sample_weight, [variables[i] for i in shared], checks
            )
        direction, weights, new_state = method.combine(task_gradients, values, training=True)
        checks += method_checks(method, new_state, weights, direction, model.task_names, global_losses)
        # Every replica holds the global direction; `apply` sums the replicas'.
        place(updates, shared, split_like(direction * loss_scale / num_replicas(), [variables[i] for i in shared]))

    logged_total = total_for_logs(model, global_losses, weights, clean.regularization)
    regularization_gradients = tape.gradient(clean.scaled_regularization, variables)
    checks += variable_gradient_checks(regularization_gradients, variables, "the regularisation gradient")
    add_gradients(updates, regularization_gradients)
    place_state_gradients(
        updates, variables, model, method.state_gradients(task_gradients, weights, values), loss_scale
    )
    applied = guard.verdict(checks + update_checks(updates, variables))
    # The weights wait for every read of the model (look-ahead passes read the
    # heads, whose updates do not depend on the weights); TensorFlow's
    # automatic ordering did not keep those reads before the heads' update.
    apply_step(
        model,
        method,
        guard,
        updates,
        variables,
        new_state,
        applied,
        x,
        y,
        sample_weight,
        global_losses,
        wait_for=[weights],
    )
    return clean.y_pred, global_losses, weights, logged_total, applied


def place_state_gradients(updates, variables, model, state_gradients, loss_scale):
    """The method's gradients of its trainable state, global on every replica like the direction."""
    for variable, gradient in model.multi_task_state.updated(state_gradients):
        place(updates, indices_of(variables, [variable]), [gradient * loss_scale / num_replicas()])


@dataclass
class CleanPass:
    """The step's forward pass, recorded on a persistent tape."""

    tape: tf.GradientTape
    y_pred: dict
    representation: tf.Tensor  # None in parameter mode
    scaled_losses: list  # per task, scaled for the optimizer
    global_losses: tf.Tensor  # checked, unscaled, summed over replicas
    regularization: tf.Tensor
    scaled_regularization: tf.Tensor
    variables: list
    loss_scale: tf.Tensor


def clean_pass(model, x, y, sample_weight):
    """The forward pass of a gradient step, through the split model in representation mode."""
    optimizer = model.optimizer
    representation = None
    with tf.GradientTape(persistent=True) as tape:
        if model.representation is not None:
            representation = model.multi_task_split.trunk(x, training=True)
            y_pred = model.multi_task_split.heads(representation, training=True)
        else:
            y_pred = model(x, training=True)
        losses = tasks.task_losses(model, y, y_pred, sample_weight)
        scaled_losses = [optimizer.scale_loss(loss) for loss in losses]
        regularization = regularization_loss(model)
        scaled_regularization = optimizer.scale_loss(regularization)
    return CleanPass(
        tape=tape,
        y_pred=y_pred,
        representation=representation,
        scaled_losses=scaled_losses,
        global_losses=global_task_losses(model, tf.stack(losses)),
        regularization=regularization,
        scaled_regularization=scaled_regularization,
        # Read after the forward pass, which builds an unbuilt subclassed model.
        variables=model.trainable_variables,
        loss_scale=optimizer.scale_loss(tf.constant(1.0)),
    )


def shared_indices(model, per_task):
    """Indices of the shared variables, from the per-task gradients (None: not reached)."""
    shared = shared_variable_indices(model, per_task)
    if not shared:
        raise ValueError("No parameter is shared by two tasks: there is nothing for a gradient method to balance.")
    sharing.check_shared_parameters(model, [model.trainable_variables[i] for i in shared])
    return shared


def own_gradients(per_task, skip=()):
    """Per variable, the sum of the tasks' gradients; None where none reaches it or in `skip`.

    Outside the shared variables at most one task reaches a variable, so this
    is that task's own gradient.
    """
    totals = []
    for i, gradients in enumerate(zip(*per_task)):
        own = [g for g in gradients if g is not None]
        totals.append(tf.add_n(own) if own and i not in skip else None)
    return totals


def make_task_gradients(jacobian, losses, shared_variables, losses_after=None, learning_rate=None):
    last_layer = tf.gather(jacobian, tasks.last_layer_columns(shared_variables), axis=1)
    return TaskGradients(
        jacobian=jacobian,
        losses=losses,
        gramian=tf.matmul(jacobian, jacobian, transpose_b=True),
        last_layer_gramian=tf.matmul(last_layer, last_layer, transpose_b=True),
        losses_after=losses_after,
        learning_rate=learning_rate,
    )


def _losses_after(model, x, y, sample_weight, shared_variables, before_step):
    def losses_after(direction):
        deltas = split_like(-direction, shared_variables)
        losses = perturbed(
            model,
            before_step,
            shared_variables,
            deltas,
            lambda _: task_loss_vector(model, y, model(x, training=True), sample_weight),
        )
        return tf.stop_gradient(sum_over_replicas(losses))

    return losses_after


def indices_of(variables, subset):
    index = {id(v): i for i, v in enumerate(variables)}
    return [index[id(v)] for v in subset]


def place(updates, indices, gradients):
    for i, gradient in zip(indices, gradients):
        updates[i] = gradient


def add_gradients(updates, gradients):
    for i, gradient in enumerate(gradients):
        if gradient is not None:
            updates[i] = gradient if updates[i] is None else updates[i] + gradient


def split_like(vector, variables):
    """Splits a flat vector into tensors shaped like `variables`."""
    pieces = tf.split(vector, [v.shape.num_elements() for v in variables])
    return [tf.reshape(piece, v.shape) for piece, v in zip(pieces, variables)]
