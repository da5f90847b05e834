"""MMoE: per task a softmax gate over the experts, and the output the gate-weighted sum of the expert outputs."""

import keras
import numpy as np
import pytest
from arch_helpers import dense_numpy, softmax, stack_numpy

from keras_mtl.architectures import MMoE


@pytest.mark.parametrize("gate_use_bias", [False, True])
def test_outputs_are_gate_weighted_sums_of_the_experts(gate_use_bias):
    keras.utils.set_random_seed(3)
    layer = MMoE(num_tasks=3, num_experts=4, expert_units=(5, 2), gate_use_bias=gate_use_bias)
    x = np.random.default_rng(0).normal(size=(7, 6)).astype("float32")
    outputs = layer(x)
    x64 = x.astype(np.float64)
    experts = np.stack([stack_numpy(expert, x64) for expert in layer.experts], axis=1)  # (7, 4, 2)
    assert len(outputs) == 3
    for gate, output in zip(layer.gates, outputs):
        # Ma et al. eq. 8: g^k(x) = softmax(W_gk x), without a bias as written in the paper.
        assert len(gate.get_weights()) == (2 if gate_use_bias else 1)
        weights = dense_numpy(gate, x64, softmax)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0)
        expected = np.einsum("be,beu->bu", weights, experts)
        np.testing.assert_allclose(np.asarray(output), expected, rtol=1e-5, atol=1e-6)


def test_tasks_differ_only_through_their_gates():
    # Same gate weights for two tasks means the same mixture: nothing else in
    # the layer is task-specific.
    keras.utils.set_random_seed(4)
    layer = MMoE(num_tasks=2, num_experts=3)
    x = np.random.default_rng(1).normal(size=(5, 4)).astype("float32")
    first, second = layer(x)
    assert not np.allclose(first, second)
    layer.gates[1].set_weights(layer.gates[0].get_weights())
    first, second = layer(x)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(second))
