"""The shared inputs of the property suite (tests/aggregators/test_properties.py), TorchJD-style.

Each input is a float64 numpy Jacobian J (K, P). The methods see the Gramian as the engine passes
it, ``float32(J J^T)``; the references and properties use that same float32 Gramian cast back to
float64 (``rounded_gramian``): the rounding is part of the input, and at condition numbers near
1 / eps32 it changes the problem itself.
"""

import functools

import numpy as np


def _directions(rng, num, dim):
    jac = rng.normal(size=(num, dim))
    return jac / np.linalg.norm(jac, axis=1, keepdims=True)


def _with_singular_values(rng, num, dim, singular_values):
    left, _ = np.linalg.qr(rng.normal(size=(num, num)))
    right, _ = np.linalg.qr(rng.normal(size=(dim, num)))
    return left @ np.diag(singular_values) @ right.T


@functools.cache
def _inputs():
    rng = np.random.default_rng(2024)
    angle = 2 * np.pi / 3
    out = {
        # The issue's cases: 120 degrees apart, 1000x longer; MGDA's norms 1, 1e2, 1e4.
        "conflict_120_x1000": np.array([[1.0, 0.0], [1000 * np.cos(angle), 1000 * np.sin(angle)]]),
        "conflict_120_x1e4": np.array([[1.0, 0.0], [1e4 * np.cos(angle), 1e4 * np.sin(angle)]]),
        "norms_1_1e2_1e4": _directions(rng, 3, 5) * np.array([[1.0], [1e2], [1e4]]),
        "norm_ratio_1e6": _directions(rng, 5, 8) * np.logspace(0, 6, 5)[:, None],
        "conflicting_ratio_1e6": (_directions(rng, 4, 6) - 0.6 * _directions(rng, 1, 6))
        * np.logspace(0, 6, 4)[:, None],
        "scale_1e-10": 1e-10 * (rng.normal(size=(4, 6)) + 0.5),
        "scale_1e10": 1e10 * (rng.normal(size=(4, 6)) - 0.5),
        # Full-rank 8 x 8 Gramians with condition numbers 1e5 and (through the row scales) 1e8.
        "cond_1e5": _with_singular_values(rng, 8, 8, np.logspace(0, -2.5, 8)),
        "cond_1e8_rows": _with_singular_values(rng, 6, 9, np.logspace(0, -1, 6)) * np.logspace(0, 3, 6)[:, None],
        # Rank-deficient.
        "duplicates": np.repeat(rng.normal(size=(2, 5)), [2, 2], axis=0),
        "collinear_opposing": np.array([[1.0, 2.0, 0.0], [-2.0, -4.0, 0.0], [0.5, 0.0, 1.0]]),
        "zero_row": np.vstack([rng.normal(size=(2, 4)), np.zeros((1, 4))]),
        "wide_k6_p3": rng.normal(size=(6, 3)) + 0.3,
        # Beyond the exact solvers: the iterative path.
        "k12": (rng.normal(size=(12, 20)) + 0.4) * np.logspace(0, 2, 12)[:, None],
        "k40": rng.normal(size=(40, 60)) + 0.3,
    }
    return out


INPUT_NAMES = tuple(_inputs())
RANK_DEFICIENT = ("duplicates", "collinear_opposing", "zero_row", "wide_k6_p3")
ISSUE_CASES = ("conflict_120_x1000", "conflict_120_x1e4", "norms_1_1e2_1e4", "cond_1e5")


def jacobian(name):
    return _inputs()[name].copy()


def rounded_gramian(name):
    """``float32(J J^T)`` as the methods see it, back in float64."""
    jac = _inputs()[name]
    return (jac @ jac.T).astype(np.float32).astype(np.float64)
