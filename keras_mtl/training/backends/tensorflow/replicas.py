"""The one cross-replica reduction the training steps need."""

import tensorflow as tf


def sum_over_replicas(value):
    """Sums `value` over the replicas in sync (identity on one device)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def num_replicas():
    return tf.distribute.get_strategy().num_replicas_in_sync


def on_first_replica(value):
    """`value` on the first replica, 0 on the others: a count that a metric sums over the replicas."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return tf.where(tf.equal(context.replica_id_in_sync_group, 0), value, tf.zeros_like(value))
