"""Auto-Lambda and SLGrad, on the backend this run uses: a step by hand (float64 NumPy), their defining properties, their rules on hard inputs.

The model is linear: a shared 3×2 kernel W (no bias, L2 regulariser c‖W‖²) and one 2→1 head per task,
trained by plain SGD on a batch of 4 that the step deals into parts (rows 0, 2
and rows 1, 3). The references below recompute each step from the rule alone.
"""

import keras
import numpy as np
import pytest

import keras_mtl

LEARNING_RATE = 0.1
TASKS = ("a", "b")
L2 = 0.05


def linear_model(kernel, heads):
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(2, use_bias=False, name="trunk", kernel_regularizer=keras.regularizers.L2(L2))(inputs)
    outputs = {name: keras.layers.Dense(1, use_bias=False, name=name)(hidden) for name in TASKS}
    model = keras_mtl.MultiTaskModel(inputs, outputs)
    model.get_layer("trunk").set_weights([np.asarray(kernel, "float32")])
    for name, head in zip(TASKS, heads):
        model.get_layer(name).set_weights([np.asarray(head, "float32").reshape(2, 1)])
    return model


def batch(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(4, 3))
    return x, {"a": rng.normal(size=(4, 1)), "b": rng.normal(size=(4, 1))}


def start(seed=1):
    rng = np.random.default_rng(seed)
    return 0.5 * rng.normal(size=(3, 2)), [0.5 * rng.normal(size=2) for _ in TASKS]


def trained(method, kernel, heads, x, y, steps):
    """The model, and per step its logs and its weights (W, head a, head b) after the step."""
    model = linear_model(kernel, heads)
    model.compile(keras.optimizers.SGD(LEARNING_RATE), loss=method)
    logs, weights = [], []
    for _ in range(steps):
        history = model.fit(
            x.astype("float32"),
            {k: v.astype("float32") for k, v in y.items()},
            batch_size=4,
            epochs=1,
            shuffle=False,
            verbose=0,
        )
        logs.append({name: values[0] for name, values in history.history.items()})
        weights.append(np.concatenate([model.get_layer(name).get_weights()[0].ravel() for name in ("trunk",) + TASKS]))
    return model, logs, weights


# The model's per-sample residuals and gradients, in float64.


def residuals(theta, x, y, task):
    kernel, heads = theta
    return x @ kernel @ heads[task] - y[TASKS[task]][:, 0]


def sample_gradients(theta, x, y, task):
    """Per sample i, ∇ (prediction − target)² with respect to (W, head a, head b): (n, 6 + 2K)."""
    kernel, heads = theta
    r = residuals(theta, x, y, task)
    rows = []
    for i in range(len(x)):
        head_gradients = [np.zeros(2) for _ in TASKS]
        head_gradients[task] = 2 * r[i] * (x[i] @ kernel)
        rows.append(np.concatenate([np.outer(x[i], 2 * r[i] * heads[task]).ravel()] + head_gradients))
    return np.array(rows)


def mean_gradient(theta, x, y, task):
    return sample_gradients(theta, x, y, task).mean(axis=0)


def regularization_gradient(theta):
    """∇ c‖W‖², zero on the heads."""
    return np.concatenate([2 * L2 * theta[0].ravel(), np.zeros(2 * len(TASKS))])


def moved(theta, step):
    kernel, heads = theta
    return kernel - step[:6].reshape(3, 2), [head - step[6 + 2 * k : 8 + 2 * k] for k, head in enumerate(heads)]


INNER, OUTER = [0, 2], [1, 3]


def part(x, y, rows):
    return x[rows], {name: values[rows] for name, values in y.items()}


