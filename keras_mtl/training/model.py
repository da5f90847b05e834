"""`MultiTaskModel`: a functional model that trains with a keras_mtl method."""

import keras

from keras_mtl.training.mixin import MultiTaskMixin


@keras.saving.register_keras_serializable(package="keras_mtl")
class MultiTaskModel(MultiTaskMixin, keras.Model):
    """A functional `keras.Model` whose named outputs are the tasks.

    Args:
        *args: `keras.Model`'s: the inputs, and the outputs as a dict `{task: tensor}`.
        representation: the layer whose output the heads share (representation mode), default None;
            see `MultiTaskMixin`.
        shared_layers: the layers whose variables are shared, default None (found from the model);
            see `MultiTaskMixin`.
        task_gradients: `"sequential"` (default) or `"batched"`; see `MultiTaskMixin`.
        **kwargs: `keras.Model`'s (`name`, ...).

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
