"""Which variables each task's output reaches, read from a graph of the model traced without data (never run)."""

import keras
import tensorflow as tf

from keras_mtl.training import tasks


def output_dependencies(model):
    """Per output (a functional model's outputs are its tasks), the indices in `trainable_variables` of the variables its output reaches.

    The step's rule (`losses.shared_variable_indices`): a gradient that is
    not None. Traced from the functional model's input specifications in a
    `tf.function` that is never called, so nothing is computed or assigned;
    through the model's strategy, whose distributed variables give
    gradients only in a replica context (each replica finds the same).
    """
    variables = model.trainable_variables
    reached = {}

    def replica_trace(inputs):
        with tf.GradientTape(persistent=True) as tape:
            y_pred = model(inputs, training=True)
        for k, output in enumerate(tasks.per_task(y_pred, model.output_names, "the model's outputs", required=True)):
            reached[k] = {i for i, gradient in enumerate(tape.gradient(output, variables)) if gradient is not None}
        return tf.constant(0.0)

    specs = keras.tree.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), model.input)
    tf.function(
        lambda inputs: model.distribute_strategy.run(replica_trace, args=(inputs,)), autograph=False
    ).get_concrete_function(specs)
    return [reached[k] for k in range(len(reached))]