def auto_lambda_reference(theta, x, y, steps, meta_learning_rate, primary):
    """Auto-Lambda's rule in float64: the weights after `steps` steps, and λ."""
    weights, first, second = np.full(len(TASKS), 0.1), np.zeros(len(TASKS)), np.zeros(len(TASKS))
    for t in range(1, steps + 1):
        inner, outer = part(x, y, INNER), part(x, y, OUTER)
        jacobian = np.array([mean_gradient(theta, *inner, k) for k in range(len(TASKS))])
        virtual = moved(theta, LEARNING_RATE * (weights @ jacobian + regularization_gradient(theta)))
        outer_gradient = sum(mean_gradient(virtual, *outer, k) for k in primary)
        meta_gradient = -LEARNING_RATE * jacobian @ outer_gradient
        first = 0.9 * first + 0.1 * meta_gradient
        second = 0.999 * second + 0.001 * meta_gradient**2
        weights = weights - meta_learning_rate * (first / (1 - 0.9**t)) / (np.sqrt(second / (1 - 0.999**t)) + 1e-8)
        whole = np.array([mean_gradient(theta, x, y, k) for k in range(len(TASKS))])
        theta = moved(theta, LEARNING_RATE * (weights @ whole + regularization_gradient(theta)))
    return theta, weights


def slgrad_reference(theta, x, y, steps, main):
    """SLGrad's rule in float64: the weights after `steps` steps, and the last step's per-task weights."""
    for _ in range(steps):
        training, holdout = part(x, y, INNER), part(x, y, OUTER)
        v = mean_gradient(theta, *holdout, main)[:6]
        per_sample = [sample_gradients(theta, *training, k) for k in range(len(TASKS))]
        scores = np.maximum(np.array([g[:, :6] @ v for g in per_sample]), 0.0)
        sample_weights = scores / scores.sum()
        theta = moved(
            theta,
            LEARNING_RATE
            * (sum(sample_weights[k] @ per_sample[k] for k in range(len(TASKS))) + regularization_gradient(theta)),
        )
    return theta, sample_weights.sum(axis=1)


def flat(theta):
    kernel, heads = theta
    return np.concatenate([kernel.ravel()] + list(heads))


def test_auto_lambda_steps_as_computed_by_hand():
    kernel, heads = start()
    x, y = batch()
    method = keras_mtl.AutoLambda({"a": "mse", "b": "mse"}, primary_tasks=["a"], meta_learning_rate=0.05)
    _, logs, weights = trained(method, kernel, heads, x, y, steps=2)
    for step in (1, 2):
        theta, expected_weights = auto_lambda_reference((kernel, heads), x, y, step, 0.05, primary=[0])
        np.testing.assert_allclose(weights[step - 1], flat(theta), rtol=0, atol=2e-6)
        np.testing.assert_allclose(
            [logs[step - 1][f"{name}_weight"] for name in TASKS], expected_weights, rtol=0, atol=2e-6
        )


def test_slgrad_steps_as_computed_by_hand():
    kernel, heads = start()
    x, y = batch()
    _, logs, weights = trained(keras_mtl.SLGrad({"a": "mse", "b": "mse"}, main_task="a"), kernel, heads, x, y, steps=2)
    for step in (1, 2):
        theta, task_weights = slgrad_reference((kernel, heads), x, y, step, main=0)
        np.testing.assert_allclose(weights[step - 1], flat(theta), rtol=0, atol=2e-6)
        np.testing.assert_allclose(
            [logs[step - 1][f"{name}_weight"] for name in TASKS], task_weights, rtol=0, atol=1e-6
        )


def opposed_tasks():
    """Task b's targets are task a's negated, and W = 0: every gradient of b is minus a's (a's targets linear in x)."""
    x, _ = batch()
    a = x @ np.array([[1.0], [-2.0], [0.5]])
    return np.zeros((3, 2)), [np.array([0.7, -0.3])] * 2, x, {"a": a, "b": -a}


def test_auto_lambda_raises_an_aligned_task_and_lowers_an_opposed_one():
    kernel, heads, x, y = opposed_tasks()
    method = keras_mtl.AutoLambda({"a": "mse", "b": "mse"}, primary_tasks=["a"], meta_learning_rate=0.01)
    _, logs, _ = trained(method, kernel, heads, x, y, steps=1)
    change = np.array([logs[0][f"{name}_weight"] for name in TASKS]) - 0.1
    # Adam's first step moves each weight by its learning rate, in the sign of −∂L/∂λ.
    np.testing.assert_allclose(change, [0.01, -0.01], rtol=1e-4)


