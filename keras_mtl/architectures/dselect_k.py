"""DSelect-k: differentiable top-k selection of shared experts per task (Hazimeh et al., NeurIPS 2021)."""

import math

import keras
import numpy as np

from keras_mtl.architectures._common import BUILDER, COUNT, EXPERTS, build_stack, dense_stack, mixture, towers
from keras_mtl.arguments import Boolean, Real, declare_arguments
from keras_mtl.training.model import MultiTaskModel

# The authors' constant inside the entropy's logarithm.
_EPSILON = 1e-6


def smooth_step(t, gamma):
    """S(t) = 0 for t ≤ −γ/2, 1 for t ≥ γ/2, else −2t³/γ³ + 3t/(2γ) + 1/2 (Hazimeh et al. 2020, the tree ensemble layer)."""
    cubic = -2.0 / gamma**3 * t**3 + 3.0 / (2.0 * gamma) * t + 0.5
    return keras.ops.where(t <= -gamma / 2, 0.0, keras.ops.where(t >= gamma / 2, 1.0, cubic))


def binary_codes(num_experts):
    """(num_experts, m) booleans, row i the m-bit binary code of i (most significant bit first), m = ⌈log₂ n⌉."""
    width = max(1, math.ceil(math.log2(num_experts)))
    return np.array([[bit == "1" for bit in np.binary_repr(i, width=width)] for i in range(num_experts)])


# DSelect-k's selector; `gamma`, the smooth step's width; `entropy_regularization`, λ (both as in the paper).
SELECTOR = {
    "num_selected": COUNT,
    "gamma": Real(minimum=0, minimum_open=True),
    "entropy_regularization": Real(minimum=0),
    "per_example": Boolean(),
}


