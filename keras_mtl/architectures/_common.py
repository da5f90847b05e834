"""What the architectures share: argument checks, Dense stacks, gates, mixtures and task towers."""

import keras


def positive_int(value, what):
    """`value` as an int, or a ValueError naming `what` if it is not an integer ≥ 1."""
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{what} must be an integer >= 1, got {value!r}.")
    return int(value)


def units_tuple(units, what, allow_empty=False):
    """`units` (an int or a sequence of ints) as a tuple of layer widths, checked."""
    units = (units,) if isinstance(units, int) else tuple(units)
    if not units and not allow_empty:
        raise ValueError(f"{what} needs at least one layer width, got {units!r}.")
    return tuple(positive_int(width, f"each width in {what}") for width in units)


def check_tasks(tasks, architecture):
    """`tasks`, a dict {task name: output width}, checked and copied."""
    if not isinstance(tasks, dict) or not tasks:
        raise ValueError(f"{architecture}: `tasks` must be a non-empty dict {{task name: output units}}, got {tasks!r}.")
    return {str(name): positive_int(width, f"{architecture}: the output units of task {name!r}") for name, width in tasks.items()}


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

