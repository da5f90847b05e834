"""The step's view of the model's variables, and stateless calls of the model or its parts."""

import inspect

import keras
from keras import ops

from keras_mtl.training.backends.torch import autodiff


class Values:
    """The step's view of the model: its variables' values, read and replaced by variable."""

    def __init__(self, model, trainable, non_trainable):
        self.model = model
        self.trainable = list(trainable)
        self.non_trainable = list(non_trainable)
        self.learning_rate = None  # the optimizer's, read by the step
        self._trainable_index = {id(v): i for i, v in enumerate(model.trainable_variables)}
        self._non_trainable_index = {id(v): i for i, v in enumerate(model.non_trainable_variables)}

    def of(self, variables, trainable=None, non_trainable=None):
        trainable = self.trainable if trainable is None else trainable
        non_trainable = self.non_trainable if non_trainable is None else non_trainable
        return [
            trainable[self._trainable_index[id(v)]]
            if id(v) in self._trainable_index
            else non_trainable[self._non_trainable_index[id(v)]]
            for v in variables
        ]

    def with_non_trainable(self, variables, new_values):
        """The model's non-trainable values with those of `variables` replaced."""
        non_trainable = list(self.non_trainable)
        for variable, value in zip(variables, new_values):
            non_trainable[self._non_trainable_index[id(variable)]] = value
        return non_trainable

    def trainable_indices(self, variables):
        return [self._trainable_index[id(v)] for v in variables]

    def method_state(self, trainable=None, non_trainable=None):
        """The method's state values, `{name: value}`; trainable ones from `trainable` (differentiable)."""
        named = self.model.multi_task_state.named_variables()
        return dict(zip(named, self.of(list(named.values()), trainable, non_trainable)))

    def with_state(self, new_state, trainable, non_trainable):
        """`(trainable, non_trainable)` with the method's returned state written in."""
        trainable, non_trainable = list(trainable), list(non_trainable)
        for variable, value in self.model.multi_task_state.updated(new_state):
            value = ops.cast(value, variable.dtype)
            if id(variable) in self._trainable_index:
                trainable[self._trainable_index[id(variable)]] = value
            else:
                non_trainable[self._non_trainable_index[id(variable)]] = value
        return trainable, non_trainable


def forward(model, layer, trainable_values, non_trainable_values, inputs):
    """`layer` (the model or one of its parts) called statelessly in training mode.

    Returns (outputs, the model's non-trainable values after the call, the
    sum of the regularisation losses the call added).
    """
    values = Values(model, trainable_values, non_trainable_values)
    # `stateless_call` passes its keywords to `call` as they are; a `call` without `training` takes none.
    training = {"training": True} if "training" in inspect.signature(layer.call).parameters else {}
    outputs, non_trainable, losses = layer.stateless_call(
        values.of(layer.trainable_variables),
        values.of(layer.non_trainable_variables),
        inputs,
        return_losses=True,
        **training,
    )
    return outputs, values.with_non_trainable(layer.non_trainable_variables, non_trainable), sum_of(losses)


def sum_of(losses):
    """The sum of a call's regularisation losses, float32 (0 when there are none)."""
    return ops.sum(ops.stack([ops.cast(loss, "float32") for loss in losses])) if losses else ops.zeros((), "float32")


def read_optimizer(model, optimizer_values):
    """The optimizer's current loss scale (1 without a LossScaleOptimizer) and learning rate."""
    with keras.StatelessScope(state_mapping=list(zip(model.optimizer.variables, optimizer_values))):
        return ops.convert_to_tensor(model.optimizer.scale_loss(1.0), "float32"), ops.convert_to_tensor(
            model.optimizer.learning_rate
        )


def flat(values):
    return ops.concatenate([ops.reshape(ops.cast(v, "float32"), (-1,)) for v in values], axis=0)


def split_like(vector, variables):
    sizes = [int(ops.size(v)) for v in variables]
    pieces, start = [], 0
    for size, variable in zip(sizes, variables):
        pieces.append(ops.reshape(vector[start : start + size], variable.shape))
        start += size
    return pieces


def one_hot_cotangent(outputs, index):
    """The cotangent that picks output `index` of a tuple of scalar outputs."""
    return tuple(ops.ones_like(o) if i == index else ops.zeros_like(o) for i, o in enumerate(outputs))


def output_vjps(model, vjp, outputs, count):
    """The VJPs of the first `count` scalar outputs, one per output, as `vjp` returns them.

    K calls of `vjp` (`task_gradients="sequential"`), or one call
    vectorised over the outputs (`"batched"`: autograd's `is_grads_batched`).
    """
    if model.task_gradients == "sequential":
        return [vjp(one_hot_cotangent(outputs, k)) for k in range(count)]
    picks = ops.eye(count, len(outputs))
    batched = autodiff.batched_vjp(vjp, tuple(ops.cast(picks[:, i], o.dtype) for i, o in enumerate(outputs)))
    return [keras.tree.map_structure(lambda leaf, k=k: leaf[k], batched) for k in range(count)]
