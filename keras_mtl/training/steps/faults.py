"""Every check of a training step and its message, written once for every backend.

A check is a value (a `Check`: the tensor, the message, the values to show,
and whether it is an overflow); nothing here raises. Each backend turns a
step's checks, in the order the step computed them, into its verdict
(`checks.verdict` in each backend package):

- A non-finite task loss, or one below the method's `loss_lower_bounds`
  (zero for a method that takes logs or ratios of the losses), is a fault
  that names the task.
- Non-finite gradients behind finite losses (an `inf` input under a
  saturating activation: `tanh(inf) = 1` is finite, its gradient `inf·0` is
  NaN; or an overflow in the backward pass), and a Gramian of finite task
  gradients that overflows float32 (a gradient norm above ~1.8e19), are
  `overflow` checks: under a `LossScaleOptimizer` (mixed precision) the step
  is skipped as LossScaleOptimizer skips it (parameters, optimizer variables
  and iteration count stay, the loss scale halves) and counted in
  `skipped_steps`; without a loss scale they are a fault that names the task
  or the variable. Under a loss scale, the checks after a failed overflow
  check are not faults: they were computed from the overflowed gradients.
- Non-finite task weights, weighted losses, combined direction or method
  state are a fault that names the method, the task or the state entry: the
  method, not the data, is at fault, and a loss scale cannot help. So is a
  finite gradient of a loss weighting's learned variables (UW's
  log-variances) whose square overflows float32, which Adam-style
  optimizers would turn into NaN.

A faulty step applies nothing (parameters, optimizer variables and
iterations, method state, batch statistics) and `fit` / `train_on_batch`
raise `fault_message(check)`, naming the cause, on every backend.
"""

from dataclasses import dataclass

from keras import ops

from keras_mtl.training import tasks

# What makes a gradient non-finite while its loss is finite.
CAUSES = "e.g. an inf input under a saturating activation such as tanh, or an overflow in the backward pass"


@dataclass(frozen=True)
class Check:
    """A value that must be finite (and at least `lower_bound`, if given), and what to say if it is not."""

    value: object
    message: str
    shown: tuple = ()  # (label, value, ...) shown with the message where the backend can show values
    overflow: bool = False  # a gradient: under a loss scale, an overflow that skips the step
    lower_bound: float = None


class StepFault(ValueError):
    """A training step's fault, raised after the step by an engine whose compiled steps cannot raise (JAX)."""


def fault_message(message):
    """The error `fit` and `train_on_batch` raise for a failed check."""
    return message + " (the step was not applied: nothing changed)"


def loss_checks(model, losses, when="of the batch"):
    """Per task, its loss (global, unscaled) is finite and not below the method's bound."""
    method = model.multi_task_method
    bounds = method.loss_lower_bounds(len(model.task_names))
    checks = []
    for k, name in enumerate(model.task_names):
        checks.append(Check(losses[k], f"keras_mtl: the loss of task '{name}' ({when}) is not finite"))
        if bounds is not None:
            checks.append(Check(losses[k], tasks.bound_message(method, name, bounds[k], when), lower_bound=bounds[k]))
    return checks


def task_gradient_checks(jacobian, task_names, where):
    """One overflow check per row of a (K, P) Jacobian, naming the task; `where` says what it is the gradient of."""
    return [
        Check(
            jacobian[k],
            f"keras_mtl: the gradient of task '{name}' with respect to {where} is not finite although its loss is finite ({CAUSES})",
            overflow=True,
        )
        for k, name in enumerate(task_names)
    ]


def gramian_check(gramian, where):
    """The K×K Gramian, float32 like the Jacobian: it overflows once a task's gradient norm passes ~1.8e19.

    An overflow that the Jacobian alone does not show; the aggregators would
    read it as a non-finite input and weigh every task by 0.
    """
    return Check(
        gramian,
        f"keras_mtl: the Gramian of the task gradients with respect to {where} is not finite although every task's gradient is: "
        "a gradient norm above ~1.8e19 overflows float32",
        ("diagonal (squared gradient norms):", ops.diagonal(gramian)),
        overflow=True,
    )


def variable_gradient_checks(gradients, variables, what="the gradient"):
    """One overflow check per variable that gets a gradient, naming the variable."""
    return [
        Check(
            gradient,
            f"keras_mtl: {what} of variable '{variable.path}' is not finite although every task's loss is finite ({CAUSES})",
            overflow=True,
        )
        for gradient, variable in zip(gradients, variables)
        if gradient is not None
    ]


def weight_checks(method, weights, losses, task_names, weighted_losses=False):
    """Per task, its weight and, for a loss weighting, its weighted loss `w_k·L_k` (a finite weight can overflow it)."""
    name = method.display_name
    checks = []
    for k, task in enumerate(task_names):
        shown = ("weight:", weights[k], "loss:", losses[k])
        checks.append(Check(weights[k], f"keras_mtl: {name} gave task '{task}' a non-finite weight", shown))
        if weighted_losses:
            checks.append(
                Check(
                    weights[k] * losses[k],
                    f"keras_mtl: {name}: the weighted loss (weight × loss) of task '{task}' is not finite",
                    shown,
                )
            )
    return checks


