"""The TensorFlow verdict on a step's checks (`keras_mtl.training.steps.faults`): assertions, or a skip.

The step's checks are asserted in order before any update, so the first
failure raises its message (with the values it shows) and nothing is
applied; under a loss scale an overflow skips the step instead. Methods
return their new state and `StepGuard` assigns it only to a step that
applies, so a skipped step leaves no stale state behind (Nash-MTL's cached
weights, a draw counter, running moments), and a failed assertion first
puts back what the forward passes assigned (batch statistics, random
seeds). On a step skipped under a loss scale those advance, as in stock
Keras.
Under `steps_per_execution` > 1 the steps of a group before the faulty one
are applied, as on every backend. Under `jit_compile=True` (not the
default) XLA compiles every assertion away, the loss check's too: faults
then go unreported.
"""

import weakref

import keras
import tensorflow as tf

from keras_mtl.training.backends.tensorflow.replicas import sum_over_replicas
from keras_mtl.training.steps.faults import fault_message, result_checks


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
        faults, excused = [], []
        for check in checks:
            if check.overflow and self.loss_scaled:
                upstream_finite = tf.logical_and(upstream_finite, is_finite(check.value))
            else:
                faults.append(check)
                excused.append(tf.logical_not(upstream_finite))
        applied = _on_every_replica(upstream_finite) if self.loss_scaled else tf.constant(True)
        with tf.control_dependencies([asserted(self.model, faults, excused if self.loss_scaled else None)]):
            return tf.identity(applied)

    def apply(self, updates, variables, applied):
        """The optimizer's update, which LossScaleOptimizer skips (halving its scale) unless `applied`.

        Returns the assertion that the values it left (parameters, optimizer
        state) are finite (`faults.result_checks`); a failed one first puts
        back the values from before the update. Not under a `tf.distribute`
        strategy.
        """
        if self.loss_scaled:
            # LossScaleOptimizer skips a step when it sees a non-finite
            # gradient; a step found non-finite elsewhere (a task's gradient
            # that the method weighted by 0) is shown to it as NaN.
            marker = tf.where(applied, 1.0, float("nan"))
            updates = [None if u is None else _times(u, marker) for u in updates]
        optimizer = self.model.optimizer
        if tf.distribute.has_strategy():
            # Under a strategy the optimizer assigns in a cross-replica context, where this step cannot put values back.
            optimizer.apply(updates, variables)
            return tf.no_op()
        before = [(v, tf.identity(v)) for v in list(optimizer.variables) + list(variables)]
        optimizer.apply(updates, variables)
        new_values = lambda variables: [tf.convert_to_tensor(v) for v in variables]
        checks = result_checks(
            self.model.multi_task_method,
            optimizer.variables,
            new_values(optimizer.variables),
            variables,
            new_values(variables),
        )
        return asserted(self.model, checks, put_back=before)

    def commit(self, new_state, applied):
        """Assigns a method's returned state where the step `applied`; keeps the old values otherwise.

        An unconditional `tf.where`, not a `tf.cond`: assignments inside a
        cond cannot be merged across replicas.
        """
        pairs = self.model.multi_task_state.updated(new_state)
        with tf.control_dependencies([applied]):
            return tf.group(
                [
                    variable.assign(tf.where(applied, tf.cast(value, variable.dtype), variable))
                    for variable, value in pairs
                ]
            )


def asserted(model, checks, excused=None, put_back=()):
    """One op that asserts `checks` in order (each finite and within its bound, unless `excused`), raising the first failure's message.

    Before it raises, it puts back what the step's forward passes assigned
    (batch statistics, random seeds: `remember_forward_state`) and the
    `(variable, value before)` pairs of `put_back`, so that a faulty step
    leaves nothing behind.
    """
    oks = []
    for i, check in enumerate(checks):
        ok = is_finite(check.value)
        if check.lower_bound is not None:
            ok = tf.logical_and(ok, tf.reduce_all(check.value >= tf.cast(check.lower_bound, check.value.dtype)))
        oks.append(ok if excused is None else tf.logical_or(excused[i], ok))
    dependency = _rewound(model, tf.reduce_all(tf.stack(oks)), put_back) if oks else tf.no_op()
    for check, ok in zip(checks, oks):
        with tf.control_dependencies([dependency]):
            if excused is None and not check.shown:
                dependency = _verbatim(check)
            else:
                dependency = tf.debugging.Assert(ok, [fault_message(check.message), *check.shown], summarize=8)
    return dependency


def _verbatim(check):
    """The assertion of a check with nothing to show, whose message comes out verbatim (`Assert` escapes its quotes)."""
    value = check.value.values if isinstance(check.value, tf.IndexedSlices) else check.value
    asserted = tf.debugging.check_numerics(value, fault_message(check.message))
    if check.lower_bound is not None:
        with tf.control_dependencies([asserted]):
            asserted = tf.debugging.assert_greater_equal(
                value, tf.cast(check.lower_bound, value.dtype), message=fault_message(check.message)
            )
    return asserted


# Per model, the values `remember_forward_state` read in the step being traced (a plain mapping: a
# Keras layer would track the variables in a list set as its attribute).
_FORWARD_STATE_AT_START = weakref.WeakKeyDictionary()


def remember_forward_state(model):
    """Reads, at the start of a step, the non-trainable variables its forward passes assign (not the method's state)."""
    state = {id(v) for v in model.multi_task_state.weights}
    start = [(v, tf.identity(v)) for v in model.non_trainable_variables if id(v) not in state]
    _FORWARD_STATE_AT_START[model] = (tf.compat.v1.get_default_graph(), start)


def _remembered_here(model):
    """The values `remember_forward_state` read in the graph being traced (or one it is nested in), else none.

    A `test_step` trace asserts its checks too, but reads no forward state: the
    values remembered by an earlier train-step trace belong to that trace's graph.
    """
    graph, start = _FORWARD_STATE_AT_START.get(model, (None, []))
    current = tf.compat.v1.get_default_graph()
    while current is not None and current is not graph:
        current = getattr(current, "outer_graph", None)
    return start if current is not None else []


def _rewound(model, ok, put_back=()):
    """Where not `ok`, assigns the forward-state variables (and `put_back`'s) their values from before."""
    forward = [variable.assign(tf.where(ok, variable, start)) for variable, start in _remembered_here(model)]
    if not put_back:
        return tf.group(forward)
    # Only when it failed: every parameter and optimizer variable (outside any strategy, see `StepGuard.apply`).
    with tf.control_dependencies(forward):
        return tf.cond(ok, tf.no_op, lambda: tf.group([variable.assign(value) for variable, value in put_back]))


def is_finite(tensor):
    """True where every entry of the tensor (or IndexedSlices) is finite."""
    return tf.reduce_all(tf.math.is_finite(tensor.values if isinstance(tensor, tf.IndexedSlices) else tensor))


def _on_every_replica(flag):
    """`flag` and-ed over the replicas: head gradients are per replica, the decision to skip must not be."""
    failures = sum_over_replicas(tf.cast(tf.logical_not(flag), tf.float32))
    return tf.equal(failures, 0.0)


def _times(gradient, marker):
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(
            gradient.values * tf.cast(marker, gradient.values.dtype), gradient.indices, gradient.dense_shape
        )
    return gradient * tf.cast(marker, gradient.dtype)
