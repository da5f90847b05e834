"""Generated multi-task problems with a known ground truth."""

import numpy as np

from keras_mtl.datasets import core


def gradnorm_toy(
    scales=(1.0, 100.0),
    num_train=4000,
    num_validation=500,
    num_test=500,
    input_dim=250,
    output_dim=100,
    shared_std=10.0,
    task_std=3.5,
    seed=0,
):
    """The regression toy of GradNorm (Chen et al., 2018, section 5.1).

    Task t regresses `f_t(x) = scales[t] * tanh((B + eps_t) x)`, where `B` is
    shared by all tasks and `eps_t` is the task's own; their entries are drawn
    from N(0, shared_std^2) and N(0, task_std^2) (the paper's "N(0, 10)" and
    "N(0, 3.5)"), and x from N(0, 1). The tasks differ only in the output
    scale, so an unweighted sum of losses is dominated by the largest scale:
    the imbalance a loss weighting has to undo.

    Args:
        scales: the output scale of each task; its length is the task count.
        num_train: the training split's size, default 4000.
        num_validation: the validation split's size, default 500.
        num_test: the test split's size, default 500.
        input_dim: the size of x, default 250 (the paper's).
        output_dim: the size of each task's target, default 100 (the paper's).
        shared_std: the standard deviation of `B`, default 10.0 (the paper's).
        task_std: the standard deviation of the `eps_t`, default 3.5 (the paper's).
        seed: the seed of the matrices and the inputs.

    Returns:
        A `MultiTaskData` with float32 `x` of shape `(input_dim,)`, tasks
        "task_0", "task_1", ... with float32 targets `(output_dim,)`, and
        `metadata` holding the ground truth: "scales", "B" and "eps" (the
        `(tasks, output_dim, input_dim)` task matrices).
    """
    rng = np.random.default_rng(seed)
    shared = rng.normal(0.0, shared_std, (output_dim, input_dim))
    eps = rng.normal(0.0, task_std, (len(scales), output_dim, input_dim))
    num = num_train + num_validation + num_test
    x = rng.normal(size=(num, input_dim))
    targets = {
        f"task_{t}": (scale * np.tanh(x @ (shared + eps[t]).T)).astype(np.float32) for t, scale in enumerate(scales)
    }
    tasks = {name: core.regression(output_dim) for name in targets}
    splits = np.split(np.arange(num), [num_train, num_train + num_validation])
    metadata = {"scales": tuple(float(s) for s in scales), "B": shared, "eps": eps}
    return core.from_arrays(x.astype(np.float32), targets, tasks, *splits, metadata=metadata)
