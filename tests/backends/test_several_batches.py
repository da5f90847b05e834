"""The engine's support for methods that draw several batches per step (`GradientMethod.batch_parts`), on the backend in use.

A linear model with squared-error losses, whose per-part gradients the
tests compute in closed form (numpy, float64): `pred_k = X W v_k`,
`∂L_k/∂W = (2/n) Xᵀ r_k v_kᵀ`, `∂L_k/∂v_k = (2/n) (XW)ᵀ r_k` with
`r_k = X W v_k − y_k`.
"""

import keras
import numpy as np
import pytest
from keras import ops

import keras_mtl

TASKS = ("a", "b")


class PartsProbe(keras_mtl.GradientMethod):
    """Keeps the part Jacobians it is given in its state; moves nothing shared (d = 0)."""

    method_id = "parts_probe"
    batch_parts = 3

    def __init__(self, losses=None, parameters=6, name=None):
        super().__init__(losses, name=name)
        self.parameters = parameters

    def build_state(self, state, task_names):
        state.variable("seen", (self.batch_parts, len(task_names), self.parameters))

    def combine(self, gradients, state, training):
        num_tasks = gradients.losses.shape[0]
        return (
            ops.zeros((self.parameters,)),
            ops.ones((num_tasks,)) / num_tasks,
            {"seen": ops.stack(gradients.part_jacobians)},
        )


def linear_model(rng):
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(2, use_bias=False, name="trunk")(inputs)
    model = keras_mtl.MultiTaskModel(
        inputs, {task: keras.layers.Dense(1, use_bias=False, name=task)(hidden) for task in TASKS}
    )
    model.set_weights(
        [
            rng.normal(size=(3, 2)).astype("float32"),
            rng.normal(size=(2, 1)).astype("float32"),
            rng.normal(size=(2, 1)).astype("float32"),
        ]
    )
    return model


def data(rng, n):
    return rng.normal(size=(n, 3)).astype("float32"), {
        task: rng.normal(size=(n, 1)).astype("float32") for task in TASKS
    }


def gradients(weights, x, y):
    """Per task, (∂L_k/∂W flattened, ∂L_k/∂v_k) of the mean squared error on (x, y), float64."""
    kernel, *heads = [np.asarray(w, np.float64) for w in weights]
    x = np.asarray(x, np.float64)
    result = []
    for task, head in zip(TASKS, heads):
        residual = x @ kernel @ head - y[task]
        result.append(((2 / len(x)) * x.T @ residual @ head.T, (2 / len(x)) * (x @ kernel).T @ residual))
    return result


