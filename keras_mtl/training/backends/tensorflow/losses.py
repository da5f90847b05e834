"""The task losses of a TensorFlow step: per replica, globally, checked, and the logged total."""

import tensorflow as tf

from keras_mtl.training import tasks
from keras_mtl.training.backends.tensorflow.faults import asserted
from keras_mtl.training.backends.tensorflow.replicas import num_replicas, sum_over_replicas
from keras_mtl.training.steps.faults import loss_checks


def task_loss_vector(model, y, y_pred, sample_weight):
    """`tasks.task_losses` as one (K,) vector."""
    return tf.stack(tasks.task_losses(model, y, y_pred, sample_weight))


def regularization_loss(model):
    """The model's `add_loss` and regulariser terms, per replica, as stock `fit` adds them."""
    if not model.losses:
        return tf.constant(0.0)
    total = tf.add_n([tf.cast(loss, tf.float32) for loss in model.losses])
    return total / num_replicas()


def shared_variable_indices(model, per_task_gradients):
    """Indices in `trainable_variables` of the shared parameters.

    The variables of `shared_layers` if the model names them, else those
    that more than one task's loss reaches (`per_task_gradients[k][i]` is
    None where task k does not reach variable i). A named layer with a
    variable that one task alone reaches is a head: an error, raised while
    the first step is traced, before it runs.
    """
    if model.shared_layers is not None:
        index = {id(v): i for i, v in enumerate(model.trainable_variables)}
        shared = []
        for name in model.shared_layers:
            for variable in model.get_layer(name).trainable_variables:
                i = index[id(variable)]
                reaching = [
                    task for task, gradients in zip(model.task_names, per_task_gradients) if gradients[i] is not None
                ]
                if len(reaching) == 1:
                    raise ValueError(
                        f"shared_layers names {name!r}, but only task {reaching[0]!r} reaches its variable {variable.path!r}: "
                        "a layer that one task uses alone is that task's head. Leave it out of shared_layers."
                    )
                shared.append(i)
        return sorted(set(shared))
    reached = [sum(task[i] is not None for task in per_task_gradients) for i in range(len(model.trainable_variables))]
    return [i for i, count in enumerate(reached) if count >= 2]


def global_task_losses(model, losses, when="of the batch"):
    """The global batch's losses: summed over replicas, gradient stopped, checked.

    A non-finite loss, or one below the method's `loss_lower_bounds`
    (zero for a method that takes logs or ratios of the losses, loss
    weightings and gradient methods alike, also inside SAM), raises an
    error that names the task. Everything a step updates must wait for
    these losses (a control dependency).
    """
    global_losses = tf.stop_gradient(sum_over_replicas(losses))
    with tf.control_dependencies([asserted(model, loss_checks(model, global_losses, when))]):
        return tf.identity(global_losses)


def total_for_logs(model, global_losses, weights, regularization, method_regularization=0.0):
    """The global batch's total loss for the logs.

    The weighted total for a loss weighting (with its own regulariser), the
    plain sum for a gradient method, plus regularisation (`regularization`:
    this replica's, as `regularization_loss` gives it). Call it before the
    step is applied.
    """
    regularization = regularization * num_replicas()
    if model.multi_task_method.weighting() is None:
        return tf.reduce_sum(global_losses) + regularization
    return (
        tf.tensordot(tf.stop_gradient(weights), global_losses, 1)
        + tf.stop_gradient(method_regularization)
        + regularization
    )
