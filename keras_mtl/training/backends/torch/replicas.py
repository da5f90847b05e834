"""One device: Keras 3.15 offers no distribution for PyTorch, and a training step here sums over no replicas."""

import keras


def check_one_device():
    """Refuses a `keras.distribution` set on PyTorch, where Keras would not distribute the step."""
    distribution = keras.distribution.distribution()
    if distribution is not None:
        raise ValueError(
            f"keras_mtl trains on one device on PyTorch: Keras 3.15 has no distribution for the torch backend, and "
            f"the step would ignore {type(distribution).__name__} (set with keras.distribution.set_distribution). "
            "Train on several devices with KERAS_BACKEND=jax (keras.distribution.DataParallel) or "
            "KERAS_BACKEND=tensorflow (a tf.distribute strategy), or unset the distribution."
        )
