"""SAM for multi-task learning: the rule, exact restoration, flat minima, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mtl
from keras_mtl.flat.perturbation import sharpness_perturbation

LOSSES = {"a": "mse", "b": "mse"}


def _data(n=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, {"a": np.sin(x[:, :1]), "b": np.cos(x[:, 1:2])}


def _model(batch_norm=False, dropout=0.0):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, name="trunk")(inputs)
    if batch_norm:
        hidden = keras.layers.BatchNormalization(name="norm")(hidden)
    hidden = keras.layers.Activation("tanh")(hidden)
    if dropout:
        hidden = keras.layers.Dropout(dropout)(hidden)
    return keras_mtl.MultiTaskModel(
        inputs, {"a": keras.layers.Dense(1, name="a")(hidden), "b": keras.layers.Dense(1, name="b")(hidden)}
    )


def _one_step(method, learning_rate=0.1, **model_kwargs):
    model = _model(**model_kwargs)
    model.compile(keras.optimizers.SGD(learning_rate), loss=method)
    x, y = _data()
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    return model


def test_perturbation_by_hand():
    # g = (3, 4), ‖g‖ = 5: ε = ρ g / ‖g‖ = 0.1·(0.6, 0.8).
    [epsilon] = sharpness_perturbation([tf.constant([3.0, 4.0])], [tf.constant([1.0, -2.0])], 0.1, adaptive=False)
    np.testing.assert_allclose(epsilon, [0.06, 0.08], rtol=1e-6)
    # ASAM: T = |θ| = (1, 2); T g = (3, 8), ‖T g‖ = √73; ε = ρ T² g / ‖T g‖ = 0.1·(3, 16)/√73.
    [epsilon] = sharpness_perturbation([tf.constant([3.0, 4.0])], [tf.constant([1.0, -2.0])], 0.1, adaptive=True)
    np.testing.assert_allclose(epsilon, 0.1 * np.array([3.0, 16.0]) / np.sqrt(73.0), rtol=1e-6)


def test_plain_sam_step_matches_a_hand_written_one():
    model = _model()
    x, y = _data()
    params = model.trainable_variables
    start = [v.numpy() for v in params]

    def total():
        pred = model(x, training=True)
        return sum(tf.reduce_mean(tf.square(y[k] - pred[k])) for k in ("a", "b"))

    with tf.GradientTape() as tape:
        loss = total()
    gradients = tape.gradient(loss, params)
    norm = np.sqrt(sum(np.sum(g.numpy() ** 2) for g in gradients))
    for v, g in zip(params, gradients):
        v.assign_add(0.05 * g / norm)
    with tf.GradientTape() as tape:
        loss = total()
    sam_gradients = tape.gradient(loss, params)
    expected = [s - 0.1 * g.numpy() for s, g in zip(start, sam_gradients)]

    trained = _one_step(keras_mtl.SAM(LOSSES, method="ew", rho=0.05))
    for got, want in zip(trained.get_weights(), expected):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_fmtl_with_a_linear_aggregator_equals_the_naive_variant():
    # mean({g}) + mean({g^SAM − g}) = mean({g^SAM}) for the linear `mean`.
    fmtl = _one_step(keras_mtl.SAM(LOSSES, method="mean", rho=0.2))
    naive = _one_step(keras_mtl.SAM(LOSSES, method="mean", rho=0.2, variant="naive"))
    plain = _one_step(keras_mtl.get("mean", LOSSES))
    for a, b in zip(fmtl.get_weights(), naive.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert max(np.max(np.abs(a - b)) for a, b in zip(fmtl.get_weights(), plain.get_weights())) > 1e-4


def test_fmtl_step_with_mgda_matches_a_hand_written_one():
    # F-MTL: per task, ε_i perturbs the trunk and task i's head (each part
    # normalised to ρ on its own); h_i = g_i^SAM − g_i on the trunk; the trunk
    # moves by A({g_i}) + A({h_i}) with A = MGDA, a head by its own g_i^SAM.
    rho, learning_rate = 0.3, 0.1
    model = _model()
    x, y = _data()
    trunk = model.get_layer("trunk").trainable_variables
    start = [v.numpy() for v in model.trainable_variables]

    def task_gradients(task):
        head = model.get_layer(task).trainable_variables
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(y[task] - model(x, training=True)[task]))
        return tape.gradient(loss, trunk + head), head

    def flat(tensors):
        return np.concatenate([np.ravel(t) for t in tensors])

    def mgda_direction(rows):
        jacobian = np.stack(rows)
        weights = keras_mtl.aggregators.mgda_weights(tf.constant(jacobian @ jacobian.T)).numpy()
        return weights @ jacobian

    clean, perturbed, expected_heads = [], [], {}
    for task in ("a", "b"):
        gradients, head = task_gradients(task)
        clean.append(flat(gradients[: len(trunk)]))
        parts = [(trunk, gradients[: len(trunk)]), (head, gradients[len(trunk) :])]
        for variables, part in parts:
            norm = np.sqrt(sum(np.sum(g.numpy() ** 2) for g in part))
            for v, g in zip(variables, part):
                v.assign_add(rho * g / norm)
        sam_gradients, _ = task_gradients(task)
        perturbed.append(flat(sam_gradients[: len(trunk)]))
        for v, value in zip(model.trainable_variables, start):
            v.assign(value)
        expected_heads[task] = [
            value.numpy() - learning_rate * g.numpy() for value, g in zip(head, sam_gradients[len(trunk) :])
        ]
    direction = mgda_direction(clean) + mgda_direction([p - c for p, c in zip(perturbed, clean)])
    expected_trunk = flat(start[:2]) - learning_rate * direction

    model.compile(keras.optimizers.SGD(learning_rate), loss=keras_mtl.SAM(LOSSES, method="mgda", rho=rho))
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    np.testing.assert_allclose(flat(model.get_layer("trunk").get_weights()), expected_trunk, atol=1e-5)
    for task in ("a", "b"):
        for got, want in zip(model.get_layer(task).get_weights(), expected_heads[task]):
            np.testing.assert_allclose(got, want, atol=1e-5)

    # MGDA is not linear: the naive combination A({g^SAM}) takes another step.
    naive = _one_step(keras_mtl.SAM(LOSSES, method="mgda", rho=rho, variant="naive"), learning_rate=learning_rate)
    assert np.max(np.abs(flat(naive.get_layer("trunk").get_weights()) - expected_trunk)) > 1e-4


@pytest.mark.parametrize("inner", ["ew", "uw_so", "mean"])
def test_perturbed_passes_leave_no_trace_on_statistics_and_seeds(inner):
    # The non-trainable state after one step (batch-norm moving statistics,
    # dropout's seed, the method's state) is that of the clean pass alone:
    # exactly what the inner method without SAM leaves.
    sam = _one_step(keras_mtl.SAM(LOSSES, method=inner, rho=0.5), batch_norm=True, dropout=0.3)
    plain = _one_step(keras_mtl.get(inner, LOSSES), batch_norm=True, dropout=0.3)
    sam_state = [keras.ops.convert_to_numpy(v) for v in sam.non_trainable_variables]
    plain_state = [keras.ops.convert_to_numpy(v) for v in plain.non_trainable_variables]
    assert len(sam_state) == len(plain_state) > 2
    for a, b in zip(sam_state, plain_state):
        np.testing.assert_array_equal(a, b)
    # ... while the parameters did take the SAM step.
    assert np.max(np.abs(sam.get_layer("trunk").get_weights()[0] - plain.get_layer("trunk").get_weights()[0])) > 1e-5


def test_sam_finds_the_flat_minimum():
    # L(θ1, θ2) = (θ1·θ2 − 1)² for both tasks (a two-layer scalar linear
    # network): every point of the hyperbola θ1·θ2 = 1 is a minimum, with
    # sharpness (top Hessian eigenvalue) 2(θ1² + θ2²), smallest (4) at the
    # flat minimum (1, 1). From (0.4, 2), gradient descent stops at the
    # nearest, sharp minimum (sharpness ≈ 8.6); SAM drifts towards (1, 1).
    def train(method):
        inputs = keras.Input((1,))
        z = keras.layers.Dense(1, use_bias=False, kernel_initializer=keras.initializers.Constant(0.4), name="t1")(
            inputs
        )
        z = keras.layers.Dense(1, use_bias=False, kernel_initializer=keras.initializers.Constant(2.0), name="t2")(z)
        model = keras_mtl.MultiTaskModel(
            inputs, {"a": keras.layers.Identity(name="a")(z), "b": keras.layers.Identity(name="b")(z)}
        )
        model.compile(keras.optimizers.SGD(0.05), loss=method)
        ones = np.ones((300 * 4, 1), "float32")  # 300 steps in one epoch
        model.fit(ones, {"a": ones, "b": ones}, batch_size=4, epochs=1, shuffle=False, verbose=0)
        t1, t2 = (model.get_layer(name).get_weights()[0].item() for name in ("t1", "t2"))
        return 2 * (t1**2 + t2**2), t1 * t2

    plain_sharpness, plain_product = train(keras_mtl.get("ew", LOSSES))
    sam_sharpness, sam_product = train(keras_mtl.SAM(LOSSES, method="ew", rho=0.1))
    fmtl_sharpness, _ = train(keras_mtl.SAM(LOSSES, method="mean", rho=0.1))
    assert plain_product == pytest.approx(1.0, abs=1e-3) and plain_sharpness > 8.0
    assert sam_product == pytest.approx(1.0, abs=0.1) and sam_sharpness < 4.5
    assert fmtl_sharpness < 0.7 * plain_sharpness


@pytest.mark.parametrize("inner", ["ew", "pcgrad"])
def test_mixed_precision_takes_the_float32_step(mixed_precision, inner):
    # Under mixed_float16 the losses are scaled and the perturbations are
    # computed from unscaled gradients: the step is the float32 one, to
    # float16 rounding. (A loss scale of 2^8: Keras' default 2^15 overflows
    # float16 in a perturbed head's gradient here, and the first step is
    # skipped, as LossScaleOptimizer does.)
    x, y = _data()
    mixed = _model()
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1), initial_scale=2.0**8)
    mixed.compile(optimizer, loss=keras_mtl.SAM(LOSSES, method=inner, rho=0.5))
    mixed.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    assert int(optimizer.iterations.numpy()) == 1 and float(optimizer.dynamic_scale.numpy()) == 2.0**8
    keras.mixed_precision.set_global_policy("float32")
    exact = _one_step(keras_mtl.SAM(LOSSES, method=inner, rho=0.5))
    start = _model().get_weights()
    for got, want, before in zip(mixed.get_weights(), exact.get_weights(), start):
        assert np.max(np.abs(want - before)) > 1e-3  # the step is not trivial
        np.testing.assert_allclose(got, want, atol=2e-3)


def test_save_load_and_config(tmp_path):
    method = keras_mtl.SAM(LOSSES, method="uw", rho=2.0, adaptive=True)
    model = _one_step(method)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    restored = loaded.multi_task_method
    assert isinstance(restored, keras_mtl.SAM) and isinstance(restored.method, keras_mtl.UncertaintyWeighting)
    assert (restored.rho, restored.adaptive, restored.variant) == (2.0, True, "fmtl")
    np.testing.assert_array_equal(loaded.multi_task_state["log_variances"], model.multi_task_state["log_variances"])
    loaded.fit(*_data(), verbose=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="rho"):
        keras_mtl.SAM(LOSSES, rho=0.0)
    with pytest.raises(ValueError, match="variant"):
        keras_mtl.SAM(LOSSES, variant="sharp")
    with pytest.raises(ValueError, match="representation"):
        model = keras_mtl.MultiTaskModel(*_representation_model(), representation="trunk")
        model.compile("sgd", loss=keras_mtl.SAM(LOSSES, method="mean"))
        model.fit(*_data(), verbose=0)


def _representation_model():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, name="trunk")(inputs)
    return inputs, {"a": keras.layers.Dense(1, name="a")(hidden), "b": keras.layers.Dense(1, name="b")(hidden)}
