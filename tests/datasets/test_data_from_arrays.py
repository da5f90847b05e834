"""`MultiTaskData.from_arrays`: splits of `(x, {task: y})` arrays, clear errors, and pickling (what Ray workers receive)."""

import pickle

import numpy as np
import pytest

from keras_mtl import datasets

TASKS = {"a": datasets.regression(), "b": datasets.classification(3)}


def _split(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2)).astype("float32"), {
        "a": rng.normal(size=(n, 1)).astype("float32"),
        "b": rng.integers(0, 3, n),
    }


def test_from_arrays_yields_each_row_and_pickles_with_its_arrays():
    train = _split(5)
    data = datasets.MultiTaskData.from_arrays(TASKS, train, _split(2, 1), _split(3, 2))
    examples = list(data.train.as_numpy_iterator())
    assert len(examples) == 5 and data.input_shape == (2,)
    np.testing.assert_array_equal(examples[3][0], train[0][3])
    assert examples[3][1]["b"] == train[1]["b"][3]
    again = pickle.loads(pickle.dumps(data.take(4)))
    assert [x.tolist() for x, _ in again.train.as_numpy_iterator()] == [x.tolist() for x, _ in examples[:4]]
    assert dict(again.tasks) == TASKS


@pytest.mark.parametrize(
    "train, message",
    [
        ((np.zeros((4, 2)), {"a": np.zeros((4, 1))}), r"train has no targets for the tasks \['b'\]"),
        (
            (np.zeros((4, 2)), {"a": np.zeros((3, 1)), "b": np.zeros(4)}),
            r"the arrays of train differ in length: \{'x': 4, \"y\['a'\]\": 3, \"y\['b'\]\": 4\}",
        ),
        (np.zeros((4, 2)), r"train must be `\(x, \{task: y\}\)`, got ndarray"),
    ],
)
def test_from_arrays_names_what_is_wrong(train, message):
    with pytest.raises(ValueError, match=message):
        datasets.MultiTaskData.from_arrays(TASKS, train, _split(2), _split(2))


def test_data_of_bare_pipelines_says_how_to_reach_ray_workers():
    data = datasets.MultiTaskData.from_arrays(TASKS, _split(3), _split(2), _split(2))
    bare = datasets.MultiTaskData(data.train, data.validation, data.test, data.tasks)
    with pytest.raises(TypeError, match="pass the function that returns it"):
        pickle.dumps(bare)