@keras.saving.register_keras_serializable(package="keras_mtl")
@declare_arguments(num_tasks=COUNT, num_experts=COUNT, **SELECTOR, **EXPERTS)
class DSelectK(keras.layers.Layer):
    """n shared experts, and per task a DSelect-k gate that mixes at most k of them.

    Hazimeh et al., "DSelect-k: Differentiable Selection in the Mixture of
    Experts with Applications to Multi-Task Learning", NeurIPS 2021, section
    3; the authors' code (google-research/dselect_k_moe). Task t's output is
    Σ_e a_e f_e(x), with weights

        a = Σ_{i=1..k} softmax(w)_i r(z_i),
        r(z)_e = Π_{j=1..m} [S(z_j) if bit j of e is 1 else 1 − S(z_j)],

    where each of the k "single-expert selectors" z_i ∈ R^m, m = ⌈log₂ n⌉,
    encodes one expert in binary through the smooth-step S (`smooth_step`,
    width `gamma`). Once every z_ij leaves (−γ/2, γ/2), each r(z_i) is one-hot
    and at most k weights are non-zero; S's gradient vanishes there, so the
    selection stays binary. a ≥ 0 and Σ a = 1 for n a power of 2.

    Defaults and choices, as in the authors' code: γ = 1; z initialised
    U(−γ/100, γ/100) (all experts nearly equal at first), w U(−0.05, 0.05).
    Task-only gates (`per_example=False`, the default: z and w are variables
    per task) or per-example gates (`per_example=True`: z and w are Dense
    functions of the input). In training the layer adds, per task, the
    entropy penalty λ·Σ_i H(r(z_i)), H(r) = −Σ_e r_e log(r_e + 10⁻⁶), which
    speeds the selectors to binary (`entropy_regularization` = λ: the
    authors' regulariser default and LibMTL's fixed value, 10⁻⁶; 0 turns it
    off, the authors' gate default); and, when n is not a power of 2, the
    authors' penalty Σ_i 1/Σ_{e<n} r(z_i)_e, which keeps selectors off the
    2^m − n codes that name no expert. Both are `add_loss` terms, which
    keras_mtl adds outside the balancing of gradient methods. For per-example
    gates they are averaged over the batch (the authors sum: a penalty whose
    scale, and whose floor of k per example, grew with the batch size).

    Experts are stacks of Dense layers (`expert_units`, `expert_activation`).
    Each task's gate is its own variable: in parameter mode the experts are
    the shared parameters, the gates task-specific.

    Input: (batch, features). Output: a list of `num_tasks` tensors
    (batch, expert_units[-1]).

    Args:
        num_tasks: the number of tasks.
        num_experts: n, the number of experts, default 8.
        num_selected: k, the most experts a gate mixes, default 2.
        gamma: γ, the smooth-step's width, default 1.0 (the authors').
        entropy_regularization: λ of the entropy penalty, default 1e-6 (the authors' regulariser default and
            LibMTL's).
        per_example: gates that are Dense functions of the input instead of variables, default False.
        expert_units: each expert's Dense widths, default `(16,)`.
        expert_activation: their activation, default `"relu"`.
        **kwargs: `keras.layers.Layer` arguments (`name`, ...).

    Examples:
        ```python
        inputs = keras.Input((100,))
        y1, y2 = keras_mtl.architectures.DSelectK(num_tasks=2, num_experts=8, num_selected=2)(inputs)
        ```
    """

    def __init__(
        self,
        num_tasks,
        num_experts=8,
        num_selected=2,
        gamma=1.0,
        entropy_regularization=1e-6,
        per_example=False,
        expert_units=(16,),
        expert_activation="relu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_tasks = num_tasks
        self.num_experts = num_experts
        self.num_selected = num_selected
        if self.num_selected > self.num_experts:
            raise ValueError(f"DSelectK: num_selected (k = {num_selected}) exceeds num_experts ({num_experts}).")
        self.gamma = gamma
        self.entropy_regularization = entropy_regularization
        self.per_example = per_example
        self.expert_units = expert_units
        self.expert_activation = expert_activation
        self.codes = binary_codes(self.num_experts)
        self.experts = [
            dense_stack(self.expert_units, expert_activation, f"expert_{i}") for i in range(self.num_experts)
        ]
        if self.per_example:
            bits = self.num_selected * self.codes.shape[1]
            self.z_layers = [self._dense(bits, self._z_initializer(), f"task_{t}_z") for t in range(self.num_tasks)]
            self.w_layers = [
                self._dense(self.num_selected, self._w_initializer(), f"task_{t}_w") for t in range(self.num_tasks)
            ]

    def _z_initializer(self):
        return keras.initializers.RandomUniform(-self.gamma / 100, self.gamma / 100)

    def _w_initializer(self):
        return keras.initializers.RandomUniform(-0.05, 0.05)

    @staticmethod
    def _dense(units, initializer, name):
        return keras.layers.Dense(units, kernel_initializer=initializer, bias_initializer=initializer, name=name)

    def build(self, input_shape):
        for expert in self.experts:
            build_stack(expert, input_shape)
        if self.per_example:
            for layer in self.z_layers + self.w_layers:
                build_stack(layer, input_shape)
            return
        z_shape = (self.num_selected, self.codes.shape[1])
        self.z_logits = [
            self.add_weight(shape=z_shape, initializer=self._z_initializer(), name=f"task_{t}_z")
            for t in range(self.num_tasks)
        ]
        self.w_logits = [
            self.add_weight(shape=(self.num_selected,), initializer=self._w_initializer(), name=f"task_{t}_w")
            for t in range(self.num_tasks)
        ]

    def selectors(self, inputs, task):
        """Task `task`'s (selector weights softmax(w), selector outputs r(z)): shapes (…, k) and (…, k, n)."""
        if self.per_example:
            z = keras.ops.reshape(self.z_layers[task](inputs), (-1, self.num_selected, self.codes.shape[1]))
            w = self.w_layers[task](inputs)
        else:
            z, w = self.z_logits[task], self.w_logits[task]
        step = smooth_step(z, self.gamma)[..., None, :]  # (…, k, 1, m) against the codes' (n, m)
        outputs = keras.ops.prod(keras.ops.where(self.codes, step, 1.0 - step), axis=-1)
        return keras.ops.softmax(w, axis=-1), outputs

    def expert_weights(self, inputs, task):
        """a = Σ_i softmax(w)_i r(z_i) for task `task`: (n,) for task-only gates (`inputs` unused, may be None), (batch, n) per example."""
        return _combine(*self.selectors(inputs, task))

    def call(self, inputs, training=False):
        expert_outputs = [expert(inputs) for expert in self.experts]
        results = []
        for task in range(self.num_tasks):
            weights, outputs = self.selectors(inputs, task)
            if training:
                self._add_penalties(outputs)
            results.append(mixture(_combine(weights, outputs), expert_outputs))
        return results

    def _add_penalties(self, selector_outputs):
        """The entropy and unreachable-code penalties of one task's selectors (…, k, n)."""
        if self.entropy_regularization:
            entropy = -keras.ops.sum(selector_outputs * keras.ops.log(selector_outputs + _EPSILON), axis=(-2, -1))
            self.add_loss(self.entropy_regularization * keras.ops.mean(entropy))
        if self.num_experts != 2 ** self.codes.shape[1]:
            reachable = keras.ops.sum(selector_outputs, axis=-1)
            self.add_loss(keras.ops.mean(keras.ops.sum(1.0 / reachable, axis=-1)))

    def compute_output_shape(self, input_shape):
        return [tuple(input_shape[:-1]) + (self.expert_units[-1],)] * self.num_tasks

    def get_config(self):
        return {
            **super().get_config(),
            "num_tasks": self.num_tasks,
            "num_experts": self.num_experts,
            "num_selected": self.num_selected,
            "gamma": self.gamma,
            "entropy_regularization": self.entropy_regularization,
            "per_example": self.per_example,
            "expert_units": list(self.expert_units),
            "expert_activation": self.expert_activation,
        }


def _combine(selector_weights, selector_outputs):
    """Σ_i softmax(w)_i r(z_i): (…, k) and (…, k, n) to (…, n)."""
    return keras.ops.sum(selector_weights[..., None] * selector_outputs, axis=-2)


@declare_arguments(**BUILDER, num_experts=COUNT, **SELECTOR, **EXPERTS)
def dselect_k(
    inputs,
    tasks,
    num_experts=8,
    num_selected=2,
    gamma=1.0,
    entropy_regularization=1e-6,
    per_example=False,
    expert_units=(16,),
    expert_activation="relu",
    tower_units=(8,),
    tower_activation="relu",
    **model_kwargs,
):
    """A DSelect-k model: the `DSelectK` layer (named "dselect_k") and one tower per task.

    Args:
        inputs: a `keras.Input` of shape (features,).
        tasks: dict {task name: output units}; linear outputs named after the tasks.
        num_experts: the number of experts, default 8 (see `DSelectK`).
        num_selected: k, the experts each task's gate selects, default 2.
        gamma: the smooth-step's width γ, default 1.0.
        entropy_regularization: the weight of the selectors' entropy penalty, default 1e-6.
        per_example: whether the gates depend on the input (per-example gating), default `False`.
        expert_units: each expert's Dense widths, default `(16,)`.
        expert_activation: their activation, default `"relu"`.
        tower_units: the widths of each tower's hidden Dense layers (`{task}_tower_i`; may be
            empty), default `(8,)`.
        tower_activation: their activation, default `"relu"`.
        **model_kwargs: passed to `keras_mtl.MultiTaskModel`.

    Returns:
        A `keras_mtl.MultiTaskModel`; gradient methods run in parameter mode.
    """
    layer = DSelectK(
        len(tasks),
        num_experts,
        num_selected,
        gamma,
        entropy_regularization,
        per_example,
        expert_units,
        expert_activation,
        name="dselect_k",
    )
    return MultiTaskModel(inputs, towers(layer(inputs), tasks, tower_units, tower_activation), **model_kwargs)
