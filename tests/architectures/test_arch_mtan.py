"""MTAN: each task's attention module is a sigmoid mask, computed from the shared features, applied elementwise."""

import keras
import numpy as np
import pytest
from arch_helpers import dense_numpy, relu

from keras_mtl.architectures import TaskAttention


def _batch_norm64(layer, z):
    """Inference-mode batch normalisation in float64 from the layer's weights."""
    gamma, beta, mean, variance = (np.asarray(w, np.float64) for w in layer.get_weights())
    return gamma * (z - mean) / np.sqrt(variance + layer.epsilon) + beta


def _randomise_statistics(layer, rng):
    for norm in (layer.hidden_norm, layer.mask_norm):
        channels = norm.get_weights()[0].shape
        norm.set_weights(
            [
                rng.uniform(0.5, 2, channels),
                rng.normal(size=channels),
                rng.normal(size=channels),
                rng.uniform(0.5, 2, channels),
            ]
        )


@pytest.mark.parametrize("with_previous", [False, True])
def test_mask_is_a_sigmoid_of_the_shared_features_applied_elementwise(with_previous):
    keras.utils.set_random_seed(12)
    rng = np.random.default_rng(9)
    u = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    p = rng.normal(size=(2, 4, 4, 5)).astype("float32")
    previous = rng.normal(size=(2, 4, 4, 5)).astype("float32")
    inputs = [u, p, previous] if with_previous else [u, p]
    layer = TaskAttention(hidden_units=6)
    layer.build([x.shape for x in inputs])
    _randomise_statistics(layer, rng)
    attended = np.asarray(layer(inputs, training=False))
    # Liu et al. 2019: g = [1×1 conv, BN, ReLU] then [1×1 conv, BN, sigmoid] on u, or on [u; â_prev].
    read = np.concatenate([u, previous], axis=-1) if with_previous else u
    hidden = relu(_batch_norm64(layer.hidden_norm, dense_numpy(layer.hidden, read.astype(np.float64))))
    mask = 1 / (1 + np.exp(-_batch_norm64(layer.mask_norm, dense_numpy(layer.mask_logits, hidden))))
    assert mask.shape == p.shape and np.all((mask > 0) & (mask < 1))
    np.testing.assert_allclose(np.asarray(layer.mask(inputs)), mask, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(attended, mask * p, rtol=1e-5, atol=1e-6)


def test_hidden_width_defaults_to_the_channels_of_p():
    layer = TaskAttention()
    layer.build([(None, 7, 3), (None, 7, 5)])
    assert layer.hidden.units == 5 and layer.mask_logits.units == 5


def test_mismatched_spatial_shapes_are_named():
    with pytest.raises(ValueError, match="spatial shape"):
        TaskAttention().build([(None, 4, 4, 3), (None, 4, 4, 5), (None, 8, 8, 5)])