def total_check(method, total):
    return Check(total, f"keras_mtl: {method.display_name}'s weighted total loss is not finite", ("total:", total))


def learned_state_checks(method, state, gradients, variables, loss_scale):
    """The gradients of the method's learned variables (UW's log-variances), unscaled, squared.

    Their gradient is a weighted loss (`∂/∂s ½e^{−s}L = −½e^{−s}L`): a loss
    near 1e20 gives a finite gradient whose square, which Adam-style
    optimizers take, overflows float32 and turns the variable into NaN one
    step later.
    """
    learned = {id(v) for v in state.trainable_variables}
    return [
        Check(
            ops.square(gradient / loss_scale),
            f"keras_mtl: {method.display_name}'s gradient for its learned '{variable.name}' overflows float32 when squared "
            "(as Adam-style optimizers square it): a task's loss is too large for this method",
            ("gradient:", gradient / loss_scale),
        )
        for gradient, variable in zip(gradients, variables)
        if gradient is not None and id(variable) in learned
    ]


def direction_check(method, direction):
    return Check(
        direction,
        f"keras_mtl: {method.display_name}'s combined direction is not finite although every task's gradient and weight is",
    )


def update_checks(updates, variables):
    """The last line: every update the optimizer gets, per variable."""
    return [
        Check(
            update,
            f"keras_mtl: the update of variable '{variable.path}' is not finite although every task's gradient and weight is",
        )
        for update, variable in zip(updates, variables)
        if update is not None
    ]


def state_checks(method, new_state):
    """The method's new floating-point state, as the step computed it."""
    name = method.display_name
    return [
        Check(value, f"keras_mtl: {name}'s state '{key}' is not finite after this step", ("value:", value))
        for key, value in new_state.items()
        if "float" in str(ops.dtype(value))
    ]


def method_checks(method, new_state, weights, direction, task_names, losses):
    """A gradient method's new state, weights and combined direction."""
    return (
        state_checks(method, new_state)
        + weight_checks(method, weights, losses, task_names)
        + [direction_check(method, direction)]
    )


def perturbation_checks(deltas, variables, rho):
    """SAM's perturbation of each variable, and (`perturbed_gradient_checks`) the gradients at the perturbed parameters."""
    return [
        Check(delta, f"keras_mtl: SAM's perturbation of variable '{variable.path}' is not finite (rho={rho})")
        for delta, variable in zip(deltas, variables)
    ]


def perturbed_gradient_checks(gradients, variables):
    return variable_gradient_checks(gradients, variables, "SAM's gradient at the perturbed parameters")


def outer_checks(method, outer_loss, outer_direction):
    """A meta-learned weighting's outer loss and outer gradient, at the virtual step (Auto-Lambda)."""
    name = method.display_name
    return [
        Check(
            outer_loss,
            f"keras_mtl: {name}'s outer loss (on the outer part of the batch, at the virtual step) is not finite",
            ("outer loss:", outer_loss),
        ),
        Check(
            outer_direction,
            f"keras_mtl: {name}'s outer gradient (at the virtual step) is not finite although the outer loss is",
            overflow=True,
        ),
    ]


def main_gradient_check(method, main_direction):
    """The main task's gradient on the hold-out part (SLGrad)."""
    return Check(
        main_direction,
        f"keras_mtl: {method.display_name}'s main-task gradient on the hold-out part is not finite although its loss is finite",
        overflow=True,
    )


def alignment_check(method, scores):
    """The training samples' gradients' alignments with the main task's (SLGrad)."""
    return Check(
        scores,
        f"keras_mtl: {method.display_name}'s alignments of the training samples' gradients with the main task's are not finite",
        overflow=True,
    )


def result_checks(method, optimizer_variables, new_optimizer_values, variables, new_values):
    """The values a step would leave: the optimizer's state, then the parameters.

    Finite inputs can still overflow here: `Scalarization(weights=[1e30, 1])`
    gives finite losses, weighted losses and gradients, but Adam squares a
    gradient of 1e30 into an infinite second moment. Each is one finiteness
    reduction over the new value (and, on TensorFlow, a copy of the values
    before the update, put back if one fails). Its cost was not measured
    quietly: one run each on the project's shared 2-core CPU under load 13-16
    (`fit` of a 64-512-512 MLP, two tasks, `ew`, Adam, batch 256, 60 steps,
    `steps_per_execution=10`, 8 alternating repeats with and without it) gave
    1.10× (JAX) and 0.89× (TensorFlow) the time without it (medians; minima
    1.22× and 1.10×), inside the run-to-run spread of ±50%: measure it again
    on a quiet machine.
    """
    name = method.display_name
    return [
        Check(
            value,
            f"keras_mtl: this step would make the optimizer's '{variable.path}' non-finite although every gradient it got is finite: "
            f"it overflows float32 (an optimizer that squares gradients, such as Adam, overflows above ~1.8e19; {name}'s task weights may be too large)",
        )
        for variable, value in zip(optimizer_variables, new_optimizer_values)
        if "float" in str(ops.dtype(value))
    ] + [
        Check(
            value,
            f"keras_mtl: this step would make variable '{variable.path}' non-finite although its update is finite: "
            f"the step overflows float32 ({name}'s task weights or the learning rate may be too large)",
        )
        for variable, value in zip(variables, new_values)
    ]
