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
