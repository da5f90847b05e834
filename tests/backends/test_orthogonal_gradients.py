"""OrthogonalGradients (Suteu & Guo) on the backend this run uses: the penalty, and the step against float64 references.

The step's reference is `∇(Σ_k L_k + R + λ·mean_{i≠j} cos²(g_i, g_j))` of a linear shared layer with linear
MSE heads, whose task gradients `g_k` are analytic; its own gradient (second order) is taken by central
finite differences in float64 here, independently of any autodiff.
"""

import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_mtl
from keras_mtl.gradients.base import TaskGradients

sys.path.insert(0, str(Path(__file__).parents[1] / "support"))
import three_tasks  # noqa: E402

TASKS = ("a", "b", "c")


def mean_squared_cosine(jacobian):
    """float64 reference: mean over ordered pairs i≠j of cos², a zero row orthogonal to every other."""
    norms = np.linalg.norm(jacobian, axis=1)
    units = np.divide(jacobian, norms[:, None], out=np.zeros_like(jacobian), where=norms[:, None] > 0)
    cosines = units @ units.T
    k = len(jacobian)
    return (np.sum(cosines**2) - np.sum(np.diag(cosines) ** 2)) / (k * (k - 1))


def penalty(jacobian, penalty_weight=10.0, parameters="all", last_layer=None):
    method = keras_mtl.OrthogonalGradients(
        {t: "mse" for t in TASKS[: len(jacobian)]}, penalty_weight=penalty_weight, parameters=parameters
    )
    gramian = (jacobian @ jacobian.T).astype("float32")
    last = last_layer if last_layer is not None else jacobian
    gradients = TaskGradients(
        jacobian=keras.ops.convert_to_tensor(jacobian.astype("float32")),
        losses=keras.ops.ones((len(jacobian),)),
        gramian=keras.ops.convert_to_tensor(gramian),
        last_layer_gramian=keras.ops.convert_to_tensor((last @ last.T).astype("float32")),
    )
    return float(keras.ops.convert_to_numpy(method.penalty(gradients)))


def test_orthogonal_gradients_cost_nothing_and_parallel_ones_cost_lambda():
    assert penalty(np.array([[3.0, 0.0, 0.0], [0.0, -2.0, 0.0], [0.0, 0.0, 5.0]])) == 0.0
    parallel = np.array([[1.0, 2.0, -1.0], [-3.0, -6.0, 3.0], [0.5, 1.0, -0.5]])
    assert penalty(parallel, penalty_weight=7.0) == pytest.approx(7.0, rel=1e-6)


@pytest.mark.parametrize(
    "case",
    [
        "random",
        "norm_ratio_1e6",
        "scale_1e-10",
        "scale_1e10",
        "rank_deficient",
        "a_zero_gradient",
    ],
)
def test_penalty_matches_a_float64_reference_on_hard_inputs(case):
    rng = np.random.default_rng(1)
    jacobian = rng.normal(size=(3, 5))
    if case == "norm_ratio_1e6":
        jacobian[1] *= 1e6
    elif case == "scale_1e-10":
        jacobian *= 1e-10
    elif case == "scale_1e10":
        jacobian *= 1e10
    elif case == "rank_deficient":
        jacobian[2] = -4.0 * jacobian[0]
    elif case == "a_zero_gradient":
        jacobian[1] = 0.0
    expected = 2.5 * mean_squared_cosine(jacobian)
    assert penalty(jacobian, penalty_weight=2.5) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_last_layer_reads_the_last_shared_layers_gradients_only():
    jacobian = np.array([[1.0, 0.0], [1.0, 0.0]])  # parallel over all shared parameters
    last_layer = np.array([[1.0, 0.0], [0.0, 1.0]])  # orthogonal on the last layer
    assert penalty(jacobian, last_layer=last_layer, parameters="last_layer") == 0.0
    assert penalty(jacobian, last_layer=last_layer) == pytest.approx(10.0)


# A linear shared layer W (d×m), linear heads a_k (m,), MSE: L_k = c_k/n Σ_i s_i (x_i W a_k − y_ki)²,
# g_k = ∂L_k/∂W = 2c_k/n xᵀ(s⊙r_k) a_kᵀ. One compiled model serves every case (set weights, new batch).
D, M, N = 3, 2, 8
LOSS_WEIGHTS = {"a": 2.0, "b": 0.5, "c": 1.0}
L2 = 0.05
LAMBDA = 3.0
LEARNING_RATE = 0.1


