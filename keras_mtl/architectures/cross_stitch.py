"""Cross-stitch units: learned linear combinations of task columns (Misra et al., CVPR 2016)."""

import keras

from keras_mtl.architectures._common import BUILDER, towers
from keras_mtl.arguments import Activation, Boolean, Real, Units, declare_arguments
from keras_mtl.training.model import MultiTaskModel

# α_S, the weight a task column keeps of itself at the start, and one α per channel or per column.
STITCH = {"same_task_init": Real(minimum=0, maximum=1), "per_channel": Boolean()}


@keras.saving.register_keras_serializable(package="keras_mtl")
@declare_arguments(**STITCH)
class CrossStitch(keras.layers.Layer):
    """A cross-stitch unit: x̃_i = Σ_j α_ij x_j over the K task columns.

    Misra et al., "Cross-stitch Networks for Multi-task Learning", CVPR 2016,
    eq. 1 (two tasks: `[x̃_A; x̃_B] = [[α_AA, α_AB], [α_BA, α_BB]] [x_A; x_B]`),
    here for K tasks with a learned K×K matrix α.

    Initialisation, as the paper's ablation recommends: a convex combination,
    α_ii = `same_task_init` (α_S) and α_ij = (1 − α_S)/(K − 1) for j ≠ i
    (α_D); the paper found (α_S, α_D) = (0.9, 0.1) best for two tasks, the
    default here. The paper applies one α per layer and mentions per-channel
    units as an extension: `per_channel=True` learns one K×K matrix per
    channel (last axis), α of shape (K, K, C). The paper also trains α with
    a larger learning rate than the network's weights, α being of another
    scale; that is the optimizer's business and is not done here. α is not
    constrained to stay convex (nor is it in the paper).

    Input: a list of K ≥ 2 tensors of the same shape (one column per task).
    Output: a list of K tensors of that shape.

    Args:
        same_task_init: α_S, the initial weight of a column's own task (the others share 1 − α_S), default 0.9
            (the paper's best for two tasks).
        per_channel: learn one K×K matrix per channel (last axis), default False (the paper's one per layer).
        **kwargs: `keras.layers.Layer` arguments (`name`, ...).

    Examples:
        ```python
        a, b = keras.layers.Dense(16)(inputs), keras.layers.Dense(16)(inputs)
        a, b = keras_mtl.architectures.CrossStitch()([a, b])
        ```
    """

    def __init__(self, same_task_init=0.9, per_channel=False, **kwargs):
        super().__init__(**kwargs)
        self.same_task_init = same_task_init
        self.per_channel = per_channel

    def build(self, input_shape):
        if (
            not isinstance(input_shape, (list, tuple))
            or len(input_shape) < 2
            or not isinstance(input_shape[0], (list, tuple))
        ):
            raise ValueError(f"CrossStitch takes a list of at least 2 task columns, got input shape {input_shape}.")
        shapes = [tuple(shape) for shape in input_shape]
        if any(shape[1:] != shapes[0][1:] for shape in shapes):
            raise ValueError(f"CrossStitch: the task columns must have the same shape, got {shapes}.")
        num_tasks = len(shapes)
        shape = (num_tasks, num_tasks) + ((shapes[0][-1],) if self.per_channel else ())
        self.alpha = self.add_weight(name="alpha", shape=shape, initializer=self._initial_alpha)

    def _initial_alpha(self, shape, dtype=None):
        num_tasks = shape[0]
        different = (1.0 - self.same_task_init) / (num_tasks - 1)
        matrix = keras.ops.eye(num_tasks) * (self.same_task_init - different) + different
        if self.per_channel:
            matrix = keras.ops.broadcast_to(matrix[:, :, None], shape)
        return keras.ops.cast(matrix, dtype or "float32")

    def call(self, inputs):
        alpha = keras.ops.cast(self.alpha, inputs[0].dtype)
        return [sum(alpha[i, j] * column for j, column in enumerate(inputs)) for i in range(len(inputs))]

    def compute_output_shape(self, input_shape):
        return [tuple(shape) for shape in input_shape]

    def get_config(self):
        return {**super().get_config(), "same_task_init": self.same_task_init, "per_channel": self.per_channel}


@declare_arguments(**BUILDER, column_units=Units(), column_activation=Activation(), **STITCH)
def cross_stitch(
    inputs,
    tasks,
    column_units=(32, 16),
    column_activation="relu",
    same_task_init=0.9,
    per_channel=False,
    tower_units=(),
    tower_activation="relu",
    **model_kwargs,
):
    """A cross-stitch network: one Dense column per task, a `CrossStitch` unit after each layer.

    As Misra et al. place units after every pooling and fully connected layer
    of their task columns (AlexNet), here unit `cross_stitch_i` follows the
    i-th Dense layer (`{task}_column_i`) of the K columns; each task's last
    stitched activation feeds its tower. Every column layer and unit is
    reached by every task's loss (through the units), so gradient methods in
    parameter mode see them all as shared, and only the towers as
    task-specific; there is no single shared tensor (no representation mode).

    Args:
        inputs: a `keras.Input` of shape (features,), fed to every column.
        tasks: dict {task name: output units}; linear outputs named after the tasks.
        column_units: the widths of each column's Dense layers (at least one), default `(32, 16)`.
        column_activation: their activation, default `"relu"`.
        same_task_init: α_S, the initial weight of a column's own task, default 0.9 (see `CrossStitch`).
        per_channel: one K×K matrix per channel, default `False` (see `CrossStitch`).
        tower_units: the widths of each task's Dense layers after its column, default `()` (none).
        tower_activation: their activation, default `"relu"`.
        **model_kwargs: passed to `keras_mtl.MultiTaskModel`.

    Returns:
        A `keras_mtl.MultiTaskModel` with one output per task (at least two tasks).
    """
    if len(tasks) < 2:
        raise ValueError(f"cross_stitch needs at least 2 tasks to stitch, got {list(tasks)}.")
    columns = [inputs] * len(tasks)
    for i, width in enumerate(column_units, start=1):
        columns = [
            keras.layers.Dense(width, activation=column_activation, name=f"{task}_column_{i}")(column)
            for task, column in zip(tasks, columns)
        ]
        columns = CrossStitch(same_task_init, per_channel, name=f"cross_stitch_{i}")(columns)
    return MultiTaskModel(inputs, towers(columns, tasks, tower_units, tower_activation), **model_kwargs)
