"""The Jacobians of a batch's parts, for gradient methods that draw several batches per step (MoDo, SDMGrad).

A method with `batch_parts` = p > 1 gets the batch dealt into p interleaved
parts (`tasks.batch_parts`), and each part's (K, P) Jacobian of the shared
parameters: one forward pass and K vector-Jacobian products per part,
unscaled and checked as the whole batch's Jacobian is. The whole batch's
pass still gives the losses, the logs and the heads' gradients. Under
`keras.distribution.DataParallel` the step sees the global batch, so the
parts are the global batch's, as on one device.

The parts' passes keep nothing: they start from the non-trainable values
(random seeds, batch-normalisation statistics) the clean pass left, and
their updates of them are dropped.
"""

import keras
from keras import ops

from keras_mtl.training import tasks
from keras_mtl.training.backends.torch import autodiff
from keras_mtl.training.backends.torch.values import flat, forward, output_vjps
from keras_mtl.training.steps.faults import Check, gramian_check, task_gradient_checks


def part_jacobians(model, values, clean, x, y, sample_weight, scale, checks):
    """The (K, P) Jacobian of each part of the batch, in order; adds their checks to `checks`.

    `clean` is the step's clean pass (`steps.CleanTaskGradients`): its
    shared variables and the non-trainable values it left. A batch with
    fewer samples than parts is a fault naming the method (known when the
    step is traced: JAX shapes are static), so the step changes nothing
    and `fit` raises the error once it reads the fault, as for every fault.
    """
    method = model.multi_task_method
    parts = method.batch_parts
    size = ops.shape(keras.tree.flatten(x)[0])[0]
    checks.add(Check(ops.convert_to_tensor(size), tasks.too_small_batch_message(method, size), lower_bound=parts))
    if size < parts:
        return [ops.zeros_like(clean.jacobian)] * parts
    jacobians = []
    for i, (part_x, part_y, part_weight) in enumerate(tasks.batch_parts(x, y, sample_weight, parts)):
        jacobian = _jacobian(model, values, clean, part_x, part_y, part_weight, scale)
        where = f"the shared parameters on part {i + 1} of {parts} of the batch"
        checks.extend(task_gradient_checks(jacobian, model.task_names, where))
        checks.add(gramian_check(ops.matmul(jacobian, ops.transpose(jacobian)), where))
        jacobians.append(jacobian)
    return jacobians


def _jacobian(model, values, clean, x, y, sample_weight, scale):
    """The unscaled (K, P) Jacobian of the shared variables on one part: K vector-Jacobian products."""
    shared = clean.shared

    def scaled_losses(shared_values):
        trainable = list(values.trainable)
        for i, value in zip(shared, shared_values):
            trainable[i] = value
        y_pred, _, _ = forward(model, model, trainable, clean.non_trainable, x)
        return tuple(loss * scale for loss in tasks.task_losses(model, y, y_pred, sample_weight))

    losses, vjp = autodiff.vjp(scaled_losses, [values.trainable[i] for i in shared])
    rows = [gradients[0] for gradients in output_vjps(model, vjp, losses, len(losses))]
    return ops.stack([flat(row) for row in rows]) / scale
