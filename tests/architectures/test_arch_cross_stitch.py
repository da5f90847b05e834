"""Cross-stitch: each task's output is a learned linear combination of the task columns, initialised as in Misra et al."""

import numpy as np
import pytest

from keras_mtl.architectures import CrossStitch


def test_initialisation_is_the_papers_convex_combination():
    # Misra et al. section 4.2: (α_S, α_D) = (0.9, 0.1) for two tasks.
    layer = CrossStitch()
    layer.build([(None, 4), (None, 4)])
    np.testing.assert_allclose(np.asarray(layer.alpha), [[0.9, 0.1], [0.1, 0.9]], rtol=1e-6)
    # K tasks: α_D = (1 − α_S)/(K − 1), so every row still sums to 1.
    layer = CrossStitch(same_task_init=0.7, per_channel=True)
    layer.build([(None, 2)] * 4)
    expected = np.full((4, 4), 0.1) + np.eye(4) * 0.6
    np.testing.assert_allclose(np.asarray(layer.alpha), np.repeat(expected[:, :, None], 2, axis=2), rtol=1e-6)


@pytest.mark.parametrize("per_channel", [False, True])
def test_outputs_are_alpha_combinations_of_the_columns(per_channel):
    rng = np.random.default_rng(8)
    columns = [rng.normal(size=(5, 3, 4)).astype("float32") for _ in range(3)]
    layer = CrossStitch(per_channel=per_channel)
    layer.build([c.shape for c in columns])
    alpha = rng.normal(size=layer.alpha.shape)
    layer.alpha.assign(alpha)
    outputs = layer(columns)
    stacked = np.stack(columns).astype(np.float64)  # (K, 5, 3, 4)
    subscripts = "ijc,jbhc->ibhc" if per_channel else "ij,jbhc->ibhc"
    expected = np.einsum(subscripts, alpha, stacked)
    for i in range(3):
        np.testing.assert_allclose(np.asarray(outputs[i]), expected[i], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "layer, shapes, message",
    [
        (CrossStitch(), [(None, 4)], "at least 2 task columns"),
        (CrossStitch(), [(None, 4), (None, 5)], "same shape"),
    ],
)
def test_bad_columns_are_named(layer, shapes, message):
    with pytest.raises(ValueError, match=message):
        layer.build(shapes)


def test_same_task_init_outside_the_unit_interval_is_refused():
    with pytest.raises(ValueError, match=r"CrossStitch: `same_task_init` must be a finite number in \[0, 1\]"):
        CrossStitch(same_task_init=1.5)
