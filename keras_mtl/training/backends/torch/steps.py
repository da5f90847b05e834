"""The JAX steps of loss weightings and gradient methods (parameter and representation modes)."""

from dataclasses import dataclass

from keras_mtl.training.backends.torch import autodiff
import keras
from keras import ops

from keras_mtl.gradients.base import TaskGradients
from keras_mtl.training import sharing, tasks
from keras_mtl.training.backends.torch.checks import CAUSES, Checks, check_direction, check_gramian, check_losses, check_method, check_variable_gradients
from keras_mtl.training.backends.torch.parts import part_jacobians
from keras_mtl.training.backends.torch.values import flat, forward, one_hot_cotangent, output_vjps, split_like


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

    gradients, (y_pred, non_trainable, losses, weights, new_state, total) = autodiff.grad(scaled_total, values.trainable, has_aux=True)
    losses = ops.stop_gradient(losses)
    check_losses(model, checks, losses)
    check_method(method, model, checks, weights, new_state, losses)
    checks.add(total, f"keras_mtl: {method.display_name}'s weighted total loss is not finite")
    check_variable_gradients(model, checks, gradients, model.trainable_variables)
    learned = {id(v) for v in model.multi_task_state.trainable_variables}
    for gradient, variable in zip(gradients, model.trainable_variables):
        if id(variable) in learned:
            checks.add(
                ops.square(gradient / scale),
                f"keras_mtl: {method.display_name}'s gradient for its learned '{variable.name}' overflows float32 when squared "
                "(as Adam-style optimizers square it): a task's loss is too large for this method",
            )
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


def input_dependencies(function, values):
    """For each output of `function(values)` (a tuple), the indices of `values` it depends on (autograd's graph, no backward pass)."""
    _, pull = autodiff.vjp(function, values)
    return autodiff.reached_leaves(pull.graph[0], pull.graph[1][0])


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
    outputs, vjp, (y_pred, non_trainable, losses, regularization) = autodiff.vjp(task_losses, values.trainable, has_aux=True)
    dependencies = autodiff.reached_leaves(vjp.graph[0][:num_tasks], vjp.graph[1][0])
    shared = shared_variable_indices(model, dependencies)
    sharing.check_shared_parameters(model, [model.trainable_variables[i] for i in shared])
    losses = ops.stop_gradient(losses)
    check_losses(model, checks, losses)

    per_task = [gradients[0] for gradients in output_vjps(model, vjp, outputs, num_tasks)]
    jacobian = ops.stack([flat([task[i] for i in shared]) for task in per_task]) / scale
    for k, name in enumerate(model.task_names):
        checks.add(jacobian[k], f"keras_mtl: the gradient of task '{name}' with respect to the shared parameters is not finite although its loss is finite ({CAUSES})", overflow=True)
    regularization_gradients = vjp(one_hot_cotangent(outputs, num_tasks))[0]
    return CleanTaskGradients(y_pred, non_trainable, losses, regularization, per_task, regularization_gradients, dependencies, shared, jacobian)


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
    check_variable_gradients(model, checks, [g for g in own if g is not None], [v for g, v in zip(own, variables) if g is not None])
    losses_after = _losses_after(model, values, x, y, sample_weight, shared) if method.needs_losses_after else None
    gradients = task_gradients_of(model, values, clean, clean.jacobian, losses_after)
    check_gramian(checks, gradients.gramian, "the shared parameters")
    if method.batch_parts > 1:
        gradients.part_jacobians = part_jacobians(model, values, clean, x, y, sample_weight, scale, checks)
    state = values.method_state()
    direction, weights, new_state = method.combine(gradients, state, training=True)
    check_method(method, model, checks, weights, new_state)
    check_direction(method, checks, direction)
    updates = list(own)
    for i, piece in zip(shared, split_like(direction * scale, [variables[i] for i in shared])):
        updates[i] = piece
    updates = finish_updates(model, checks, updates, clean.regularization_gradients, method.state_gradients(gradients, weights, state), values, scale)
    total = ops.sum(clean.losses) + ops.stop_gradient(clean.regularization)
    return StepResult(clean.y_pred, clean.losses, weights, total, updates, clean.non_trainable, new_state, checks)


