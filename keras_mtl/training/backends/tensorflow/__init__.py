"""The TensorFlow training engine: Keras' `train_step(data)` and `test_step(data)`, run inside `tf.function`.

Steps assign as they go, ordered by control dependencies; `faults.StepGuard`
decides before any update whether a step applies. Multi-replica training
runs under any `tf.distribute` strategy, with the task losses, Gramians and
directions all-reduced to the global batch's (`replicas`).
"""

import keras
import tensorflow as tf

from keras_mtl.training import tasks
from keras_mtl.training.backends.tensorflow.bilevel import meta_weighted_step, sample_weighted_step
from keras_mtl.training.backends.tensorflow.faults import remember_forward_state
from keras_mtl.training.backends.tensorflow.gradients import gradient_train_step
from keras_mtl.training.backends.tensorflow.losses import (
    global_task_losses,
    regularization_loss,
    task_loss_vector,
    total_for_logs,
)
from keras_mtl.training.backends.tensorflow.penalty import gradient_penalty_step
from keras_mtl.training.backends.tensorflow.replicas import num_replicas, on_first_replica, sum_over_replicas
from keras_mtl.training.backends.tensorflow.sam import sam_train_step
from keras_mtl.training.backends.tensorflow.sharing import output_dependencies  # noqa: F401 (the engine's interface)
from keras_mtl.training.backends.tensorflow.weighted import weighted_loss_step

# The step that trains each kind of method (`MultiTaskLoss.train_step_kind`).
_TRAIN_STEPS = {
    "weighted_loss": weighted_loss_step,
    "task_gradients": gradient_train_step,
    "sharpness_aware": sam_train_step,
    "gradient_penalty": gradient_penalty_step,
    "meta_weighted": meta_weighted_step,
    "sample_weighted": sample_weighted_step,
}


def train_step(model, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    step = _TRAIN_STEPS[model.multi_task_method.train_step_kind]
    remember_forward_state(model)
    y_pred, global_losses, weights, total, applied = step(model, x, y, sample_weight)
    skipped = on_first_replica(1.0 - tf.cast(applied, tf.float32))
    tasks.update_trackers(model, x, total, global_losses, weights, skipped)
    logs = model.compute_metrics(x, y, y_pred, sample_weight)
    if not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer):
        # Only a loss scale skips steps; without one a fault is an error.
        logs.pop(model.multi_task_state.skipped_steps_tracker.name)
    return _for_multi_worker_reduction(logs)


def test_step(model, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    y_pred = model(x, training=False)
    global_losses = global_task_losses(model, task_loss_vector(model, y, y_pred, sample_weight))
    weighting = model.multi_task_method.weighting()
    weights, method_regularization = None, 0.0
    if weighting is not None:
        values = model.multi_task_state.values()
        weights, _ = weighting.weights(global_losses, values, training=False)
        method_regularization = weighting.regularization(values)
    total = total_for_logs(model, global_losses, weights, regularization_loss(model), method_regularization)
    tasks.update_trackers(model, x, total, global_losses, weights)
    logs = model.compute_metrics(x, y, y_pred, sample_weight)
    return _for_multi_worker_reduction(tasks.evaluation_logs(model, logs, weights))


def compute_loss(model, y, y_pred, sample_weight):
    """Per replica, as stock `compute_loss`."""
    losses = task_loss_vector(model, y, y_pred, sample_weight)
    weighting = model.multi_task_method.weighting()
    if weighting is None:
        return tf.reduce_sum(losses) + regularization_loss(model)
    values = model.multi_task_state.values()
    weights, _ = weighting.weights(tf.stop_gradient(sum_over_replicas(losses)), values, training=False)
    return (
        tf.tensordot(weights, losses, 1)
        + weighting.regularization(values) / num_replicas()
        + regularization_loss(model)
    )


def first_batch_to_build(model, iterator, data_batch):
    """Keras 3.15 (private `_maybe_symbolic_build`) builds from the first batch, reduced over replicas
    with `strategy.reduce`, which fails for MultiWorkerMirroredStrategy's per-replica values; this
    worker's own slice of the batch builds the same variables."""
    if iterator is not None and isinstance(model.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
        for _, _, batches in iterator:
            data_batch = tf.nest.map_structure(
                lambda value: model.distribute_strategy.experimental_local_results(value)[0], next(batches)
            )
            break
        iterator = None
    return iterator, data_batch


def after_batch(model, logs, wait):
    """Nothing to do: a TensorFlow step raises its faults itself (`faults.StepGuard`)."""


def _for_multi_worker_reduction(logs):
    """Logs as (1,) vectors under MultiWorkerMirroredStrategy.

    Keras 3.15 reduces step logs across workers with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on scalars; on
    (1,) vectors it gives the scalar mean.
    """
    if not isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        return logs
    return {name: tf.reshape(value, [1]) for name, value in logs.items()}
