"""`MultiTaskModel`: a functional model that trains with a keras_mtl method."""

import keras

from keras_mtl.training.mixin import MultiTaskMixin


@keras.saving.register_keras_serializable(package="keras_mtl")
class MultiTaskModel(MultiTaskMixin, keras.Model):
    """A functional `keras.Model` whose named outputs are the tasks.

    Examples:
        ```python
        inputs = keras.Input((28, 28, 1))
        trunk = keras.layers.Dense(64, activation="relu")(keras.layers.Flatten()(inputs))
        model = keras_mtl.MultiTaskModel(inputs, {
            "left": keras.layers.Dense(10, name="left")(trunk),
            "right": keras.layers.Dense(10, name="right")(trunk),
        })
        model.compile("adam", loss=keras_mtl.get("uw_so", keras.losses.SparseCategoricalCrossentropy(from_logits=True)))
        ```
    """
