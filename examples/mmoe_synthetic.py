"""MMoE against the shared bottom on the synthetic tasks of Ma et al. (KDD 2018), section 3.2.

Two regression tasks whose relatedness is set by the cosine p of their weight
vectors:

    u1, u2 orthonormal in R^d;  w1 = c·u1,  w2 = c·(p·u1 + √(1 − p²)·u2)
    x ~ N(0, I_d)
    y_k = w_kᵀx + Σ_{i=1..m} sin(α_i·w_kᵀx + β_i) + ε_k,   ε_k ~ N(0, 0.01)

with d = 100, c = 1, m = 10 as in the paper. The paper calls α_i, β_i
"given parameters"; here they are drawn once per data set from N(0, 1), and
ε's 0.01 is read as a variance. The paper's finding (its Fig. 4): the
shared bottom gets worse as the tasks' correlation falls, MMoE much less, so
MMoE's advantage grows as p falls.

Models as in the paper's synthetic experiment: MMoE with 8 experts of one
16-unit ReLU layer and 8-unit towers; the shared bottom with one 113-unit
ReLU layer (the paper's choice, for about as many weights as the experts)
and the same towers. Both
train with equal weighting (Adam). The paper plots the training loss (its
Fig. 4); the table gives the final training MSE and the test MSE, averaged
over the two tasks, mean ± std over seeds, and the label correlation measured
on the test set (the nonlinearity makes it differ from p). Fresh samples are
cheap, so the budget goes to more of them rather than more epochs: with 8,000
samples and 16 epochs both models overfit (test MSE about twice the training
MSE) and the comparison drowns in the noise.

    .venv/bin/python examples/mmoe_synthetic.py                  # ~4 minutes on 2 CPU cores
    .venv/bin/python examples/mmoe_synthetic.py --seeds 5 --epochs 20
"""

import argparse
import time

import keras
import numpy as np

import keras_mtl

DIMENSION, SCALE, NUM_SINES = 100, 1.0, 10
TASKS = {"y1": 1, "y2": 1}


def synthetic_tasks(correlation, num_samples, seed):
    """(x, {"y1", "y2"}) from Ma et al.'s generator, with weight-vector cosine `correlation`."""
    rng = np.random.default_rng(seed)
    # Orthonormal u1, u2: the Q factor of two Gaussian vectors.
    u1, u2 = np.linalg.qr(rng.normal(size=(DIMENSION, 2)))[0].T
    w1 = SCALE * u1
    w2 = SCALE * (correlation * u1 + np.sqrt(1.0 - correlation**2) * u2)
    alpha, beta = rng.normal(size=(2, NUM_SINES))
    x = rng.normal(size=(num_samples, DIMENSION))
    labels = {}
    for task, w in zip(TASKS, (w1, w2)):
        projection = x @ w
        sines = np.sin(alpha * projection[:, None] + beta).sum(axis=1)
        labels[task] = (projection + sines + rng.normal(scale=0.1, size=num_samples))[:, None].astype("float32")
    return x.astype("float32"), labels


def mmoe_model(seed):
    keras.utils.set_random_seed(seed)
    return keras_mtl.architectures.mmoe(
        keras.Input((DIMENSION,)), TASKS, num_experts=8, expert_units=(16,), tower_units=(8,)
    )


def shared_bottom_model(seed):
    # The paper's size: 100·113 + 113·8·2 = 13,108 weights, about MMoE's 100·16·8 = 12,800 in experts.
    keras.utils.set_random_seed(seed)
    return keras_mtl.architectures.shared_bottom(
        keras.Input((DIMENSION,)), TASKS, bottom_units=(113,), tower_units=(8,)
    )


MODELS = {"shared_bottom": shared_bottom_model, "mmoe": mmoe_model}


def train_and_evaluate(build, data, seed, epochs, batch_size, learning_rate):
    """Trains a fresh model with equal weighting; returns its (training, test) MSE, each averaged over the tasks."""
    (x_train, y_train), (x_test, y_test) = data
    model = build(seed)
    model.compile(keras.optimizers.Adam(learning_rate), loss=keras_mtl.get("ew", {task: "mse" for task in TASKS}))
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=0)
    return tuple(_mse(model, x, y) for x, y in ((x_train, y_train), (x_test, y_test)))


def _mse(model, x, y):
    predictions = model.predict(x, batch_size=1024, verbose=0)
    return float(np.mean([np.mean((predictions[task] - y[task]) ** 2) for task in TASKS]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--correlations", type=float, nargs="+", default=[1.0, 0.9, 0.5, 0.0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--train", type=int, default=32000, help="training samples per data set")
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    args = parser.parse_args()

    start = time.time()
    columns = ["p", "label corr.", "SB train", "MMoE train", "train adv.", "SB test", "MMoE test", "test adv."]
    print("  ".join(f"{name:>13}" for name in columns))
    for correlation in args.correlations:
        mse = {(name, part): [] for name in MODELS for part in ("train", "test")}
        label_correlations = []
        for seed in range(args.seeds):
            data = _split(*synthetic_tasks(correlation, args.train + args.test, seed), args.train)
            label_correlations.append(np.corrcoef(data[1][1]["y1"][:, 0], data[1][1]["y2"][:, 0])[0, 1])
            for name, build in MODELS.items():
                train, test = train_and_evaluate(build, data, seed, args.epochs, args.batch_size, args.learning_rate)
                mse[name, "train"].append(train)
                mse[name, "test"].append(test)
        row = [f"{correlation:.2f}", f"{np.mean(label_correlations):.2f}"]
        for part in ("train", "test"):
            shared_bottom, mmoe = np.array(mse["shared_bottom", part]), np.array(mse["mmoe", part])
            row += [_mean_std(shared_bottom), _mean_std(mmoe), _mean_std(shared_bottom - mmoe)]
        print("  ".join(f"{cell:>13}" for cell in row))
    print(
        f"(MSE averaged over the two tasks; mean ± std over {args.seeds} seeds; adv. = shared bottom − MMoE, positive when"
    )
    print(f" MMoE is better; {args.train} training samples, {args.epochs} epochs; {time.time() - start:.0f} s)")


def _split(x, y, num_train):
    """((x, y) for training, (x, y) for testing): the first `num_train` samples, then the rest."""
    return tuple(
        (x[part], {task: values[part] for task, values in y.items()})
        for part in (slice(None, num_train), slice(num_train, None))
    )


def _mean_std(values):
    return f"{np.mean(values):.3f}±{np.std(values):.3f}"


if __name__ == "__main__":
    main()
