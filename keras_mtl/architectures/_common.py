"""What the architectures share: argument checks, Dense stacks, gates, mixtures and task towers."""

import keras

from keras_mtl.arguments import Activation, Integer, SymbolicInput, Tasks, Units

# The argument declarations the architectures share (see `keras_mtl.arguments`).
COUNT = Integer(minimum=1)
EXPERTS = {"expert_units": Units(), "expert_activation": Activation()}
BUILDER = {
    "inputs": SymbolicInput(),
    "tasks": Tasks(),
    "tower_units": Units(allow_empty=True),
    "tower_activation": Activation(),
}


def dense_stack(units, activation, name):
    """A `keras.Sequential` of Dense layers of widths `units`, each with `activation`."""
    return keras.Sequential([keras.layers.Dense(width, activation=activation) for width in units], name=name)


def build_stack(stack, input_shape):
    """Builds `stack` (any layer) for `input_shape` and returns its output shape.

    Layers that hold sublayers must build them in `build`: `load_model`
    restores the weights of a built layer only.
    """
    stack.build(input_shape)
    return stack.compute_output_shape(input_shape)


def softmax_gate(num_experts, use_bias, name):
    """A gate g(x) = softmax(W x (+ b)) over `num_experts` experts (Ma et al. 2018, eq. 8)."""
    return keras.layers.Dense(num_experts, activation="softmax", use_bias=use_bias, name=name)


def mixture(gate_weights, expert_outputs):
    """Σ_e g_e · f_e: `gate_weights` (batch, E) or (E,), `expert_outputs` a list of E (batch, units) tensors."""
    stacked = keras.ops.stack(expert_outputs, axis=1)  # (batch, E, units)
    if len(gate_weights.shape) == 1:
        return keras.ops.tensordot(gate_weights, stacked, axes=[[0], [1]])
    return keras.ops.einsum("be,beu->bu", gate_weights, stacked)


def towers(features, tasks, units, activation):
    """One tower per task on its own feature: Dense layers `{task}_tower_{i}`, then a linear Dense named `task`."""
    outputs = {}
    for (task, width), feature in zip(tasks.items(), features):
        for i, hidden in enumerate(units, start=1):
            feature = keras.layers.Dense(hidden, activation=activation, name=f"{task}_tower_{i}")(feature)
        outputs[task] = keras.layers.Dense(width, name=task)(feature)
    return outputs
