"""Evaluating a model at perturbed parameters without touching its variables.

SAM and look-ahead methods run extra forward passes at `θ + δ`. They run in
a `keras.StatelessScope` that maps each variable to the value the pass should
see: the parameters to `θ + δ`, and every non-trainable variable (random
seeds, batch-normalisation statistics, the method's state) to its value at
the start of the training step, so that dropout draws exactly the masks of
the clean pass. Nothing is assigned: the scope collects whatever the pass
would update and drops it, so the model is left exactly as the clean pass
left it, with no restoring to get wrong.
"""

import keras
import tensorflow as tf


def snapshot(model):
    """Copies of the model's non-trainable variables (seeds, statistics, state)."""
    return [tf.identity(v) for v in model.non_trainable_variables]


def perturbed(model, before_step, variables, deltas, compute):
    """`compute(values)` with `variables` read as `values = variables + deltas`.

    `before_step` is the `snapshot` taken at the start of the training step.
    `compute` gets the perturbed values, so it can differentiate with respect
    to them (`GradientTape.watch`).
    """
    values = [tf.convert_to_tensor(v) + tf.cast(d, v.dtype) for v, d in zip(variables, deltas)]
    mapping = list(zip(model.non_trainable_variables, before_step)) + list(zip(variables, values))
    with keras.StatelessScope(state_mapping=mapping):
        return compute(values)
