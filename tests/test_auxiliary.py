"""HydaLearn and GCosSim: auxiliary tasks help the main task or get no weight."""

import keras
import numpy as np
import pytest
from support.state_values import gradient, state_values

import keras_mtl
from keras_mtl.gradients import TaskGradients


def _weights(method, jacobian, tasks=("aux", "main", "other")):
    """The method's weights (numpy) on `jacobian`, driven directly with its initial state; it keeps no state."""
    weights, new_state = method.gradient_weights(_gradients(jacobian), state_values(method, tasks), training=True)
    assert new_state == {}
    return keras.ops.convert_to_numpy(weights)


def _gradients(jacobian, losses=(1.0, 1.0, 1.0), learning_rate=0.1):
    jacobian = np.asarray(jacobian, "float32")
    gramian = keras.ops.convert_to_tensor(jacobian @ jacobian.T)
    losses = keras.ops.convert_to_tensor(np.asarray(losses, "float32"))
    return TaskGradients(
        jacobian=keras.ops.convert_to_tensor(jacobian),
        losses=losses,
        gramian=gramian,
        last_layer_gramian=gramian,
        learning_rate=learning_rate,
    )


# Tasks in order (aux, main, other): g_main = (2, 0); aux helps (1, 1),
# "other" opposes (−1, 0.5). ⟨g_m, g_aux⟩ = 2, ⟨g_m, g_other⟩ = −2, ‖g_m‖² = 4.
JACOBIAN = [[1.0, 1.0], [2.0, 0.0], [-1.0, 0.5]]


def test_hydalearn_first_order_by_hand():
    method = keras_mtl.HydaLearn("mse", main_task="main", first_order=True)
    weights = _weights(method, JACOBIAN)
    # w_aux = max(η·2, 0) / (η·4) = 0.5; the opposing task gets 0; main 1.
    np.testing.assert_allclose(weights, [0.5, 1.0, 0.0], rtol=1e-6)


def test_gcossim_by_hand():
    # cos(main, aux) = 2/(2·√2) = 1/√2; cos(main, other) < 0.
    hard = keras_mtl.GradientCosineSimilarity("mse", main_task="main")
    np.testing.assert_allclose(_weights(hard, JACOBIAN), [1.0, 1.0, 0.0])
    soft = keras_mtl.GradientCosineSimilarity("mse", main_task="main", weighted=True)
    np.testing.assert_allclose(_weights(soft, JACOBIAN), [1 / np.sqrt(2), 1.0, 0.0], rtol=1e-6)


def test_zero_gradients_give_zero_auxiliary_weights():
    for method in (
        keras_mtl.HydaLearn("mse", main_task="main", first_order=True),
        keras_mtl.GradientCosineSimilarity("mse", main_task="main"),
    ):
        np.testing.assert_array_equal(_weights(method, [[0.0, 0.0]] * 3), [0.0, 1.0, 0.0])


def _model():
    # One shared weight w, fixed heads: main predicts w·x for target a·x,
    # "help" predicts 2w·x for 2a·x (same minimum), "oppose" predicts w·x for
    # −a·x (its gradient points away from the main task's minimum).
    inputs = keras.Input((4,))
    z = keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros", name="shared")(inputs)
    return keras_mtl.MultiTaskModel(
        inputs,
        {
            "main": keras.layers.Identity(name="main")(z),
            "help": keras.layers.Rescaling(2.0, name="help")(z),
            "oppose": keras.layers.Identity(name="oppose")(z),
        },
    )


@pytest.mark.parametrize(
    "method",
    [
        keras_mtl.HydaLearn("mse", main_task="main"),
        keras_mtl.HydaLearn("mse", main_task="main", first_order=True),
        keras_mtl.GradientCosineSimilarity("mse", main_task="main"),
    ],
    ids=["hydalearn", "hydalearn_first_order", "gcossim"],
)
def test_opposing_auxiliary_gets_zero_and_helpful_a_positive_weight(method):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    a = rng.normal(size=(4, 1)).astype("float32")
    model = _model()
    model.compile(keras.optimizers.SGD(0.01), loss=method)
    # One full-batch step from w = 0, where "oppose" pulls towards −a.
    history = model.fit(x, {"main": x @ a, "help": 2 * x @ a, "oppose": -(x @ a)}, batch_size=64, epochs=1, verbose=0)
    assert history.history["main_weight"] == [1.0]
    assert history.history["oppose_weight"] == [0.0]
    assert history.history["help_weight"][0] > 0.5


