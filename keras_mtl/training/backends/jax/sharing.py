"""Which variables each task's output depends on, read from a jaxpr of the model traced without data."""

import jax
import keras

from keras_mtl.training import tasks
from keras_mtl.training.backends.jax.steps import input_dependencies
from keras_mtl.training.backends.jax.values import forward


def output_dependencies(model):
    """Per output (a functional model's outputs are its tasks), the indices in `trainable_variables` of the variables its output depends on.

    The step's rule (`steps.input_dependencies`), on a jaxpr traced from the
    functional model's input specifications (unknown sizes taken as 1):
    abstract values only, nothing is computed.
    """
    inputs = keras.tree.map_structure(
        lambda t: jax.ShapeDtypeStruct(tuple(1 if size is None else size for size in t.shape), t.dtype), model.input
    )
    non_trainable = [variable.value for variable in model.non_trainable_variables]

    def outputs(argument):
        trainable, x = argument
        y_pred, _, _ = forward(model, model, trainable, non_trainable, x)
        return tuple(tasks.per_task(y_pred, model.output_names, "the model's outputs", required=True))

    # The leaves of (trainable, inputs): the trainable values come first, in order.
    return input_dependencies(outputs, ([variable.value for variable in model.trainable_variables], inputs))
