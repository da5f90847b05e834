"""Degenerate inputs for every Gramian weighting, and compiled execution (XLA, and inside an outer compiled step)."""

import keras
import numpy as np
import pytest
from agg_helpers import gramian, numpy, order_keys, orders_of, pcgrad_reference, plain

from keras_mtl import aggregators as agg
from keras_mtl.aggregators._common import backend_function

KEYS = {num: order_keys(num) for num in (2, 3, 4)}

METHODS = {
    "pcgrad": lambda g: agg.pcgrad_weights(g, KEYS[g.shape[0]]),
    "gradvac": lambda g: agg.gradvac_weights(g, np.zeros(g.shape, np.float32), KEYS[g.shape[0]])[0],
    "mgda": agg.mgda_weights,
    "mgda_l2": lambda g: agg.mgda_weights(g, normalization="l2"),
    "cagrad": agg.cagrad_weights,
    "imtl_g": agg.imtl_g_weights,
    "nash_mtl": lambda g: agg.nash_mtl_weights(g, max_norm=None),
    "aligned_mtl": agg.aligned_mtl_weights,
    "upgrad": agg.upgrad_weights,
    "dualproj": agg.dualproj_weights,
    "fairgrad": agg.fairgrad_weights,
    "config": agg.config_weights,
}
_PLAIN_PCGRAD, _PLAIN_GRADVAC = plain(agg.pcgrad_weights), plain(agg.gradvac_weights)
_PLAIN_MGDA, _PLAIN_NASH = plain(agg.mgda_weights), plain(agg.nash_mtl_weights)
# Without XLA on TensorFlow (XLA compiles for every shape are slow); test_graph_and_xla_agree checks XLA.
PLAIN = {
    "pcgrad": lambda g: _PLAIN_PCGRAD(g, KEYS[g.shape[0]]),
    "gradvac": lambda g: _PLAIN_GRADVAC(g, np.zeros(g.shape, np.float32), KEYS[g.shape[0]])[0],
    "mgda": _PLAIN_MGDA,
    "mgda_l2": lambda g: _PLAIN_MGDA(g, normalization="l2"),
    "cagrad": plain(agg.cagrad_weights),
    "imtl_g": plain(agg.imtl_g_weights),
    "nash_mtl": lambda g: _PLAIN_NASH(g, max_norm=None),
    "aligned_mtl": plain(agg.aligned_mtl_weights),
    "upgrad": plain(agg.upgrad_weights),
    "dualproj": plain(agg.dualproj_weights),
    "fairgrad": plain(agg.fairgrad_weights),
    "config": plain(agg.config_weights),
}

JACOBIANS = {
    "identical": [[1.0, 2.0], [1.0, 2.0]],
    "zero_task": [[1.0, 2.0], [0.0, 0.0]],
    "opposing": [[1.0, 2.0], [-1.0, -2.0]],
    "all_zero": [[0.0, 0.0], [0.0, 0.0]],
}
CAGRAD = 1 / 1.16 / 2  # all w* terms vanish or cancel: d = g0 / (1 + c^2)
CAGRAD_SAME = 1.4 / 1.16 / 2  # identical: d = (1 + c) g / (1 + c^2)
ZERO_UPDATE = "d = 0"  # weights not unique, but the update must vanish
# The documented weights (see each docstring).
EXPECTED = {
    "pcgrad": {"identical": [1, 1], "zero_task": [1, 1], "opposing": [2, 2], "all_zero": [1, 1]},
    "gradvac": {"identical": [1, 1], "zero_task": [1, 1], "opposing": [2, 2], "all_zero": [1, 1]},
    "mgda": {"identical": [0.5, 0.5], "zero_task": [0, 1], "opposing": [0.5, 0.5], "all_zero": [0.5, 0.5]},
    "mgda_l2": {
        "identical": [0.5 / 5**0.5] * 2,
        "zero_task": [0, 0],
        "opposing": [0.5 / 5**0.5] * 2,
        "all_zero": [0, 0],
    },
    "cagrad": {
        "identical": [CAGRAD_SAME] * 2,
        "zero_task": [CAGRAD] * 2,
        "opposing": [CAGRAD] * 2,
        "all_zero": [CAGRAD] * 2,
    },
    "imtl_g": {"identical": [0.5, 0.5], "zero_task": [1, 0], "opposing": [0, 0], "all_zero": [0, 0]},
    # Raw G a = 1/a. Identical: 5 (a1 + a2) a_k = 1, a_k = 1/sqrt(10); a zero gradient gets
    # weight 0 and the other 5 a1^2 = 1; opposing: lifted G_s, equal weights, d = 0.
    "nash_mtl": {"identical": [10**-0.5] * 2, "zero_task": [5**-0.5, 0], "opposing": ZERO_UPDATE, "all_zero": [0, 0]},
    "aligned_mtl": {"identical": [0.5, 0.5], "zero_task": [0.5, 0], "opposing": [0, 0], "all_zero": [0, 0]},
    "upgrad": {"identical": [0.5, 0.5], "zero_task": [0.5, 0.5], "opposing": ZERO_UPDATE, "all_zero": [0.5, 0.5]},
    "dualproj": {"identical": [0.5, 0.5], "zero_task": [0.5, 0.5], "opposing": [0.5, 0.5], "all_zero": [0.5, 0.5]},
    # G w = 1/w at alpha = 1: identical 5 (w1 + w2) w_k = 1; a zero gradient gets 0; opposing: lifted, d = 0.
    "fairgrad": {"identical": [10**-0.5] * 2, "zero_task": [5**-0.5, 0], "opposing": ZERO_UPDATE, "all_zero": [0, 0]},
    # Identical: w = 1 (d the sum); a zero gradient is ignored, the other keeps its own length.
    "config": {"identical": [1, 1], "zero_task": [1, 0], "opposing": [0, 0], "all_zero": [0, 0]},
}


