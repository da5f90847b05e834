"""The tasks' gradients of a recorded forward pass, and the (K, P) Jacobian of the shared variables made from them."""

import keras
import tensorflow as tf

from keras_mtl.training.backends.tensorflow.replicas import sum_over_replicas


def per_task_gradients(model, tape, scaled_losses, sources):
    """Per task, the gradients of its loss with respect to `sources`, None where the task does not reach one.

    K backward passes (`task_gradients="sequential"`), or one pass
    vectorised over the tasks (`"batched"`: `tape.jacobian` with pfor).
    """
    if model.task_gradients == "sequential":
        return [tape.gradient(loss, sources) for loss in scaled_losses]
    # Which sources each task reaches; these gradients are only traced: the
    # graph prunes them, as nothing reads their values.
    reached = [[gradient is not None for gradient in tape.gradient(loss, sources)] for loss in scaled_losses]
    # `tape.jacobian` reads a source's dtype as a tf.DType; a Keras 3.15 Variable's is a string: give it the tf.Variable.
    tf_sources = [source.value if isinstance(source, keras.Variable) else source for source in sources]
    with tape:  # the stack must be on the tape, which recorded the losses
        stacked = tf.stack(scaled_losses)
    jacobians = tape.jacobian(
        stacked, tf_sources, unconnected_gradients=tf.UnconnectedGradients.ZERO, experimental_use_pfor=True
    )
    return [
        [jacobian[k] if reached[k][i] else None for i, jacobian in enumerate(jacobians)]
        for k in range(len(scaled_losses))
    ]


def global_jacobian(per_task, variables, loss_scale):
    """The global, unscaled (K, P) Jacobian: each task's gradients (one per variable, None where it does not reach) flattened, summed over replicas."""
    jacobian = tf.stack(
        [tf.concat([flat(g, v) for g, v in zip(gradients, variables)], axis=0) for gradients in per_task]
    )
    return sum_over_replicas(jacobian) / loss_scale


def shared_jacobian(per_task, variables, shared, loss_scale):
    """The global, unscaled (K, P) Jacobian of the shared variables (indices `shared` in `variables`)."""
    return global_jacobian([[task[i] for i in shared] for task in per_task], [variables[i] for i in shared], loss_scale)


def flat(gradient, variable=None):
    if gradient is None:
        return tf.zeros([variable.shape.num_elements()], tf.float32)
    return tf.reshape(tf.cast(gradient, tf.float32), [-1])
