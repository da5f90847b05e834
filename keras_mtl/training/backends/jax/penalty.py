"""The JAX step of gradient penalties: `jax.grad` of the penalty P through the clean pass's task gradients.

The clean pass (one forward pass and the K tasks' vector-Jacobian
products, `steps.clean_task_gradients`) runs inside the differentiated
function, which returns the scaled penalty of the tasks' unscaled
shared-parameter gradients and, as auxiliary outputs, everything the step
needs of the clean pass. Every parameter's update is
`Σ_k ∇L_k + ∇R + ∇P`, checked in the TensorFlow engine's order. Under
`DataParallel` the arrays are global, so P and ∇P are the global batch's.
A penalty method keeps no state.
"""

import jax
import keras
from keras import ops

from keras_mtl.training.backends.jax.checks import Checks
from keras_mtl.training.backends.jax.steps import StepResult, clean_task_gradients, finish_updates, task_gradients_of
from keras_mtl.training.backends.jax.values import Values
from keras_mtl.training.steps.faults import gramian_check, variable_gradient_checks


def gradient_penalty_step(model, method, values, x, y, sample_weight, scale):
    """The method's penalty differentiated through the clean pass; every task weighs 1, the penalty is logged."""
    checks = Checks(isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer))
    # What the clean pass finds while traced: the variables a task reaches and its checks' messages.
    traced = {}

    def scaled_penalty(trainable):
        inner = Checks(checks.loss_scaled)
        clean = clean_task_gradients(
            model, Values(model, trainable, values.non_trainable), x, y, sample_weight, scale, inner
        )
        gradients = task_gradients_of(model, values, clean, clean.jacobian)
        traced.update(
            reached=sorted(set().union(*clean.dependencies)),
            checks=[(message, overflow) for _, message, overflow in inner.items],
        )
        flags = [ok for ok, _, _ in inner.items]
        outputs = (
            clean.y_pred,
            clean.non_trainable,
            clean.losses,
            clean.regularization,
            clean.per_task,
            clean.regularization_gradients,
            gradients.gramian,
        )
        penalty = method.penalty(gradients)
        return penalty * scale, (outputs, flags, penalty)

    penalty_gradients, (outputs, flags, penalty) = jax.grad(scaled_penalty, has_aux=True)(values.trainable)
    y_pred, non_trainable, losses, regularization, per_task, regularization_gradients, gramian = outputs
    checks.items += [(ok, message, overflow) for ok, (message, overflow) in zip(flags, traced["checks"])]
    variables = model.trainable_variables
    own = [sum(task[i] for task in per_task) for i in range(len(variables))]
    reached = traced["reached"]
    checks.extend(variable_gradient_checks([own[i] for i in reached], [variables[i] for i in reached]))
    checks.add(gramian_check(gramian, "the shared parameters"))
    checks.extend(variable_gradient_checks(penalty_gradients, variables, f"{method.display_name}'s penalty gradient"))
    updates = [g + p for g, p in zip(own, penalty_gradients)]
    updates = finish_updates(model, checks, updates, regularization_gradients, {}, values, scale)
    weights = ops.ones((len(model.task_names),))
    total = ops.sum(losses) + ops.stop_gradient(regularization)
    return StepResult(y_pred, losses, weights, total, updates, non_trainable, {}, checks, penalty)
