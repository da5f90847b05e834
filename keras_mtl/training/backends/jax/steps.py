"""The JAX steps of loss weightings and gradient methods (parameter and representation modes)."""

from dataclasses import dataclass

import jax
import keras
from jax.extend import core as jax_core
from keras import ops

from keras_mtl.gradients.base import TaskGradients
from keras_mtl.training import sharing, tasks
from keras_mtl.training.backends.jax.checks import Checks
from keras_mtl.training.backends.jax.parts import part_jacobians
from keras_mtl.training.backends.jax.values import flat, forward, one_hot_cotangent, output_vjps, split_like
from keras_mtl.training.steps.faults import (
    gramian_check,
    learned_state_checks,
    loss_checks,
    method_checks,
    state_checks,
    task_gradient_checks,
    total_check,
    update_checks,
    variable_gradient_checks,
    weight_checks,
)


@dataclass
class StepResult:
    """What a step computed, before the engine decides whether it applies."""

    y_pred: object
    losses: object  # (K,) global, unscaled
    weights: object  # (K,) to log
    total: object  # the logged total
    gradients: list  # per trainable variable, scaled by the loss scale
    non_trainable: list  # after the clean forward pass
    new_state: dict
    checks: Checks
    penalty: object = None  # a gradient penalty's value, to log


def weighted_loss_step(model, method, values, x, y, sample_weight, scale):
    """A loss weighting: the gradient of `Σ w_k L_k + R` (its weights and state from the global losses)."""
    checks = Checks(isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer))

    def scaled_total(trainable):
        y_pred, non_trainable, regularization = forward(model, model, trainable, values.non_trainable, x)
        losses = ops.stack(tasks.task_losses(model, y, y_pred, sample_weight))
        state = values.method_state(trainable)
        weights, new_state = method.weights(ops.stop_gradient(losses), state, training=True)
        method_regularization = method.regularization(state)
        total = ops.sum(weights * losses) + method_regularization + regularization
        return total * scale, (y_pred, non_trainable, losses, weights, new_state, ops.stop_gradient(total))

    gradients, (y_pred, non_trainable, losses, weights, new_state, total) = jax.grad(scaled_total, has_aux=True)(
        values.trainable
    )
    losses = ops.stop_gradient(losses)
    checks.extend(loss_checks(model, losses))
    checks.extend(
        state_checks(method, new_state)
        + weight_checks(method, weights, losses, model.task_names, weighted_losses=True)
        + [total_check(method, total)]
    )
    checks.extend(variable_gradient_checks(gradients, model.trainable_variables))
    checks.extend(learned_state_checks(method, model.multi_task_state, gradients, model.trainable_variables, scale))
    return StepResult(y_pred, losses, weights, total, gradients, non_trainable, new_state, checks)


def shared_variable_indices(model, task_dependencies):
    """Indices in `trainable_variables` of the shared parameters: the named `shared_layers`, else those two tasks reach."""
    if model.shared_layers is not None:
        index = {id(v): i for i, v in enumerate(model.trainable_variables)}
        return sorted({index[id(v)] for name in model.shared_layers for v in model.get_layer(name).trainable_variables})
    counts = [sum(i in reached for reached in task_dependencies) for i in range(len(model.trainable_variables))]
    shared = [i for i, count in enumerate(counts) if count >= 2]
    if not shared:
        raise ValueError("No parameter is shared by two tasks: there is nothing for a gradient method to balance.")
    return shared


def input_dependencies(function, argument):
    """For each output of `function(argument)` (a tuple), the indices of the argument's leaves it depends on.

    Read from the jaxpr: an equation's outputs depend on all its inputs (a
    safe over-approximation for multi-output equations).
    """
    closed = jax.make_jaxpr(function)(argument)
    jaxpr = closed.jaxpr
    depends = {var: {i} for i, var in enumerate(jaxpr.invars)}
    for equation in jaxpr.eqns:
        inputs = set()
        for var in equation.invars:
            if not isinstance(var, jax_core.Literal):
                inputs |= depends.get(var, set())
        for var in equation.outvars:
            depends[var] = inputs
    return [set() if isinstance(var, jax_core.Literal) else depends.get(var, set()) for var in jaxpr.outvars]


def last_layer_gramian(jacobian, shared_variables):
    columns = tasks.last_layer_columns(shared_variables)
    last = ops.take(jacobian, columns, axis=1)
    return ops.matmul(last, ops.transpose(last))


def task_gradients_step(model, method, values, x, y, sample_weight, scale):
    """A gradient method, parameter or representation mode."""
    if model.representation is not None:
        return _representation_step(model, method, values, x, y, sample_weight, scale)
    return _parameter_step(model, method, values, x, y, sample_weight, scale)


