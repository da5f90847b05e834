"""Shared builders for the toy two-task problem used by the loss-weighting tests.

Task "a" is a 1-d regression (mse), task "b" a 3-class classification
(sparse categorical cross-entropy on logits). Everything is tiny so that a
full `fit` takes well under a second on 2 CPU cores.
"""

import os
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_mtl

# The scripts that tests run in subprocesses import this checkout's keras_mtl,
# not whichever copy is installed (an editable install may point elsewhere).
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(Path(__file__).parents[1])] + [p for p in [os.environ.get("PYTHONPATH")] if p]
)

ALL_WEIGHTINGS = (
    "ew",
    "scalarization",
    "uw",
    "uw_o",
    "uw_so",
    "dwa",
    "rlw",
    "gls",
    "imtl_l",
    "slaw",
    "famo",
    "stch",
    "si",
    "softadapt",
    "uw_log1p",
)
INPUT_DIM = 6


def default_subset(ids, keep, guarantee=()):
    """`ids` as test parameters, those not in `keep` marked slow: the default run covers `keep`, `-m slow` every id.

    For per-method tests whose every id also trains, saves and continues in
    tests/backends/test_every_method.py on both backends. Ids in `guarantee`
    are marked `guarantee` too (see `slow_case`).
    """
    return [i if i in keep else slow_case(i, guarantee=i in guarantee) for i in ids]


def slow_case(value, guarantee=False):
    """A slow test parameter; `guarantee=True` makes it the representative of a guarantee the default run leaves out.

    CI runs `pytest -m guarantee` besides the default run, so that every
    guarantee is checked at least once per run for a fraction of `-m slow`'s time.
    """
    return pytest.param(value, marks=[pytest.mark.slow, pytest.mark.guarantee] if guarantee else [pytest.mark.slow])


def selected_parameters(request, function, argument):
    """The `argument` values of this session's selected tests named `function`, for a module fixture that computes only those."""
    return [
        item.callspec.params[argument]
        for item in request.session.items
        if getattr(item, "originalname", None) == function
    ]


def toy_losses():
    """A fresh dict of per-task losses (fresh objects, so no model shares them)."""
    return {"a": "mse", "b": keras.losses.SparseCategoricalCrossentropy(from_logits=True)}


def toy_data(n=40, seed=0, input_dim=INPUT_DIM):
    """(x, {"a": (n, 1) float targets, "b": (n,) int labels})."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, input_dim)).astype("float32")
    y = {"a": (x[:, :1] * 2.0 + 0.1 * rng.normal(size=(n, 1))).astype("float32"), "b": rng.integers(0, 3, size=(n,))}
    return x, y


def _layers(seed, l2, input_dim):
    keras.utils.set_random_seed(seed)
    regularizer = keras.regularizers.L2(l2) if l2 else None
    inputs = keras.Input((input_dim,), name="x")
    hidden = keras.layers.Dense(8, activation="tanh", name="trunk", kernel_regularizer=regularizer)(inputs)
    outputs = {"a": keras.layers.Dense(1, name="a")(hidden), "b": keras.layers.Dense(3, name="b")(hidden)}
    return inputs, outputs


def toy_model(seed=1, l2=0.0, input_dim=INPUT_DIM):
    """A `keras_mtl.MultiTaskModel` with a shared Dense trunk and heads "a" and "b"; seeded weights."""
    inputs, outputs = _layers(seed, l2, input_dim)
    return keras_mtl.MultiTaskModel(inputs, outputs)


def one_task_model(seed=1, input_dim=INPUT_DIM):
    """The toy network with head "a" only."""
    inputs, outputs = _layers(seed, 0.0, input_dim)
    return keras_mtl.MultiTaskModel(inputs, {"a": outputs["a"]})


def plain_toy_model(seed=1, l2=0.0, input_dim=INPUT_DIM):
    """The same network (same initial weights for the same seed) as a stock `keras.Model`."""
    inputs, outputs = _layers(seed, l2, input_dim)
    return keras.Model(inputs, outputs)


@keras.saving.register_keras_serializable(package="keras_mtl_tests")
class SubclassedToyModel(keras_mtl.MultiTaskMixin, keras.Model):
    """The toy network written as a subclassed (non-functional) model with the mixin."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.trunk = keras.layers.Dense(8, activation="tanh")
        self.head_a = keras.layers.Dense(1)
        self.head_b = keras.layers.Dense(3)

    def call(self, inputs):
        hidden = self.trunk(inputs)
        return {"a": self.head_a(hidden), "b": self.head_b(hidden)}


def method_kwargs(method_id):
    """Constructor arguments that make a method deterministic/valid on the toy tasks."""
    # STCH without warm-up and SoftAdapt on a 2-epoch window reach their adaptive phase within the short fits.
    return {
        "rlw": {"seed": 3},
        "scalarization": {"weights": {"a": 0.3, "b": 0.7}},
        "stch": {"warmup_epochs": 0},
        "softadapt": {"window": 2},
    }.get(method_id, {})


def make_method(method_id, losses=None, **kwargs):
    """A method from the registry's class, with `method_kwargs` defaults."""
    cls = keras_mtl.get(method_id, toy_losses()).__class__
    return cls(toy_losses() if losses is None else losses, **{**method_kwargs(method_id), **kwargs})


def compiled_toy_model(method_id, learning_rate=0.05, seed=1, **compile_kwargs):
    model = toy_model(seed=seed)
    model.compile(keras.optimizers.SGD(learning_rate), loss=make_method(method_id), **compile_kwargs)
    return model


def max_abs_difference(weights_a, weights_b):
    return max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(weights_a, weights_b))


@pytest.fixture
def toy():
    """(x, y) of the toy problem."""
    return toy_data()


@pytest.fixture
def mixed_precision():
    """Switches the global policy to mixed_float16 for one test and restores it after."""
    previous = keras.config.dtype_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
