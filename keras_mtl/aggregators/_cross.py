"""The pieces shared by the methods that weigh tasks from two batches' gradients (MoDo, SDMGrad).

Their K x K matrix is the cross-batch product ``A = J_1 J_2^T`` of two
independent batches' Jacobians, ``A_ij = g_i(batch 1) . g_j(batch 2)``: an
unbiased estimate of the Gramian of the expected gradients, which the
one-batch Gramian ``J J^T`` is not (its diagonal carries the gradients'
variance). A is neither symmetric nor positive semi-definite; its
diagonal can be negative.
"""

from keras import ops

from keras_mtl.aggregators._common import as_float64, project_weighted_simplex


def cross_matrix(first, second):
    """``A = J_1 J_2^T`` (K, K) of two (K, P) Jacobians, float32 like the engine's Gramian."""
    return ops.matmul(first, ops.transpose(second))


def prepare_cross(cross):
    """``(A, ok)``: A as float64 (not symmetrised), zeroed if not all finite."""
    cross = as_float64(cross)
    ok = ops.all(ops.isfinite(cross))
    return ops.where(ok, cross, ops.zeros_like(cross)), ok


def project_simplex(vector):
    """The Euclidean projection of a vector (K,) onto the probability simplex.

    Shifted first so that its largest entry is 0 (the projection is
    invariant to adding a constant to every entry): a step of size 1e20
    would otherwise lose the simplex's 1 in the sums.
    """
    return project_weighted_simplex((vector - ops.max(vector))[None], ops.ones_like(vector))[0]
