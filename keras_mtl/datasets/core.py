"""The structure every keras_mtl data loader returns: splits plus task specs.

A loader returns a `MultiTaskData`: three unbatched `tf.data.Dataset`s of
`(x, {task: y})` examples and a `TaskSpec` per task, which says how to build
that task's head, which loss to train it with and which metric to report. A
benchmark can therefore run on any dataset without knowing it:

>>> data = keras_mtl.datasets.multi_mnist_5k()
>>> heads = {name: spec.head(name) for name, spec in data.tasks.items()}
>>> method = keras_mtl.get("uw_so", data.losses())
>>> train = data.train.shuffle(4096).batch(256)

Target shapes: a classification task with `num_outputs > 1` (softmax over
classes) has integer labels of shape `()`; a binary task (`num_outputs == 1`)
and a regression task have float32 targets of shape `(num_outputs,)`, the
shape of their head's output, so that per-task metrics never broadcast a
`(batch,)` target against a `(batch, 1)` prediction.
"""

import dataclasses
import types
from typing import Any, Mapping

import keras
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

CLASSIFICATION = "classification"
REGRESSION = "regression"


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """What a benchmark needs to know about one task.

    Attributes:
        kind: `"classification"` or `"regression"`.
        num_outputs: the head's width: the number of classes (1 for a binary
            task, which gets a sigmoid) or the number of regressed values.
        loss: a `keras.losses.get` identifier matching the head's activation.
        metric: a `keras.metrics.get` identifier reported on the test split.
        higher_is_better: whether a larger `metric` is better.
        target_mean: the mean of the standardisation applied to the targets in
            the pipelines, `y = (raw - target_mean) / target_std`; 0 when the
            targets are raw.
        target_std: its standard deviation; 1 when the targets are raw.
            Multiply errors by `target_std` to report them in the data's own units.
    """

    kind: str
    num_outputs: int
    loss: str
    metric: str
    higher_is_better: bool
    target_mean: float = 0.0
    target_std: float = 1.0

    def __post_init__(self):
        if self.kind not in (CLASSIFICATION, REGRESSION):
            raise ValueError(f"Unknown task kind {self.kind!r}.")

    @property
    def activation(self):
        """The head's output activation, matching `loss`."""
        if self.kind == REGRESSION:
            return "linear"
        return "sigmoid" if self.num_outputs == 1 else "softmax"

    def head(self, name):
        """A fresh `Dense` output layer for this task, named `name`."""
        return keras.layers.Dense(self.num_outputs, activation=self.activation, name=name)


def classification(num_classes):
    """Spec of a `num_classes`-way task (sigmoid and binary cross-entropy if 2 or fewer).

    Args:
        num_classes: the number of classes.

    Returns:
        A `TaskSpec`, reported by accuracy.
    """
    if num_classes <= 2:
        return TaskSpec(CLASSIFICATION, 1, "binary_crossentropy", "binary_accuracy", True)
    return TaskSpec(CLASSIFICATION, num_classes, "sparse_categorical_crossentropy", "sparse_categorical_accuracy", True)


def regression(num_outputs=1, target_mean=0.0, target_std=1.0):
    """Spec of a mean-squared-error task reported by mean absolute error.

    Args:
        num_outputs: the number of regressed values, default 1.
        target_mean: the mean subtracted from the raw targets, default 0.0.
        target_std: the standard deviation they were divided by, default 1.0.

    Returns:
        A `TaskSpec`.
    """
    return TaskSpec(REGRESSION, num_outputs, "mse", "mean_absolute_error", False, float(target_mean), float(target_std))


@dataclasses.dataclass(frozen=True)
class MultiTaskData:
    """Train, validation and test pipelines of `(x, {task: y})` and their tasks.

    The datasets are unbatched and unshuffled; the caller batches them.

    Attributes:
        train: the training `tf.data.Dataset` of `(x, {task: y})`.
        validation: the validation one.
        test: the test one.
        tasks: `{task: TaskSpec}`, in the order of the `y` dicts.
        metadata: facts about the data that are not tasks, e.g. a generated
            set's ground truth; empty for real data sets.
    """

    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset
    tasks: Mapping[str, TaskSpec]
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        # Read-only views, so that the frozen object cannot change underneath a run.
        object.__setattr__(self, "tasks", types.MappingProxyType(dict(self.tasks)))
        object.__setattr__(self, "metadata", types.MappingProxyType(dict(self.metadata)))

    @property
    def input_shape(self):
        """The shape of one `x`, e.g. `(28, 28, 1)`."""
        return tuple(self.train.element_spec[0].shape)

    def losses(self):
        """`{task: loss}`, ready for `keras_mtl.get(method_id, losses)`."""
        return {name: spec.loss for name, spec in self.tasks.items()}

    def metrics(self):
        """`{task: [metric]}`, ready for `model.compile(metrics=...)`."""
        return {name: [spec.metric] for name, spec in self.tasks.items()}


def from_arrays(x, targets, tasks, train, validation, test, metadata=None):
    """A `MultiTaskData` from in-memory arrays and three index arrays.

    Args:
        x: the inputs, one row per example.
        targets: `{task: array}`, one row per example.
        tasks: `{task: TaskSpec}`.
        train, validation, test: integer indices of each split's examples.
        metadata: see `MultiTaskData`.
    """

    def split(indices):
        return tf.data.Dataset.from_tensor_slices((x[indices], {name: targets[name][indices] for name in tasks}))

    return MultiTaskData(split(train), split(validation), split(test), tasks, metadata or {})


# tfds split strings of the three splits, for sets with train, validation and
# test splits, with train and test only (validation is the end of train), and
# with train only (cut 80/10/10).
OWN_SPLITS = {"train": "train", "validation": "validation", "test": "test"}
TRAIN_TEST_SPLITS = {"train": "train[:90%]", "validation": "train[90%:]", "test": "test"}
TRAIN_ONLY_SPLITS = {"train": "train[:80%]", "validation": "train[80%:90%]", "test": "train[90%:]"}


def from_tfds(name, splits, to_example, tasks, data_dir=None, **load_kwargs):
    """A `MultiTaskData` from tfds set `name`.

    Args:
        name: the tfds name (with a config if any, e.g. "qm9/dimenet").
        splits: `{"train": split, "validation": split, "test": split}` of tfds
            split strings, e.g. `OWN_SPLITS`.
        to_example: maps a tfds example dict to `(x, {task: y})`.
        tasks: `{task: TaskSpec}`.
        data_dir: the tfds data directory (tfds's default when None).
        **load_kwargs: more `tfds.load` arguments.
    """

    def load(split):
        ds = tfds.load(name, split=split, data_dir=data_dir, **load_kwargs)
        return ds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE)

    return MultiTaskData(**{key: load(split) for key, split in splits.items()}, tasks=tasks)


def split_indices(num_examples, validation_fraction, test_fraction, seed):
    """Disjoint shuffled (train, validation, test) indices of `num_examples` examples."""
    order = np.random.default_rng(seed).permutation(num_examples)
    num_validation = int(round(validation_fraction * num_examples))
    num_test = int(round(test_fraction * num_examples))
    return (
        order[num_validation + num_test :],
        order[:num_validation],
        order[num_validation : num_validation + num_test],
    )
