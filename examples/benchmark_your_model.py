"""Which multi-task method for your model and your data? A benchmark in a few lines.

Your data: a `MultiTaskData` (here from NumPy arrays; tf.data and tfds work
too), each task with its loss, metric and direction. Your model: a function
of the tasks it must serve, so that the single-task baselines share its
architecture. `compare_methods` trains every method on 3 paired seeds, plus
one single-task model per task, and returns the table (Δm%, the difference
from equal weighting with its 95% interval, a verdict, the rank).

    python examples/benchmark_your_model.py
"""

import keras
import numpy as np

import keras_mtl
from keras_mtl.benchmark import compare_methods
from keras_mtl.datasets import MultiTaskData, classification, regression


def load_data(num_examples=3000):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(num_examples, 16)).astype("float32")
    targets = {
        "sign": (x[:, 0] * x[:, 1] > 0).astype("float32")[:, None],
        "size": np.abs(x[:, :4]).sum(1, keepdims=True).astype("float32"),
    }
    cut = [0, num_examples * 8 // 10, num_examples * 9 // 10, num_examples]
    train, validation, test = ((x[a:b], {t: y[a:b] for t, y in targets.items()}) for a, b in zip(cut, cut[1:]))
    return MultiTaskData.from_arrays({"sign": classification(2), "size": regression()}, train, validation, test)


def build_model(data, tasks):
    inputs = keras.Input(data.input_shape)
    shared = keras.layers.Dense(64, activation="relu")(inputs)
    return keras_mtl.MultiTaskModel(inputs, {name: spec.head(name)(shared) for name, spec in tasks.items()})


def main(
    num_examples=3000, epochs=5, seeds=3, methods=("ew", "uw", "dwa", "pcgrad", "upgrad"), output="benchmark_your_model"
):
    table = compare_methods(
        build_model, load_data(num_examples), methods=methods, seeds=seeds, epochs=epochs, output=output
    )
    print(table[["method", "delta_m", "vs_ew", "verdict", "rank"]])
    return table


if __name__ == "__main__":
    main()
