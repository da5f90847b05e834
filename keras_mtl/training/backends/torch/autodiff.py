"""JAX's differentiation transforms, in PyTorch's autograd: the steps are functions of values on both.

`grad`, `vjp` and `jvp` take a function of lists of values and differentiate
it as `jax.grad`, `jax.vjp` and `jax.jvp` do, with autograd on one forward
pass. A value that already carries an outer computation's graph (inside a
function that `grad` differentiates, e.g. a gradient penalty) is
differentiated through it: the inner backward passes then build their own
graph (`create_graph`), so the outer gradient is the second-order one, as a
nested `jax.grad` gives. Elsewhere the values are cut from any graph, and
what a transform returns besides gradients carries none.
"""

import keras
import torch


def _nested(values):
    return any(isinstance(value, torch.Tensor) and value.requires_grad for value in keras.tree.flatten(values))


def _leaves(values, nested):
    """`values` (a structure of tensors) as tensors that autograd differentiates with respect to."""

    def leaf(value):
        if nested and value.requires_grad:
            return value
        return value.detach().requires_grad_(value.is_floating_point())

    return keras.tree.map_structure(leaf, values)


def _cut(structure, nested):
    if nested:
        return structure
    return keras.tree.map_structure(
        lambda value: value.detach() if isinstance(value, torch.Tensor) else value, structure
    )


def _gradients(outputs, leaves, cotangents, nested, retain=True):
    """`Σ <cotangent, output>` differentiated with respect to every leaf; zeros where nothing reaches (as JAX gives)."""
    pairs = [(o, c) for o, c in zip(outputs, cotangents) if o.requires_grad]
    flat_leaves = keras.tree.flatten(leaves)
    if pairs:
        found = torch.autograd.grad(
            [o for o, _ in pairs],
            flat_leaves,
            [c.to(o.dtype) for o, c in pairs],
            retain_graph=retain or nested,
            create_graph=nested,
            allow_unused=True,
        )
    else:
        found = [None] * len(flat_leaves)
    gradients = [torch.zeros_like(leaf) if g is None else g for g, leaf in zip(found, flat_leaves)]
    return keras.tree.pack_sequence_as(leaves, gradients)


def grad(function, values, has_aux=False):
    """`jax.grad(function, has_aux)(values)` for a scalar `function` of a list of values."""
    nested = _nested(values)
    leaves = _leaves(values, nested)
    with torch.enable_grad():
        result = function(leaves)
        value, aux = result if has_aux else (result, None)
        gradients = _gradients([value], leaves, [torch.ones_like(value)], nested, retain=False)
    return (gradients, _cut(aux, nested)) if has_aux else gradients


def vjp(function, *primals, has_aux=False):
    """`jax.vjp(function, *primals, has_aux)`: (outputs, vjp, [aux]) from one forward pass.

    `vjp(cotangents)` (the structure of the outputs) gives the gradients for
    each primal, a tuple; it may be called any number of times.
    """
    nested = _nested(primals)
    leaves = _leaves(primals, nested)
    with torch.enable_grad():
        result = function(*leaves)
    outputs, aux = result if has_aux else (result, None)
    flat_outputs = keras.tree.flatten(outputs)

    def pull(cotangents):
        with torch.enable_grad():
            return tuple(_gradients(flat_outputs, leaves, keras.tree.flatten(cotangents), nested))

    pull.graph = (flat_outputs, leaves)
    returned = (_cut(outputs, nested), pull)
    return returned + (_cut(aux, nested),) if has_aux else returned


def batched_vjp(pull, cotangents):
    """`jax.vmap(pull)(cotangents)`: the VJPs of a batch of cotangents (leading axis) in one backward pass."""
    flat_outputs, leaves = pull.graph
    nested = _nested(leaves)
    flat_leaves = keras.tree.flatten(leaves)
    pairs = [(o, c) for o, c in zip(flat_outputs, keras.tree.flatten(cotangents)) if o.requires_grad]
    count = keras.tree.flatten(cotangents)[0].shape[0]
    found = [None] * len(flat_leaves)
    if pairs:
        with torch.enable_grad():
            found = torch.autograd.grad(
                [o for o, _ in pairs],
                flat_leaves,
                [c.to(o.dtype) for o, c in pairs],
                retain_graph=True,
                create_graph=nested,
                allow_unused=True,
                is_grads_batched=True,
            )
    gradients = [leaf.new_zeros((count, *leaf.shape)) if g is None else g for g, leaf in zip(found, flat_leaves)]
    return tuple(keras.tree.pack_sequence_as(leaves, gradients))


def jvp(function, primals, tangents):
    """`jax.jvp(function, (primals,), (tangents,))` for a function of one list of values: (output, J·tangents).

    By the double-backward identity `J t = ∂/∂u <J^T u, t>`
    (`torch.autograd.functional.jvp`), so every operation with a backward
    formula has one.
    """
    with torch.enable_grad():
        output, product = torch.autograd.functional.jvp(
            lambda *values: function(list(values)),
            tuple(p.detach() for p in primals),
            tuple(t.detach().to(p.dtype) for p, t in zip(primals, tangents)),
            create_graph=False,
        )
    return output.detach(), product.detach()


def reached_leaves(outputs, leaves):
    """For each output, the indices of `leaves` it depends on: a walk of autograd's graph, no arithmetic.

    The rule of `allow_unused` (a gradient that is not None), as JAX reads
    it from a jaxpr.
    """
    position = {}
    for i, leaf in enumerate(leaves):
        node = leaf.grad_fn if leaf.grad_fn is not None else _accumulator(leaf)
        if node is not None:
            position.setdefault(node, set()).add(i)
    found = []
    for output in outputs:
        seen, reached, stack = set(), set(), [output.grad_fn] if output.grad_fn is not None else []
        while stack:
            node = stack.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            reached |= position.get(node, set())
            stack.extend(next_node for next_node, _ in node.next_functions)
        found.append(reached)
    return found


def _accumulator(leaf):
    """The graph node of a leaf that requires a gradient (its `AccumulateGrad`)."""
    if not leaf.requires_grad:
        return None
    return leaf.view_as(leaf).grad_fn.next_functions[0][0]
