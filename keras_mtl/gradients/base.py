"""Base classes of the gradient methods: what they see and what they return."""

from dataclasses import dataclass
from typing import Callable

import tensorflow as tf

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
    """

    jacobian: tf.Tensor
    losses: tf.Tensor
    gramian: tf.Tensor
    last_layer_gramian: tf.Tensor
    losses_after: Callable = None
    learning_rate: tf.Tensor = None


class GradientMethod(MultiTaskLoss):
    """A method that combines the per-task gradients of the shared part.

    The model's `train_step` computes each task's gradient with respect to the
    shared parameters (or the shared representation), calls `combine`, and
    applies the result; task-specific parameters get their own task's
    gradient. Most methods only weigh the gradients: they implement
    `task_weights` on the K×K Gramian, so their cost does not grow with the
    number of parameters.
    """

    # Look-ahead methods set this to get `TaskGradients.losses_after`.
    needs_losses_after = False

    def combine(self, gradients, state, training):
        """Returns the shared update direction (P,) and the task weights (K,) to log."""
        weights = self.task_weights(gradients, state, training)
        return tf.linalg.matvec(gradients.jacobian, weights, transpose_a=True), weights

    def task_weights(self, gradients, state, training):
        """Weights w (K,) such that the update is `Jᵀ w`."""
        raise NotImplementedError

    def state_gradients(self, gradients, weights, state):
        """(gradient, variable) pairs for the method's own trainable variables."""
        return []

    def after_apply(self, state):
        """Called after the optimizer step (e.g. to renormalise learned weights)."""
