"""MMoE: shared experts, one softmax gate per task (Ma et al., KDD 2018)."""

import keras

from keras_mtl.architectures._common import (
    BUILDER,
    COUNT,
    EXPERTS,
    build_stack,
    dense_stack,
    mixture,
    softmax_gate,
    towers,
)
from keras_mtl.arguments import Boolean, declare_arguments
from keras_mtl.training.model import MultiTaskModel


@keras.saving.register_keras_serializable(package="keras_mtl")
@declare_arguments(num_tasks=COUNT, num_experts=COUNT, **EXPERTS, gate_use_bias=Boolean())
class MMoE(keras.layers.Layer):
    """Multi-gate Mixture-of-Experts: per task k, f^k(x) = Σ_i g^k(x)_i f_i(x).

    Ma et al., "Modeling Task Relationships in Multi-task Learning with
    Multi-gate Mixture-of-Experts", KDD 2018, eqs. 6-8: n experts f_i shared
    by every task, and per task a gate g^k(x) = softmax(W_gk x) over the
    experts, W_gk ∈ R^{n×d}. Each task's mixture then goes to its own tower.

    Defaults follow the paper's synthetic-data set-up: 8 experts of one ReLU
    layer of 16 units. The paper writes the gate without a bias; LibMTL's
    gate has one: `gate_use_bias` chooses. Each expert is a stack of Dense
    layers (`expert_units`, `expert_activation`).

    Each gate is its own variable, so gradient methods in parameter mode find
    the experts shared and each gate (and tower) specific to its task.

    Input: (batch, features). Output: a list of `num_tasks` tensors
    (batch, expert_units[-1]), in task order.

    Args:
        num_tasks: the number of tasks (gates and outputs).
        num_experts: the number of experts, default 8.
        expert_units: each expert's Dense widths, default `(16,)`.
        expert_activation: their activation, default `"relu"`.
        gate_use_bias: whether the gates have a bias, default False.
        **kwargs: `keras.layers.Layer` arguments (`name`, ...).

    Examples:
        ```python
        inputs = keras.Input((100,))
        y1, y2 = keras_mtl.architectures.MMoE(num_tasks=2)(inputs)
        # or the whole model: keras_mtl.architectures.mmoe(inputs, {"y1": 1, "y2": 1})
        ```
    """

    def __init__(
        self, num_tasks, num_experts=8, expert_units=(16,), expert_activation="relu", gate_use_bias=False, **kwargs
    ):
        super().__init__(**kwargs)
        self.num_tasks = num_tasks
        self.num_experts = num_experts
        self.expert_units = expert_units
        self.expert_activation = expert_activation
        self.gate_use_bias = gate_use_bias
        self.experts = [
            dense_stack(self.expert_units, expert_activation, f"expert_{i}") for i in range(self.num_experts)
        ]
        self.gates = [softmax_gate(self.num_experts, self.gate_use_bias, f"gate_{k}") for k in range(self.num_tasks)]

    def build(self, input_shape):
        for layer in self.experts + self.gates:
            build_stack(layer, input_shape)

    def call(self, inputs):
        expert_outputs = [expert(inputs) for expert in self.experts]
        # One mixture per task from its own gate, never a slice of a stacked
        # result: a slice would make every gate look reached by every task.
        return [mixture(gate(inputs), expert_outputs) for gate in self.gates]

    def compute_output_shape(self, input_shape):
        return [tuple(input_shape[:-1]) + (self.expert_units[-1],)] * self.num_tasks

    def get_config(self):
        return {
            **super().get_config(),
            "num_tasks": self.num_tasks,
            "num_experts": self.num_experts,
            "expert_units": list(self.expert_units),
            "expert_activation": self.expert_activation,
            "gate_use_bias": self.gate_use_bias,
        }


@declare_arguments(**BUILDER, num_experts=COUNT, **EXPERTS, gate_use_bias=Boolean())
def mmoe(
    inputs,
    tasks,
    num_experts=8,
    expert_units=(16,),
    expert_activation="relu",
    gate_use_bias=False,
    tower_units=(8,),
    tower_activation="relu",
    **model_kwargs,
):
    """An MMoE model: the `MMoE` layer (named "mmoe") and one tower per task.

    Args:
        inputs: a `keras.Input` of shape (features,).
        tasks: dict {task name: output units}; outputs are linear Dense layers
            named after the tasks.
        num_experts: the number of experts, default 8 (see `MMoE`).
        expert_units: each expert's Dense widths, default `(16,)`.
        expert_activation: their activation, default `"relu"`.
        gate_use_bias: whether the gates have a bias, default `False`.
        tower_units: the widths of each tower's hidden Dense layers (`{task}_tower_i`; may be
            empty), default `(8,)`.
        tower_activation: their activation, default `"relu"`.
        **model_kwargs: passed to `keras_mtl.MultiTaskModel`.

    Returns:
        A `keras_mtl.MultiTaskModel`. There is no single shared tensor (each
        task mixes the experts its own way), so gradient methods run in
        parameter mode, where the experts are the shared parameters.
    """
    layer = MMoE(len(tasks), num_experts, expert_units, expert_activation, gate_use_bias, name="mmoe")
    features = layer(inputs)
    return MultiTaskModel(inputs, towers(features, tasks, tower_units, tower_activation), **model_kwargs)