def task_losses_function(model, values, x, y, sample_weight, scale):
    """trainable -> ((K scaled task losses..., scaled regularisation), (y_pred, non_trainable, unscaled losses))."""
    num_tasks = len(model.task_names)

    def task_losses(trainable):
        y_pred, non_trainable, regularization = forward(model, model, trainable, values.non_trainable, x)
        losses = tasks.task_losses(model, y, y_pred, sample_weight)
        outputs = tuple(loss * scale for loss in losses) + (regularization * scale,)
        return outputs, (y_pred, non_trainable, ops.stack(losses), regularization)

    return task_losses, num_tasks


@dataclass
class CleanTaskGradients:
    """The clean pass of a parameter-mode step: per-task gradients (scaled) and what the step needs of them."""

    y_pred: object
    non_trainable: list
    losses: object  # (K,) unscaled, gradient stopped
    regularization: object  # unscaled
    per_task: list  # K lists of scaled gradients, one per trainable variable
    regularization_gradients: list  # scaled
    dependencies: list  # per task, the indices of the trainable variables its loss depends on
    shared: list  # indices of the shared variables
    jacobian: object  # (K, P) of the shared variables, unscaled


def clean_task_gradients(model, values, x, y, sample_weight, scale, checks):
    """One forward pass, then the K tasks' gradients (and the regularisation's) by vector-Jacobian products."""
    task_losses, num_tasks = task_losses_function(model, values, x, y, sample_weight, scale)
    dependencies = input_dependencies(lambda trainable: task_losses(trainable)[0], values.trainable)[:num_tasks]
    shared = shared_variable_indices(model, dependencies)
    sharing.check_shared_parameters(model, [model.trainable_variables[i] for i in shared])
    outputs, vjp, (y_pred, non_trainable, losses, regularization) = jax.vjp(task_losses, values.trainable, has_aux=True)
    losses = ops.stop_gradient(losses)
    checks.extend(loss_checks(model, losses))

    per_task = [gradients[0] for gradients in output_vjps(model, vjp, outputs, num_tasks)]
    jacobian = ops.stack([flat([task[i] for i in shared]) for task in per_task]) / scale
    checks.extend(task_gradient_checks(jacobian, model.task_names, "the shared parameters"))
    regularization_gradients = vjp(one_hot_cotangent(outputs, num_tasks))[0]
    return CleanTaskGradients(
        y_pred,
        non_trainable,
        losses,
        regularization,
        per_task,
        regularization_gradients,
        dependencies,
        shared,
        jacobian,
    )


def task_gradients_of(model, values, clean, jacobian, losses_after=None):
    """`TaskGradients` of a (K, P) shared Jacobian, its Gramian checked by the caller."""
    shared_variables = [model.trainable_variables[i] for i in clean.shared]
    return TaskGradients(
        jacobian=jacobian,
        losses=clean.losses,
        gramian=ops.matmul(jacobian, ops.transpose(jacobian)),
        last_layer_gramian=last_layer_gramian(jacobian, shared_variables),
        losses_after=losses_after,
        learning_rate=values.learning_rate,
    )


def _parameter_step(model, method, values, x, y, sample_weight, scale):
    checks = Checks(isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer))
    clean = clean_task_gradients(model, values, x, y, sample_weight, scale, checks)
    variables = model.trainable_variables
    shared = clean.shared
    own = [None if i in shared else sum(task[i] for task in clean.per_task) for i in range(len(variables))]
    checks.extend(
        variable_gradient_checks(
            [g for g in own if g is not None], [v for g, v in zip(own, variables) if g is not None]
        )
    )
    losses_after = _losses_after(model, values, x, y, sample_weight, shared) if method.needs_losses_after else None
    gradients = task_gradients_of(model, values, clean, clean.jacobian, losses_after)
    checks.add(gramian_check(gradients.gramian, "the shared parameters"))
    if method.batch_parts > 1:
        gradients.part_jacobians = part_jacobians(model, values, clean, x, y, sample_weight, scale, checks)
    state = values.method_state()
    direction, weights, new_state = method.combine(gradients, state, training=True)
    checks.extend(method_checks(method, new_state, weights, direction, model.task_names, clean.losses))
    updates = list(own)
    for i, piece in zip(shared, split_like(direction * scale, [variables[i] for i in shared])):
        updates[i] = piece
    updates = finish_updates(
        model,
        checks,
        updates,
        clean.regularization_gradients,
        method.state_gradients(gradients, weights, state),
        values,
        scale,
    )
    total = ops.sum(clean.losses) + ops.stop_gradient(clean.regularization)
    return StepResult(clean.y_pred, clean.losses, weights, total, updates, clean.non_trainable, new_state, checks)


def finish_updates(model, checks, updates, regularization_gradients, state_gradients, values, scale):
    """Adds the regularisation gradients and the method's state gradients; zero where nothing reaches."""
    variables = model.trainable_variables
    checks.extend(variable_gradient_checks(regularization_gradients, variables, "the regularisation gradient"))
    updates = [r if u is None else u + r for u, r in zip(updates, regularization_gradients)]
    for variable, gradient in model.multi_task_state.updated(state_gradients):
        updates[values.trainable_indices([variable])[0]] = gradient * scale
    checks.extend(update_checks(updates, variables))
    return updates


