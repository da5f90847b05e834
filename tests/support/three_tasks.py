"""The three-task toy problem every backend-level test trains: data, model, and each method's arguments."""

import keras
import numpy as np

import keras_mtl

# Constructor arguments beyond the losses, for methods that need them.
EXTRA_ARGUMENTS = {
    "hydalearn": {"main_task": "a"},
    "gcossim": {"main_task": "a"},
    "ol_aux": {"main_task": "a"},
    "slgrad": {"main_task": "a"},
    "sam": {"method": "mean"},
    # Past the warm-up and the first window within a few epochs.
    "stch": {"warmup_epochs": 0},
    "softadapt": {"window": 2},
}
# In representation mode, where a method's arguments must allow it (DB-MTL's average is per parameter).
REPRESENTATION_ARGUMENTS = {"db_mtl": {"beta": 0.0}}


def task_losses():
    return {"a": "mse", "b": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "c": "mae"}


def method(method_id, representation=None):
    arguments = {
        **EXTRA_ARGUMENTS.get(method_id, {}),
        **(REPRESENTATION_ARGUMENTS.get(method_id, {}) if representation else {}),
    }
    return type(keras_mtl.get(method_id))(task_losses(), **arguments)


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = {
        "a": rng.normal(size=(n, 1)).astype("float32"),
        "b": rng.integers(0, 3, size=(n,)),
        "c": rng.normal(size=(n, 2)).astype("float32"),
    }
    return x, y


def model(representation=None, weights=None, **options):
    """A shared tanh trunk (L2-regularised) and three dense heads; `weights` (a list of arrays) sets them.

    `options` go to `MultiTaskModel` (e.g. `task_gradients`).
    """
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="tanh", name="trunk", kernel_regularizer=keras.regularizers.L2(1e-3))(
        inputs
    )
    outputs = {name: keras.layers.Dense(units, name=name)(hidden) for name, units in (("a", 1), ("b", 3), ("c", 2))}
    built = keras_mtl.MultiTaskModel(inputs, outputs, representation=representation, **options)
    if weights is not None:
        built.set_weights(weights)
    return built


def initial_weights(seed=0):
    """The same initial weights on every backend (Keras initialisers draw per backend)."""
    rng = np.random.default_rng(seed)
    shapes = [(6, 8), (8,), (8, 1), (1,), (8, 3), (3,), (8, 2), (2,)]
    return [(0.5 * rng.normal(size=shape)).astype("float32") for shape in shapes]


# Gradient methods that also run in representation mode (not HydaLearn, which looks ahead in parameters).
# The representation-mode specs every default test run covers across engines (the rest run with `-m slow`):
# a linear method, a Gramian solver of each kind, trainable state, and DB-MTL's β = 0 rule.
DEFAULT_REPRESENTATION_IDS = ("mean", "mgda", "upgrad", "gradnorm", "db_mtl")


def representation_specs(default):
    """`id@trunk` specs of the representation-mode ids in the default run (`default`) or of the others."""
    return [f"{i}@trunk" for i in representation_ids() if (i in DEFAULT_REPRESENTATION_IDS) == default]


def representation_ids():
    return [
        i
        for i in keras_mtl.available()
        if keras_mtl.get(i).train_step_kind == "task_gradients" and not method(i, "trunk").parameter_mode_only
    ]
