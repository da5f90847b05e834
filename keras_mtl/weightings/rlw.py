import keras

from keras_mtl.methods import LossWeighting, RandomStream, draw_seed
from keras_mtl.registry import register


@register("rlw")
class RandomLossWeighting(LossWeighting):
    r"""RLW: `w = softmax(z)` with `z ~ N(0, I)` drawn anew every training step.

    $$
    w = \operatorname{softmax}(z), \quad z \sim \mathcal{N}(0, I) \ \text{drawn every step}
    $$

    The draws come from a `RandomStream` keyed by `seed`, whose generator
    state is saved with the model, so runs repeat and a resumed run draws
    what an uninterrupted one would. Each backend draws its own numbers for a
    seed: a seed repeats a run on one backend, not across backends.
    `evaluate` uses the expected weights, `1/K` each, and draws nothing.

    Lin et al., "Reasonable Effectiveness of Random Weighting: A Litmus Test
    for Multi-Task Learning", TMLR 2022.

    Args:
        losses: the per-task losses.
        seed: an int; a random one (kept in the config) when None.
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.RandomLossWeighting({"a": "mse", "b": "mse"}, seed=0)
    """

    def __init__(self, losses=None, seed=None, name=None):
        super().__init__(losses, name=name)
        self.seed = draw_seed(seed)

    def build_state(self, state, task_names):
        self.stream = RandomStream(state, "rng", self.seed)

    def weights(self, losses, state, training):
        k = losses.shape[0]
        if not training:
            return keras.ops.full_like(losses, 1.0 / k), {}
        z, new_state = self.stream.draw(state, lambda seed: keras.random.normal((k,), seed=seed, dtype=losses.dtype))
        return keras.ops.softmax(z), new_state

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