def test_exact_lookahead_matches_first_order_for_a_small_step():
    # For a quadratic loss, L_m(θ) − L_m(θ − η g_k) = η⟨g_m, g_k⟩ − O(η²).
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 4)).astype("float32")
    a = rng.normal(size=(4, 1)).astype("float32")
    y = {"main": x @ a, "help": 2 * x @ a, "oppose": -(x @ a)}
    weights = []
    for first_order in (False, True):
        model = _model()
        model.compile(
            keras.optimizers.SGD(1e-4), loss=keras_mtl.HydaLearn("mse", main_task="main", first_order=first_order)
        )
        weights.append(model.fit(x, y, batch_size=64, epochs=1, verbose=0).history["help_weight"][0])
    assert weights[0] == pytest.approx(weights[1], rel=1e-2)


def test_main_task_is_required_and_checked():
    model = _model()
    with pytest.raises(ValueError, match="needs `main_task`"):
        model.compile("sgd", loss=keras_mtl.get("hydalearn", "mse"))
    with pytest.raises(ValueError, match="'primary' is not one of the tasks"):
        _model().compile("sgd", loss=keras_mtl.GradientCosineSimilarity("mse", main_task="primary"))


def test_config_round_trip():
    method = keras_mtl.HydaLearn({"main": "mse", "help": "mse"}, main_task="main", step_size=0.5, first_order=True)
    restored = keras_mtl.get(keras.saving.serialize_keras_object(method))
    assert (restored.main_task, restored.step_size, restored.first_order) == ("main", 0.5, True)


def test_exact_lookahead_by_hand_with_trainable_heads():
    # The look-ahead moves the shared parameters only and evaluates the main
    # task with its head as it was before the step (heads are updated by the
    # same step, so a pass that saw the updated head would be wrong).
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = {"main": rng.normal(size=(32, 1)).astype("float32"), "aux": rng.normal(size=(32, 1)).astype("float32")}
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(5, activation="tanh", name="shared")(inputs)
    model = keras_mtl.MultiTaskModel(
        inputs, {name: keras.layers.Dense(1, name=name)(hidden) for name in ("main", "aux")}
    )
    shared = model.get_layer("shared").trainable_variables
    eta = 0.5

    def task_loss(task, values):
        """Task `task`'s loss with the shared layer's parameters at `values` (nothing assigned)."""
        with keras.StatelessScope(state_mapping=list(zip(shared, values))):
            prediction = model(x)[task]
        return keras.ops.mean(keras.losses.mean_squared_error(y[task], prediction))

    start = [keras.ops.convert_to_tensor(v) for v in shared]
    gains = {}
    for task in ("main", "aux"):
        gradients = gradient(lambda values, task=task: task_loss(task, values), start)
        moved = [value - eta * g for value, g in zip(start, gradients)]
        gains[task] = float(task_loss("main", start)) - float(task_loss("main", moved))

    model.compile(keras.optimizers.SGD(eta), loss=keras_mtl.HydaLearn("mse", main_task="main"))
    history = model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert gains["main"] > 0
    assert history.history["aux_weight"][0] == pytest.approx(max(gains["aux"], 0.0) / gains["main"], rel=1e-4)


def test_representation_mode_refuses_the_look_ahead_at_compile():
    from support import three_tasks

    model = three_tasks.model(representation="trunk")
    for method in (three_tasks.method("hydalearn"), keras_mtl.SAM(method=three_tasks.method("hydalearn"))):
        with pytest.raises(ValueError, match=r"HydaLearn.* works on the gradients of the shared parameters.*'trunk'"):
            model.compile("sgd", method)
        assert model.multi_task_method is None
    model.compile("sgd", keras_mtl.HydaLearn(three_tasks.task_losses(), main_task="a", first_order=True))
