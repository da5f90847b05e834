"""The gradient-method train step: modes, shared parameters, GradNorm, precision, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mtl
from keras_mtl.training import tasks
from keras_mtl.training.backends.tensorflow.losses import shared_variable_indices

LOSSES = {"a": "mse", "b": keras.losses.SparseCategoricalCrossentropy(from_logits=True)}


def _data(n=64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 8)).astype("float32")
    return x, {"a": rng.normal(size=(n, 1)).astype("float32"), "b": rng.integers(0, 3, size=(n,))}


def _model(representation=None, shared_layers=None, l2=1e-3):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, activation="tanh", name="trunk", kernel_regularizer=keras.regularizers.L2(l2))(
        inputs
    )
    outputs = {"a": keras.layers.Dense(1, name="a")(hidden), "b": keras.layers.Dense(3, name="b")(hidden)}
    return keras_mtl.MultiTaskModel(inputs, outputs, representation=representation, shared_layers=shared_layers)


def _train(method, epochs=2, **model_kwargs):
    model = _model(**model_kwargs)
    model.compile(keras.optimizers.SGD(0.1), loss=method)
    x, y = _data()
    history = model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)
    return model, history


def _max_difference(model_a, model_b):
    return max(float(np.max(np.abs(a - b))) for a, b in zip(model_a.get_weights(), model_b.get_weights()))


@pytest.mark.parametrize("representation", [None, "trunk"])
def test_shared_part_takes_the_combination_and_heads_their_own_gradient(representation):
    # One full-batch SGD step. `mean` moves the trunk by (1/K) Σ g_k, as
    # scalarization with weights 1/K does; each head takes its own task's
    # whole gradient, as equal weighting does.
    def one_step(method, **kwargs):
        model = _model(**kwargs)
        model.compile(keras.optimizers.SGD(0.1), loss=method)
        model.fit(*_data(), batch_size=64, epochs=1, verbose=0)
        return {name: model.get_layer(name).get_weights() for name in ("trunk", "a", "b")}

    mean = one_step(keras_mtl.get("mean", LOSSES), representation=representation)
    halves = one_step(keras_mtl.Scalarization(LOSSES, weights=[0.5, 0.5]))
    equal = one_step(keras_mtl.get("ew", LOSSES))
    # The trunk's L2 regulariser is added once, whole, in all three.
    for got, want in zip(mean["trunk"], halves["trunk"]):
        np.testing.assert_allclose(got, want, atol=1e-6)
    for head in ("a", "b"):
        for got, want in zip(mean[head], equal[head]):
            np.testing.assert_allclose(got, want, atol=1e-6)


def test_representation_mode_matches_parameter_mode_for_a_linear_method():
    parameters, _ = _train(keras_mtl.get("mean", LOSSES))
    representation, _ = _train(keras_mtl.get("mean", LOSSES), representation="trunk")
    assert _max_difference(parameters, representation) < 1e-6


def test_shared_variables_are_found_from_the_model():
    model = _model()
    model.compile("sgd", loss=keras_mtl.get("mean", LOSSES))
    x, y = _data(8)
    with tf.GradientTape(persistent=True) as tape:
        losses = tasks.task_losses(model, y, model(x, training=True), None)
    per_task = [tape.gradient(loss, model.trainable_variables) for loss in losses]
    shared = {model.trainable_variables[i].path for i in shared_variable_indices(model, per_task)}
    assert shared == {"trunk/kernel", "trunk/bias"}


def test_shared_layers_override():
    # As if both tasks reached every variable: detection would share them all, the names only the trunk's.
    model = _model(shared_layers=["trunk"])
    model.compile("sgd", loss=keras_mtl.get("mean", LOSSES))
    reached = [[True] * len(model.trainable_variables)] * 2
    shared = {model.trainable_variables[i].path for i in shared_variable_indices(model, reached)}
    assert shared == {"trunk/kernel", "trunk/bias"}


def test_a_model_without_shared_parameters_is_refused():
    inputs = keras.Input((8,))
    model = keras_mtl.MultiTaskModel(
        inputs, {"a": keras.layers.Dense(1, name="a")(inputs), "b": keras.layers.Dense(3, name="b")(inputs)}
    )
    model.compile("sgd", loss=keras_mtl.get("mean", LOSSES))
    with pytest.raises(ValueError, match="No parameter is shared"):
        model.fit(*_data(16), verbose=0)


def test_logs_carry_task_weights_and_evaluate_leaves_them_out():
    model, history = _train(keras_mtl.get("mean", LOSSES))
    assert history.history["a_weight"] == pytest.approx([0.5, 0.5])
    logs = model.evaluate(*_data(), verbose=0, return_dict=True)
    assert "a_weight" not in logs and logs["a_loss"] > 0 and logs["b_loss"] > 0


@pytest.mark.parametrize("method_id", ["mean", "mgda"])
def test_gradient_clipping_on_the_optimizer_applies_to_the_combined_update(method_id):
    # global_clipnorm: the whole step (shared direction, heads, regulariser)
    # has the clip norm when the raw update is longer, as in stock Keras.
    model = _model()
    before = model.get_weights()
    model.compile(keras.optimizers.SGD(1.0, global_clipnorm=0.01), loss=keras_mtl.get(method_id, LOSSES))
    model.fit(*_data(), batch_size=64, epochs=1, verbose=0)
    step = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(model.get_weights(), before)))
    assert step == pytest.approx(0.01, rel=1e-4)


def test_mixed_precision_trains_with_loss_scaling():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model, history = _train(keras_mtl.get("gradnorm", LOSSES))
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert np.all(np.isfinite(history.history["loss"]))
        # GradNorm's weights stay a valid weighting despite the scaled gradients.
        assert np.sum(keras.ops.convert_to_numpy(model.multi_task_state["gradnorm_weights"])) == pytest.approx(
            2.0, abs=1e-5
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("method_id", ["gradnorm", "nash_mtl"])
def test_jit_compile(method_id):
    # Nash-MTL's solver is XLA-compiled on its own too: nested in an XLA step it must give the same step.
    def train(jit_compile):
        model = _model()
        model.compile(keras.optimizers.SGD(0.1), loss=keras_mtl.get(method_id, LOSSES), jit_compile=jit_compile)
        history = model.fit(*_data(), batch_size=16, epochs=1, shuffle=False, verbose=0)
        return model, history

    compiled, history = train(True)
    assert compiled.jit_compile and np.isfinite(history.history["loss"][0])
    assert _max_difference(compiled, train(False)[0]) < 1e-4


def test_save_and_load_keeps_method_and_state(tmp_path):
    model, _ = _train(keras_mtl.get("gradnorm", LOSSES), representation="trunk")
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.representation == "trunk" and isinstance(loaded.multi_task_method, keras_mtl.GradNorm)
    np.testing.assert_array_equal(
        loaded.multi_task_state["gradnorm_weights"], model.multi_task_state["gradnorm_weights"]
    )
    assert _max_difference(model, loaded) == 0
    loaded.fit(*_data(), batch_size=16, epochs=1, verbose=0)


def test_gradnorm_balances_gradient_norms():
    # Task a's loss is 100× task b's: GradNorm must move weight to b.
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, activation="tanh", name="trunk")(inputs)
    model = keras_mtl.MultiTaskModel(
        inputs, {"a": keras.layers.Dense(1, name="a")(hidden), "b": keras.layers.Dense(1, name="b")(hidden)}
    )
    model.compile(keras.optimizers.SGD(0.01), loss=keras_mtl.GradNorm({"a": "mse", "b": "mse"}))
    x, _ = _data(256)
    y = {"a": 10.0 * np.sin(x[:, :1]), "b": 0.1 * np.cos(x[:, 1:2])}
    history = model.fit(x, y, batch_size=32, epochs=3, verbose=0)
    assert history.history["b_weight"][-1] > history.history["a_weight"][-1]
