"""On either backend: keras_mtl's error comes first on a plain keras.Model, and targets that would broadcast are refused.

Both errors come before any step: the model's weights are compared before and after.
"""

import keras
import numpy as np
import pytest
from conftest import plain_toy_model, toy_data, toy_losses, toy_model

import keras_mtl


def weights_of(model):
    return [np.array(v) for v in model.get_weights()]


@pytest.mark.parametrize(
    "compile_kwargs",
    [
        # The functional-API guide's two-output model keeps its `loss_weights` when a method is swapped in.
        {"loss_weights": [1.0, 0.2]},
        {"loss_weights": {"a": 1.0, "b": 0.2}},
        {"loss_weights": [1.0, 0.2], "metrics": {"a": ["mae"]}},
        {},
    ],
)
def test_a_plain_model_gets_keras_mtl_s_error_first(compile_kwargs):
    model = plain_toy_model()
    x, y = toy_data(n=20)
    before = weights_of(model)
    model.compile("adam", loss=keras_mtl.get("uw", toy_losses()), **compile_kwargs)
    with pytest.raises(
        TypeError, match=r"UncertaintyWeighting is a multi-task method.*Mix keras_mtl.MultiTaskMixin into your model"
    ):
        model.fit(x, y, epochs=1, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, weights_of(model)))


def test_the_mixin_still_takes_the_method_and_loss_weights():
    model = toy_model()
    x, y = toy_data(n=20)
    model.compile("sgd", loss=keras_mtl.get("uw", toy_losses()), loss_weights={"a": 1.0, "b": 0.2})
    history = model.fit(x, y, epochs=1, batch_size=20, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize(
    "task, target, message",
    [
        # (n, 3) against the (n, 1) output of task a: n × 3 differences.
        (
            "a",
            lambda y: np.repeat(y["a"], 3, axis=1),
            r"task 'a' have shape \(None, 3\)|task 'a' have shape \(\d+, 3\)",
        ),
        # (1, 1): one target for the whole batch would broadcast across it.
        ("a", lambda y: y["a"][:1], r"task 'a'"),
        # (n, 2, 1) against (n, 1): after Keras' one squeeze, still (n, 2) against (n, 1).
        ("a", lambda y: np.repeat(y["a"][:, None, :], 2, axis=1), r"task 'a'"),
    ],
)
def test_targets_that_would_broadcast_are_refused_naming_the_task(task, target, message):
    model = toy_model()
    x, y = toy_data(n=20)
    model.compile("sgd", loss=keras_mtl.get("ew", toy_losses()))
    bad = {**y, task: target(y)}
    with pytest.raises(ValueError, match=message):
        if len(bad[task]) == len(x):
            model.fit(x, bad, batch_size=20, epochs=1, verbose=0)
        else:
            model.train_on_batch(x, bad)


# Keras 3.15's JAX `fit` empties the model's variables before its first step and refills them only from a
# step's result: any error while the first step is traced (this one, a missing task in `y`, …) leaves them
# empty. Strict, so that the test says when it is fixed.
@pytest.mark.xfail(
    keras.backend.backend() == "jax", reason="Keras' JAX fit loses the variables on a trace-time error", strict=True
)
def test_a_refused_target_leaves_the_model_as_it_was():
    model = toy_model()
    x, y = toy_data(n=20)
    model.compile("sgd", loss=keras_mtl.get("ew", toy_losses()))
    before = weights_of(model)
    with pytest.raises(ValueError, match="task 'a'"):
        model.fit(x, {**y, "a": np.repeat(y["a"], 3, axis=1)}, batch_size=20, epochs=1, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, weights_of(model)))
    model.fit(x, y, batch_size=20, epochs=1, verbose=0)


def test_mse_labels_against_class_outputs_are_refused():
    """Labels (n,) against (n, 3) outputs under mse: every label compared with every output, refused for task b."""
    model = toy_model()
    x, y = toy_data(n=20)
    model.compile("sgd", loss=keras_mtl.get("ew", {"a": "mse", "b": "mse"}))
    with pytest.raises(ValueError, match=r"task 'b'.*would broadcast"):
        model.fit(x, {**y, "b": y["b"].astype("float32")}, batch_size=20, epochs=1, verbose=0)


def losses_of(targets, losses):
    """The per-task losses of one evaluation on the toy model, in a fresh model with the same weights."""
    model = toy_model()
    x, _ = toy_data(n=20)
    model.compile("sgd", loss=keras_mtl.get("ew", losses))
    logs = model.evaluate(x, targets, batch_size=20, verbose=0, return_dict=True)
    return logs["a_loss"], logs["b_loss"]


def test_keras_one_rule_and_sparse_labels_are_kept():
    """A trailing axis of size 1 may be left out or added; sparse labels (n,) or (n, 1) against (n, 3) logits."""
    _, y = toy_data(n=20)
    reference = losses_of(y, toy_losses())
    squeezed = losses_of({"a": y["a"][:, 0], "b": y["b"][:, None]}, toy_losses())
    np.testing.assert_allclose(squeezed, reference, rtol=1e-6)
    # The hand-computed mse of task a, from the same weights.
    model = toy_model()
    x, _ = toy_data(n=20)
    expected = np.mean((keras.ops.convert_to_numpy(model(x)["a"])[:, 0] - y["a"][:, 0]) ** 2)
    np.testing.assert_allclose(reference[0], expected, rtol=1e-5)
    by_name = losses_of(y, {"a": "mse", "b": "sparse_categorical_crossentropy"})
    assert np.isfinite(by_name[1])
