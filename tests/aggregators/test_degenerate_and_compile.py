"""Degenerate inputs for every Gramian weighting, and graph / XLA execution."""

import functools

import numpy as np
import pytest
import tensorflow as tf
from agg_helpers import SEED, gramian, pcgrad_reference

from keras_mtl import aggregators as agg
from keras_mtl.aggregators import _common

METHODS = {
    "pcgrad": lambda g: agg.pcgrad_weights(g, SEED),
    "gradvac": lambda g: agg.gradvac_weights(g, tf.zeros(g.shape), SEED)[0],
    "mgda": agg.mgda_weights,
    "mgda_l2": lambda g: agg.mgda_weights(g, normalization="l2"),
    "cagrad": agg.cagrad_weights,
    "imtl_g": agg.imtl_g_weights,
    "nash_mtl": lambda g: agg.nash_mtl_weights(g, max_norm=None),
    "aligned_mtl": agg.aligned_mtl_weights,
    "upgrad": agg.upgrad_weights,
    "dualproj": agg.dualproj_weights,
}


def _plain(fn):
    """The undecorated function of an ``xla_compiled`` weighting."""
    return getattr(fn, "python_function", fn)


# The same methods without XLA (as a plain graph).
PLAIN = {
    "mgda": _plain(agg.mgda_weights),
    "mgda_l2": lambda g: _plain(agg.mgda_weights)(g, normalization="l2"),
    "cagrad": _plain(agg.cagrad_weights),
    "imtl_g": agg.imtl_g_weights,
    "nash_mtl": lambda g: _plain(agg.nash_mtl_weights)(g, max_norm=None),
    "aligned_mtl": agg.aligned_mtl_weights,
    "upgrad": _plain(agg.upgrad_weights),
    "dualproj": _plain(agg.dualproj_weights),
}
# Plain graphs (XLA compiles for every shape are slow); test_graph_and_xla_agree checks XLA.
GRAPH = {name: tf.function(PLAIN.get(name, fn)) for name, fn in METHODS.items()}

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
    "mgda_l2": {"identical": [0.5 / 5**0.5] * 2, "zero_task": [0, 0], "opposing": [0.5 / 5**0.5] * 2,
                "all_zero": [0, 0]},
    "cagrad": {"identical": [CAGRAD_SAME] * 2, "zero_task": [CAGRAD] * 2, "opposing": [CAGRAD] * 2,
               "all_zero": [CAGRAD] * 2},
    "imtl_g": {"identical": [0.5, 0.5], "zero_task": [1, 0], "opposing": [0, 0], "all_zero": [0, 0]},
    # Raw G a = 1/a. Identical: 5 (a1 + a2) a_k = 1, a_k = 1/sqrt(10); a zero gradient gets
    # weight 0 and the other 5 a1^2 = 1; opposing: lifted G_s, equal weights, d = 0.
    "nash_mtl": {"identical": [10**-0.5] * 2, "zero_task": [5**-0.5, 0], "opposing": ZERO_UPDATE,
                 "all_zero": [0, 0]},
    "aligned_mtl": {"identical": [0.5, 0.5], "zero_task": [0.5, 0], "opposing": [0, 0], "all_zero": [0, 0]},
    "upgrad": {"identical": [0.5, 0.5], "zero_task": [0.5, 0.5], "opposing": ZERO_UPDATE,
               "all_zero": [0.5, 0.5]},
    "dualproj": {"identical": [0.5, 0.5], "zero_task": [0.5, 0.5], "opposing": [0.5, 0.5],
                 "all_zero": [0.5, 0.5]},
}