def linear_problem(case="plain", seed=0):
    """Scaling head k and its targets by c scales g_k by c² and keeps every cosine."""
    rng = np.random.default_rng(seed)
    problem = {
        "x": rng.normal(size=(N, D)),
        "y": {t: rng.normal(size=(N, 1)) for t in TASKS},
        "sample_weight": rng.uniform(0.5, 2.0, size=(N,)),
        "kernel": 0.7 * rng.normal(size=(D, M)),
        "heads": {t: 0.7 * rng.normal(size=(M, 1)) for t in TASKS},
    }
    scales = {
        "norm_ratio_1e6": {"b": 1e-3},
        "near_zero_gradients": {t: 1e-4 for t in TASKS},
        "zero_gradient": {"b": 0.0},
    }.get(case, {})
    for task, scale in scales.items():
        problem["heads"][task] *= scale
        problem["y"][task] *= scale
    return problem


def flat_parameters(problem):
    return np.concatenate([problem["kernel"].ravel()] + [problem["heads"][t].ravel() for t in TASKS])


def losses_and_jacobian(flat, problem):
    """float64 task losses (K,) and analytic task gradients (K, d·m) of the flat parameters (kernel, then each head)."""
    x, s = problem["x"], problem["sample_weight"]
    kernel = flat[: D * M].reshape(D, M)
    heads = flat[D * M :].reshape(len(TASKS), M, 1)
    losses, rows = [], []
    for k, task in enumerate(TASKS):
        residual = x @ kernel @ heads[k] - problem["y"][task]
        losses.append(LOSS_WEIGHTS[task] * np.mean(s * residual[:, 0] ** 2))
        rows.append((LOSS_WEIGHTS[task] * 2.0 / N * x.T @ (s[:, None] * residual) @ heads[k].T).ravel())
    return np.array(losses), np.array(rows)


def reference_objective(flat, problem, penalty_weight):
    """float64 `Σ_k L_k + R + λ·penalty`."""
    losses, jacobian = losses_and_jacobian(flat, problem)
    return np.sum(losses) + L2 * np.sum(flat[: D * M] ** 2) + penalty_weight * mean_squared_cosine(jacobian)


def reference_gradient(problem, penalty_weight=LAMBDA):
    """Central differences in float64, each step relative to its parameter's size."""
    flat = flat_parameters(problem)
    gradient = np.zeros_like(flat)
    for i in range(len(flat)):
        e = np.zeros_like(flat)
        e[i] = 1e-5 * max(abs(flat[i]), 1e-3)
        up = reference_objective(flat + e, problem, penalty_weight)
        down = reference_objective(flat - e, problem, penalty_weight)
        gradient[i] = (up - down) / (2 * e[i])
    return gradient


@pytest.fixture(scope="module")
def linear_model():
    inputs = keras.Input((D,))
    shared = keras.layers.Dense(M, use_bias=False, name="shared", kernel_regularizer=keras.regularizers.L2(L2))(inputs)
    outputs = {t: keras.layers.Dense(1, use_bias=False, name=t)(shared) for t in TASKS}
    model = keras_mtl.MultiTaskModel(inputs, outputs)
    method = keras_mtl.OrthogonalGradients({t: "mse" for t in TASKS}, penalty_weight=LAMBDA)
    model.compile(keras.optimizers.SGD(LEARNING_RATE), loss=method, loss_weights=LOSS_WEIGHTS)
    return model


def batch(problem):
    return (
        problem["x"].astype("float32"),
        {t: v.astype("float32") for t, v in problem["y"].items()},
        problem["sample_weight"].astype("float32"),
    )


def step_gradient(model, problem):
    """The update one training step applies, as a flat gradient (kernel, then each head), and the step's logs."""
    layers = [model.get_layer("shared")] + [model.get_layer(t) for t in TASKS]
    before = flat_parameters(problem).astype("float32")
    for layer, value in zip(layers, [problem["kernel"]] + [problem["heads"][t] for t in TASKS]):
        layer.set_weights([value.astype("float32")])
    x, y, s = batch(problem)
    logs = model.train_on_batch(x, y, sample_weight=s, return_dict=True)
    after = np.concatenate([np.ravel(layer.get_weights()[0]) for layer in layers])
    return (before - after) / LEARNING_RATE, logs


