"""GradNorm's hooks driven directly: L(0), the weights' gradient, and the renormalisation after the update."""

import keras
import numpy as np
import pytest
from support.state_values import state_values

import keras_mtl
from keras_mtl.gradients import TaskGradients

TASKS = ["a", "b"]


def _gradients(jacobian, losses):
    jacobian = np.asarray(jacobian, "float32")
    gramian = keras.ops.convert_to_tensor(jacobian @ jacobian.T)
    losses = keras.ops.convert_to_tensor(np.asarray(losses, "float32"))
    return TaskGradients(
        jacobian=keras.ops.convert_to_tensor(jacobian), losses=losses, gramian=gramian, last_layer_gramian=gramian
    )


def _reference_gradient(jacobian, losses, initial_losses, weights, alpha):
    """d/dw Σ_k |w_k ‖g_k‖ − sg[mean(w‖g‖)·r_k^α]|, r = L̃ / mean(L̃), L̃ = L / L(0), in float64."""
    norms = np.linalg.norm(np.asarray(jacobian, np.float64), axis=1)
    relative = np.asarray(losses, np.float64) / np.asarray(initial_losses, np.float64)
    target = np.mean(weights * norms) * (relative / relative.mean()) ** alpha
    return np.sign(weights * norms - target) * norms


def _numpy(value):
    return keras.ops.convert_to_numpy(value)


def test_weight_gradient_by_hand():
    # ‖g_a‖ = 3, ‖g_b‖ = 1; w = 1; G = (3, 1), mean 2. L(0) = (2, 1), L = (1, 1): L̃ = (0.5, 1),
    # r = (2/3, 4/3); targets 2·r = (4/3, 8/3). sign(G − target) = (+, −), so d/dw = (+3, −1).
    method = keras_mtl.GradNorm({"a": "mse", "b": "mse"}, alpha=1.0)
    state = state_values(method, TASKS)
    state.update(initial_losses=np.array([2.0, 1.0], "float32"), steps=np.float32(1.0))
    gradients = _gradients([[3.0, 0.0], [0.0, 1.0]], [1.0, 1.0])
    weights, new_state = method.gradient_weights(gradients, state, training=True)
    np.testing.assert_array_equal(_numpy(weights), [1.0, 1.0])
    np.testing.assert_array_equal(_numpy(new_state["initial_losses"]), [2.0, 1.0])  # L(0) is kept after the first step
    assert _numpy(new_state["steps"]) == 2.0
    [(name, gradient)] = method.state_gradients(gradients, weights, state).items()
    assert name == "gradnorm_weights"
    np.testing.assert_allclose(_numpy(gradient), [3.0, -1.0])


@pytest.mark.parametrize("alpha", [0.0, 1.5])
def test_weight_gradient_matches_the_rule_on_random_gradients(alpha):
    rng = np.random.default_rng(2)
    method = keras_mtl.GradNorm({"a": "mse", "b": "mse", "c": "mse"}, alpha=alpha)
    state = state_values(method, ["a", "b", "c"])
    initial, losses = rng.uniform(0.5, 2.0, 3), rng.uniform(0.1, 2.0, 3)
    weights = rng.uniform(0.5, 1.5, 3)
    jacobian = rng.normal(size=(3, 4))
    state.update(
        initial_losses=initial.astype("float32"), steps=np.float32(4.0), gradnorm_weights=weights.astype("float32")
    )
    gradient = method.state_gradients(
        _gradients(jacobian, losses), keras.ops.convert_to_tensor(weights.astype("float32")), state
    )["gradnorm_weights"]
    np.testing.assert_allclose(
        _numpy(gradient), _reference_gradient(jacobian, losses, initial, weights, alpha), rtol=1e-5
    )


def test_the_first_step_takes_its_own_losses_as_l0():
    # The hooks see the state the step began with (L(0) not yet recorded): the first step's relative losses are 1,
    # so the target is mean(G) for every task: d/dw = (+3, −1). (With L(0) read as 0 it would be (+3, +1).)
    method = keras_mtl.GradNorm({"a": "mse", "b": "mse"}, alpha=1.5)
    state = state_values(method, TASKS)
    gradients = _gradients([[3.0, 0.0], [0.0, 1.0]], [4.0, 0.5])
    weights, new_state = method.gradient_weights(gradients, state, training=True)
    np.testing.assert_array_equal(_numpy(new_state["initial_losses"]), [4.0, 0.5])
    assert _numpy(new_state["steps"]) == 1.0
    gradient = method.state_gradients(gradients, weights, state)["gradnorm_weights"]
    np.testing.assert_allclose(
        _numpy(gradient), _reference_gradient([[3.0, 0.0], [0.0, 1.0]], [4.0, 0.5], [4.0, 0.5], np.ones(2), 1.5)
    )
    np.testing.assert_allclose(_numpy(gradient), [3.0, -1.0])


