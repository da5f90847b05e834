"""DB-MTL: log-loss gradients rescaled to the largest one's norm, by hand, as a property, and through fit."""

import keras
import numpy as np
import pytest
from conftest import toy_losses, toy_model
from test_weightings_errors import negative_mse, step_error

import keras_mtl
from keras_mtl.gradients import TaskGradients


def _combine(jacobian, losses):
    jacobian = np.asarray(jacobian, "float32")
    gramian = keras.ops.convert_to_tensor(jacobian @ jacobian.T)
    gradients = TaskGradients(
        jacobian=keras.ops.convert_to_tensor(jacobian), losses=keras.ops.convert_to_tensor(np.asarray(losses, "float32")), gramian=gramian, last_layer_gramian=gramian
    )
    direction, weights, new_state = keras_mtl.DualBalancing(toy_losses()).combine(gradients, state={}, training=True)
    assert new_state == {}
    return keras.ops.convert_to_numpy(direction), keras.ops.convert_to_numpy(weights)


def _reference(jacobian, losses):
    """The rule in float64: h_k = g_k/(L_k + ε); d = Σ_k max_j‖h_j‖/(‖h_k‖ + ε)·h_k."""
    h = np.asarray(jacobian, np.float64) / (np.asarray(losses, np.float64)[:, None] + 1e-8)
    norms = np.linalg.norm(h, axis=1)
    return (norms.max() / (norms + 1e-8)) @ h


def test_hand_computed():
    # g = [[3, 0], [0, 4]], L = [1, 2]: h = [[3, 0], [0, 2]], norms [3, 2], scales [1, 1.5];
    # d = [3, 0] + 1.5·[0, 2] = [3, 3]; weights on g: scale/L = [1, 0.75].
    direction, weights = _combine([[3.0, 0.0], [0.0, 4.0]], [1.0, 2.0])
    np.testing.assert_allclose(direction, [3.0, 3.0], rtol=1e-6)
    np.testing.assert_allclose(weights, [1.0, 0.75], rtol=1e-6)


def test_matches_the_rule_on_random_gradients():
    rng = np.random.default_rng(0)
    for _ in range(5):
        jacobian, losses = rng.normal(size=(3, 7)), rng.uniform(0.01, 5.0, size=3)
        direction, _ = _combine(jacobian, losses)
        np.testing.assert_allclose(direction, _reference(jacobian, losses), rtol=1e-4)


def test_every_scaled_log_gradient_has_the_largest_norm_and_loss_scales_cancel():
    rng = np.random.default_rng(1)
    jacobian, losses = rng.normal(size=(3, 5)), np.array([0.5, 2.0, 8.0])
    direction, weights = _combine(jacobian, losses)
    contributions = weights[:, None] * jacobian
    largest = np.max(np.linalg.norm(jacobian / losses[:, None], axis=1))
    np.testing.assert_allclose(np.linalg.norm(contributions, axis=1), largest, rtol=1e-5)
    # Multiplying a task's loss by c multiplies its gradient by c: the update does not change.
    scale = np.array([100.0, 1.0, 0.01])
    scaled_direction, _ = _combine(jacobian * scale[:, None], losses * scale)
    np.testing.assert_allclose(scaled_direction, direction, rtol=1e-4)


def test_zero_gradients_give_a_zero_update():
    direction, _ = _combine([[0.0, 0.0], [0.0, 0.0]], [1.0, 2.0])
    np.testing.assert_array_equal(direction, [0.0, 0.0])


def test_trains_through_fit(toy):
    x, y = toy
    model = toy_model()
    model.compile(keras.optimizers.SGD(0.05), loss=keras_mtl.DualBalancing(toy_losses()))
    initial = model.get_weights()
    history = model.fit(x, y, batch_size=10, epochs=2, verbose=0).history
    for key in ("loss", "a_loss", "b_loss", "a_weight", "b_weight"):
        assert np.all(np.isfinite(history[key])), key
    assert history["a_loss"][-1] < history["a_loss"][0]
    assert max(np.max(np.abs(a - b)) for a, b in zip(initial, model.get_weights())) > 1e-3


def test_negative_losses_are_refused(toy):
    x, y = toy
    model = toy_model()
    model.compile("sgd", loss=keras_mtl.DualBalancing({"a": negative_mse, "b": toy_losses()["b"]}))
    initial = model.get_weights()
    # TensorFlow's graph error message escapes the quotes around the task name.
    with pytest.raises(step_error(), match=r"DualBalancing needs non-negative losses; task \\?'a\\?' has a negative one"):
        model.fit(x, y, batch_size=10, epochs=1, verbose=0)
    assert max(np.max(np.abs(a - b)) for a, b in zip(initial, model.get_weights())) == 0.0


def test_config_round_trip():
    method = keras_mtl.get("db_mtl", toy_losses())
    assert isinstance(method, keras_mtl.DualBalancing) and isinstance(method, keras_mtl.GradientMethod)
    assert keras_mtl.get(keras.saving.serialize_keras_object(method)).get_config() == method.get_config()
