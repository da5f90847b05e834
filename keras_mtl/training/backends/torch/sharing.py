"""Which variables each task's output reaches, read from autograd's graph of one call of the model on zeros."""

import keras
import torch
from keras import ops

from keras_mtl.training import tasks


def output_dependencies(model):
    """Per output (a functional model's outputs are its tasks), the indices in `trainable_variables` of the variables its output reaches.

    The step's rule: a gradient that autograd does not leave as None
    (`allow_unused`). PyTorch has no trace without data, so the model is
    called once, statelessly, on zeros shaped like its input specifications
    (unknown sizes taken as 1): nothing is assigned, and what the call
    would change (batch statistics, seeds) is discarded.
    """
    variables = model.trainable_variables
    leaves = [variable.value.detach().requires_grad_(True) for variable in variables]
    inputs = keras.tree.map_structure(
        lambda t: ops.zeros(tuple(1 if size is None else size for size in t.shape), t.dtype), model.input
    )
    with torch.enable_grad():
        y_pred, _ = model.stateless_call(
            leaves, [variable.value for variable in model.non_trainable_variables], inputs, training=True
        )
        outputs = tasks.per_task(y_pred, model.output_names, "the model's outputs", required=True)
        return [_reached(ops.sum(output), leaves) for output in outputs]


def _reached(output, leaves):
    if not output.requires_grad:
        return set()
    gradients = torch.autograd.grad(output, leaves, retain_graph=True, allow_unused=True)
    return {i for i, gradient in enumerate(gradients) if gradient is not None}
