"""Driving a method's hooks directly, as the training engine does, on any backend."""

import keras

from keras_mtl.training.state import MultiTaskState


def state_values(method, task_names):
    """`{name: value}` of the variables `method` declares for `task_names`, at their initial values.

    Built on a real `MultiTaskState`, so the values are those a model's state
    starts from. The dict stands for the state the engine passes to a hook;
    a test applies a hook's result with `state.update(new_state)`.
    """
    layer = MultiTaskState()
    method.build_state(layer, list(task_names))
    # Tensors, not variables (TensorFlow's `variable.value` is the variable itself): hooks see values.
    return {variable.name: keras.ops.convert_to_tensor(variable) for variable in layer.weights}


def gradient(function, value):
    """The gradient of the scalar `function(value)` with respect to `value`, a tensor or a list of them, on the backend in use."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.grad(function)(value)
    if backend == "tensorflow":
        import tensorflow as tf

        value = tf.nest.map_structure(tf.convert_to_tensor, value)
        with tf.GradientTape() as tape:
            tape.watch(value)
            result = function(value)
        return tape.gradient(result, value)
    raise NotImplementedError(f"tests/support/state_values.py has no gradient for the {backend} backend.")
