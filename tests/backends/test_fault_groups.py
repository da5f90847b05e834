"""A fault inside a `steps_per_execution` group: the same error, and the model as it was before the faulty step.

Keras' JAX trainer returns only a group's last logs, and a compiled JAX step cannot raise: the fault is
carried in the step's state, every later step of the group applies nothing, and `fit` raises once it
reads it. TensorFlow raises inside the faulty step. On both, the steps before it stay applied and the
faulty one and every later one change nothing: weights, batch statistics, optimizer variables and
iterations, the method's state. Each case is compared with a run over the batches before the fault.
"""

import keras
import numpy as np
import pytest

import keras_mtl

BATCH = 16
BATCHES = 8


def compiled(method_id, steps_per_execution):
    """A shared trunk with batch normalisation (statistics a faulty step must not move) and two heads."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(8, name="trunk")(inputs)
    hidden = keras.layers.BatchNormalization(name="statistics")(hidden)
    hidden = keras.layers.Activation("tanh")(hidden)
    outputs = {"a": keras.layers.Dense(1, name="a")(hidden), "b": keras.layers.Dense(1, name="b")(hidden)}
    model = keras_mtl.MultiTaskModel(inputs, outputs)  # the same initial weights in every call (the seed)
    method = type(keras_mtl.get(method_id))({"a": "mse", "b": "mse"})
    model.compile(keras.optimizers.Adam(0.01), loss=method, steps_per_execution=steps_per_execution)
    return model


def data(n):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 5)).astype("float32")
    return x, {"a": rng.normal(size=(n, 1)).astype("float32"), "b": rng.normal(size=(n, 1)).astype("float32")}


def everything(model):
    """Every value a step could change: weights (with batch statistics and the method's state) and the optimizer's."""
    variables = model.weights + model.multi_task_state.weights + model.optimizer.variables
    return [(v.path, keras.ops.convert_to_numpy(v)) for v in variables]


@pytest.mark.parametrize("method_id", ["uw", "mgda"])
@pytest.mark.parametrize(
    "steps_per_execution, faulty",
    [(1, 4), (1, 7), (4, 4), (4, 5), (4, 7)],
    ids=["1-first", "1-last", "4-first", "4-middle", "4-last"],
)
def test_a_fault_in_a_group_raises_and_keeps_the_values_before_it(method_id, steps_per_execution, faulty):
    if steps_per_execution > 1 and keras.backend.backend() == "torch":
        pytest.skip("Keras' torch trainer runs one step per call (test_torch_one_device.py: the refusal)")
    x, y = data(BATCH * BATCHES)
    x[BATCH * faulty + 3, 2] = np.inf
    model = compiled(method_id, steps_per_execution)
    with pytest.raises(
        Exception, match=r"the loss of task \\?'a\\?' \(of the batch\) is not finite.*the step was not applied"
    ):
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)

    reference = compiled(method_id, steps_per_execution)
    reference.fit(
        x[: BATCH * faulty],
        {k: v[: BATCH * faulty] for k, v in y.items()},
        batch_size=BATCH,
        epochs=1,
        shuffle=False,
        verbose=0,
    )
    assert int(model.optimizer.iterations) == faulty
    after, expected = everything(model), everything(reference)
    assert len(after) == len(expected)
    for (path, value), (_, reference_value) in zip(after, expected):
        assert np.all(np.isfinite(value)), path
        np.testing.assert_array_equal(value, reference_value, err_msg=path)

    # The fault was raised and cleared: the model trains on, from where it stood.
    clean_x, clean_y = data(BATCH * 2)
    model.fit(clean_x, clean_y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    assert int(model.optimizer.iterations) == faulty + 2


@pytest.mark.parametrize("method_id", ["uw", "mgda"])
def test_train_on_batch_raises_a_fault_and_changes_nothing(method_id):
    x, y = data(BATCH)
    model = compiled(method_id, 1)
    model.train_on_batch(x, y)
    before = everything(model)
    x[3, 2] = np.inf
    with pytest.raises(Exception, match=r"the loss of task \\?'a\\?' \(of the batch\) is not finite"):
        model.train_on_batch(x, y)
    for (path, value), (_, value_before) in zip(everything(model), before):
        np.testing.assert_array_equal(value, value_before, err_msg=path)
    x[3, 2] = 0.0
    model.train_on_batch(x, y)
    assert int(model.optimizer.iterations) == 2


def test_a_step_that_would_overflow_the_optimizer_state_is_refused_and_named():
    """Finite losses, weights, weighted losses and gradients, but Adam squares a 1e30-sized gradient into inf."""
    x, y = data(BATCH * 2)
    model = keras_mtl.MultiTaskModel(*_two_heads())
    model.compile(
        keras.optimizers.Adam(0.01), loss=keras_mtl.Scalarization({"a": "mse", "b": "mse"}, weights=[1e30, 1.0])
    )
    model.build((None, 5))
    model.optimizer.build(model.trainable_variables)
    before = everything(model)
    with pytest.raises(
        Exception,
        match=r"the optimizer's '[^']*velocity[^']*' non-finite although every gradient it got is finite.*Scalarization",
    ):
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    for (path, value), (_, value_before) in zip(everything(model), before):
        np.testing.assert_array_equal(value, value_before, err_msg=path)


def _two_heads():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(8, activation="tanh", name="trunk")(inputs)
    return inputs, {"a": keras.layers.Dense(1, name="a")(hidden), "b": keras.layers.Dense(1, name="b")(hidden)}
