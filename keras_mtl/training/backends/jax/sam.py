"""The JAX step of `keras_mtl.SAM`: plain SAM/ASAM around a loss weighting, per-task SAM (F-MTL) around a gradient method."""

import jax
import keras
from keras import ops

from keras_mtl.training import tasks
from keras_mtl.training.backends.jax.checks import Checks
from keras_mtl.training.backends.jax.steps import (
    StepResult,
    clean_task_gradients,
    finish_updates,
    task_gradients_of,
    weighted_loss_step,
)
from keras_mtl.training.backends.jax.values import Values, flat, forward, split_like
from keras_mtl.training.steps.faults import gramian_check, method_checks, variable_gradient_checks


def sharpness_aware_step(model, sam, values, x, y, sample_weight, scale):
    """SAM around a loss weighting, or F-MTL around a gradient method (see `keras_mtl.SAM`)."""
    if model.representation is not None:
        raise ValueError("SAM perturbs parameters; it does not support representation mode.")
    step = _per_task_sharpness_step if sam.is_gradient_method else _total_loss_sharpness_step
    return step(model, sam, values, x, y, sample_weight, scale)


def replaced(values, indices, replacements):
    """The trainable values with those at `indices` replaced."""
    trainable = list(values.trainable)
    for i, value in zip(indices, replacements):
        trainable[i] = value
    return trainable


def perturbed_values(values, indices, deltas):
    return [values.trainable[i] + ops.cast(d, values.trainable[i].dtype) for i, d in zip(indices, deltas)]


def _total_loss_sharpness_step(model, sam, values, x, y, sample_weight, scale):
    """Plain SAM on the weighted total: the clean pass sets the weights and the state; the model's
    parameters (not the weighting's learned variables) take the gradient at θ + ε."""
    result = weighted_loss_step(model, sam.method, values, x, y, sample_weight, scale)
    learned = {id(v) for v in model.multi_task_state.trainable_variables}
    indices = [i for i, v in enumerate(model.trainable_variables) if id(v) not in learned]
    variables = [model.trainable_variables[i] for i in indices]
    deltas, checks = sam.perturbation(
        [result.gradients[i] / scale for i in indices], [values.trainable[i] for i in indices], variables
    )
    result.checks.extend(checks)
    weights = ops.stop_gradient(result.weights)

    def scaled_total(perturbed):
        y_pred, _, regularization = forward(model, model, replaced(values, indices, perturbed), values.non_trainable, x)
        return (
            ops.sum(weights * ops.stack(tasks.task_losses(model, y, y_pred, sample_weight))) + regularization
        ) * scale

    sam_gradients = jax.grad(scaled_total)(perturbed_values(values, indices, deltas))
    result.checks.extend(
        variable_gradient_checks(sam_gradients, variables, "SAM's gradient at the perturbed parameters")
    )
    result.gradients = replaced(Values(model, result.gradients, values.non_trainable), indices, sam_gradients)
    return result


def _per_task_sharpness_step(model, sam, values, x, y, sample_weight, scale):
    """F-MTL: per task, the SAM gradient of its loss at its own perturbation of the shared parameters and its head."""
    method = sam.method
    checks = Checks(isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer))
    clean = clean_task_gradients(model, values, x, y, sample_weight, scale, checks)
    variables, shared = model.trainable_variables, clean.shared
    shared_variables = [variables[i] for i in shared]
    updates = [None] * len(variables)
    sam_rows = []
    for k in range(len(model.task_names)):
        head = [i for i in sorted(clean.dependencies[k]) if i not in shared]
        checks.extend(variable_gradient_checks([clean.per_task[k][i] for i in head], [variables[i] for i in head]))
        # Shared part and head normalised separately.
        deltas, delta_checks = sam.perturbation(
            split_like(clean.jacobian[k], shared_variables), [values.trainable[i] for i in shared], shared_variables
        )
        if head:
            head_deltas, head_checks = sam.perturbation(
                [clean.per_task[k][i] / scale for i in head],
                [values.trainable[i] for i in head],
                [variables[i] for i in head],
            )
            deltas, delta_checks = deltas + head_deltas, delta_checks + head_checks
        indices = shared + head
        checks.extend(delta_checks)

        def scaled_task_loss(perturbed, k=k, indices=indices):
            y_pred, _, _ = forward(model, model, replaced(values, indices, perturbed), values.non_trainable, x)
            return tasks.task_losses(model, y, y_pred, sample_weight)[k] * scale

        gradients = jax.grad(scaled_task_loss)(perturbed_values(values, indices, deltas))
        checks.extend(
            variable_gradient_checks(
                gradients, [variables[i] for i in indices], "SAM's gradient at the perturbed parameters"
            )
        )
        sam_rows.append(flat(gradients[: len(shared)]))
        for i, gradient in zip(head, gradients[len(shared) :]):
            updates[i] = gradient
    sam_jacobian = ops.stack(sam_rows) / scale
    clean_gradients = task_gradients_of(model, values, clean, clean.jacobian)
    checks.add(gramian_check(clean_gradients.gramian, "the shared parameters"))
    state = values.method_state()
    direction, weights, new_state, gramian_checks = sam.combine_perturbed(
        clean_gradients, sam_jacobian, lambda jacobian: task_gradients_of(model, values, clean, jacobian), state
    )
    checks.extend(gramian_checks)
    checks.extend(method_checks(method, new_state, weights, direction, model.task_names, clean.losses))
    for i, piece in zip(shared, split_like(direction * scale, shared_variables)):
        updates[i] = piece
    updates = finish_updates(
        model,
        checks,
        updates,
        clean.regularization_gradients,
        method.state_gradients(clean_gradients, weights, state),
        values,
        scale,
    )
    total = ops.sum(clean.losses) + ops.stop_gradient(clean.regularization)
    return StepResult(clean.y_pred, clean.losses, weights, total, updates, clean.non_trainable, new_state, checks)
