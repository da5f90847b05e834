"""The one registry of multi-task methods: string id -> class.

Every loss weighting and gradient method registers here, so that
`keras_mtl.get("uw_so", losses)` and `keras_mtl.get("pcgrad", losses)` are the
one place where a user picks a method, and saved models find their class again.
"""

import keras

_METHODS = {}


def register(method_id):
    """Class decorator: registers a method under `method_id` and with Keras.

    The Keras registration (package "keras_mtl") is what lets `.keras` files
    that contain the method load without `custom_objects`.

    Args:
        method_id: the string id, unique among the registered methods.

    Returns:
        The class decorator; the class gets `method_id` as an attribute.

    Examples:
        ```python
        @keras_mtl.registry.register("inverse_ema")
        class InverseEMA(keras_mtl.LossWeighting):
            ...
        ```
    """

    def decorator(cls):
        if method_id in _METHODS:
            raise ValueError(f"Method id {method_id!r} is already registered.")
        cls.method_id = method_id
        _METHODS[method_id] = cls
        return keras.saving.register_keras_serializable(package="keras_mtl")(cls)

    return decorator


def available():
    """The registered method ids, sorted.

    Returns:
        A sorted list of strings, e.g. `["aligned_mtl", "auto_lambda", ...]`.
    """
    return sorted(_METHODS)


def get(identifier, losses=None):
    """Returns a multi-task method from an id, a config dict or an instance.

    Args:
        identifier: a registered id such as `"uw_so"`, a config dict as
            produced by `keras.saving.serialize_keras_object`, or a method
            instance (returned as it is).
        losses: the per-task losses for a method made from an id: a dict
            `{task: loss}` (any identifier `keras.losses.get` accepts) or one
            loss used for every task. Not allowed with an instance or a dict,
            which carry their own.

    Examples:
        >>> method = keras_mtl.get("uw_so", {"digit": "sparse_categorical_crossentropy",
        ...                                  "size": "mse"})
    """
    from keras_mtl.methods import MultiTaskLoss

    if isinstance(identifier, MultiTaskLoss):
        if losses is not None:
            raise ValueError("`losses` cannot be given with a method instance; pass them to its constructor.")
        return identifier
    if isinstance(identifier, dict):
        if losses is not None:
            raise ValueError("`losses` cannot be given with a config dict; put them in its config.")
        method = keras.saving.deserialize_keras_object(identifier)
        if not isinstance(method, MultiTaskLoss):
            raise ValueError(f"The config {identifier!r} does not describe a keras_mtl method.")
        return method
    if isinstance(identifier, str):
        if identifier not in _METHODS:
            raise ValueError(f"Unknown multi-task method {identifier!r}. Known ids: {', '.join(available())}.")
        return _METHODS[identifier](losses)
    raise TypeError(f"Cannot make a multi-task method from {identifier!r} (a {type(identifier).__name__}).")
