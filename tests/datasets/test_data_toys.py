"""The GradNorm toy reproduces its ground truth."""

import numpy as np

from keras_mtl import datasets


def test_gradnorm_toy_follows_its_ground_truth():
    scales = (1.0, 10.0, 100.0)
    data = datasets.gradnorm_toy(scales, num_train=64, num_validation=8, num_test=16, input_dim=20, output_dim=5)
    assert list(data.tasks) == ["task_0", "task_1", "task_2"]
    assert data.input_shape == (20,) and data.tasks["task_0"].num_outputs == 5
    x, y = next(data.train.batch(64).as_numpy_iterator())
    assert x.shape == (64, 20) and y["task_2"].shape == (64, 5)
    shared, eps = data.metadata["B"], data.metadata["eps"]
    for t, scale in enumerate(scales):
        np.testing.assert_allclose(
            y[f"task_{t}"], scale * np.tanh(x @ (shared + eps[t]).T), rtol=1e-5, atol=1e-5 * scale
        )
        # With N(0, 10^2) weights tanh saturates: the targets sit near +-scale.
        assert np.abs(y[f"task_{t}"]).max() <= scale and np.median(np.abs(y[f"task_{t}"])) > 0.9 * scale
    assert data.metadata["scales"] == scales
    assert [len(list(ds)) for ds in (data.train, data.validation, data.test)] == [64, 8, 16]


def test_gradnorm_toy_is_seeded():
    def first(seed):
        x, y = next(iter(datasets.gradnorm_toy(seed=seed, num_train=4, num_validation=1, num_test=1).train))
        return x.numpy(), y["task_1"].numpy()

    np.testing.assert_array_equal(first(3)[1], first(3)[1])
    assert not np.array_equal(first(3)[0], first(4)[0])
