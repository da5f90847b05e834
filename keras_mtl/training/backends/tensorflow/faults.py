"""Non-finite values in a training step: a clear error, or a skipped step.

Every training step applies one rule, decided before the optimizer's update:

- A non-finite task loss, or a negative one for a method that needs
  non-negative losses, is an error that names the task
  (`MultiTaskMixin.global_task_losses`).
- Non-finite gradients behind finite losses (an `inf` input under a
  saturating activation: `tanh(inf) = 1` is finite, its gradient `inf·0` is
  NaN; or an overflow in the backward pass), and a Gramian of finite task
  gradients that overflows float32 (a gradient norm above ~1.8e19), are,
  under a `LossScaleOptimizer` (mixed precision), an overflow: the step is
  skipped as LossScaleOptimizer skips it (parameters, optimizer variables
  and iteration count stay, the loss scale halves), and `fit` counts it in
  `skipped_steps`. Without a loss scale they are an error that names the
  task whose gradient (gradient methods) or the variable whose gradient
  (loss weightings) is not finite.
- Non-finite task weights, weighted losses, combined direction or method
  state on a step that would be applied are an error that names the method,
  the task or state variable, and shows the values: the method, not the data,
  is at fault, and a loss scale cannot help. So is a finite gradient of a
  loss weighting's learned variables (UW's log-variances) whose square
  overflows float32, which Adam-style optimizers would turn into NaN.

After an error or a skip the method's state (everything in the model's
`MultiTaskState`) is what it was before the step, bit for bit: methods
return their new state and `StepGuard` assigns it only to a step that
applies, so a skipped step can leave no stale state behind (Nash-MTL's
cached weights, a draw counter, running moments).
Forward-pass side effects (batch-normalisation statistics, random seeds)
advance as in stock Keras. Under `jit_compile=True` (not the default)
XLA compiles every assertion away, the loss check's too: faults then go
unreported.
"""

from dataclasses import dataclass

import keras
import tensorflow as tf

from keras_mtl.training.backends.tensorflow.replicas import sum_over_replicas

# What makes a gradient non-finite while its loss is finite.
CAUSES = "e.g. an inf input under a saturating activation such as tanh, or an overflow in the backward pass"


@dataclass(frozen=True)
class Check:
    """A tensor that must be finite, and the error to raise if it is not (with `values` shown)."""

    tensor: tf.Tensor
    message: str
    values: tuple = ()
    # A gradient: an overflow under a loss scale, which skips the step.
    overflow: bool = False


def task_gradient_checks(jacobian, task_names, where):
    """One check per row of a (K, P) Jacobian, naming the task; `where` says what it is the gradient of."""
    return [
        Check(jacobian[k], f"keras_mtl: the gradient of task '{name}' with respect to {where} is not finite although its loss is finite ({CAUSES})", overflow=True)
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
        ("diagonal (squared gradient norms):", tf.linalg.diag_part(gramian)),
        overflow=True,
    )


def variable_gradient_checks(gradients, variables, what="the gradient"):
    """One check per variable that gets a gradient, naming the variable."""
    return [
        Check(gradient, f"keras_mtl: {what} of variable '{variable.path}' is not finite although every task's loss is finite ({CAUSES})", overflow=True)
        for gradient, variable in zip(gradients, variables)
        if gradient is not None
    ]


def weight_checks(method, weights, losses, task_names, weighted_losses=False):
    """Per task, its weight and, for a loss weighting, its weighted loss `w_k·L_k` (a finite weight can overflow it)."""
    name = method.display_name
    checks = []
    for k, task in enumerate(task_names):
        values = ("weight:", weights[k], "loss:", losses[k])
        checks.append(Check(weights[k], f"keras_mtl: {name} gave task '{task}' a non-finite weight", values))
        if weighted_losses:
            checks.append(Check(weights[k] * losses[k], f"keras_mtl: {name}: the weighted loss (weight × loss) of task '{task}' is not finite", values))
    return checks


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
            tf.square(gradient / loss_scale),
            f"keras_mtl: {method.display_name}'s gradient for its learned '{variable.name}' overflows float32 when squared "
            "(as Adam-style optimizers square it): a task's loss is too large for this method",
            ("gradient:", gradient / loss_scale),
        )
        for gradient, variable in zip(gradients, variables)
        if gradient is not None and id(variable) in learned
    ]


