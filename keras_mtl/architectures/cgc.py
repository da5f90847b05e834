"""CGC: shared and task-specific experts, one gate per task (Tang et al., RecSys 2020)."""

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
@declare_arguments(
    num_tasks=COUNT,
    num_shared_experts=COUNT,
    num_task_experts=COUNT,
    **EXPERTS,
    gate_use_bias=Boolean(),
    shared_gate=Boolean(),
)
class CGC(keras.layers.Layer):
    """Customized Gate Control, the extraction network of PLE: g^k(x) = w^k(x)ᵀ S^k(x).

    Tang et al., "Progressive Layered Extraction (PLE): A Novel Multi-Task
    Learning (MTL) Model for Personalized Recommendations", RecSys 2020,
    section 4: m_s shared experts (`num_shared_experts`) and, per task k,
    m_k experts of its own (`num_task_experts`, the same m_k for every task);
    task k's gate w^k(x) = softmax(W_g^k x) weighs S^k(x), the outputs of
    task k's experts, then of the shared experts. Without a shared gate, task
    k's experts reach no other task's output, so no other task's gradient
    reaches them.

    In PLE a CGC at level j takes K + 1 inputs: task k's experts
    and gate read task k's output of level j − 1, the shared experts read the
    shared output of level j − 1, and, with `shared_gate=True` (every level
    but the last), a shared gate reading that shared output weighs all the
    level's experts (every task's and the shared ones) into the shared output
    for the next level. LibMTL's PLE has no shared gate (each task routes
    through the shared experts on its own path); this layer follows the paper.

    Experts are stacks of Dense layers (`expert_units`, `expert_activation`);
    the gates have no bias unless `gate_use_bias` (the paper writes W x).

    Input: one tensor (batch, features) for every route, or a list of
    `num_tasks` + 1 tensors [task_1, …, task_K, shared] (a PLE level > 1).
    Output: a list of `num_tasks` tensors (batch, expert_units[-1]), plus the
    shared output last when `shared_gate`.

    Args:
        num_tasks: the number of tasks.
        num_shared_experts: experts every task's gate sees, default 1.
        num_task_experts: each task's own experts, default 1.
        expert_units: each expert's Dense widths, default `(16,)`.
        expert_activation: their activation, default `"relu"`.
        gate_use_bias: whether the gates have a bias, default False.
        shared_gate: add the shared experts' gate and output (needed below another PLE level), default False.
        **kwargs: `keras.layers.Layer` arguments (`name`, ...).

    Examples:
        ```python
        inputs = keras.Input((100,))
        y1, y2 = keras_mtl.architectures.CGC(num_tasks=2, num_shared_experts=2, num_task_experts=2)(inputs)
        ```
    """

    def __init__(
        self,
        num_tasks,
        num_shared_experts=1,
        num_task_experts=1,
        expert_units=(16,),
        expert_activation="relu",
        gate_use_bias=False,
        shared_gate=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_tasks = num_tasks
        self.num_shared_experts = num_shared_experts
        self.num_task_experts = num_task_experts
        self.expert_units = expert_units
        self.expert_activation = expert_activation
        self.gate_use_bias = gate_use_bias
        self.shared_gate = shared_gate
        self.shared_experts = [self._expert(f"shared_expert_{i}") for i in range(self.num_shared_experts)]
        self.task_experts = [
            [self._expert(f"task_{k}_expert_{i}") for i in range(self.num_task_experts)] for k in range(self.num_tasks)
        ]
        gated = self.num_task_experts + self.num_shared_experts
        self.task_gates = [softmax_gate(gated, self.gate_use_bias, f"task_{k}_gate") for k in range(self.num_tasks)]
        if self.shared_gate:
            everything = self.num_tasks * self.num_task_experts + self.num_shared_experts
            self.gate_of_shared = softmax_gate(everything, self.gate_use_bias, "shared_gate")

    def _expert(self, name):
        return dense_stack(self.expert_units, self.expert_activation, name)

    def _routes(self, inputs):
        """(one input per task, the shared input), of tensors or of shapes."""
        if isinstance(inputs, (list, tuple)) and not all(d is None or isinstance(d, int) for d in inputs):
            if len(inputs) != self.num_tasks + 1:
                raise ValueError(
                    f"CGC takes one tensor or {self.num_tasks + 1} (one per task, then the shared one), got {len(inputs)}."
                )
            return list(inputs[:-1]), inputs[-1]
        return [inputs] * self.num_tasks, inputs

    def build(self, input_shape):
        task_shapes, shared_shape = self._routes(input_shape)
        for layer in self.shared_experts:
            build_stack(layer, shared_shape)
        for k, shape in enumerate(task_shapes):
            for layer in self.task_experts[k] + [self.task_gates[k]]:
                build_stack(layer, shape)
        if self.shared_gate:
            build_stack(self.gate_of_shared, shared_shape)

    def call(self, inputs):
        task_inputs, shared_input = self._routes(inputs)
        shared_outputs = [expert(shared_input) for expert in self.shared_experts]
        task_outputs = [[expert(x) for expert in experts] for experts, x in zip(self.task_experts, task_inputs)]
        outputs = [
            mixture(gate(x), own + shared_outputs) for gate, x, own in zip(self.task_gates, task_inputs, task_outputs)
        ]
        if self.shared_gate:
            every_expert = [output for own in task_outputs for output in own] + shared_outputs
            outputs.append(mixture(self.gate_of_shared(shared_input), every_expert))
        return outputs

    def compute_output_shape(self, input_shape):
        _, shared_shape = self._routes(input_shape)
        return [tuple(shared_shape[:-1]) + (self.expert_units[-1],)] * (self.num_tasks + int(self.shared_gate))

    def get_config(self):
        return {
            **super().get_config(),
            "num_tasks": self.num_tasks,
            "num_shared_experts": self.num_shared_experts,
            "num_task_experts": self.num_task_experts,
            "expert_units": list(self.expert_units),
            "expert_activation": self.expert_activation,
            "gate_use_bias": self.gate_use_bias,
            "shared_gate": self.shared_gate,
        }


@declare_arguments(**BUILDER, num_shared_experts=COUNT, num_task_experts=COUNT, **EXPERTS, gate_use_bias=Boolean())
def cgc(
    inputs,
    tasks,
    num_shared_experts=1,
    num_task_experts=1,
    expert_units=(16,),
    expert_activation="relu",
    gate_use_bias=False,
    tower_units=(8,),
    tower_activation="relu",
    **model_kwargs,
):
    """A CGC model (PLE with one level): the `CGC` layer (named "cgc") and one tower per task.

    Args:
        inputs: a `keras.Input` of shape (features,).
        tasks: dict {task name: output units}; linear outputs named after the tasks.
        num_shared_experts: the experts every task's gate sees, default 1 (see `CGC`).
        num_task_experts: each task's own experts, default 1.
        expert_units: each expert's Dense widths, default `(16,)`.
        expert_activation: their activation, default `"relu"`.
        gate_use_bias: whether the gates have a bias, default `False`.
        tower_units: the widths of each tower's hidden Dense layers (`{task}_tower_i`; may be
            empty), default `(8,)`.
        tower_activation: their activation, default `"relu"`.
        **model_kwargs: passed to `keras_mtl.MultiTaskModel`.

    Returns:
        A `keras_mtl.MultiTaskModel`; gradient methods run in parameter mode,
        where the shared experts are the shared parameters.
    """
    layer = CGC(
        len(tasks), num_shared_experts, num_task_experts, expert_units, expert_activation, gate_use_bias, name="cgc"
    )
    return MultiTaskModel(inputs, towers(layer(inputs), tasks, tower_units, tower_activation), **model_kwargs)
