"""The tasks' losses and gradients of a dense trunk with dense heads, in closed form (numpy, float64).

The expectation the training tests compare a step with, computed without
Keras: `z = act(x W + b)`, task k's output `o_k = z H_k + c_k`, and its loss
one of "mse", "mae" (means over every element, as Keras's reduction gives
for these shapes) or "sce" (sparse softmax cross-entropy on logits, mean over
the batch). Then `∂L_k/∂z = ∂L_k/∂o_k H_kᵀ` and the trunk's gradient follows
by the chain rule.
"""

import numpy as np

ACTIVATIONS = {"tanh": (np.tanh, lambda z: 1.0 - z**2), "linear": (lambda a: a, lambda z: np.ones_like(z))}


def _loss_and_output_gradient(kind, output, target):
    if kind == "mse":
        error = output - target.reshape(output.shape)
        return np.mean(error**2), 2.0 * error / error.size
    if kind == "mae":
        error = output - target.reshape(output.shape)
        return np.mean(np.abs(error)), np.sign(error) / error.size
    if kind == "sce":
        shifted = output - output.max(axis=1, keepdims=True)
        log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        labels = np.asarray(target).reshape(-1).astype(int)
        one_hot = np.eye(output.shape[1])[labels]
        return -np.mean(log_softmax[np.arange(len(labels)), labels]), (np.exp(log_softmax) - one_hot) / len(labels)
    raise ValueError(kind)


def task_gradients(weights, x, y, losses, activation="tanh"):
    """Per task (in the order of `losses`): its loss, the trunk's gradient, the head's and the representation's.

    Args:
        weights: [W, b, H_1, c_1, H_2, c_2, ...], the heads in the order of `losses`.
        x: (n, d) inputs.
        y: {task: targets}.
        losses: {task: "mse" | "mae" | "sce"}.
        activation: the trunk's, "tanh" or "linear".

    Returns:
        {task: {"loss": L_k, "trunk": [∂L_k/∂W, ∂L_k/∂b], "head": [∂L_k/∂H_k, ∂L_k/∂c_k], "representation": ∂L_k/∂z}}
    """
    kernel, bias, *heads = [np.asarray(w, np.float64) for w in weights]
    function, derivative = ACTIVATIONS[activation]
    x = np.asarray(x, np.float64)
    z = function(x @ kernel + bias)
    result = {}
    for k, (task, kind) in enumerate(losses.items()):
        head, head_bias = heads[2 * k], heads[2 * k + 1]
        loss, output_gradient = _loss_and_output_gradient(kind, z @ head + head_bias, np.asarray(y[task], np.float64))
        representation = output_gradient @ head.T
        pre_activation = representation * derivative(z)
        result[task] = {
            "loss": loss,
            "trunk": [x.T @ pre_activation, pre_activation.sum(0)],
            "head": [z.T @ output_gradient, output_gradient.sum(0)],
            "representation": representation,
        }
    return result


def sgd_step(weights, gradients, task_weights, learning_rate, weighted_heads=False):
    """The weights after one SGD step with the trunk along `Σ_k w_k ∇L_k`.

    Each head moves along its task's own gradient (a gradient method), or
    along `w_k` times it with `weighted_heads` (a step on `Σ_k w_k L_k`: a
    loss weighting, or stock Keras's `loss_weights`).
    """
    tasks = list(gradients)
    trunk = [
        w - learning_rate * sum(task_weights[k] * gradients[task]["trunk"][i] for k, task in enumerate(tasks))
        for i, w in enumerate(weights[:2])
    ]
    heads = [
        w - learning_rate * (task_weights[k] if weighted_heads else 1.0) * gradients[task]["head"][i]
        for k, task in enumerate(tasks)
        for i, w in enumerate(weights[2 + 2 * k : 4 + 2 * k])
    ]
    return trunk + heads
