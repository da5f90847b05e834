"""Two-worker training with MultiWorkerMirroredStrategy on 127.0.0.1.

    python examples/multi_worker.py [METHOD]      # default: pcgrad if registered, else mean

Starts two worker processes on local ports (TF_CONFIG), trains a two-task
model with a gradient method under `tf.distribute.MultiWorkerMirroredStrategy`
(the per-task gradients are all-reduced across the workers before they are
combined), trains the same model on one device on the same global batches,
and prints the largest weight difference: float32 rounding, not a different
update. Offline; about half a minute on 2 cores.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile

GLOBAL_BATCH = 32


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(method_id, strategy):
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_mtl

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = {"a": np.sin(x[:, :1]), "b": np.cos(x[:, 1:2])}
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    options = tf.data.Options()
    # Each worker takes its half of every global batch, as one device sees it whole.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    with strategy.scope():
        inputs = keras.Input((8,))
        hidden = keras.layers.Dense(16, activation="tanh", name="trunk")(inputs)
        model = keras_mtl.MultiTaskModel(
            inputs, {"a": keras.layers.Dense(1, name="a")(hidden), "b": keras.layers.Dense(1, name="b")(hidden)}
        )
        model.compile(keras.optimizers.SGD(0.05), loss=keras_mtl.get(method_id, {"a": "mse", "b": "mse"}))
    model.fit(data.with_options(options), epochs=2, verbose=0)
    return [w.tolist() for w in model.get_weights()]


def worker(index, ports, method_id, output):
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}
    )
    import tensorflow as tf

    weights = train(method_id, tf.distribute.MultiWorkerMirroredStrategy())
    with open(output, "w") as f:
        json.dump(weights, f)


def main():
    import keras_mtl

    method_id = sys.argv[1] if len(sys.argv) > 1 else ("pcgrad" if "pcgrad" in keras_mtl.available() else "mean")
    ports = [_free_port(), _free_port()]
    with tempfile.TemporaryDirectory() as folder:
        outputs = [os.path.join(folder, f"worker{i}.json") for i in range(2)]
        workers = [
            subprocess.Popen(
                [sys.executable, __file__, "--worker", str(i), ",".join(map(str, ports)), method_id, outputs[i]]
            )
            for i in range(2)
        ]
        if any(w.wait(timeout=600) != 0 for w in workers):
            sys.exit("a worker failed")
        results = [json.load(open(path)) for path in outputs]

    import numpy as np
    import tensorflow as tf

    single = train(method_id, tf.distribute.get_strategy())
    difference = max(float(np.max(np.abs(np.array(a) - np.array(b)))) for run in results for a, b in zip(run, single))
    print(f"{method_id}: 2 workers vs 1 device, largest weight difference {difference:.2e}")
    sys.exit(0 if difference < 1e-5 else 1)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(int(sys.argv[2]), [int(p) for p in sys.argv[3].split(",")], sys.argv[4], sys.argv[5])
    else:
        main()