def finish_updates(model, checks, updates, regularization_gradients, state_gradients, values, scale):
    """Adds the regularisation gradients and the method's state gradients; zero where nothing reaches."""
    variables = model.trainable_variables
    check_variable_gradients(model, checks, regularization_gradients, variables, "the regularisation gradient")
    updates = [r if u is None else u + r for u, r in zip(updates, regularization_gradients)]
    for variable, gradient in model.multi_task_state.updated(state_gradients):
        updates[values.trainable_indices([variable])[0]] = gradient * scale
    for update, variable in zip(updates, variables):
        checks.add(update, f"keras_mtl: the update of variable '{variable.path}' is not finite although every task's gradient and weight is")
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

    (representation, _), trunk_vjp, (after_trunk, trunk_regularization) = autodiff.vjp(trunk, [values.trainable[i] for i in trunk_indices], has_aux=True)

    def heads(representation, head_values):
        trainable = list(values.trainable)
        for i, value in zip(head_indices, head_values):
            trainable[i] = value
        y_pred, non_trainable, regularization = forward(model, split.heads, trainable, after_trunk, representation)
        losses = tasks.task_losses(model, y, y_pred, sample_weight)
        return tuple(loss * scale for loss in losses) + (regularization * scale,), (y_pred, non_trainable, ops.stack(losses), regularization)

    outputs, heads_vjp, (y_pred, non_trainable, losses, head_regularization_value) = autodiff.vjp(heads, representation, [values.trainable[i] for i in head_indices], has_aux=True)
    losses = ops.stop_gradient(losses)
    check_losses(model, checks, losses)

    per_task = output_vjps(model, heads_vjp, outputs, num_tasks)
    jacobian = ops.stack([ops.reshape(ops.cast(g[0], "float32"), (-1,)) for g in per_task]) / scale
    for k, name in enumerate(model.task_names):
        checks.add(jacobian[k], f"keras_mtl: the gradient of task '{name}' with respect to the shared representation is not finite although its loss is finite ({CAUSES})", overflow=True)
    updates = [None] * len(variables)
    for position, i in enumerate(head_indices):
        updates[i] = sum(task[1][position] for task in per_task)
    check_variable_gradients(model, checks, [updates[i] for i in head_indices], [variables[i] for i in head_indices])
    gramian = ops.matmul(jacobian, ops.transpose(jacobian))
    check_gramian(checks, gramian, "the shared representation")
    gradients = TaskGradients(jacobian=jacobian, losses=losses, gramian=gramian, last_layer_gramian=gramian, learning_rate=values.learning_rate)
    state = values.method_state()
    direction, weights, new_state = method.combine(gradients, state, training=True)
    check_method(method, model, checks, weights, new_state)
    check_direction(method, checks, direction)
    # One backward pass through the trunk: the direction, and the trunk's regularisation.
    output_gradient = ops.cast(ops.reshape(direction * scale, ops.shape(representation)), representation.dtype)
    (trunk_gradients,) = trunk_vjp((output_gradient, ops.ones((), "float32")))
    check_variable_gradients(model, checks, trunk_gradients, split.trunk.trainable_variables)
    for position, i in enumerate(trunk_indices):
        updates[i] = trunk_gradients[position] if updates[i] is None else updates[i] + trunk_gradients[position]
    head_regularization = heads_vjp(one_hot_cotangent(outputs, num_tasks))[1]
    regularization_gradients = [ops.zeros_like(v) for v in values.trainable]
    for position, i in enumerate(head_indices):
        regularization_gradients[i] = head_regularization[position]
    updates = [ops.zeros_like(values.trainable[i]) if u is None else u for i, u in enumerate(updates)]
    updates = finish_updates(model, checks, updates, regularization_gradients, method.state_gradients(gradients, weights, state), values, scale)
    total = ops.sum(losses) + ops.stop_gradient(trunk_regularization + head_regularization_value)
    return StepResult(y_pred, losses, weights, total, updates, non_trainable, new_state, checks)
