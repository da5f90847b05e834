"""The tfds loaders on `tfds.testing.mock_data` (random examples, real features)."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from keras_mtl import datasets
from keras_mtl.datasets.qm9 import TARGETS
from keras_mtl.datasets.tfds_loaders import CELEB_A_ATTRIBUTES


def _check(data, x_shape, task_shapes):
    """Every split yields `(float32 x of x_shape, {task: y})` with the spec'd tasks."""
    assert list(data.tasks) == list(task_shapes)
    assert data.input_shape == x_shape
    for ds in (data.train, data.validation, data.test):
        x, y = next(iter(ds.as_numpy_iterator()))
        assert x.shape == x_shape and x.dtype == np.float32
        assert isinstance(y, dict) and list(y) == list(task_shapes)
        for task, value in y.items():
            spec = data.tasks[task]
            assert value.shape == task_shapes[task], task
            if spec.kind == "classification" and spec.num_outputs > 1:
                assert np.issubdtype(value.dtype, np.integer) and 0 <= value < spec.num_outputs
            else:
                assert value.dtype == np.float32


def test_celeb_a():
    with tfds.testing.mock_data(num_examples=3):
        data = datasets.load_celeb_a(image_size=(32, 32))
        _check(data, (32, 32, 3), {a: (1,) for a in CELEB_A_ATTRIBUTES})
        x, y = next(iter(data.train.as_numpy_iterator()))
    assert len(data.tasks) == 40
    assert 0 <= x.min() and x.max() <= 1
    assert all(v[0] in (0.0, 1.0) for v in y.values())
    assert all(spec.activation == "sigmoid" and spec.loss == "binary_crossentropy" for spec in data.tasks.values())


def test_dsprites():
    with tfds.testing.mock_data(num_examples=3):
        data = datasets.load_dsprites()
        _check(
            data,
            (64, 64, 1),
            {"shape": (), "scale": (1,), "orientation": (1,), "x_position": (1,), "y_position": (1,)},
        )
    assert data.tasks["shape"].num_outputs == 3 and data.tasks["shape"].higher_is_better
    assert data.tasks["scale"].kind == "regression" and not data.tasks["scale"].higher_is_better


def test_smallnorb():
    with tfds.testing.mock_data(num_examples=3):
        data = datasets.load_smallnorb(image_size=(24, 24))
        shapes = {"category": (), "instance": (), "azimuth": (), "lighting": (), "elevation": (1,)}
        _check(data, (24, 24, 1), shapes)
        elevations = [y["elevation"][0] for _, y in data.train.as_numpy_iterator()]
    assert all(30 <= e <= 70 and e % 5 == 0 for e in elevations)


@pytest.mark.parametrize("standardize", [True, False])
def test_qm9(standardize):
    pytest.importorskip("pandas")  # tfds's qm9 module imports it
    with tfds.testing.mock_data(num_examples=6):
        data = datasets.load_qm9(standardize=standardize)
        _check(data, (29,), {t: (1,) for t in TARGETS})
        raw = tfds.load("qm9/dimenet", split="train")
        targets = {t: np.array([e[t] for e in raw.as_numpy_iterator()]) for t in TARGETS}
        y = {t: np.array([y[t][0] for _, y in data.train.as_numpy_iterator()]) for t in TARGETS}
    assert len(data.tasks) == 11
    for task, spec in data.tasks.items():
        if standardize:
            # The specs record the train statistics, which undo the standardisation.
            np.testing.assert_allclose(spec.target_mean, targets[task].mean(), rtol=1e-5)
            np.testing.assert_allclose(y[task] * spec.target_std + spec.target_mean, targets[task], rtol=1e-4)
            np.testing.assert_allclose(y[task].std(), 1.0, rtol=1e-3)
        else:
            assert (spec.target_mean, spec.target_std) == (0.0, 1.0)
            np.testing.assert_allclose(y[task], targets[task])
