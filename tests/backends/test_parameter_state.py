"""Method state with a column per shared parameter: sized at compile without data, checked when a step is traced.

Runs on TensorFlow, JAX and PyTorch (`KERAS_BACKEND=jax pytest tests/backends`, `KERAS_BACKEND=torch`).
"""

import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_mtl

sys.path.insert(0, str(Path(__file__).parents[1] / "support"))
import three_tasks  # noqa: E402
from state_values import gradient  # noqa: E402

PARAMETER_METHODS = ["excess_mtl", "moco", "db_mtl"]


def shapes(model):
    return {variable.name: tuple(variable.shape) for variable in model.multi_task_state.weights}


def two_trunk_model():
    """Two shared Dense layers ("first": 6·4 + 4 = 28 parameters, "second": 4·4 + 4 = 20), two heads."""
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(4, name="second")(keras.layers.Dense(4, name="first")(inputs))
    return keras_mtl.MultiTaskModel(
        inputs, {"a": keras.layers.Dense(1, name="a")(hidden), "b": keras.layers.Dense(1, name="b")(hidden)}
    )


def two_task_data(n=16):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 6)).astype("float32"), {
        "a": rng.normal(size=(n, 1)).astype("float32"),
        "b": rng.normal(size=(n, 1)).astype("float32"),
    }


@pytest.mark.parametrize("method_id", PARAMETER_METHODS)
def test_a_functional_model_sizes_the_state_by_its_shared_parameters_at_compile(method_id):
    model = three_tasks.model()
    model.compile("sgd", three_tasks.method(method_id))
    state = model.multi_task_state
    assert state.parameter_columns == ("trunk/kernel", "trunk/bias")
    # The trunk: a 6×8 kernel and 8 biases, one row per task.
    assert (3, 56) in shapes(model).values()


# Its expected step comes from tests/support/state_values.py's autodiff, which has no torch version yet.
@pytest.mark.skipif(
    keras.backend.backend() == "torch", reason="the test's own reference gradient has no torch version yet"
)
def test_a_layer_with_one_output_per_task_shares_its_experts_not_its_gates():
    model = keras_mtl.architectures.mmoe(
        keras.Input((6,)), {"a": 1, "b": 1}, num_experts=2, expert_units=(3,), tower_units=()
    )
    model.compile(keras.optimizers.SGD(0.1), keras_mtl.MoCo({"a": "mse", "b": "mse"}, beta=0.5, gamma=1.0))
    paths = model.multi_task_state.parameter_columns
    assert paths and all(path.startswith("mmoe/expert_") for path in paths), paths
    # Two experts of a 6×3 kernel and 3 biases.
    assert shapes(model)["tracked_gradients"] == (2, 2 * (18 + 3))
    # One SGD step by MoCo's rule (β = 0.5, γ = 1, ρ = 0.1) on the experts' per-task gradients J (the backend's autodiff
    # of the model's own call, numpy after): Y = 0 − β(0 − J) = βJ, λ = Π_Δ(½ − γ(YYᵀ½ + ρ½)), the experts along Yᵀλ.
    x, y = two_task_data(8)
    trainable = [keras.ops.convert_to_tensor(v) for v in model.trainable_variables]
    non_trainable = [keras.ops.convert_to_tensor(v) for v in model.non_trainable_variables]
    columns = [next(i for i, v in enumerate(model.trainable_variables) if v.path == path) for path in paths]

    def task_loss(task):
        def loss(values):
            outputs, _ = model.stateless_call(values, non_trainable, x, training=True)
            return keras.ops.mean(keras.ops.square(outputs[task] - y[task]))

        return loss

    jacobian = np.stack(
        [
            np.concatenate(
                [np.ravel(keras.ops.convert_to_numpy(gradient(task_loss(task), trainable)[i])) for i in columns]
            )
            for task in ("a", "b")
        ]
    ).astype(np.float64)
    tracked = 0.5 * jacobian
    start = np.full(2, 0.5)
    lambdas = start - 1.0 * (tracked @ tracked.T @ start + 0.1 * start)
    lambdas = np.clip(lambdas - (lambdas.sum() - 1) / 2, 0, 1)  # Π_Δ for K = 2
    assert np.abs(lambdas - 0.5).max() > 0.01  # λ moved
    before = [np.float64(keras.ops.convert_to_numpy(model.trainable_variables[i])) for i in columns]
    model.train_on_batch(x, y)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model.multi_task_state["tracked_gradients"]),
        tracked,
        rtol=1e-5,
        atol=1e-7 * np.abs(tracked).max(),
    )
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.multi_task_state["weights"]), lambdas, rtol=1e-6)
    step = np.split(tracked.T @ lambdas, np.cumsum([w.size for w in before])[:-1])
    for i, old, move in zip(columns, before, step):
        moved = keras.ops.convert_to_numpy(model.trainable_variables[i]) - old
        np.testing.assert_allclose(
            moved, -0.1 * move.reshape(old.shape), rtol=1e-3, atol=1e-3 * 0.1 * np.abs(move).max()
        )