def test_after_update_renormalises_to_k_and_evaluation_changes_nothing():
    method = keras_mtl.GradNorm({"a": "mse", "b": "mse"})
    state = state_values(method, TASKS)
    state["gradnorm_weights"] = np.array([3.0, 1.0], "float32")
    np.testing.assert_allclose(_numpy(method.after_update(state, None, None)["gradnorm_weights"]), [1.5, 0.5])
    weights, new_state = method.gradient_weights(
        _gradients([[1.0, 0.0], [0.0, 1.0]], [1.0, 1.0]), state, training=False
    )
    assert new_state == {}
    np.testing.assert_array_equal(_numpy(weights), [3.0, 1.0])


def test_a_negative_weight_counts_by_its_magnitude():
    # w = (−0.5, 2.5), ‖g‖ = (3, 1), r = 1 (losses at L(0)): G = |w|‖g‖ = (1.5, 2.5), target mean(G) = 2.
    # d/dw_k |G_k − 2| = sign(G_k − 2)·sign(w_k)·‖g_k‖ = (−1)(−1)·3, (+1)(+1)·1 = (3, 1).
    method = keras_mtl.GradNorm({"a": "mse", "b": "mse"}, alpha=1.5)
    state = state_values(method, TASKS)
    state.update(
        initial_losses=np.array([1.0, 2.0], "float32"),
        steps=np.float32(3.0),
        gradnorm_weights=np.array([-0.5, 2.5], "float32"),
    )
    gradients = _gradients([[3.0, 0.0], [0.0, 1.0]], [1.0, 2.0])
    gradient = method.state_gradients(gradients, keras.ops.convert_to_tensor(state["gradnorm_weights"]), state)[
        "gradnorm_weights"
    ]
    np.testing.assert_allclose(_numpy(gradient), [3.0, 1.0])


def _linear_two_task_model(kernel, heads):
    """x → trunk (2×2 kernel, no bias) → fixed heads a, b (2×1 each, not trainable); linear throughout."""
    inputs = keras.Input((2,))
    hidden = keras.layers.Dense(2, use_bias=False, name="trunk")(inputs)
    outputs = {}
    for task, head in zip(TASKS, heads):
        layer = keras.layers.Dense(1, use_bias=False, name=task, trainable=False)
        outputs[task] = layer(hidden)
        layer.set_weights([np.asarray(head, "float32")])
    model = keras_mtl.MultiTaskModel(inputs, outputs)
    model.get_layer("trunk").set_weights([np.asarray(kernel, "float32")])
    return model


def test_two_training_steps_follow_algorithm_1_of_the_paper():
    # Chen et al. 2018, Algorithm 1, in float64: per step, L_k = mean((x W h_k − y_k)²), g_k = ∇_W L_k,
    # G_k = |w_k|‖g_k‖, r = L̃/mean(L̃) with L̃ = L/L(0), ∇_w Σ|G_k − mean(G) r_k^α| with mean(G) r^α held fixed;
    # W ← W − η Σ w_k g_k and w ← w − η ∇_w (both from the step's w), then w ← K w / Σw. L(0): the first step's losses.
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 2.0]])
    y = {"a": np.array([[1.0], [-1.0], [2.0]]), "b": np.array([[0.5], [3.0], [0.0]])}
    kernel = np.array([[0.3, -0.2], [0.1, 0.4]])
    heads = [np.array([[1.0], [0.5]]), np.array([[-0.5], [2.0]])]
    eta, alpha = 0.05, 1.5
    w, initial = np.ones(2), None
    for _ in range(2):
        residuals = [x @ kernel @ head - y[task] for task, head in zip(TASKS, heads)]
        losses = np.array([np.mean(r**2) for r in residuals])
        grads = [2.0 / len(x) * x.T @ r @ head.T for r, head in zip(residuals, heads)]
        norms = np.array([np.linalg.norm(g) for g in grads])
        initial = losses if initial is None else initial
        relative = losses / initial
        big_g = np.abs(w) * norms
        target = big_g.mean() * (relative / relative.mean()) ** alpha
        weight_gradient = np.sign(big_g - target) * np.sign(w) * norms
        kernel = kernel - eta * (w[0] * grads[0] + w[1] * grads[1])
        w = w - eta * weight_gradient
        w = 2 * w / w.sum()
    assert not np.allclose(w, 1.0)  # the weights moved

    model = _linear_two_task_model([[0.3, -0.2], [0.1, 0.4]], heads)
    model.compile(keras.optimizers.SGD(eta), loss=keras_mtl.GradNorm({"a": "mse", "b": "mse"}, alpha=alpha))
    for _ in range(2):
        model.train_on_batch(x.astype("float32"), {task: value.astype("float32") for task, value in y.items()})
    np.testing.assert_allclose(_numpy(model.multi_task_state["gradnorm_weights"]), w, rtol=1e-5)
    np.testing.assert_allclose(_numpy(model.multi_task_state["initial_losses"]), initial, rtol=1e-5)
    np.testing.assert_allclose(model.get_layer("trunk").get_weights()[0], kernel, rtol=1e-5, atol=1e-7)
