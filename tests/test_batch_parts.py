"""`tasks.batch_parts`: a step's batch cut into consecutive parts, for methods that need several batches per step."""

import numpy as np
import pytest
from keras import ops

from keras_mtl.training.tasks import batch_parts


@pytest.mark.parametrize("n, parts", [(9, 3), (10, 3), (7, 2), (3, 3)])
def test_part_i_holds_samples_from_floor_i_n_over_parts(n, parts):
    x = np.arange(n * 2, dtype="float32").reshape(n, 2)
    y = {"a": np.arange(n, dtype="float32"), "b": np.arange(n) * 10}
    weights = {"a": np.linspace(0, 1, n, dtype="float32"), "b": None}
    cut = batch_parts(ops.convert_to_tensor(x), y, weights, parts)
    assert len(cut) == parts
    bounds = [i * n // parts for i in range(parts + 1)]
    expected = [slice(start, stop) for start, stop in zip(bounds, bounds[1:])]
    assert sum(s.stop - s.start for s in expected) == n and max(s.stop - s.start for s in expected) - min(s.stop - s.start for s in expected) <= 1
    for (px, py, pw), rows in zip(cut, expected):
        ex, ea, eb, ew = x[rows], y["a"][rows], y["b"][rows], weights["a"][rows]
        np.testing.assert_array_equal(ops.convert_to_numpy(px), ex)
        np.testing.assert_array_equal(ops.convert_to_numpy(py["a"]), ea)
        np.testing.assert_array_equal(ops.convert_to_numpy(py["b"]), eb)
        np.testing.assert_array_equal(ops.convert_to_numpy(pw["a"]), ew)
        assert pw["b"] is None


def test_no_sample_weight_stays_none():
    x = np.zeros((4, 1), "float32")
    assert [part[2] for part in batch_parts(x, x, None, 2)] == [None, None]


@pytest.mark.parametrize("sizes, parts", [((8, 8), 3), ((5, 4), 3), ((3, 3, 4), 2), ((1, 1), 2)])
def test_shards_take_their_share_of_the_global_batch_s_parts(sizes, parts):
    # Each shard's pieces, concatenated in shard order, are the global batch's parts: the parts do not depend on the sharding.
    total = sum(sizes)
    x = np.arange(total, dtype="float32")[:, None]
    offsets = np.cumsum((0,) + sizes)[:-1]
    pieces = [batch_parts(ops.convert_to_tensor(x[o : o + s]), x[o : o + s], None, parts, ops.convert_to_tensor(int(o), "int32"), ops.convert_to_tensor(total, "int32")) for o, s in zip(offsets, sizes)]
    for i, whole in enumerate(batch_parts(ops.convert_to_tensor(x), x, None, parts)):
        joined = np.concatenate([ops.convert_to_numpy(shard[i][0]) for shard in pieces])
        np.testing.assert_array_equal(joined, ops.convert_to_numpy(whole[0]))
        np.testing.assert_array_equal(np.concatenate([shard[i][1] for shard in pieces]), ops.convert_to_numpy(whole[1]))
