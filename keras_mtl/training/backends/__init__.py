"""One training engine per Keras backend, chosen as Keras chooses its trainers.

The engine interface (what `keras_mtl.training.mixin` calls), the same in
every backend package `keras_mtl.training.backends.<backend>`:

- `train_step(model, *args)`, `test_step(model, *args)`: Keras' own, in that
  backend trainer's signature (TensorFlow `(data)`, JAX `(state, data)`,
  torch `(data)`).
- `compute_loss(model, y, y_pred, sample_weight)`: the total stock
  utilities ask for; never updates the method's state.
- `first_batch_to_build(model, iterator, data_batch) -> (iterator, data_batch)`.
- `after_batch(model, logs, wait)`: raises a pending fault
  (`MultiTaskState.fault`, set by an engine whose steps cannot raise) with
  `keras_mtl.training.steps.faults.fault_message`, as `StepFault`; the
  mixin calls it after each step group with `wait=False` (read the fault
  only if it is there without waiting for the device) and at the end of an
  epoch and of `train_on_batch` with `wait=True`. The model must then hold
  the values from before the faulty step. An engine that raises inside the
  step (TensorFlow) does nothing here.
- `output_dependencies(model)`: read by `keras_mtl.training.sharing` at compile.

The step interface (what the steps need of a backend; the JAX package
is its reference, module for module):

- `values.py`: `Values(model, trainable, non_trainable)`, the step's view
  of the model's variable values (`of(variables)`, `trainable_indices`,
  `method_state()`, `with_state(new_state, trainable, non_trainable)`);
  `forward(model, layer, trainable, non_trainable, inputs) -> (outputs,
  non_trainable after the call, regularisation sum)`: the model or one of
  its parts evaluated at given values in training mode, with the step's
  randomness and batch statistics (Keras' `stateless_call` on every
  backend); `read_optimizer(model, optimizer_values) -> (loss scale,
  learning rate)`; `flat(values)`, `split_like(vector, variables)`.
- `values.output_vjps(model, vjp, outputs, count)`: the first `count`
  outputs' vector-Jacobian products, sequential or batched
  (`task_gradients=`); the per-task gradients come from one forward pass
  and a VJP function (`jax.vjp`; torch `torch.autograd.grad(...,
  retain_graph=True)`; TensorFlow a persistent tape).
- `checks.py`: `Checks(loss_scaled)`, which turns a step's
  `keras_mtl.training.steps.faults.Check`s (values, never raising) into a
  verdict `(overflowed, fault index)`; `verdict` in TensorFlow's
  `faults.StepGuard` asserts them instead.
- the sum over replicas: none on JAX (`DataParallel` steps see global
  arrays), `replicas.sum_over_replicas` on TensorFlow.
- applying or keeping: the step returns its new values and the engine
  keeps the old ones where the verdict says so (`jnp.where`), the fault's
  index going to `MultiTaskState.fault` and the messages to
  `MultiTaskState.fault_messages` (known when the step is traced).

Every check and message is written once, in `keras_mtl.training.steps.faults`.
"""

import importlib

import keras

SUPPORTED = ("tensorflow", "jax", "torch")


def engine():
    """The engine module of the backend Keras runs on, or an error naming the supported ones."""
    backend = keras.backend.backend()
    if backend not in SUPPORTED:
        raise RuntimeError(
            f"keras_mtl trains on the {', '.join(SUPPORTED[:-1])} and {SUPPORTED[-1]} backends; Keras runs on {backend!r}. "
            f"Set KERAS_BACKEND to one of them ({', '.join(SUPPORTED)}) before importing keras."
        )
    return importlib.import_module(f"keras_mtl.training.backends.{backend}")
