"""DB-MTL: log-loss gradients, averaged over steps, rescaled to the largest one's norm, by hand, as a property, and through fit."""

import keras
import numpy as np
import pytest
from conftest import toy_losses, toy_model
from test_excess_mtl import steps
from test_weightings_errors import negative_mse, step_error

import keras_mtl
from keras_mtl.gradients import TaskGradients


def _combine(jacobian, losses):
    jacobian = np.asarray(jacobian, "float32")
    gramian = keras.ops.convert_to_tensor(jacobian @ jacobian.T)
    gradients = TaskGradients(
        jacobian=keras.ops.convert_to_tensor(jacobian),
        losses=keras.ops.convert_to_tensor(np.asarray(losses, "float32")),
        gramian=gramian,
        last_layer_gramian=gramian,
    )
    direction, weights, new_state = keras_mtl.DualBalancing(toy_losses(), beta=0.0).combine(
        gradients, state={}, training=True
    )
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


def _smoothed_reference(jacobians, losses, beta, beta_sigma):
    """The authors' rule with its average (LibMTL `DB_MTL`) in float64: (d, weights on the step's g) per step."""
    smoothed, results = 0.0, []
    for t, jacobian in enumerate(np.asarray(jacobians, np.float64), start=1):
        beta_t = beta / t**beta_sigma
        h = jacobian / (np.asarray(losses, np.float64)[:, None] + 1e-8)
        smoothed = h + beta_t * (smoothed - h)
        norms = np.linalg.norm(smoothed, axis=1)
        scales = norms.max() / (norms + 1e-8)
        results.append((scales @ smoothed, scales * (1 - beta_t) / (np.asarray(losses) + 1e-8)))
    return results


def test_hand_computed_average_over_two_steps():
    # β = 0.5, L = [1, 2]. Step 1: h = [[2, 0], [0, 2]], ĝ = ½h = [[1, 0], [0, 1]], α = [1, 1], d = [1, 1].
    # Step 2: h = [[0, 4], [0, 2]], ĝ = ½ĝ + ½h = [[0.5, 2], [0, 1.5]]; ‖ĝ‖ = [√4.25, 1.5],
    # α = [1, √4.25/1.5]: d = [0.5, 2 + √4.25]; weights on g: α·½/L = [0.5, √4.25/6].
    method = keras_mtl.DualBalancing(toy_losses(), beta=0.5)
    (d1, w1), (d2, w2) = [(d, w) for w, d in steps(method, [[[2, 0], [0, 4]], [[0, 4], [0, 4]]], losses=[1.0, 2.0])]
    np.testing.assert_allclose(d1, [1, 1], rtol=1e-6)
    np.testing.assert_allclose(w1, [0.5, 0.25], rtol=1e-6)
    np.testing.assert_allclose(d2, [0.5, 2 + np.sqrt(4.25)], rtol=1e-6)
    np.testing.assert_allclose(w2, [0.5, np.sqrt(4.25) / 6], rtol=1e-6)


@pytest.mark.parametrize("beta, beta_sigma", [(0.9, 0.0), (0.9, 0.5)])
def test_the_average_matches_the_float64_reference_and_every_scaled_average_has_the_largest_norm(beta, beta_sigma):
    rng = np.random.default_rng(2)
    jacobians = [rng.normal(size=(3, 6)) * np.array([[1e3], [1.0], [1e-3]]) for _ in range(4)]
    losses = [0.5, 2.0, 8.0]
    results = steps(keras_mtl.DualBalancing(toy_losses(), beta=beta, beta_sigma=beta_sigma), jacobians, losses)
    for (weights, direction), (expected_direction, expected_weights) in zip(
        results, _smoothed_reference(jacobians, losses, beta, beta_sigma)
    ):
        np.testing.assert_allclose(direction, expected_direction, rtol=1e-4)
        np.testing.assert_allclose(weights, expected_weights, rtol=1e-5)
    # One step from ĝ = 0: ĝ_k = (1 − β)·h_k, and every α_k ĝ_k has the largest norm (to ε = 1e-8 against the
    # smallest norm, about 1e-5).
    weights, _ = results[0]
    contributions = weights[:, None] * np.asarray(jacobians[0])
    np.testing.assert_allclose(
        np.linalg.norm(contributions, axis=1),
        (1 - beta) * np.max(np.linalg.norm(jacobians[0] / np.array(losses)[:, None], axis=1)),
        rtol=1e-3,
    )


def test_arguments_choose_the_mode_and_round_trip():
    for bad in ({"beta": 1.0}, {"beta": -0.1}, {"beta_sigma": -1.0}):
        with pytest.raises(ValueError, match=r"DualBalancing: `beta(_sigma)?` must be a finite number"):
            keras_mtl.DualBalancing(toy_losses(), **bad)
    assert keras_mtl.DualBalancing(toy_losses()).parameter_mode_only
    assert not keras_mtl.DualBalancing(toy_losses(), beta=0.0).parameter_mode_only
    method = keras_mtl.DualBalancing(toy_losses(), beta=0.5, beta_sigma=0.5)
    assert keras_mtl.get(keras.saving.serialize_keras_object(method)).get_config() == method.get_config()


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
    with pytest.raises(
        step_error(), match=r"DualBalancing needs non-negative losses; task \\?'a\\?' has a negative one"
    ):
        model.fit(x, y, batch_size=10, epochs=1, verbose=0)
    assert max(np.max(np.abs(a - b)) for a, b in zip(initial, model.get_weights())) == 0.0


def test_config_round_trip():
    method = keras_mtl.get("db_mtl", toy_losses())
    assert isinstance(method, keras_mtl.DualBalancing) and isinstance(method, keras_mtl.GradientMethod)
    assert keras_mtl.get(keras.saving.serialize_keras_object(method)).get_config() == method.get_config()
