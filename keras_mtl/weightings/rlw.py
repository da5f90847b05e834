import tensorflow as tf

from keras_mtl.methods import LossWeighting, draw_seed, next_seed
from keras_mtl.registry import register


@register("rlw")
class RandomLossWeighting(LossWeighting):
    """RLW: `w = softmax(z)` with `z ~ N(0, I)` drawn anew every training step.

    The draws are stateless, keyed by `seed` and a step counter saved with the
    model, so runs repeat and a resumed run draws what an uninterrupted one
    would. `evaluate` uses the expected weights, `1/K` each.

    Lin et al., "Reasonable Effectiveness of Random Weighting: A Litmus Test
    for Multi-Task Learning", TMLR 2022.

    Args:
        losses: the per-task losses.
        seed: an int; a random one (kept in the config) when None.

    Example:

    >>> keras_mtl.RandomLossWeighting({"a": "mse", "b": "mse"}, seed=0)
    """

    def __init__(self, losses=None, seed=None, name=None):
        super().__init__(losses, name=name)
        self.seed = draw_seed(seed)

    def build_state(self, state, task_names):
        state.variable("draws", (), dtype="int32")

    def task_weights(self, losses, state, training):
        if not training:
            return tf.fill(tf.shape(losses), 1.0 / losses.shape[0])
        # After the losses' finiteness check: a refused step must not use up a draw.
        with tf.control_dependencies([losses]):
            seed = next_seed(state, self.seed)
        z = tf.random.stateless_normal(tf.shape(losses), seed=seed)
        return tf.nn.softmax(z)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
