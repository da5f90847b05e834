"""OL-AUX: auxiliary weights move every N steps by β·Σ α⟨g_m, g_k⟩, by hand, as a property, and through fit."""

import keras
import numpy as np
import pytest
from conftest import toy_losses, toy_model
from support.state_values import state_values
from test_auxiliary import _model as help_and_oppose_model

import keras_mtl
from keras_mtl.gradients import TaskGradients


def _gradients(jacobian, learning_rate):
    jacobian = np.asarray(jacobian, "float32")
    gramian = keras.ops.convert_to_tensor(jacobian @ jacobian.T)
    return TaskGradients(
        jacobian=keras.ops.convert_to_tensor(jacobian),
        losses=keras.ops.ones((jacobian.shape[0],)),
        gramian=gramian,
        last_layer_gramian=gramian,
        learning_rate=keras.ops.convert_to_tensor(learning_rate),
    )


def _run(method, tasks, jacobians, learning_rate):
    """Drives `gradient_weights` as the engine does: the weights (numpy) each step used, and the final state."""
    state = state_values(method, tasks)
    used = []
    for jacobian in jacobians:
        weights, new_state = method.gradient_weights(_gradients(jacobian, learning_rate), state, training=True)
        used.append(keras.ops.convert_to_numpy(weights))
        state.update(new_state)
    return used, {name: keras.ops.convert_to_numpy(value) for name, value in state.items()}


def _reference(jacobians, main, learning_rate, update_every, beta, nonnegative):
    """The rule in float64: the weights each step uses and the weights after the last step."""
    weights = np.ones(len(jacobians[0]))
    accumulated = np.zeros_like(weights)
    used = []
    for step, jacobian in enumerate(np.asarray(jacobians, np.float64), start=1):
        used.append(weights.copy())
        accumulated -= learning_rate * jacobian @ jacobian[main]
        if step % update_every == 0:
            weights = weights - beta * accumulated
            weights = np.maximum(weights, 0.0) if nonnegative else weights
            weights[main] = 1.0
            accumulated[:] = 0.0
    return used, weights


# Tasks (a, main, c). Step 1: g_main = (2, 0), G[main] = (2, 4, 0); step 2: g_main = (1, 1),
# G[main] = (0, 2, 3); step 3 starts a new window.
JACOBIANS = [
    [[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]],
    [[-1.0, 1.0], [1.0, 1.0], [0.0, 3.0]],
    [[3.0, 0.0], [1.0, 0.0], [-1.0, 0.0]],
]


def test_hand_computed_window_of_two():
    # α = 0.1, β = 2, N = 2: c = −0.1·(2, 4, 0) − 0.1·(0, 2, 3) = (−0.2, −0.6, −0.3) after step 2,
    # so w = 1 − 2c = (1.4, ·, 1.6), the main weight stays 1. Steps 1–2 used the initial weights.
    method = keras_mtl.OLAux("mse", main_task="main", update_every=2, weight_learning_rate=2.0, nonnegative=False)
    used, state = _run(method, ["a", "main", "c"], JACOBIANS, np.float64(0.1))
    np.testing.assert_allclose(used, [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.4, 1.0, 1.6]], rtol=1e-6)
    # Step 3: c = −0.1·(3, 1, −1) = (−0.3, −0.1, 0.1), one step into the new window, weights unchanged.
    np.testing.assert_allclose(state["accumulated_gradient"], [-0.3, -0.1, 0.1], rtol=1e-6)
    assert state["steps_in_window"] == 1.0
    np.testing.assert_allclose(state["task_weights"], [1.4, 1.0, 1.6], rtol=1e-6)
    reference_used, _ = _reference(JACOBIANS, 1, 0.1, 2, 2.0, False)
    np.testing.assert_allclose(used, reference_used, rtol=1e-6)


@pytest.mark.parametrize("nonnegative", [False, True])
def test_matches_the_rule_on_random_gradients(nonnegative):
    rng = np.random.default_rng(0)
    jacobians = rng.normal(size=(7, 4, 5))
    method = keras_mtl.OLAux("mse", main_task="c", update_every=3, weight_learning_rate=4.0, nonnegative=nonnegative)
    used, state = _run(method, ["a", "b", "c", "d"], jacobians, 0.3)
    reference_used, reference_final = _reference(jacobians, 2, 0.3, 3, 4.0, nonnegative)
    np.testing.assert_allclose(used, reference_used, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state["task_weights"], reference_final, rtol=1e-5, atol=1e-6)
    # Unclipped, a weight would go negative here: the nonnegative case does clip.
    assert np.any(_reference(jacobians, 2, 0.3, 3, 4.0, False)[1] < 0)


