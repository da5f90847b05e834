"""Bad input to the loss weightings: clear errors, and no damage to the model or the method's state."""

import keras
import numpy as np
import pytest
from conftest import (
    ALL_WEIGHTINGS,
    compiled_toy_model,
    make_method,
    one_task_model,
    plain_toy_model,
    toy_data,
    toy_losses,
    toy_model,
)

import keras_mtl

NON_NEGATIVE = ("uw_o", "uw_so", "gls", "dwa", "famo", "stch", "si", "softadapt", "uw_log1p")


def step_error():
    """The error a refused training step raises: TensorFlow's graph assertion, else the engine's error after the step (a ValueError)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.errors.InvalidArgumentError
    return ValueError


def test_loss_keys_must_match_the_outputs():
    model = toy_model()
    with pytest.raises(ValueError, match=r"no loss for \['b'\].*no output named \['c'\]"):
        model.compile("sgd", loss=keras_mtl.get("uw_so", {"a": "mse", "c": "mse"}))
    with pytest.raises(ValueError, match=r"no loss for \['b'\]"):
        toy_model().compile("sgd", loss={"a": "mse"})
    with pytest.raises(TypeError, match="dict"):
        keras_mtl.get("uw", ["mse", "mse"])
    with pytest.raises(ValueError, match="no per-task losses"):
        toy_model().compile("sgd", loss=keras_mtl.SoftmaxUncertaintyWeighting())
    with pytest.raises(ValueError, match=r"loss_weights names \['c'\]"):
        toy_model().compile("sgd", loss=make_method("ew"), loss_weights={"c": 1.0})


def test_targets_must_match_the_tasks(toy):
    x, y = toy
    model = compiled_toy_model("uw_so")
    with pytest.raises(ValueError, match=r"no task named \['c'\]"):
        model.fit(x, {**y, "c": y["a"]}, epochs=1, verbose=0)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
@pytest.mark.parametrize("method_id", ["uw_so", "dwa"])
def test_temperature_must_be_positive(method_id, temperature):
    with pytest.raises(
        ValueError,
        match=r"(DynamicWeightAverage|SoftmaxUncertaintyWeighting): `temperature` must be a finite number > 0",
    ):
        make_method(method_id, temperature=temperature)


def test_other_bad_arguments():
    with pytest.raises(ValueError, match="form"):
        make_method("uw", form="ordinal")
    with pytest.raises(ValueError, match="beta"):
        make_method("slaw", beta=1.0)
    with pytest.raises(ValueError, match="logits_learning_rate"):
        make_method("famo", logits_learning_rate=0.0)
    with pytest.raises(ValueError, match=r"FAMO: `min_losses` has 3 entries for 2 tasks"):
        toy_model().compile("sgd", loss=make_method("famo", min_losses=[0.0, 0.0, 0.0]))


def test_scalarization_weights_checked():
    with pytest.raises(ValueError, match="Scalarization: `weights` must be .* ≥ 0"):
        keras_mtl.Scalarization(toy_losses(), weights=[0.5, -0.1])
    with pytest.raises(ValueError, match="Scalarization: `weights` must be .* ≥ 0"):
        keras_mtl.Scalarization(toy_losses(), weights={"a": -1.0, "b": 1.0})
    with pytest.raises(ValueError, match="Scalarization: `weights` has 3 entries for 2 tasks"):
        toy_model().compile("sgd", loss=keras_mtl.Scalarization(toy_losses(), weights=[0.2, 0.3, 0.5]))
    with pytest.raises(ValueError, match="Scalarization: `weights` has 1 entries for 2 tasks"):
        toy_model().compile("sgd", loss=keras_mtl.Scalarization(toy_losses(), weights=[1.0]))
    with pytest.raises(
        ValueError,
        match=r"Scalarization: `weights` must name every task \[\'a\', \'b\'\] once; missing \[\'b\'\], unknown \[\'c\'\]",
    ):
        toy_model().compile("sgd", loss=keras_mtl.Scalarization(toy_losses(), weights={"a": 0.5, "c": 0.5}))
    with pytest.raises(ValueError, match="num_tasks"):
        keras_mtl.scalarization_grid(0)


@pytest.mark.parametrize("method_id", [m for m in ALL_WEIGHTINGS if m not in ("ew", "scalarization")])
def test_one_task_is_refused_by_methods_that_balance_tasks(method_id):
    with pytest.raises(ValueError, match="needs at least 2 tasks; the model has 1"):
        one_task_model().compile("sgd", loss=make_method(method_id, losses={"a": "mse"}))


@pytest.mark.parametrize("method_id", ["ew", "scalarization"])
def test_one_task_is_fine_for_sums(method_id):
    x, y = toy_data()
    model = one_task_model()
    kwargs = {"weights": [1.0]} if method_id == "scalarization" else {}
    model.compile(keras.optimizers.SGD(0.05), loss=make_method(method_id, losses={"a": "mse"}, **kwargs))
    history = model.fit(x, {"a": y["a"]}, batch_size=10, epochs=1, verbose=0).history
    assert history["loss"][0] == pytest.approx(history["a_loss"][0], rel=1e-6)


def test_plain_keras_model_explains_the_mixin(toy):
    x, y = toy
    model = plain_toy_model()
    model.compile("sgd", loss=make_method("uw_so"))
    with pytest.raises(TypeError, match="MultiTaskMixin"):
        model.fit(x, y, epochs=1, verbose=0)
    with pytest.raises(TypeError, match="keras_mtl.MultiTaskModel"):
        model.evaluate(x, y, verbose=0)


def _snapshot(variables):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


def _running_statistics(model):
    return [v for v in model.multi_task_state.weights if not v.trainable]


def _two_clean_steps(method_id):
    x, y = toy_data()
    model = toy_model()
    model.compile(keras.optimizers.Adam(0.01), loss=make_method(method_id))
    for start in (0, 10):  # so that the running statistics are not at their initial values
        model.train_on_batch(x[start : start + 10], {k: v[start : start + 10] for k, v in y.items()})
    # Close DWA's epoch: a fit epoch starts from empty sums, which the checks below would see as a change.
    model.end_epoch()
    bad = {"a": y["a"][:10].copy(), "b": y["b"][:10]}
    bad["a"][3] = np.nan
    return model, x[:10], bad


# TensorFlow's graph error messages escape the quotes around the task name.
NAN_MESSAGE = r"the loss of task \\?'a\\?' \(of the batch\) is not finite"


@pytest.mark.parametrize("method_id", ["dwa", "rlw", "slaw", "famo", "uw_so"])
def test_nan_loss_names_the_task_and_leaves_running_statistics_unchanged(method_id):
    model, x, bad = _two_clean_steps(method_id)
    statistics = _running_statistics(model)
    before = _snapshot(statistics)
    with pytest.raises(step_error(), match=NAN_MESSAGE):
        model.train_on_batch(x, bad)
    with pytest.raises(step_error(), match=NAN_MESSAGE):
        model.fit(x, bad, epochs=1, verbose=0)
    for variable, old, new in zip(statistics, before, _snapshot(statistics)):
        np.testing.assert_array_equal(new, old, err_msg=variable.path)


def test_nan_loss_leaves_learned_weights_unchanged():
    # Three tries, since the damage comes from a race between the check and the update.
    for _ in range(3):
        model, x, bad = _two_clean_steps("uw")
        variables = model.weights + model.optimizer.variables
        before = _snapshot(variables)
        with pytest.raises(step_error(), match=NAN_MESSAGE):
            model.train_on_batch(x, bad)
        for variable, old, new in zip(variables, before, _snapshot(variables)):
            np.testing.assert_array_equal(new, old, err_msg=variable.path)


def negative_mse(y_true, y_pred):
    return -keras.ops.mean(keras.ops.square(y_true - y_pred), axis=-1)


@pytest.mark.parametrize("method_id", NON_NEGATIVE)
def test_negative_loss_is_refused(method_id, toy):
    x, y = toy
    model = toy_model()
    model.compile("sgd", loss=make_method(method_id, losses={"a": negative_mse, "b": toy_losses()["b"]}))
    statistics = _running_statistics(model)
    before = _snapshot(statistics)
    with pytest.raises(step_error(), match=r"needs non-negative losses; task \\?'a\\?' has a negative one"):
        model.fit(x, y, batch_size=10, epochs=1, verbose=0)
    for variable, old, new in zip(statistics, before, _snapshot(statistics)):
        np.testing.assert_array_equal(new, old, err_msg=variable.path)


def test_famo_loss_below_its_lower_bound_is_refused(toy):
    # The toy's mse starts near 4 (targets 2x with x ~ N(0, 1)): a bound of 100 refuses the first step.
    x, y = toy
    model = toy_model()
    model.compile("sgd", loss=make_method("famo", min_losses=[100.0, 0.0]))
    variables = model.weights + model.multi_task_state.weights
    before = _snapshot(variables)
    with pytest.raises(
        step_error(), match=r"FAMO: the loss of task \\?'a\\?' \(of the batch\) is below its lower bound 100"
    ):
        model.fit(x, y, batch_size=10, epochs=1, verbose=0)
    for variable, old, new in zip(variables, before, _snapshot(variables)):
        np.testing.assert_array_equal(new, old, err_msg=variable.path)


def test_negative_loss_is_fine_for_a_linear_weighting(toy):
    # EW steps on L_a + L_b whatever their signs: one step equals stock Keras's on the same network and losses,
    # and the logged loss is −mse of the step's starting predictions (numpy).
    x, y = toy
    x, y = x[:10], {task: value[:10] for task, value in y.items()}
    model = toy_model()
    model.compile(
        keras.optimizers.SGD(0.01), loss=make_method("ew", losses={"a": negative_mse, "b": toy_losses()["b"]})
    )
    reference = plain_toy_model()
    reference.set_weights(model.get_weights())
    reference.compile(keras.optimizers.SGD(0.01), loss={"a": negative_mse, "b": toy_losses()["b"]})
    predictions = model.predict_on_batch(x)["a"].astype(np.float64)
    logs = model.train_on_batch(x, y, return_dict=True)
    reference.train_on_batch(x, y)
    np.testing.assert_allclose(logs["a_loss"], -np.mean((y["a"].astype(np.float64) - predictions) ** 2), rtol=1e-5)
    assert logs["a_loss"] < 0
    for got, want in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
