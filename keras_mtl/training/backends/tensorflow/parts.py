"""The Jacobians of a batch's parts, for gradient methods that draw several batches per step (MoDo, SDMGrad).

A method with `batch_parts` = p > 1 gets the global batch cut into p
consecutive parts (`tasks.batch_parts`), and each part's (K, P) Jacobian
of the shared parameters: one forward pass and K backward passes per
part, global, unscaled and checked as the whole batch's Jacobian is
(`part_jacobians`). The whole batch's pass still gives the losses, the
logs and the heads' gradients.

The parts are the global batch's whatever the number of replicas: under a
`tf.distribute` strategy the global batch is the replicas' shards in
replica order (as `fit` splits a batch), each replica takes its share of
every part (possibly none of it), and the shares' Jacobians are summed
over the replicas, each task's loss on a share reweighted from the
share's mean to its part of the part's mean (`_share_weights`). So two
replicas train as one device does on the same batches.

The parts' passes leave no trace: they run in a `keras.StatelessScope`
that maps the non-trainable variables (random seeds, batch-normalisation
statistics) to the values the clean pass left, and drops their updates.
"""

import tensorflow as tf

from keras_mtl.training import tasks
from keras_mtl.training.backends.tensorflow.faults import gramian_check, task_gradient_checks
from keras_mtl.training.backends.tensorflow.perturb import perturbed, snapshot
from keras_mtl.training.backends.tensorflow.replicas import num_replicas, sum_over_replicas


def part_jacobians(model, x, y, sample_weight, shared_variables, checks):
    """The (K, P) Jacobian of each part of the global batch, in order; appends their checks to `checks`."""
    method = model.multi_task_method
    parts = method.batch_parts
    leaf = tf.nest.flatten(x)[0]
    offset, total = _place_in_global_batch(tf.shape(leaf)[0])
    after_clean_pass = snapshot(model)
    jacobians = []
    with tf.control_dependencies(_batch_size_assertions(method, leaf, total)):
        for i, (part_x, part_y, part_weight) in enumerate(tasks.batch_parts(x, y, sample_weight, parts, offset, total)):
            weights = _share_weights(model, part_x, total, parts, i)
            # Called at once, inside the scope: the lambda's late binding is harmless.
            share = lambda: perturbed(model, after_clean_pass, [], [], lambda _: _share_jacobian(model, part_x, part_y, part_weight, shared_variables, weights))
            shape = (len(model.task_names), sum(v.shape.num_elements() for v in shared_variables))
            jacobians.append(sum_over_replicas(_unless_empty(share, shape, part_x, total)) / model.optimizer.scale_loss(tf.constant(1.0)))
            where = f"the shared parameters on part {i + 1} of {parts} of the batch"
            checks += task_gradient_checks(jacobians[-1], model.task_names, where)
            checks.append(gramian_check(tf.matmul(jacobians[-1], jacobians[-1], transpose_b=True), where))
    return jacobians


def _share_jacobian(model, x, y, sample_weight, shared_variables, weights):
    """The scaled (K, P) Jacobian of the shared variables on this replica's share of a part (the whole part on one device)."""
    with tf.GradientTape(persistent=True) as tape:
        losses = tasks.task_losses(model, y, model(x, training=True), sample_weight)
        scaled = [model.optimizer.scale_loss(loss if weight is None else loss * weight) for loss, weight in zip(losses, weights)]
    rows = []
    for loss in scaled:
        gradients = tape.gradient(loss, shared_variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        rows.append(tf.concat([tf.reshape(tf.cast(g, tf.float32), [-1]) for g in gradients], axis=0))
    return tf.stack(rows)


def _unless_empty(share_jacobian, shape, part_x, total):
    """`share_jacobian()`, or zeros of `shape` for a replica with no sample of the part.

    The pass is skipped rather than run on no samples: a layer's batch
    statistics over none are NaN, and batch normalisation's backward pass
    would carry them into a gradient that should be 0.
    """
    if total is None:
        return share_jacobian()
    size = tf.shape(tf.nest.flatten(part_x)[0])[0]
    return tf.cond(size > 0, share_jacobian, lambda: tf.zeros(shape))


def _batch_size_assertions(method, leaf, total):
    """An error naming the method if the global batch has fewer samples than parts: the assertions every part waits for.

    Raised while the step is traced when the size is static (on one
    device), else by an assertion before any update.
    """
    parts = method.batch_parts
    if total is None and leaf.shape[0] is not None:
        if leaf.shape[0] < parts:
            raise ValueError(tasks.too_small_batch_message(method, leaf.shape[0]))
        return []
    size = tf.shape(leaf)[0] if total is None else total
    return [tf.debugging.Assert(size >= parts, [tasks.too_small_batch_message(method, "fewer"), "Samples in the batch:", size])]


def _place_in_global_batch(size):
    """(offset, total): where this replica's samples start in the global batch, and its size; (0, None) on one replica."""
    context = tf.distribute.get_replica_context()
    replicas = num_replicas()
    if context is None or replicas == 1:
        return 0, None
    replica = context.replica_id_in_sync_group
    sizes = sum_over_replicas(tf.one_hot(replica, replicas) * tf.cast(size, tf.float32))
    offset = tf.reduce_sum(tf.where(tf.range(replicas) < replica, sizes, 0.0))
    return tf.cast(offset, tf.int32), tf.cast(tf.reduce_sum(sizes), tf.int32)


def _share_weights(model, part_x, total, parts, i):
    """Per task, the factor from a replica's loss on its share of part i to the share's term in the part's loss.

    None on one replica (the share is the part). A Keras loss averaged
    over samples is the share's mean divided by the number of replicas:
    times `replicas · share / part` it becomes the share's sum over the
    part's size, and the replicas' terms add up to the part's mean. A
    loss reduced by "sum" is already its share's term.
    """
    if total is None:
        return [None] * len(model.task_names)
    part = (i + 1) * total // parts - i * total // parts
    share = tf.shape(tf.nest.flatten(part_x)[0])[0]
    mean_weight = tf.cast(num_replicas() * share, tf.float32) / tf.cast(part, tf.float32)
    return [None if getattr(loss, "reduction", None) == "sum" else mean_weight for loss in model._task_loss_fns]