def direction_check(method, direction):
    return Check(direction, f"keras_mtl: {method.display_name}'s combined direction is not finite although every task's gradient and weight is")


def update_checks(updates, variables):
    """The last line: every update the optimizer gets, per variable."""
    return [
        Check(update, f"keras_mtl: the update of variable '{variable.path}' is not finite although every task's gradient and weight is")
        for update, variable in zip(updates, variables)
        if update is not None
    ]


def state_checks(method, new_state):
    """The method's new floating-point state, as the step computed it."""
    name = method.display_name
    return [
        Check(value, f"keras_mtl: {name}'s state '{key}' is not finite after this step", ("value:", value))
        for key, value in new_state.items()
        if value.dtype.is_floating
    ]


class StepGuard:
    """Checks a training step before its update, and assigns the method's new state only to a step that applies.

    Give `verdict` the step's checks, `apply` the updates, and `commit` each
    new state the method returned.
    """

    def __init__(self, model):
        self.model = model
        self.loss_scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)

    def verdict(self, checks):
        """Whether the step applies (a boolean scalar, the same on every replica); raises on a fault.

        `checks` come in the order the step computes them. An `overflow`
        check (a gradient) that fails skips the step under a loss scale;
        every other failing check is a fault, raised in order (so the first
        failure names the cause). Under
        a loss scale a check that comes after a failed overflow check is not
        asserted: it was computed from the overflowed gradients.
        """
        upstream_finite = tf.constant(True)
        faults = []
        for check in checks:
            finite = is_finite(check.tensor)
            if check.overflow and self.loss_scaled:
                upstream_finite = tf.logical_and(upstream_finite, finite)
            else:
                faults.append((check, tf.logical_or(tf.logical_not(upstream_finite), finite)))
        applied = _on_every_replica(upstream_finite) if self.loss_scaled else tf.constant(True)
        dependency = tf.no_op()
        for check, ok in faults:
            with tf.control_dependencies([dependency]):
                dependency = tf.debugging.Assert(ok, [check.message, *check.values], summarize=8)
        with tf.control_dependencies([dependency]):
            return tf.identity(applied)

    def apply(self, updates, variables, applied):
        """The optimizer's update, which LossScaleOptimizer skips (halving its scale) unless `applied`."""
        if self.loss_scaled:
            # LossScaleOptimizer skips a step when it sees a non-finite
            # gradient; a step found non-finite elsewhere (a task's gradient
            # that the method weighted by 0) is shown to it as NaN.
            marker = tf.where(applied, 1.0, float("nan"))
            updates = [None if u is None else _times(u, marker) for u in updates]
        self.model.optimizer.apply(updates, variables)

    def commit(self, new_state, applied):
        """Assigns a method's returned state where the step `applied`; keeps the old values otherwise.

        An unconditional `tf.where`, not a `tf.cond`: assignments inside a
        cond cannot be merged across replicas.
        """
        pairs = self.model.multi_task_state.updated(new_state)
        with tf.control_dependencies([applied]):
            return tf.group([variable.assign(tf.where(applied, tf.cast(value, variable.dtype), variable)) for variable, value in pairs])


def is_finite(tensor):
    """True where every entry of the tensor (or IndexedSlices) is finite."""
    return tf.reduce_all(tf.math.is_finite(tensor.values if isinstance(tensor, tf.IndexedSlices) else tensor))


def all_true(flags):
    return tf.reduce_all(tf.stack(flags)) if flags else tf.constant(True)


def _on_every_replica(flag):
    """`flag` and-ed over the replicas: head gradients are per replica, the decision to skip must not be."""
    failures = sum_over_replicas(tf.cast(tf.logical_not(flag), tf.float32))
    return tf.equal(failures, 0.0)


def _times(gradient, marker):
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(gradient.values * tf.cast(marker, gradient.values.dtype), gradient.indices, gradient.dense_shape)
    return gradient * tf.cast(marker, gradient.dtype)