def _losses_after(model, values, x, y, sample_weight, shared):
    """`d -> L(θ_sh − d)`: the global batch's losses with the shared parameters moved, nothing kept."""

    def losses_after(direction):
        variables = [model.trainable_variables[i] for i in shared]
        trainable = list(values.trainable)
        for i, delta in zip(shared, split_like(-direction, variables)):
            trainable[i] = trainable[i] + ops.cast(delta, trainable[i].dtype)
        y_pred, _, _ = forward(model, model, trainable, values.non_trainable, x)
        return ops.stop_gradient(ops.stack(tasks.task_losses(model, y, y_pred, sample_weight)))

    return losses_after


def _representation_step(model, method, values, x, y, sample_weight, scale):
    checks = Checks(isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer))
    split = model.multi_task_split
    variables = model.trainable_variables
    trunk_indices = values.trainable_indices(split.trunk.trainable_variables)
    head_indices = values.trainable_indices(split.heads.trainable_variables)
    num_tasks = len(model.task_names)

    def trunk(trunk_values):
        trainable = list(values.trainable)
        for i, value in zip(trunk_indices, trunk_values):
            trainable[i] = value
        representation, non_trainable, regularization = forward(model, split.trunk, trainable, values.non_trainable, x)
        return (representation, regularization * scale), (non_trainable, regularization)

    (representation, _), trunk_vjp, (after_trunk, trunk_regularization) = jax.vjp(
        trunk, [values.trainable[i] for i in trunk_indices], has_aux=True
    )

    def heads(representation, head_values):
        trainable = list(values.trainable)
        for i, value in zip(head_indices, head_values):
            trainable[i] = value
        y_pred, non_trainable, regularization = forward(model, split.heads, trainable, after_trunk, representation)
        losses = tasks.task_losses(model, y, y_pred, sample_weight)
        return tuple(loss * scale for loss in losses) + (regularization * scale,), (
            y_pred,
            non_trainable,
            ops.stack(losses),
            regularization,
        )

    outputs, heads_vjp, (y_pred, non_trainable, losses, head_regularization_value) = jax.vjp(
        heads, representation, [values.trainable[i] for i in head_indices], has_aux=True
    )
    losses = ops.stop_gradient(losses)
    checks.extend(loss_checks(model, losses))

    per_task = output_vjps(model, heads_vjp, outputs, num_tasks)
    jacobian = ops.stack([ops.reshape(ops.cast(g[0], "float32"), (-1,)) for g in per_task]) / scale
    checks.extend(task_gradient_checks(jacobian, model.task_names, "the shared representation"))
    updates = [None] * len(variables)
    for position, i in enumerate(head_indices):
        updates[i] = sum(task[1][position] for task in per_task)
    checks.extend(variable_gradient_checks([updates[i] for i in head_indices], [variables[i] for i in head_indices]))
    gramian = ops.matmul(jacobian, ops.transpose(jacobian))
    checks.add(gramian_check(gramian, "the shared representation"))
    gradients = TaskGradients(
        jacobian=jacobian,
        losses=losses,
        gramian=gramian,
        last_layer_gramian=gramian,
        learning_rate=values.learning_rate,
    )
    state = values.method_state()
    direction, weights, new_state = method.combine(gradients, state, training=True)
    checks.extend(method_checks(method, new_state, weights, direction, model.task_names, losses))
    # One backward pass through the trunk: the direction, and the trunk's regularisation.
    output_gradient = ops.cast(ops.reshape(direction * scale, ops.shape(representation)), representation.dtype)
    (trunk_gradients,) = trunk_vjp((output_gradient, ops.ones((), "float32")))
    checks.extend(variable_gradient_checks(trunk_gradients, split.trunk.trainable_variables))
    for position, i in enumerate(trunk_indices):
        updates[i] = trunk_gradients[position] if updates[i] is None else updates[i] + trunk_gradients[position]
    head_regularization = heads_vjp(one_hot_cotangent(outputs, num_tasks))[1]
    regularization_gradients = [ops.zeros_like(v) for v in values.trainable]
    for position, i in enumerate(head_indices):
        regularization_gradients[i] = head_regularization[position]
    updates = [ops.zeros_like(values.trainable[i]) if u is None else u for i, u in enumerate(updates)]
    updates = finish_updates(
        model,
        checks,
        updates,
        regularization_gradients,
        method.state_gradients(gradients, weights, state),
        values,
        scale,
    )
    total = ops.sum(losses) + ops.stop_gradient(trunk_regularization + head_regularization_value)
    return StepResult(y_pred, losses, weights, total, updates, non_trainable, new_state, checks)