def test_slgrad_weights_are_nonnegative_sum_to_one_and_zero_for_an_opposed_task():
    kernel, heads, x, y = opposed_tasks()
    _, logs, _ = trained(keras_mtl.SLGrad({"a": "mse", "b": "mse"}, main_task="a"), kernel, heads, x, y, steps=1)
    assert logs[0]["a_weight"] == pytest.approx(1.0, abs=1e-6)
    assert logs[0]["b_weight"] == 0.0


def test_slgrad_sample_weights_on_scores_from_1e_minus_10_to_1e10():
    method = keras_mtl.SLGrad(main_task="a")
    scores = np.array([[1e10, -1e10, 1e-10, 3.0], [-1e-10, 2e-10, 0.0, 5e9]])
    weights = keras.ops.convert_to_numpy(
        method.sample_weights(keras.ops.convert_to_tensor(scores, "float32"), lambda total: total)
    )
    expected = np.maximum(scores, 0) / np.maximum(scores, 0).sum()
    np.testing.assert_allclose(weights, expected, rtol=1e-6, atol=1e-30)
    assert weights.min() >= 0 and weights.sum() == pytest.approx(1.0, rel=1e-6)
    assert weights[0, 1] == 0 and weights[1, 0] == 0


@pytest.mark.parametrize("parametrization", ["direct", "softmax"])
def test_auto_lambda_meta_update_on_alignments_from_1e_minus_10_to_1e10(parametrization):
    method = keras_mtl.AutoLambda(
        {"a": "mse", "b": "mse", "c": "mse"},
        meta_learning_rate=1e-3,
        initial_weight=0.2,
        parametrization=parametrization,
    )
    method.build_state(keras_mtl.MultiTaskState(), ["a", "b", "c"])
    state = {
        "meta_weights": np.array([0.2, 0.2, 0.2], "float32"),
        "meta_first_moment": np.zeros(3, "float32"),
        "meta_second_moment": np.zeros(3, "float32"),
        "meta_steps": np.float32(0),
    }
    alignments = np.array([1e10, -1e-10, 3.0])
    state = {name: keras.ops.convert_to_tensor(value) for name, value in state.items()}
    updated = method.meta_update(state, keras.ops.convert_to_tensor(alignments, "float32"), 0.5)
    gradient = -0.5 * alignments
    if parametrization == "softmax":
        softmax = np.full(3, 1 / 3)
        gradient = softmax * (gradient - softmax @ gradient)
    # Adam's first step: m̂ = g, v̂ = g², a step of lr·g/(|g| + 1e-8).
    expected = 0.2 - 1e-3 * gradient / (np.abs(gradient) + 1e-8)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(updated["meta_weights"]), expected, rtol=1e-6)


def test_bad_arguments_are_refused_with_the_method_named():
    with pytest.raises(ValueError, match="SLGrad: `parts` must be an integer ≥ 2"):
        keras_mtl.SLGrad(main_task="a", parts=1)
    with pytest.raises(ValueError, match="AutoLambda: `meta_learning_rate` must be a finite number > 0"):
        keras_mtl.AutoLambda(meta_learning_rate=0)
    with pytest.raises(ValueError, match="AutoLambda: `parametrization` must be one of"):
        keras_mtl.AutoLambda(parametrization="sigmoid")
    with pytest.raises(TypeError, match="AutoLambda: `primary_tasks` must be a list of task names, not a string"):
        keras_mtl.AutoLambda(primary_tasks="a")
    model = linear_model(*start())
    with pytest.raises(ValueError, match=r"primary_tasks names \['z'\]"):
        model.compile("sgd", loss=keras_mtl.AutoLambda({"a": "mse", "b": "mse"}, primary_tasks=["z"]))
    with pytest.raises(ValueError, match="SLGrad needs `main_task`"):
        model.compile("sgd", loss=keras_mtl.SLGrad({"a": "mse", "b": "mse"}))
