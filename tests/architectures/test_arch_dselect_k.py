"""DSelect-k: the smooth-step binary encoding of k single-expert selectors, and a mixture of at most k experts."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from arch_helpers import dense_numpy, softmax, stack_numpy

from keras_mtl.architectures import DSelectK
from keras_mtl.architectures.dselect_k import binary_codes, smooth_step


def _smooth_step64(t, gamma):
    """Hazimeh et al. 2020 eq. 3, in float64."""
    return np.where(
        t <= -gamma / 2, 0.0, np.where(t >= gamma / 2, 1.0, -2 / gamma**3 * t**3 + 3 / (2 * gamma) * t + 0.5)
    )


def _selector_outputs64(z, num_experts):
    """r(z_i)_e = Π_j S(z_ij) if bit j of e (most significant first) is 1 else 1 − S(z_ij); z (…, k, m)."""
    s = _smooth_step64(z, 1.0)
    m = z.shape[-1]
    outputs = np.ones(z.shape[:-1] + (num_experts,))
    for e in range(num_experts):
        for j in range(m):
            bit = (e >> (m - 1 - j)) & 1
            outputs[..., e] *= s[..., j] if bit else 1 - s[..., j]
    return outputs


def test_smooth_step_hand_values():
    # γ = 1: S(±1/2) = 1/2 ± 1/2, S(1/4) = −2/64 + 3/8 + 1/2; and S_γ(t) = S_1(t/γ).
    t = np.array([-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 2.0], dtype="float32")
    expected = [0.0, 0.0, 0.15625, 0.5, 0.84375, 1.0, 1.0]
    np.testing.assert_allclose(np.asarray(smooth_step(t, 1.0)), expected, atol=1e-7)
    np.testing.assert_allclose(np.asarray(smooth_step(2 * t, 2.0)), expected, atol=1e-7)


def test_binary_codes_hand_case():
    np.testing.assert_array_equal(binary_codes(5), [[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1], [1, 0, 0]])
    np.testing.assert_array_equal(binary_codes(2), [[0], [1]])


def test_task_only_gate_matches_the_paper_and_adds_its_penalties():
    keras.utils.set_random_seed(9)
    # n = 5 is not a power of 2: codes 5-7 name no expert.
    layer = DSelectK(num_tasks=2, num_experts=5, num_selected=3, expert_units=(4,), entropy_regularization=0.5)
    x = np.random.default_rng(4).normal(size=(6, 3)).astype("float32")
    layer.build(x.shape)
    rng = np.random.default_rng(5)
    for z, w in zip(layer.z_logits, layer.w_logits):  # spread the logits over the whole smooth-step range
        z.assign(rng.uniform(-0.6, 0.6, size=z.shape))
        w.assign(rng.normal(size=w.shape))
    outputs = layer(x, training=True)
    experts = np.stack([stack_numpy(expert, x.astype(np.float64)) for expert in layer.experts])  # (5, 6, 4)
    penalties = []
    for task in range(2):
        r = _selector_outputs64(np.asarray(layer.z_logits[task], np.float64), 5)  # (3, 5)
        a = softmax(np.asarray(layer.w_logits[task], np.float64)) @ r
        np.testing.assert_allclose(np.asarray(layer.expert_weights(x, task)), a, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(np.asarray(outputs[task]), np.einsum("e,ebu->bu", a, experts), rtol=1e-5, atol=1e-6)
        penalties += [-0.5 * np.sum(r * np.log(r + 1e-6)), np.sum(1 / r.sum(axis=1))]
    np.testing.assert_allclose([float(loss) for loss in layer.losses], penalties, rtol=1e-5)


def test_per_example_gate_matches_the_paper():
    keras.utils.set_random_seed(10)
    layer = DSelectK(num_tasks=1, num_experts=4, num_selected=2, expert_units=(3,), per_example=True)
    x = np.random.default_rng(6).normal(size=(5, 3)).astype("float32") * 20  # logits across the whole range
    output = layer(x)[0]
    x64 = x.astype(np.float64)
    z = dense_numpy(layer.z_layers[0], x64).reshape(5, 2, 2)
    weights = np.einsum("bi,bie->be", softmax(dense_numpy(layer.w_layers[0], x64)), _selector_outputs64(z, 4))
    experts = np.stack([stack_numpy(expert, x64) for expert in layer.experts])
    np.testing.assert_allclose(np.asarray(output), np.einsum("be,ebu->bu", weights, experts), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)  # n a power of 2: every code names an expert


@pytest.mark.parametrize("chosen", [(3, 6), (5, 5)])
def test_saturated_selectors_pick_their_experts(chosen):
    # Outside (−γ/2, γ/2) each selector is one-hot on the expert its signs
    # encode, so the weights are softmax(w) on the chosen experts and 0 elsewhere.
    layer = DSelectK(num_tasks=1, num_experts=8, num_selected=2)
    layer.build((None, 3))
    codes = binary_codes(8)
    layer.z_logits[0].assign(np.where(codes[list(chosen)], 0.7, -0.7))
    layer.w_logits[0].assign([0.3, -0.2])
    expected = np.zeros(8)
    for expert, weight in zip(chosen, softmax(np.array([0.3, -0.2]))):
        expected[expert] += weight
    np.testing.assert_allclose(np.asarray(layer.expert_weights(None, 0)), expected, atol=1e-7)


def test_training_converges_to_at_most_k_experts_per_task():
    keras.utils.set_random_seed(11)
    layer = DSelectK(num_tasks=2, num_experts=8, num_selected=2, expert_units=(4,), entropy_regularization=0.1)
    heads = [keras.layers.Dense(1), keras.layers.Dense(1)]
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(64, 5)).astype("float32"), rng.normal(size=(64, 2)).astype("float32")
    optimizer = keras.optimizers.Adam(0.05)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            outputs = layer(x, training=True)
            loss = sum(
                tf.reduce_mean((head(out)[:, 0] - y[:, t]) ** 2) for t, (head, out) in enumerate(zip(heads, outputs))
            )
            loss += tf.add_n(layer.losses)
        variables = layer.trainable_variables + heads[0].trainable_variables + heads[1].trainable_variables
        optimizer.apply(tape.gradient(loss, variables), variables)

    for _ in range(60):
        step()
    for task in range(2):
        assert np.min(np.abs(layer.z_logits[task])) >= 0.5  # every selector binary: S is 0 or 1
        weights = np.asarray(layer.expert_weights(None, task))
        assert 1 <= np.count_nonzero(weights) <= 2
        np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-6)
        # The non-zero weights are softmax(w) summed over the selectors naming each expert.
        names = [int("".join(str(int(b)) for b in z > 0), 2) for z in np.asarray(layer.z_logits[task])]
        expected = np.zeros(8)
        for expert, weight in zip(names, softmax(np.asarray(layer.w_logits[task], np.float64))):
            expected[expert] += weight
        np.testing.assert_allclose(weights, expected, rtol=1e-6, atol=1e-7)
