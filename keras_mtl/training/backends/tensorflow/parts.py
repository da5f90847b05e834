"""The Jacobians of a batch's parts, for gradient methods that draw several batches per step (MoDo, SDMGrad).

A method with `batch_parts` = p > 1 gets the batch dealt into p interleaved
parts (`tasks.batch_parts`), and each part's (K, P) Jacobian of the shared
parameters: one forward pass and K backward passes per part, global,
unscaled and checked as the whole batch's Jacobian is (`part_jacobians`).
The whole batch's pass still gives the losses, the logs and the heads'
gradients.

Under a `tf.distribute` strategy each replica deals its own shard and the
parts' Jacobians are summed over the replicas: each replica's mean loss on
its share of a part is divided by the number of replicas (as every Keras
loss is), so the sum is the global part's Jacobian exactly when the shards
are equal and their size a multiple of p (`batch_parts` explains why);
otherwise (a last, smaller batch) the shares are weighted equally rather
than by their sizes.

The parts' passes leave no trace: they run in a `keras.StatelessScope`
that maps the non-trainable variables (random seeds, batch-normalisation
statistics) to the values the clean pass left, and drops their updates.
"""

import tensorflow as tf

from keras_mtl.training import tasks
from keras_mtl.training.backends.tensorflow.jacobians import global_jacobian, per_task_gradients
from keras_mtl.training.backends.tensorflow.perturb import perturbed, snapshot
from keras_mtl.training.steps.faults import gramian_check, task_gradient_checks


def part_jacobians(model, x, y, sample_weight, shared_variables, checks):
    """The (K, P) Jacobian of each part of the batch, in order; appends their checks to `checks`."""
    method = model.multi_task_method
    parts = method.batch_parts
    leaf = tf.nest.flatten(x)[0]
    after_clean_pass = snapshot(model)
    jacobians = []
    with tf.control_dependencies(_batch_size_assertions(method, leaf)):
        for i, part in enumerate(tasks.batch_parts(x, y, sample_weight, parts)):
            jacobians.append(
                perturbed(
                    model, after_clean_pass, [], [], lambda _, part=part: _jacobian(model, *part, shared_variables)
                )
            )
            where = f"the shared parameters on part {i + 1} of {parts} of the batch"
            checks += task_gradient_checks(jacobians[-1], model.task_names, where)
            checks.append(gramian_check(tf.matmul(jacobians[-1], jacobians[-1], transpose_b=True), where))
    return jacobians


def _jacobian(model, x, y, sample_weight, shared_variables):
    """The global, unscaled (K, P) Jacobian of the shared variables on one part (this replica's share of it, summed over replicas)."""
    with tf.GradientTape(persistent=True) as tape:
        losses = [
            model.optimizer.scale_loss(loss)
            for loss in tasks.task_losses(model, y, model(x, training=True), sample_weight)
        ]
    per_task = per_task_gradients(model, tape, losses, shared_variables)
    return global_jacobian(per_task, shared_variables, model.optimizer.scale_loss(tf.constant(1.0)))


def _batch_size_assertions(method, leaf):
    """An error naming the method if this replica's batch has fewer samples than parts: the assertions every part waits for.

    Raised while the step is traced when the size is static, else by an
    assertion before any update.
    """
    parts = method.batch_parts
    if leaf.shape[0] is not None:
        if leaf.shape[0] < parts:
            raise ValueError(tasks.too_small_batch_message(method, leaf.shape[0]))
        return []
    size = tf.shape(leaf)[0]
    return [
        tf.debugging.Assert(
            size >= parts, [tasks.too_small_batch_message(method, "fewer"), "Samples in the batch:", size]
        )
    ]