@pytest.mark.parametrize("case", ["plain", "norm_ratio_1e6", "near_zero_gradients"])
def test_the_step_is_the_gradient_of_the_penalised_total(linear_model, case):
    """With loss weights, sample weights and an L2 regulariser."""
    problem = linear_problem(case)
    gradient, logs = step_gradient(linear_model, problem)
    expected = reference_gradient(problem)
    np.testing.assert_allclose(gradient, expected, rtol=2e-3, atol=2e-4 * np.max(np.abs(expected)))
    # The task weights are logged as 1 each (the losses enter the total unweighted), and the penalty's value.
    assert all(logs[f"{t}_weight"] == pytest.approx(1.0) for t in TASKS)
    penalty = LAMBDA * mean_squared_cosine(losses_and_jacobian(flat_parameters(problem), problem)[1])
    assert logs["orthogonal_gradients_penalty"] == pytest.approx(penalty, rel=1e-4)


def test_a_zero_task_gradient_is_orthogonal_to_every_other(linear_model):
    """Head b at 0 makes g_b = 0: its cosines are 0 and the penalty's gradient along b's head too."""
    problem = linear_problem("zero_gradient")
    gradient, _ = step_gradient(linear_model, problem)
    assert np.all(np.isfinite(gradient))
    # Elsewhere the reference holds (b's cosines stay 0 under those perturbations); along b's head
    # the step is b's loss gradient alone.
    expected = reference_gradient(problem)
    head_b = slice(D * M + M, D * M + 2 * M)
    expected[head_b] = reference_gradient(problem, penalty_weight=0.0)[head_b]
    np.testing.assert_allclose(gradient, expected, rtol=2e-3, atol=2e-4 * np.max(np.abs(expected)))


def test_evaluation_logs_no_penalty(linear_model):
    x, y, s = batch(linear_problem())
    logs = linear_model.evaluate(x, y, sample_weight=s, verbose=0, return_dict=True)
    assert "orthogonal_gradients_penalty" not in logs and "a_loss" in logs


def test_a_loss_scale_changes_nothing(linear_model):
    problem = linear_problem(seed=2)
    plain, _ = step_gradient(linear_model, problem)
    scaled_model = keras.models.clone_model(linear_model)
    scaled_model.compile(
        keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(LEARNING_RATE)),
        loss=linear_model.multi_task_method,
        loss_weights=LOSS_WEIGHTS,
    )
    scaled, _ = step_gradient(scaled_model, problem)
    np.testing.assert_allclose(scaled, plain, rtol=1e-5, atol=1e-6 * np.max(np.abs(plain)))


def test_a_non_finite_loss_names_the_task_and_changes_nothing(linear_model):
    step_gradient(linear_model, linear_problem())  # builds the optimizer
    before = [np.array(v) for v in linear_model.get_weights() + linear_model.optimizer.variables]
    x, y, s = batch(linear_problem())
    y["c"][3] = np.inf
    with pytest.raises(Exception, match="the loss of task 'c'.*not finite"):
        linear_model.train_on_batch(x, y, sample_weight=s)
    for a, b in zip(before, [np.array(v) for v in linear_model.get_weights() + linear_model.optimizer.variables]):
        np.testing.assert_array_equal(a, b)


def test_arguments_are_checked_and_saved():
    losses = {"a": "mse", "b": "mse"}
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="OrthogonalGradients: `penalty_weight` must be a finite number > 0"):
            keras_mtl.OrthogonalGradients(losses, penalty_weight=bad)
    with pytest.raises(ValueError, match="OrthogonalGradients: `parameters` must be one of"):
        keras_mtl.OrthogonalGradients(losses, parameters="first_layer")
    method = keras_mtl.OrthogonalGradients(losses, penalty_weight=3.0, parameters="last_layer")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(method))
    assert (restored.penalty_weight, restored.parameters, restored.losses) == (3.0, "last_layer", losses)


def test_representation_mode_and_sam_are_refused():
    model = three_tasks.model(representation="trunk")
    with pytest.raises(ValueError, match="OrthogonalGradients works on the gradients of the shared parameters"):
        model.compile("sgd", loss=three_tasks.method("orthogonal_gradients"))
    with pytest.raises(ValueError, match="SAM cannot wrap OrthogonalGradients"):
        keras_mtl.SAM({"a": "mse", "b": "mse"}, method="orthogonal_gradients")
