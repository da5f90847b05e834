"""ExcessMTL: by hand over steps, against a float64 reference, its defining property, hard inputs, arguments."""

import keras
import numpy as np
import pytest
from conftest import toy_losses

import keras_mtl
from keras_mtl.gradients import TaskGradients
from keras_mtl.training.state import MultiTaskState


def steps(method, jacobians, losses=None):
    """The method's (weights, direction) at each step, its state carried as the engine carries it."""
    jacobians = [np.asarray(j, "float32") for j in jacobians]
    num_tasks, num_parameters = jacobians[0].shape
    layer = MultiTaskState()
    layer.configure(
        method, [f"t{k}" for k in range(num_tasks)], lambda: [keras.Variable(np.zeros(num_parameters), name="shared")]
    )
    state, results = layer.values(), []
    for jacobian in jacobians:
        tensor = keras.ops.convert_to_tensor(jacobian)
        gramian = keras.ops.matmul(tensor, keras.ops.transpose(tensor))
        task_losses = (
            keras.ops.ones((num_tasks,))
            if losses is None
            else keras.ops.convert_to_tensor(np.asarray(losses, "float32"))
        )
        gradients = TaskGradients(jacobian=tensor, losses=task_losses, gramian=gramian, last_layer_gramian=gramian)
        direction, weights, new_state = method.combine(gradients, state, training=True)
        state.update(new_state)
        results.append((keras.ops.convert_to_numpy(weights), keras.ops.convert_to_numpy(direction)))
    return results


def reference(jacobians, eta, baseline_steps=1, total=None):
    """The authors' rule in float64 (yifei-he/ExcessMTL), with a baseline averaged over `baseline_steps`."""
    num_tasks = np.shape(jacobians[0])[0]
    total = num_tasks if total is None else total
    squares_sum, baseline, weights, results = 0.0, 0.0, np.full(num_tasks, total / num_tasks), []
    for t, jacobian in enumerate(np.asarray(jacobians, np.float64), start=1):
        squares_sum = squares_sum + jacobian**2
        proxies = np.sum(jacobian**2 / np.sqrt(squares_sum + 1e-7), axis=1)
        if t <= baseline_steps:
            baseline = baseline + (proxies - baseline) / t
        else:
            weights = weights * np.exp(eta * proxies / baseline)
            weights = total * weights / weights.sum()
        results.append((weights, weights @ jacobian))
    return results


def test_hand_computed_three_steps():
    # Step 1: S = [[1, 0], [0, 4]], proxies ≈ [1, 2] are the baseline; λ = [1, 1], d = [1, 2].
    # Step 2: S = [[5, 0], [0, 8]], proxies [4/√5, 4/√8], ratios [4/√5, √2/2]; λ = 2·softmax(η·ratios).
    # Step 3: the same gradients: S = [[9, 0], [0, 12]], proxies [4/3, 4/√12], ratios [4/3, 2/√12]; λ ∝ λ₂·exp(η·ratios).
    method = keras_mtl.ExcessMTL(toy_losses(), robust_step_size=1.0)
    (w1, d1), (w2, d2), (w3, d3) = steps(method, [[[1, 0], [0, 2]], [[2, 0], [0, 2]], [[2, 0], [0, 2]]])
    np.testing.assert_allclose(w1, [1, 1])
    np.testing.assert_allclose(d1, [1, 2], rtol=1e-6)
    raised = np.exp([4 / np.sqrt(5), np.sqrt(2) / 2])
    expected = 2 * raised / raised.sum()
    np.testing.assert_allclose(w2, expected, rtol=1e-6)
    np.testing.assert_allclose(d2, 2 * expected, rtol=1e-6)
    raised = expected * np.exp([4 / 3, 2 / np.sqrt(12)])
    np.testing.assert_allclose(w3, 2 * raised / raised.sum(), rtol=1e-6)
    np.testing.assert_allclose(d3, 2 * w3, rtol=1e-6)


@pytest.mark.parametrize("options", [{}, {"baseline_steps": 3}, {"simplex": True, "robust_step_size": 0.5}])
def test_matches_the_float64_reference_over_steps(options):
    rng = np.random.default_rng(0)
    jacobians = [rng.normal(size=(3, 7)) * rng.uniform(0.1, 3.0, size=(3, 1)) for _ in range(6)]
    results = steps(keras_mtl.ExcessMTL(toy_losses(), **options), jacobians)
    expected = reference(
        jacobians,
        options.get("robust_step_size", 1e-2),
        options.get("baseline_steps", 1),
        1.0 if options.get("simplex") else None,
    )
    for (weights, direction), (expected_weights, expected_direction) in zip(results, expected):
        np.testing.assert_allclose(weights, expected_weights, rtol=1e-5)
        np.testing.assert_allclose(direction, expected_direction, rtol=1e-4, atol=1e-6)


def test_the_weight_rises_for_the_task_whose_proxy_grows_against_its_baseline_and_weights_sum_to_k():
    # Task a's gradient grows tenfold after the baseline step; task b's stays the same.
    jacobians = [[[1, 1, 0], [0, 1, 1]]] + [[[10, 10, 0], [0, 1, 1]]] * 4
    results = steps(keras_mtl.ExcessMTL(toy_losses(), robust_step_size=0.1), jacobians)
    history = np.array([weights for weights, _ in results])
    assert np.all(np.diff(history[1:, 0]) > 0) and history[-1, 0] > 1 > history[-1, 1]
    np.testing.assert_allclose(history.sum(axis=1), 2.0, rtol=1e-6)


def test_a_gradient_norm_ratio_of_1e6_and_a_zero_baseline():
    rng = np.random.default_rng(1)
    scales = np.array([[1e3], [1e-3]])
    jacobians = [rng.normal(size=(2, 5)) * scales for _ in range(4)]
    results = steps(keras_mtl.ExcessMTL(toy_losses(), robust_step_size=1.0), jacobians)
    for (weights, direction), (expected_weights, expected_direction) in zip(results, reference(jacobians, 1.0)):
        np.testing.assert_allclose(weights, expected_weights, rtol=1e-4)
        np.testing.assert_allclose(
            direction, expected_direction, rtol=1e-4, atol=1e-6 * np.abs(expected_direction).max()
        )
    # A task with no gradient through the baseline step has ratio 0: finite weights that fall behind.
    zero_first = [[[1.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 5.0]]]
    weights, _ = steps(keras_mtl.ExcessMTL(toy_losses(), robust_step_size=1.0), zero_first)[-1]
    assert np.all(np.isfinite(weights)) and weights[0] > weights[1]


def test_arguments_are_checked_and_round_trip():
    for bad in ({"robust_step_size": 0.0}, {"baseline_steps": 0}, {"baseline_steps": 1.5}):
        with pytest.raises(ValueError, match=r"ExcessMTL: `(robust_step_size|baseline_steps)` must be"):
            keras_mtl.ExcessMTL(toy_losses(), **bad)
    method = keras_mtl.get("excess_mtl", toy_losses())
    assert isinstance(method, keras_mtl.ExcessMTL) and method.parameter_mode_only
    method = keras_mtl.ExcessMTL(toy_losses(), robust_step_size=0.5, baseline_steps=3, simplex=True)
    assert keras_mtl.get(keras.saving.serialize_keras_object(method)).get_config() == method.get_config()