@pytest.mark.parametrize("case", sorted(JACOBIANS))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_degenerate_inputs_give_documented_weights(method, case):
    jac = np.array(JACOBIANS[case])
    w = numpy(PLAIN[method](gramian(jac)))
    assert np.all(np.isfinite(w))
    expected = EXPECTED[method][case]
    if expected == ZERO_UPDATE:
        np.testing.assert_allclose(w @ jac, 0.0, atol=1e-3 * np.abs(w).max())
        np.testing.assert_allclose(w[0], w[1], rtol=1e-4)
    else:
        np.testing.assert_allclose(w, expected, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_non_finite_gramian_gives_zero_weights(method, bad):
    g = np.float32([[1.0, bad, 0.0], [bad, 2.0, 0.5], [0.0, 0.5, 1.0]])
    np.testing.assert_array_equal(numpy(PLAIN[method](g)), np.zeros(3))


def test_gradvac_keeps_its_ema_on_non_finite_input():
    ema = np.float32([[0.0, 0.3], [np.nan, 0.0]])
    w, new_ema = agg.gradvac_weights(np.float32([[np.nan, 0.0], [0.0, 1.0]]), ema, KEYS[2])
    np.testing.assert_array_equal(numpy(w), [0.0, 0.0])
    np.testing.assert_array_equal(numpy(new_ema), np.float32([[0.0, 0.3], [0.0, 0.0]]))  # NaN reset


def _four_tasks():
    return gramian(np.random.default_rng(7).normal(size=(4, 9)) + 0.5)


def _outer_compiled(fn):
    """``fn`` inside a compiled step as the backend's engine compiles it (on JAX: no float64 around it)."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(fn)
    return backend_function(fn, jit_compile=True)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_compiled_inside_an_outer_step_agrees_with_the_graph(method):
    # The engine runs the methods compiled (XLA, float64 included) inside its own compiled step; the
    # other tests mostly use plain graphs. On JAX the float64 algebra is traced under
    # jax.enable_x64 but lowered with the outer step, outside it: an integer op such as argmin
    # then fails to compile. The huge Gramian (2^124 G, finite in float32) checks that the algebra
    # is float64 there too: in float32 its products overflow.
    g = _four_tasks()
    expected = numpy(PLAIN[method](g))
    outer = _outer_compiled(lambda x: METHODS[method](x) * 2.0)
    np.testing.assert_allclose(numpy(outer(g)), 2.0 * expected, rtol=1e-6, atol=1e-7 * np.abs(expected).max())
    # MGDA-l2's weights (on the original gradients), Nash-MTL's and FairGrad's scale as 1/t, t = 2^62.
    expected = expected / 2.0**62 if method in ("mgda_l2", "nash_mtl", "fairgrad") else expected
    np.testing.assert_allclose(numpy(outer(g * np.float32(2.0**124))), 2.0 * expected, rtol=1e-5)


def test_pcgrad_and_gradvac_follow_the_keys_orders():
    jac = np.random.default_rng(8).normal(size=(4, 50))
    g = gramian(jac)
    expected = np.linalg.lstsq(jac.T, pcgrad_reference(jac, orders_of(KEYS[4])).sum(0), rcond=None)[0]
    np.testing.assert_allclose(numpy(METHODS["pcgrad"](g)), expected, rtol=1e-4)
    w, new_ema = agg.gradvac_weights(g, np.zeros((4, 4), np.float32), KEYS[4])
    np.testing.assert_allclose(numpy(w), expected, rtol=1e-4)
    assert np.all(np.isfinite(numpy(new_ema))) and np.any(numpy(new_ema) != 0)


@pytest.mark.parametrize("method", sorted(set(METHODS) - {"nash_mtl", "fairgrad"}))
def test_huge_finite_gramian_keeps_its_weights(method):
    # ||G|| overflows float32 (entries near 1e38) while G is finite: the float64 algebra gives the
    # weights of the same G scaled down by t^2 = 2^124 (the methods here are scale-invariant).
    jac = np.array([[1.0, 0.0, 0.5], [-0.5, 2.0, 0.0], [0.3, -1.0, 1.5]])
    g = jac @ jac.T
    huge_g = np.float32(g * 2.0**124)
    assert np.all(np.isfinite(huge_g))
    small = numpy(PLAIN[method](np.float32(g)))
    huge = numpy(PLAIN[method](huge_g))
    # MGDA-l2's weights apply to the original gradients: w*_k / ||g_k|| scales as 1/t.
    expected = small / 2.0**62 if method == "mgda_l2" else small
    np.testing.assert_allclose(huge, expected, rtol=1e-5)


@pytest.mark.parametrize("method", ["nash_mtl", "fairgrad"])
def test_huge_finite_gramian_nash_and_fairgrad(method):
    # Their equations are not scale-free: with every gradient scaled by t = 2^62 (G by 2^124),
    # Nash-MTL's a scales as 1/t, and so does FairGrad's w (t^(-2 alpha / (alpha + 1)), alpha = 1).
    g = np.array([[2.0, -0.5], [-0.5, 1.0]])
    small = numpy(PLAIN[method](np.float32(g)))
    huge = numpy(PLAIN[method](np.float32(g * 2.0**124)))
    np.testing.assert_allclose(huge, small / 2.0**62, rtol=1e-5)
