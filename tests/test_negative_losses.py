"""Negative losses, refused by every method that cannot take them; and losses that reach exactly 0."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import make_method, toy_data, toy_losses, toy_model

import keras_mtl

# The graph error message escapes the quotes around names.
Q = r"\\?'"


def negative_mse(y_true, y_pred):
    return -keras.ops.mean(keras.ops.square(y_true - y_pred), axis=-1)


def zero_loss(y_true, y_pred):
    """Exactly 0 for every sample, with a gradient (0) that reaches the head."""
    return 0.0 * keras.ops.mean(keras.ops.square(y_true - y_pred), axis=-1)


def _losses(loss_a):
    return {"a": loss_a, "b": toy_losses()["b"]}


class NonNegativeMean(keras_mtl.MeanGradient):
    """A gradient method that declares the flag, to test the engine apart from any aggregator."""

    needs_non_negative_losses = True


METHODS = {
    "uw": lambda: make_method("uw", losses=_losses(negative_mse)),
    "imtl_l": lambda: make_method("imtl_l", losses=_losses(negative_mse)),
    "sam_uw": lambda: keras_mtl.SAM(_losses(negative_mse), method="uw"),
    "gradient_method": lambda: NonNegativeMean(_losses(negative_mse)),
    "sam_gradient_method": lambda: keras_mtl.SAM(_losses(negative_mse), method=NonNegativeMean()),
    "mgda_loss": lambda: keras_mtl.MGDA(_losses(negative_mse), normalization="loss"),
    "mgda_loss+": lambda: keras_mtl.MGDA(_losses(negative_mse), normalization="loss+"),
}
NAMES = {
    "uw": "UncertaintyWeighting",
    "imtl_l": "IMTLL",
    "sam_uw": r"SAM\(UncertaintyWeighting\)",
    "gradient_method": "NonNegativeMean",
    "sam_gradient_method": r"SAM\(NonNegativeMean\)",
    "mgda_loss": "MGDA",
    "mgda_loss+": "MGDA",
}


@pytest.mark.parametrize("method_id", sorted(METHODS))
def test_negative_loss_is_refused_and_changes_nothing(method_id):
    x, y = toy_data()
    model = toy_model()
    model.compile(keras.optimizers.SGD(0.01), loss=METHODS[method_id]())
    model.optimizer.build(model.trainable_variables)
    variables = model.weights + model.optimizer.variables
    before = [np.array(v.numpy()) for v in variables]
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=f"{NAMES[method_id]} needs non-negative losses; task {Q}a{Q} has a negative one",
    ):
        model.fit(x, y, batch_size=10, epochs=1, verbose=0)
    for variable, old in zip(variables, before):
        np.testing.assert_array_equal(variable.numpy(), old, err_msg=variable.path)


@pytest.mark.parametrize("method_id", ["ew", "mean", "pcgrad"])
def test_methods_linear_in_the_losses_take_negative_ones(method_id):
    x, y = toy_data()
    model = toy_model()
    model.compile(keras.optimizers.SGD(0.01), loss=make_method(method_id, losses=_losses(negative_mse)))
    assert model.fit(x, y, batch_size=10, epochs=1, verbose=0).history["a_loss"][0] < 0


# --- A loss that reaches exactly 0 ------------------------------------------------------------------


def _uw_so_reference(losses, epsilon, temperature=1.0):
    logits = (1.0 / (np.asarray(losses, np.float64) + epsilon)) / temperature
    e = np.exp(logits - logits.max())
    return e / e.sum()


def test_uw_so_zero_loss_takes_all_the_weight_unless_epsilon_is_raised():
    losses = tf.constant([0.0, 1.2])
    # The paper's ε = 1e-8: the other task's weight underflows to exactly 0.
    default = keras_mtl.SoftmaxUncertaintyWeighting(toy_losses()).weights(losses, {}, training=True)[0].numpy()
    np.testing.assert_array_equal(default, [1.0, 0.0])
    raised = (
        keras_mtl.SoftmaxUncertaintyWeighting(toy_losses(), epsilon=0.5).weights(losses, {}, training=True)[0].numpy()
    )
    np.testing.assert_allclose(raised, _uw_so_reference([0.0, 1.2], 0.5), rtol=1e-6)
    assert raised[1] > 0.1


def test_famo_zero_gap_takes_almost_all_the_weight_unless_epsilon_is_raised():
    def weights(**kwargs):
        method = make_method("famo", **kwargs)
        state = keras_mtl.MultiTaskState()
        state.configure(method, ["a", "b"])
        return method.weights(tf.constant([0.0, 1.0]), state.values(), training=True)[0].numpy()

    # Equal logits: w ∝ 1/(L + ε).
    np.testing.assert_allclose(weights(), [1 / (1 + 1e-8), 1e-8 / (1 + 1e-8)], rtol=1e-5)
    np.testing.assert_allclose(weights(epsilon=0.5), [0.75, 0.25], rtol=1e-6)


@pytest.mark.parametrize("epsilon, b_learns", [(1e-8, False), (0.5, True)])
def test_uw_so_other_task_learns_only_with_a_larger_epsilon(epsilon, b_learns):
    x, y = toy_data()
    model = toy_model()
    model.compile(
        keras.optimizers.SGD(0.1), loss=keras_mtl.SoftmaxUncertaintyWeighting(_losses(zero_loss), epsilon=epsilon)
    )
    head = np.array(model.get_layer("b").kernel.numpy())
    history = model.fit(x, y, batch_size=10, epochs=1, verbose=0).history
    assert history["a_loss"] == [0.0]
    moved = np.max(np.abs(model.get_layer("b").kernel.numpy() - head))
    assert (moved > 1e-3) == b_learns
    assert config_epsilon(model) == epsilon


def config_epsilon(model):
    return model.multi_task_method.get_config()["epsilon"]