def test_each_part_jacobian_is_that_part_s_own_gradient_and_heads_take_the_whole_batch_s():
    rng = np.random.default_rng(0)
    model = linear_model(rng)
    model.compile(keras.optimizers.SGD(0.1), loss=PartsProbe({task: "mse" for task in TASKS}))
    x, y = data(rng, 10)
    before = model.get_weights()
    model.train_on_batch(x, y)
    seen = ops.convert_to_numpy(model.multi_task_state["seen"])
    # Dealt parts: samples 0, 3, 6, 9; 1, 4, 7; 2, 5, 8.
    for i, rows in enumerate([[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]):
        expected = [kernel.ravel() for kernel, _ in gradients(before, x[rows], {t: y[t][rows] for t in TASKS})]
        np.testing.assert_allclose(seen[i], expected, rtol=1e-5, atol=1e-6)
    after = model.get_weights()
    np.testing.assert_array_equal(after[0], before[0])  # d = 0
    for k, (_, head) in enumerate(gradients(before, x, y)):
        np.testing.assert_allclose(after[1 + k], before[1 + k] - 0.1 * head, rtol=1e-5, atol=1e-6)


def modo_model(batches):
    model = linear_model(np.random.default_rng(1))
    model.compile(keras.optimizers.SGD(0.1), loss=keras_mtl.MoDo({task: "mse" for task in TASKS}, batches=batches))
    return model


def test_a_batch_smaller_than_the_parts_is_an_error_naming_the_method_that_changes_nothing():
    x, y = data(np.random.default_rng(2), 10)
    # Batches of 4, 4 and 2: the last cannot be cut into three parts.
    model = modo_model(3)
    with pytest.raises(Exception, match=r"MoDo draws 3 batches per step.*at least 3 samples"):
        model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    reference = modo_model(3)
    reference.fit(x[:8], {t: y[t][:8] for t in TASKS}, batch_size=4, epochs=1, shuffle=False, verbose=0)
    for got, expected in zip(
        model.get_weights() + [model.multi_task_state["modo_weights"]],
        reference.get_weights() + [reference.multi_task_state["modo_weights"]],
    ):
        np.testing.assert_array_equal(ops.convert_to_numpy(got), ops.convert_to_numpy(expected))


def _project_simplex(v):
    u = np.sort(v)[::-1]
    cumulative = np.cumsum(u) - 1.0
    support = np.nonzero(u - cumulative / np.arange(1, len(v) + 1) > 0)[0][-1]
    return np.maximum(v - cumulative[support] / (support + 1), 0.0)


def test_the_last_smaller_batch_trains_when_it_can_be_cut():
    # Batches of 4, 4 and 2, each dealt into two parts (rows 0, 2 | 1, 3; 4, 6 | 5, 7; 8 | 9). Per step, MoDo's
    # rule (γ = ρ = 0.1) on the parts' closed-form gradients: λ ← Π_Δ(λ − γ(J_1 J_2ᵀ λ + ρ λ)), the trunk along
    # ½(J_1 + J_2)ᵀ λ, the heads along the whole batch's gradient; the 2-sample batch included.
    x, y = data(np.random.default_rng(2), 10)
    model = modo_model(2)
    weights = [np.float64(w) for w in model.get_weights()]
    lambdas, logged = np.full(2, 0.5), []
    for batch, parts in [(range(0, 4), ([0, 2], [1, 3])), (range(4, 8), ([4, 6], [5, 7])), (range(8, 10), ([8], [9]))]:
        first, second = [
            np.stack([kernel.ravel() for kernel, _ in gradients(weights, x[rows], {t: y[t][rows] for t in TASKS})])
            for rows in parts
        ]
        lambdas = _project_simplex(lambdas - 0.1 * (first @ second.T @ lambdas + 0.1 * lambdas))
        logged.append(lambdas)
        batch = list(batch)
        heads = [head for _, head in gradients(weights, x[batch], {t: y[t][batch] for t in TASKS})]
        weights = [weights[0] - 0.1 * (0.5 * (first + second).T @ lambdas).reshape(weights[0].shape)] + [
            w - 0.1 * h for w, h in zip(weights[1:], heads)
        ]
    history = model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    # Logged: the epoch's mean of the steps' λ, weighted by the batches' sizes as Keras's metrics are.
    np.testing.assert_allclose(
        [history.history[f"{t}_weight"][0] for t in TASKS], np.average(logged, axis=0, weights=[4, 4, 2]), rtol=1e-5
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(model.multi_task_state["modo_weights"]), lambdas, rtol=1e-5, atol=1e-7
    )
    for got, want in zip(model.get_weights(), weights):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


def test_a_single_batch_too_small_to_cut_is_the_same_error():
    model = modo_model(3)
    x, y = data(np.random.default_rng(3), 2)
    before = model.get_weights()
    with pytest.raises(Exception, match=r"MoDo draws 3 batches per step.*this one has 2"):
        model.train_on_batch(x, y)
    for got, expected in zip(model.get_weights(), before):
        np.testing.assert_array_equal(got, expected)


def test_representation_mode_is_refused():
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(2, name="trunk")(inputs)
    model = keras_mtl.MultiTaskModel(
        inputs, {task: keras.layers.Dense(1, name=task)(hidden) for task in TASKS}, representation="trunk"
    )
    with pytest.raises(ValueError, match="SDMGrad"):
        model.compile(keras.optimizers.SGD(0.1), loss=keras_mtl.SDMGrad({task: "mse" for task in TASKS}))
