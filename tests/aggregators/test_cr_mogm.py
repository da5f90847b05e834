"""CR-MOGM: an exponential moving average of the wrapped method's task weights."""

import keras
import numpy as np
import pytest
from agg_helpers import numpy, run_steps, task_gradients

import keras_mtl
from keras_mtl.aggregators import cr_mogm_weights


def _mgda_two_tasks(g1, g2):
    """MGDA's closed form for K = 2: w_1 = clip(g2 . (g2 - g1) / ||g1 - g2||^2, 0, 1)."""
    w1 = np.clip(g2 @ (g2 - g1) / np.sum((g1 - g2) ** 2), 0.0, 1.0)
    return np.array([w1, 1.0 - w1])


def _run(method, jacobians):
    return run_steps(method, jacobians, ["a", "b"])[0]


JACOBIANS = [
    np.array([[1.0, 0.0], [0.0, 2.0]]),
    np.array([[1.0, 0.0], [0.0, 1.0]]),
    np.array([[3.0, 1.0], [-1.0, 2.0]]),
]


def test_averages_mgda_weights_by_hand():
    alpha = 0.9
    fresh = [_mgda_two_tasks(*jac) for jac in JACOBIANS]  # (0.8, 0.2), (0.5, 0.5), ...
    expected = [fresh[0]]
    for new in fresh[1:]:
        expected.append(alpha * expected[-1] + (1 - alpha) * new)
    np.testing.assert_allclose(expected[1], [0.77, 0.23])
    got = _run(keras_mtl.CRMOGM({"a": "mse", "b": "mse"}, method="mgda", alpha=alpha), JACOBIANS)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_alpha_extremes():
    fresh = [_mgda_two_tasks(*jac) for jac in JACOBIANS]
    np.testing.assert_allclose(_run(keras_mtl.CRMOGM(method="mgda", alpha=0.0), JACOBIANS), fresh, rtol=1e-5)
    np.testing.assert_allclose(_run(keras_mtl.CRMOGM(method="mgda", alpha=1.0), JACOBIANS), [fresh[0]] * 3, rtol=1e-5)


def test_pure_step():
    previous, fresh = np.float32([0.2, 0.8]), np.float32([1.0, 0.0])
    np.testing.assert_allclose(numpy(cr_mogm_weights(fresh, previous, 0, 0.5)), [1.0, 0.0])
    np.testing.assert_allclose(numpy(cr_mogm_weights(fresh, previous, 3, 0.5)), [0.6, 0.4])


def test_returns_the_inner_state_with_its_own():
    # Around PCGrad: the inner random stream moves on with CR-MOGM's weights and step counter,
    # and evaluation changes nothing.
    method = keras_mtl.CRMOGM(method=keras_mtl.PCGrad(seed=3), alpha=0.5)
    weights, state = run_steps(method, JACOBIANS, ["a", "b"])
    assert int(numpy(state["cr_mogm_steps"])) == 3
    np.testing.assert_allclose(numpy(state["cr_mogm_weights"]), weights[-1])
    fresh = keras_mtl.CRMOGM(method=keras_mtl.PCGrad(seed=3), alpha=0.5)
    _, first = run_steps(fresh, JACOBIANS[:1], ["a", "b"])
    assert not np.array_equal(numpy(state["rng"]), numpy(first["rng"]))
    _, unchanged = method.gradient_weights(task_gradients(JACOBIANS[0]), state, training=False)
    assert unchanged == {}


def test_smoothed_weights_are_saved_and_restored(tmp_path):
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, activation="tanh", name="trunk")(inputs)
    model = keras_mtl.MultiTaskModel(inputs, {t: keras.layers.Dense(1, name=t)(hidden) for t in "ab"})
    model.compile(
        keras.optimizers.SGD(0.1), loss=keras_mtl.CRMOGM(dict.fromkeys("ab", "mse"), method="mgda", alpha=0.5)
    )
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 3)), {t: rng.normal(size=(16, 1)) for t in "ab"}
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert int(numpy(model.multi_task_state["cr_mogm_steps"])) == 2
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.multi_task_method.method.get_config() == model.multi_task_method.method.get_config()
    np.testing.assert_array_equal(
        numpy(loaded.multi_task_state["cr_mogm_weights"]), numpy(model.multi_task_state["cr_mogm_weights"])
    )


def test_refuses_what_it_cannot_average():
    for inner, message in [
        ("graddrop", "update is a task weighting"),
        ("trimmed_mean", "update is a task weighting"),
        ("gradnorm", "trains weights of its own"),
        ("uw", "wraps a gradient method"),
    ]:
        with pytest.raises(ValueError, match=message):
            keras_mtl.CRMOGM(dict.fromkeys("abc", "mse"), method=inner)
    with pytest.raises(ValueError, match="wraps a gradient method"):
        keras_mtl.CRMOGM(dict.fromkeys("ab", "mse"), method=keras_mtl.UncertaintyWeighting())
    with pytest.raises(ValueError, match=r"CRMOGM: `alpha` must be a finite number in \[0, 1\]"):
        keras_mtl.CRMOGM(method="mgda", alpha=1.5)
    method = keras_mtl.CRMOGM(dict.fromkeys("ab", "mse"), method=keras_mtl.MGDA(normalization="l2"), alpha=0.7)
    restored = keras_mtl.CRMOGM.from_config(method.get_config())
    assert restored.get_config() == method.get_config() and restored.method.normalization == "l2"
    assert restored.needs_non_negative_losses is False
