"""MTAN: a shared network with task-specific soft-attention modules (Liu et al., CVPR 2019)."""

import keras

from keras_mtl.architectures._common import BUILDER, towers
from keras_mtl.arguments import Integer, Units, declare_arguments
from keras_mtl.training.model import MultiTaskModel


@keras.saving.register_keras_serializable(package="keras_mtl")
@declare_arguments(hidden_units=Integer(minimum=1, optional=True))
class TaskAttention(keras.layers.Layer):
    """One task's attention module: â = g([u; â_prev]) ⊙ p, g ending in a sigmoid.

    Liu, Johns and Davison, "End-to-End Multi-Task Learning with Attention",
    CVPR 2019 (the task-specific attention module): at each stage of the shared network,
    task i learns a soft mask a = g(·) ∈ (0, 1) with p's shape and keeps
    â = a ⊙ p of the shared stage's output p. g reads the stage's
    intermediate shared feature u: alone at the first stage, g(u), and
    after it concatenated on the channel axis with task i's output of the
    previous stage, g([u; â_prev]). g is
    [1×1 conv, BN, ReLU] then [1×1 conv, BN, sigmoid]; a 1×1 convolution is
    a Dense layer on the channel (last) axis, so the layer works on vectors,
    sequences and images alike. The hidden width is the paper's (that of p,
    as in the authors' SegNet MTAN) unless `hidden_units` is given.

    Input: [u, p] or [u, p, â_prev], with u and â_prev of p's spatial shape.
    Output: â, p's shape.

    Example (one stage of an image network, task "depth"):

    ```python
    u = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(shared)
    p = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(u)
    depth = keras_mtl.architectures.TaskAttention(name="depth_attention_1")([u, p])
    ```

    Args:
        hidden_units: the width of the attention's hidden layer, default None (the input's channels, as in the
            authors' SegNet MTAN).
        **kwargs: `keras.layers.Layer` arguments (`name`, ...).
    """

    def __init__(self, hidden_units=None, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = hidden_units

    def build(self, input_shape):
        if (
            not isinstance(input_shape, (list, tuple))
            or len(input_shape) not in (2, 3)
            or not isinstance(input_shape[0], (list, tuple))
        ):
            raise ValueError(
                f"TaskAttention takes [u, p] or [u, p, previous task feature], got input shape {input_shape}."
            )
        shapes = [tuple(shape) for shape in input_shape]
        if any(shape[1:-1] != shapes[1][1:-1] for shape in shapes):
            raise ValueError(
                f"TaskAttention: u, p and the previous task feature must share their spatial shape, got {shapes}."
            )
        channels = shapes[1][-1]
        # Sublayers made here, where p's width is known; `build` runs again on
        # load, so they exist before the weights are restored.
        self.hidden = keras.layers.Dense(self.hidden_units or channels, name="hidden")
        self.hidden_norm = keras.layers.BatchNormalization(name="hidden_norm")
        self.mask_logits = keras.layers.Dense(channels, name="mask_logits")
        self.mask_norm = keras.layers.BatchNormalization(name="mask_norm")
        # g reads u and, when given, â_prev (inputs 0 and 2).
        read_shape = shapes[0][:-1] + (sum(shape[-1] for shape in shapes[::2]),)
        self.hidden.build(read_shape)
        hidden_shape = self.hidden.compute_output_shape(read_shape)
        self.hidden_norm.build(hidden_shape)
        self.mask_logits.build(hidden_shape)
        self.mask_norm.build(shapes[1])

    def mask(self, inputs, training=False):
        """a = sigmoid(BN(W₂ ReLU(BN(W₁ [u; â_prev])))), p's shape, in (0, 1)."""
        read = inputs[0] if len(inputs) == 2 else keras.ops.concatenate([inputs[0], inputs[2]], axis=-1)
        hidden = keras.ops.relu(self.hidden_norm(self.hidden(read), training=training))
        return keras.ops.sigmoid(self.mask_norm(self.mask_logits(hidden), training=training))

    def call(self, inputs, training=False):
        return self.mask(inputs, training=training) * inputs[1]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[1])

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units}


def _conv_block(filters, name):
    """[3×3 conv, BN, ReLU], the paper's convolutional block."""
    return keras.Sequential(
        [keras.layers.Conv2D(filters, 3, padding="same"), keras.layers.BatchNormalization(), keras.layers.ReLU()],
        name=name,
    )


@declare_arguments(**BUILDER, filters=Units())
def mtan(inputs, tasks, filters=(16, 32), tower_units=(), tower_activation="relu", **model_kwargs):
    """An MTAN image model: a shared convolutional network and per task an attention module per stage.

    Stage j of the shared network is u_j = block(x_j), p_j = block(u_j),
    x_{j+1} = maxpool(p_j) (layers `stage_j_conv_1`, `stage_j_conv_2`;
    block = [3×3 conv, BN, ReLU]). Task i's module at stage j
    (`{task}_attention_j`, a `TaskAttention`) gives â = g([u_j; â_{j−1}]) ⊙ p_j;
    before the next stage â goes through a block with the next stage's width
    (`attention_block_j`, shared by the tasks, as in the authors' code) and a
    max-pool. The last stage's â is averaged over space and goes to the
    task's tower.

    The attention modules read the shared features at every stage, so there
    is no single shared tensor: gradient methods run in parameter mode, where
    the shared stages and attention blocks are shared, and each task's
    attention modules and tower are its own.

    Args:
        inputs: a `keras.Input` of shape (height, width, channels).
        tasks: dict {task name: output units}; linear outputs named after the tasks.
        filters: the width of each stage (at least one stage).
        tower_units: the widths of each tower's Dense layers after pooling, default `()` (none).
        tower_activation: their activation, default `"relu"`.
        **model_kwargs: passed to `keras_mtl.MultiTaskModel`.

    Returns:
        A `keras_mtl.MultiTaskModel` with one output per task.

    Examples:
        ```python
        inputs = keras.Input((28, 28, 1))
        model = keras_mtl.architectures.mtan(inputs, {"left": 10, "right": 10}, filters=(16, 32))
        ```
    """
    if len(inputs.shape) != 4:
        raise ValueError(f"mtan needs image inputs (height, width, channels), got shape {inputs.shape}.")
    shared, features = inputs, {task: None for task in tasks}
    for j, width in enumerate(filters, start=1):
        u = _conv_block(width, f"stage_{j}_conv_1")(shared)
        p = _conv_block(width, f"stage_{j}_conv_2")(u)
        to_next = _conv_block(filters[j], f"attention_block_{j}") if j < len(filters) else None
        for task, previous in features.items():
            attended = TaskAttention(name=f"{task}_attention_{j}")([u, p] if previous is None else [u, p, previous])
            features[task] = attended if to_next is None else keras.layers.MaxPooling2D()(to_next(attended))
        shared = keras.layers.MaxPooling2D()(p)
    pooled = [keras.layers.GlobalAveragePooling2D()(feature) for feature in features.values()]
    return MultiTaskModel(inputs, towers(pooled, tasks, tower_units, tower_activation), **model_kwargs)
