"""`tasks.batch_parts`: a step's batch dealt into interleaved parts, for methods that need several batches per step."""

import numpy as np
import pytest
from keras import ops

from keras_mtl.training.tasks import batch_parts


@pytest.mark.parametrize("n, parts", [(9, 3), (10, 3), (7, 2), (3, 3)])
def test_part_i_holds_samples_i_plus_multiples_of_parts(n, parts):
    x = np.arange(n * 2, dtype="float32").reshape(n, 2)
    y = {"a": np.arange(n, dtype="float32"), "b": np.arange(n) * 10}
    weights = {"a": np.linspace(0, 1, n, dtype="float32"), "b": None}
    cut = batch_parts(ops.convert_to_tensor(x), y, weights, parts)
    assert len(cut) == parts
    expected = [np.arange(i, n, parts) for i in range(parts)]
    assert sorted(np.concatenate(expected)) == list(range(n)) and max(map(len, expected)) - min(map(len, expected)) <= 1
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


def test_the_replicas_parts_together_are_the_one_device_parts():
    """Each of 2 replicas deals its consecutive half: together they give the one-device parts when halves are multiples of `parts`."""
    x = np.arange(12, dtype="float32")
    for i, whole in enumerate(batch_parts(x, x, None, 3)):
        replicas = [batch_parts(shard, shard, None, 3)[i][0] for shard in (x[:6], x[6:])]
        assert sorted(np.concatenate(replicas)) == sorted(ops.convert_to_numpy(whole[0]))
