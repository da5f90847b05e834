"""Base classes of the gradient methods: what they see and what they return."""

from collections.abc import Callable
from dataclasses import dataclass

import keras

from keras_mtl.methods import MultiTaskLoss


@dataclass
class TaskGradients:
    """What a gradient method combines, all in float32 and loss-scale free.

    Attributes:
        jacobian: (K, P) rows `g_k`, the gradient of task k's loss with
            respect to the shared parameters (or the shared representation).
        losses: (K,) the task losses of the global batch.
        gramian: (K, K) `J Jᵀ` of the global batch.
        last_layer_gramian: (K, K) the Gramian of the last shared layer's
            parameters alone (GradNorm's `W`).
        losses_after: a function of a direction `d` (P,) that returns the
            global batch's task losses (K,) with the shared parameters moved
            to `θ_sh − d`, leaving no trace (look-ahead methods); None in
            representation mode.
        learning_rate: the optimizer's current learning rate.
        part_jacobians: for a method that draws several batches per step
            (`GradientMethod.batch_parts` > 1), the (K, P) Jacobian of the
            shared parameters on each part of the batch
            (`keras_mtl.training.tasks.batch_parts`), in order; None otherwise.
    """

    jacobian: object
    losses: object
    gramian: object
    last_layer_gramian: object
    losses_after: Callable = None
    learning_rate: object = None
    part_jacobians: list = None


class GradientMethod(MultiTaskLoss):
    """A method that combines the per-task gradients of the shared part.

    The model's `train_step` computes each task's gradient with respect to the
    shared parameters (or the shared representation), calls `combine`, and
    applies the result; task-specific parameters get their own task's
    gradient. Most methods only weigh the gradients: they implement
    `gradient_weights` on the K×K Gramian, so their cost does not grow with
    the number of parameters. Like every hook, both are pure (see
    `keras_mtl.methods`): they return the method's new state.

    Args:
        losses: the per-task losses, `{task: loss}` or one loss for every task (see `MultiTaskLoss`); default None.
        name: the method's name, default None (its registered id).
    """

    train_step_kind = "task_gradients"
    # Look-ahead methods set this to get `TaskGradients.losses_after`.
    needs_losses_after = False
    # Methods that draw several independent batches per step (MoDo, SDMGrad)
    # set how many: the engine deals each batch into that many interleaved
    # parts and gives their Jacobians in `TaskGradients.part_jacobians`.
    batch_parts = 1

    @property
    def parameter_mode_only(self):
        """Whether the method needs the shared parameters' gradients (then `compile` refuses `representation`).

        A look-ahead moves parameters; methods with a state per shared
        parameter, or several batches' Jacobians, need parameter columns.
        """
        return self.needs_losses_after or self.batch_parts > 1

    def combine(self, gradients, state, training):
        """(direction, w, new state): the shared update direction (P,) and the task weights (K,) to log."""
        weights, new_state = self.gradient_weights(gradients, state, training)
        return keras.ops.matmul(weights, gradients.jacobian), weights, new_state

    def gradient_weights(self, gradients, state, training):
        """(w, new state): weights w (K,) such that the update is `Jᵀ w`."""
        raise NotImplementedError

    def state_gradients(self, gradients, weights, state):
        """`{name: gradient}` for the method's trainable state variables, applied by the model's optimizer."""
        return {}