@pytest.mark.parametrize("case", sorted(JACOBIANS))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_degenerate_inputs_give_documented_weights(method, case):
    jac = np.array(JACOBIANS[case])
    w = GRAPH[method](gramian(jac)).numpy()
    assert np.all(np.isfinite(w))
    expected = EXPECTED[method][case]
    if expected == ZERO_UPDATE:
        np.testing.assert_allclose(w @ jac, 0.0, atol=1e-3)
        np.testing.assert_allclose(w[0], w[1], rtol=1e-4)
    else:
        np.testing.assert_allclose(w, expected, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_non_finite_gramian_gives_zero_weights(method, bad):
    g = tf.constant([[1.0, bad, 0.0], [bad, 2.0, 0.5], [0.0, 0.5, 1.0]])
    np.testing.assert_array_equal(GRAPH[method](g).numpy(), np.zeros(3))


def test_gradvac_keeps_its_ema_on_non_finite_input():
    ema = tf.constant([[0.0, 0.3], [np.nan, 0.0]])
    w, new_ema = agg.gradvac_weights(tf.constant([[np.nan, 0.0], [0.0, 1.0]]), ema, SEED)
    np.testing.assert_array_equal(w.numpy(), [0.0, 0.0])
    np.testing.assert_array_equal(new_ema.numpy(), np.float32([[0.0, 0.3], [0.0, 0.0]]))  # NaN reset


@pytest.mark.parametrize("method", sorted(PLAIN))
def test_graph_and_xla_agree(method):
    # The engine runs the methods under XLA (float64 included); the other tests use plain graphs.
    jac = np.random.default_rng(7).normal(size=(4, 9)) + 0.5
    g = gramian(jac)
    graph = tf.function(PLAIN[method])(g).numpy()
    xla = tf.function(METHODS[method], jit_compile=True)(g).numpy()
    np.testing.assert_allclose(xla, graph, rtol=1e-6, atol=1e-7 * np.abs(graph).max())


def test_random_methods_under_xla():
    # The XLA stateless RNG draws other numbers than the TF kernel, so each
    # method is checked against its definition with the XLA draws.
    xla = functools.partial(tf.function, jit_compile=True)
    jac = np.random.default_rng(8).normal(size=(4, 50)).astype(np.float32)
    g = gramian(jac)
    orders = xla(_common.random_orders)(SEED, 4).numpy()
    expected = np.linalg.lstsq(jac.T.astype(np.float64), pcgrad_reference(jac, orders).sum(0), rcond=None)[0]
    np.testing.assert_allclose(xla(agg.pcgrad_weights)(g, SEED).numpy(), expected, rtol=1e-4)
    w, new_ema = xla(agg.gradvac_weights)(g, tf.zeros([4, 4]), SEED)
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-4)
    assert np.all(np.isfinite(new_ema.numpy())) and np.any(new_ema.numpy() != 0)
    uniform = xla(_common.stateless_uniform)([50], SEED).numpy()
    purity = 0.5 * (1 + jac.sum(0) / np.abs(jac).sum(0))
    positive, negative = np.where(jac > 0, jac, 0).sum(0), np.where(jac < 0, jac, 0).sum(0)
    np.testing.assert_allclose(
        xla(agg.graddrop_update)(jac, SEED).numpy(), np.where(purity > uniform, positive, negative), atol=1e-5
    )


@pytest.mark.parametrize("method", sorted(set(METHODS) - {"nash_mtl"}))
def test_huge_finite_gramian_keeps_its_weights(method):
    # ||G|| overflows float32 (entries near 1e38) while G is finite: the float64 algebra gives the
    # weights of the same G scaled down by t^2 = 2^124 (the methods here are scale-invariant).
    jac = np.array([[1.0, 0.0, 0.5], [-0.5, 2.0, 0.0], [0.3, -1.0, 1.5]])
    g = jac @ jac.T
    small = GRAPH[method](tf.constant(g, tf.float32)).numpy()
    huge = GRAPH[method](tf.constant(g * 2.0**124, tf.float32)).numpy()
    assert np.all(np.isfinite(tf.constant(g * 2.0**124, tf.float32).numpy()))
    # MGDA-l2's weights apply to the original gradients: w*_k / ||g_k|| scales as 1/t.
    expected = small / 2.0**62 if method == "mgda_l2" else small
    np.testing.assert_allclose(huge, expected, rtol=1e-5)


def test_huge_finite_gramian_nash():
    # Nash-MTL's raw equation: a scales as 1/sqrt(t).
    g = np.array([[2.0, -0.5], [-0.5, 1.0]])
    small = GRAPH["nash_mtl"](tf.constant(g, tf.float32)).numpy()
    huge = GRAPH["nash_mtl"](tf.constant(g * 2.0**124, tf.float32)).numpy()
    np.testing.assert_allclose(huge, small / 2.0**62, rtol=1e-5)
