"""SAM's perturbation, in `keras.ops` for every backend's engine."""

from keras import ops

# Keeps ε finite for a zero gradient (Phan et al. 2022).
NORM_EPSILON = 1e-12


def sharpness_perturbation(gradients, parameters, rho, adaptive):
    """ε = ρ·T²g / (‖T g‖ + 1e-12) over a group of parameters, `T = |θ|` if adaptive else 1.

    Foret et al. 2021 (SAM), Kwon et al. 2021 (ASAM, `adaptive`). The norm is
    taken over the whole group, so ‖ε‖ = ρ (‖T⁻¹ε‖ = ρ when adaptive) for any
    nonzero gradient; a zero gradient gives ε = 0.
    """
    scaled = [g * ops.abs(p) if adaptive else g for g, p in zip(gradients, parameters)]
    norm = ops.sqrt(sum(ops.sum(ops.square(s)) for s in scaled))
    return [rho * (s * ops.abs(p) if adaptive else s) / (norm + NORM_EPSILON) for s, p in zip(scaled, parameters)]