def test_aligned_auxiliary_gains_opposing_loses_orthogonal_keeps_and_nothing_moves_between_updates():
    # Tasks (main, aligned, opposed, orthogonal) with fresh random main gradients every step.
    rng = np.random.default_rng(1)
    jacobians = []
    for _ in range(4):
        main = np.array([*rng.normal(size=3), 0.0])
        jacobians.append([main, 2.0 * main + [0, 0, 0, 1.0], -main, [0, 0, 0, rng.normal()]])
    method = keras_mtl.OLAux("mse", main_task="main", update_every=4, weight_learning_rate=0.1)
    used, state = _run(method, ["main", "aligned", "opposed", "orthogonal"], jacobians, 0.5)
    np.testing.assert_array_equal(used, np.ones((4, 4)))  # no update within the window
    weights = state["task_weights"]
    assert weights[0] == 1.0 and weights[1] > 1.0 and weights[2] < 1.0 and weights[3] == 1.0
    # w_aligned − 1 = 2 (1 − w_opposed) (no clipping at this β): the gain is proportional to ⟨g_m, g_k⟩.
    assert weights[1] - 1.0 == pytest.approx(2.0 * (1.0 - weights[2]), rel=1e-5)
    # A large β drives the opposed weight to exactly 0 (nonnegative by default), not below.
    steep = keras_mtl.OLAux("mse", main_task="main", update_every=4, weight_learning_rate=1e3)
    _, clipped = _run(steep, ["main", "aligned", "opposed", "orthogonal"], jacobians, 0.5)
    assert clipped["task_weights"][2] == 0.0


def test_evaluation_changes_nothing():
    method = keras_mtl.OLAux("mse", main_task="main")
    state = state_values(method, ["a", "main", "c"])
    state["task_weights"] = np.array([0.5, 1.0, 2.0], "float32")
    weights, new_state = method.gradient_weights(_gradients(JACOBIANS[0], 0.1), state, training=False)
    assert new_state == {}
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(weights), [0.5, 1.0, 2.0])


def test_trains_the_toy_model_through_fit(toy):
    x, y = toy
    model = toy_model()
    model.compile(keras.optimizers.SGD(0.05), loss=keras_mtl.OLAux(toy_losses(), main_task="a", update_every=3))
    history = model.fit(x, y, batch_size=10, epochs=2, verbose=0).history
    assert history["a_weight"] == [1.0, 1.0]
    assert history["a_loss"][-1] < history["a_loss"][0]
    state = model.multi_task_state
    steps = 2 * -(-len(x) // 10)
    assert keras.ops.convert_to_numpy(state["steps_in_window"]) == steps % 3
    b_weight = keras.ops.convert_to_numpy(state["task_weights"])[1]
    assert np.isfinite(b_weight) and b_weight != 1.0


def _fit_help_and_oppose(epochs):
    """Full-batch SGD steps (one an epoch) on test_auxiliary's one-weight model, N = 2: (per-epoch history, state after each epoch)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    a = rng.normal(size=(4, 1)).astype("float32")
    model = help_and_oppose_model()
    model.compile(keras.optimizers.SGD(0.01), loss=keras_mtl.OLAux("mse", main_task="main", update_every=2))
    history, states = [], []
    for _ in range(epochs):
        history.append(
            model.fit(
                x, {"main": x @ a, "help": 2 * x @ a, "oppose": -(x @ a)}, batch_size=64, epochs=1, verbose=0
            ).history
        )
        states.append(
            {
                name: keras.ops.convert_to_numpy(value)
                for name, value in model.multi_task_state.named_variables().items()
            }
        )
    return history, states


def test_helpful_auxiliary_rises_and_opposing_falls_through_fit():
    history, states = _fit_help_and_oppose(3)
    # Tasks in the model's order (help, main, oppose). Nothing moves before the window's second step; then help rises, oppose falls.
    np.testing.assert_array_equal(states[0]["task_weights"], [1.0, 1.0, 1.0])
    assert states[0]["steps_in_window"] == 1.0
    help_weight, main_weight, oppose_weight = states[1]["task_weights"]
    assert help_weight > 1.0 and main_weight == 1.0 and oppose_weight < 1.0
    np.testing.assert_array_equal(states[1]["accumulated_gradient"], [0.0, 0.0, 0.0])
    # The third step trains with the updated weights.
    assert history[2]["help_weight"] == pytest.approx([help_weight]) and history[2]["oppose_weight"] == pytest.approx(
        [oppose_weight]
    )


def test_the_log_shows_the_weights_the_step_used():
    history, _ = _fit_help_and_oppose(2)
    assert [epoch["help_weight"] for epoch in history] == [[1.0], [1.0]]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="OLAux needs `main_task`"):
        state_values(keras_mtl.OLAux("mse"), ["a", "b"])
    with pytest.raises(ValueError, match="main_task 'primary' is not one of the tasks"):
        state_values(keras_mtl.OLAux("mse", main_task="primary"), ["a", "b"])
    for update_every in (0, -1, 1.5, True, "5"):
        with pytest.raises((TypeError, ValueError), match=r"OLAux: `update_every` must be an integer ≥ 1"):
            keras_mtl.OLAux("mse", main_task="a", update_every=update_every)
    for beta in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match=r"OLAux: `weight_learning_rate` must be a finite number > 0"):
            keras_mtl.OLAux("mse", main_task="a", weight_learning_rate=beta)


def test_config_round_trip_and_defaults():
    default = keras_mtl.get("ol_aux", toy_losses())
    assert isinstance(default, keras_mtl.OLAux) and isinstance(default, keras_mtl.GradientMethod)
    assert (default.update_every, default.weight_learning_rate, default.nonnegative) == (5, 5.0, True)
    method = keras_mtl.OLAux(toy_losses(), main_task="b", update_every=2, weight_learning_rate=0.5, nonnegative=False)
    restored = keras_mtl.get(keras.saving.serialize_keras_object(method))
    assert restored.get_config() == method.get_config()
    assert (restored.main_task, restored.update_every, restored.weight_learning_rate, restored.nonnegative) == (
        "b",
        2,
        0.5,
        False,
    )
