"""One training step of each given method from fixed weights and a fixed batch, on the backend Keras runs on.

Run as a script under KERAS_BACKEND=tensorflow and =jax; writes the weights after the step, per spec
(`id` or `id@trunk` for representation mode), to the .npz file named first:

    python tests/support/one_step.py out.npz ew pcgrad mgda@trunk

Random draws are fixed so that both backends see the same numbers (each backend draws its own for a
seed): `keras.random.uniform` and `normal` return values from a NumPy generator keyed by nothing but
the call's shape.
"""

import sys

import keras
import numpy as np
import three_tasks


def fixed(draw):
    def sample(shape, *args, dtype=None, **kwargs):
        values = draw(np.random.default_rng(123), shape)
        return keras.ops.convert_to_tensor(values, keras.backend.standardize_dtype(dtype or "float32"))

    return sample


keras.random.uniform = fixed(lambda rng, shape: rng.uniform(size=shape))
keras.random.normal = fixed(lambda rng, shape: rng.normal(size=shape))


def one_step(spec):
    method_id, _, representation = spec.partition("@")
    model = three_tasks.model(representation or None, three_tasks.initial_weights())
    model.compile(keras.optimizers.SGD(0.1), loss=three_tasks.method(method_id, representation))
    x, y = three_tasks.data(n=32)
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    return float_weights(model)


def float_weights(model):
    """The model's floating-point weights and state, flat: a random stream's seed state is backend-specific by design."""
    return np.concatenate([np.ravel(w) for w in model.get_weights() if np.issubdtype(w.dtype, np.floating)])


if __name__ == "__main__":
    np.savez(sys.argv[1], **{spec: one_step(spec) for spec in sys.argv[2:]})
