"""What the gradient methods read off the K×K Gramian `G = J Jᵀ`."""

import keras


def gradient_norms(gramian):
    """`‖g_k‖ = sqrt(G_kk)` (K,); a diagonal entry rounded below 0 counts as 0 rather than giving NaN."""
    return keras.ops.sqrt(keras.ops.maximum(keras.ops.diagonal(gramian), 0.0))
