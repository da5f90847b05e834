"""TaskSpec and MultiTaskData."""

import dataclasses

import keras
import numpy as np
import pytest

from keras_mtl.datasets import core


def test_task_specs_build_matching_heads():
    multi, binary, reg = core.classification(10), core.classification(2), core.regression(3, 5.0, 2.0)
    assert (multi.activation, multi.loss) == ("softmax", "sparse_categorical_crossentropy")
    assert (binary.num_outputs, binary.activation, binary.loss) == (1, "sigmoid", "binary_crossentropy")
    assert (reg.activation, reg.loss, reg.higher_is_better) == ("linear", "mse", False)
    assert (reg.target_mean, reg.target_std) == (5.0, 2.0)
    head = multi.head("digit")
    assert head.name == "digit" and head.units == 10
    for spec in (multi, binary, reg):
        assert keras.losses.get(spec.loss) is not None and keras.metrics.get(spec.metric) is not None
    with pytest.raises(ValueError):
        core.TaskSpec("ranking", 1, "mse", "mae", False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        multi.num_outputs = 3


def test_from_arrays_splits_and_describes():
    x = np.arange(10, dtype=np.float32)[:, None]
    targets = {"a": np.arange(10), "b": np.arange(10, dtype=np.float32)[:, None] * 2}
    tasks = {"a": core.classification(10), "b": core.regression()}
    train, validation, test = core.split_indices(10, 0.2, 0.3, seed=0)
    assert sorted(np.concatenate([train, validation, test])) == list(range(10))
    assert (len(train), len(validation), len(test)) == (5, 2, 3)
    data = core.from_arrays(x, targets, tasks, train, validation, test)
    for ds, indices in ((data.train, train), (data.validation, validation), (data.test, test)):
        rows = list(ds.as_numpy_iterator())
        assert [r[0][0] for r in rows] == list(indices)
        assert all(y["a"] == xi[0] and y["b"][0] == 2 * xi[0] for xi, y in rows)
    assert data.losses() == {"a": "sparse_categorical_crossentropy", "b": "mse"}
    assert data.metrics() == {"a": ["sparse_categorical_accuracy"], "b": ["mean_absolute_error"]}
    assert data.input_shape == (1,)
    with pytest.raises(TypeError):
        data.tasks["c"] = core.regression()
