"""CGC and PLE: each task mixes its own and the shared experts; task-specific experts get no other task's gradient
(all of CGC's; in PLE those of the last level, while the shared gate passes every task's gradient to lower levels)."""

import keras
import numpy as np
import tensorflow as tf
from arch_helpers import TASKS, dense_numpy, per_task_gradients, regression_data, softmax, stack_numpy

from keras_mtl import architectures
from keras_mtl.architectures import CGC


def test_cgc_mixes_own_then_shared_experts_with_the_task_gate():
    keras.utils.set_random_seed(5)
    layer = CGC(num_tasks=2, num_shared_experts=2, num_task_experts=3, expert_units=(4,), shared_gate=True)
    x = np.random.default_rng(2).normal(size=(6, 5)).astype("float32")
    outputs = layer(x)
    x64 = x.astype(np.float64)
    shared = [stack_numpy(expert, x64) for expert in layer.shared_experts]
    own = [[stack_numpy(expert, x64) for expert in experts] for experts in layer.task_experts]
    # Tang et al. eqs. 2-4: task k weighs S^k = [task k's experts, shared experts].
    for k in range(2):
        weights = dense_numpy(layer.task_gates[k], x64, softmax)
        assert weights.shape == (6, 5)
        expected = np.einsum("be,ebu->bu", weights, np.stack(own[k] + shared))
        np.testing.assert_allclose(np.asarray(outputs[k]), expected, rtol=1e-5, atol=1e-6)
    # The shared gate weighs every expert of the level: all tasks', then the shared ones.
    weights = dense_numpy(layer.gate_of_shared, x64, softmax)
    expected = np.einsum("be,ebu->bu", weights, np.stack(own[0] + own[1] + shared))
    np.testing.assert_allclose(np.asarray(outputs[2]), expected, rtol=1e-5, atol=1e-6)


def test_cgc_reads_one_input_per_route():
    # At a PLE level > 1, task k's experts and gate read input k, the shared experts the last input.
    keras.utils.set_random_seed(6)
    layer = CGC(num_tasks=2, expert_units=(3,))
    rng = np.random.default_rng(3)
    inputs = [rng.normal(size=(4, 5)).astype("float32") for _ in range(3)]
    outputs = layer(inputs)
    x0, x1, xs = (value.astype(np.float64) for value in inputs)
    shared = stack_numpy(layer.shared_experts[0], xs)
    for k, x in ((0, x0), (1, x1)):
        weights = dense_numpy(layer.task_gates[k], x, softmax)
        expected = weights[:, :1] * stack_numpy(layer.task_experts[k][0], x) + weights[:, 1:] * shared
        np.testing.assert_allclose(np.asarray(outputs[k]), expected, rtol=1e-5, atol=1e-6)


def _reached(model, task, prefix):
    """Whether task `task`'s loss has a non-zero gradient on some variable of the layers under `prefix`."""
    variables = [v for v in model.trainable_variables if v.path.startswith(prefix)]
    assert variables, prefix
    x, y = regression_data()
    gradients = per_task_gradients(model, x, y, variables)[list(TASKS).index(task)]
    return any(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in gradients)


def test_cgc_task_experts_get_only_their_task_gradient():
    keras.utils.set_random_seed(7)
    model = architectures.cgc(keras.Input((6,)), TASKS, num_task_experts=2)
    for i, own in enumerate(TASKS):
        for task in TASKS:
            assert _reached(model, task, f"cgc/task_{i}_expert_") == (task == own)
    assert _reached(model, "a", "cgc/shared_expert_") and _reached(model, "b", "cgc/shared_expert_")


def test_ple_isolates_the_last_level_and_shares_the_lower_ones():
    keras.utils.set_random_seed(8)
    model = architectures.ple(keras.Input((6,)), TASKS, num_levels=2)
    for i, own in enumerate(TASKS):
        for task in TASKS:
            assert _reached(model, task, f"ple_level_2/task_{i}_expert_") == (task == own)
            # Through level 1's shared gate and level 2's shared experts.
            assert _reached(model, task, f"ple_level_1/task_{i}_expert_")
    assert not any(v.path.startswith("ple_level_2/shared_gate") for v in model.trainable_variables)