class Subclassed(keras_mtl.MultiTaskMixin, keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.trunk = keras.layers.Dense(4, name="trunk")
        self.a = keras.layers.Dense(1, name="a")
        self.b = keras.layers.Dense(1, name="b")

    def call(self, x, training=None):
        hidden = self.trunk(x)
        return {"a": self.a(hidden), "b": self.b(hidden)}


def test_a_subclassed_model_is_sized_by_its_named_shared_layers():
    model = Subclassed(shared_layers=["trunk"])
    model(np.zeros((1, 6), "float32"))
    model.compile("sgd", keras_mtl.ExcessMTL({"a": "mse", "b": "mse"}))
    assert shapes(model)["squared_gradient_sum"] == (2, 6 * 4 + 4)
    x, y = two_task_data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)


def test_compile_explains_what_a_subclassed_or_unbuilt_model_needs():
    losses = {"a": "mse", "b": "mse"}
    built = Subclassed()
    built(np.zeros((1, 6), "float32"))
    with pytest.raises(
        ValueError,
        match=r"ExcessMTL keeps a state per shared parameter.*name its shared layers \(`shared_layers=\[...\]`",
    ):
        built.compile("sgd", keras_mtl.ExcessMTL(losses))
    with pytest.raises(ValueError, match=r"MoCo keeps a state per shared parameter.*not built yet: build it first"):
        Subclassed(shared_layers=["trunk"]).compile("sgd", keras_mtl.MoCo(losses))
    assert built.multi_task_method is None


@pytest.mark.parametrize("method_id", PARAMETER_METHODS)
def test_representation_mode_is_refused_at_compile(method_id):
    model = three_tasks.model(representation="trunk")
    with pytest.raises(
        ValueError, match=r"works on the gradients of the shared parameters, not of a shared representation"
    ):
        model.compile("sgd", three_tasks.method(method_id))
    assert model.multi_task_method is None


def test_db_mtl_without_its_average_runs_in_representation_mode():
    model = three_tasks.model(representation="trunk")
    model.compile("sgd", three_tasks.method("db_mtl", representation="trunk"))
    assert model.multi_task_state.parameter_columns is None and shapes(model) == {}


def test_a_step_that_shares_other_variables_than_the_state_is_sized_for_is_refused_and_a_new_compile_resizes():
    model = two_trunk_model()
    model.compile(keras.optimizers.SGD(0.1), keras_mtl.MoCo({"a": "mse", "b": "mse"}))
    assert shapes(model)["tracked_gradients"] == (2, 48)
    model.get_layer("first").trainable = False
    initial = model.get_weights()
    x, y = two_task_data()
    message = r"MoCo keeps a state per shared parameter.*\['first/kernel', 'first/bias'\] no longer shared or trainable.*Compile the model again"
    with pytest.raises(ValueError, match=message):  # while the step is traced
        model.train_on_batch(x, y)
    with pytest.raises(ValueError, match=message):  # when fit begins
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    for before, after in zip(initial, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    model.compile(keras.optimizers.SGD(0.1), keras_mtl.MoCo({"a": "mse", "b": "mse"}))
    assert shapes(model)["tracked_gradients"] == (2, 20)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)


def test_a_recompile_with_the_same_method_keeps_the_state():
    model = two_trunk_model()
    model.compile(keras.optimizers.SGD(0.1), keras_mtl.MoCo({"a": "mse", "b": "mse"}))
    x, y = two_task_data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    state = model.multi_task_state
    tracked = state["tracked_gradients"].numpy()
    model.compile(keras.optimizers.SGD(0.01), keras_mtl.MoCo({"a": "mse", "b": "mse"}))
    assert model.multi_task_state is state
    np.testing.assert_array_equal(state["tracked_gradients"].numpy(), tracked)
    assert np.abs(tracked).max() > 0


def test_a_method_with_parameter_state_must_declare_parameter_mode_only():
    class Careless(keras_mtl.MeanGradient):
        def build_state(self, state, task_names):
            state.parameter_variable("rows", len(task_names))

    with pytest.raises(TypeError, match=r"Careless declares a parameter_variable, so it must set parameter_mode_only"):
        three_tasks.model().compile("sgd", Careless(three_tasks.task_losses()))
