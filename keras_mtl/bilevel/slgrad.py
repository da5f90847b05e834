"""SLGrad: sample-level weights from each sample's gradient alignment with the main task on held-out data."""

import keras
import numpy as np

from keras_mtl.arguments import Integer, Text, declare_arguments
from keras_mtl.gradients.auxiliary import main_task_index
from keras_mtl.methods import MultiTaskLoss
from keras_mtl.registry import register


@register("slgrad")
@declare_arguments(main_task=Text(optional=True, what="the name of one task"), parts=Integer(minimum=2))
class SLGrad(MultiTaskLoss):
    """SLGrad: weigh every task's every sample by how much its gradient helps the main task on held-out data.

    Every training step deals its batch into `parts` interleaved parts
    (`keras_mtl.training.tasks.batch_parts`), holds the last one out of the
    update and trains on the others (the training part B). On the shared
    parameters θ_sh:

    1. `v = ∇_{θ_sh} L_m(hold-out part)`, the main task's gradient;
    2. for every task k and sample i of B, `s_{k,i} = ⟨∇_{θ_sh} ℓ_{k,i}, v⟩`,
       all K·|B| at once by one forward-mode product (a JVP of the batch's
       per-sample losses along v);
    3. `w_{k,i} = max(s_{k,i}, 0) / Σ_{k′,i′} max(s_{k′,i′}, 0)`, the main
       task's samples included; all zero when no sample aligns with v;
    4. the step on `Σ_{k,i} w_{k,i} ℓ_{k,i} + R` (R: the model's
       regularisation losses), heads included.

    The weights sum to 1 over all tasks and samples of the (global) batch;
    `fit` logs each task's weight as the sum of its samples' weights. A
    sample whose gradient opposes v gets weight 0. `loss` is the plain sum
    of the batch's task losses plus R, as for gradient methods.

    Grégoire, Chaudhary, Verboven, "Sample-Level Weighting for Multi-Task
    Learning with Auxiliary Tasks", Applied Intelligence 54(4):3482–3501,
    2024 (arXiv 2306.04519). Rules from the authors' code (vub-dl/SLGrad,
    `Dynamic Weighting Algorithms/Dynamic_weighting.py`, class `SLGrad`,
    and `Multi-Task Model/MTL_MODEL_OPT.py`): inner products over the
    shared parameters only, clipped at 0, normalised over every task and
    sample, unnormalised when their sum is 0. Differences, each a choice:

    - The hold-out set. The paper's is a fixed hold-out meta set, a batch of
      it drawn per step; here it is the held-out part of the step's own
      batch, a fresh draw from the training set (the samples held out now
      are trained on in other epochs' steps). A fixed hold-out set keeps
      validation samples the model never trains on; this one costs no data
      and needs nothing beyond `fit`.
    - The step order. The authors' code takes an optimizer step with the
      weights computed on the *previous* batch (whose sample i is another
      sample), then computes new weights at the moved parameters, then a
      second step on the same batch. Here each step computes the weights
      for its own samples at the current parameters and takes one step.
    - The scale. The authors' loss is `Σ_k (1/|B|) Σ_i w_{k,i} ℓ_{k,i}`; the
      extra 1/|B| divides the learning rate by the batch size (exactly so
      under SGD, nearly no effect under Adam) and is left out.

    Cost per step: one forward pass of the batch, two backward passes (v;
    the update) and one forward-mode product, however many samples
    (per-sample gradients would take K·|B| backward passes). Parameter mode
    only. A loss with several values per sample counts their mean as the
    sample's loss; Keras masks are untested. Under a `tf.distribute`
    strategy each replica deals its own shard, which gives one device's
    step exactly when every shard's size is a multiple of `parts`.

    Args:
        losses: the per-task losses.
        main_task: the name of the main task (required).
        parts: ≥ 2; one part in `parts` of each batch is held out (2: half).
        name: the method's name, default None (its registered id).

    Examples:
        >>> keras_mtl.SLGrad({"main": "mse", "aux": "mse"}, main_task="main", parts=4)
    """

    train_step_kind = "sample_weighted"
    parameter_mode_only = True

    def __init__(self, losses=None, main_task=None, parts=2, name=None):
        super().__init__(losses, name=name)
        self.main_task = main_task
        self.parts = parts

    def build_state(self, state, task_names):
        self._outer_weights = np.eye(len(task_names), dtype="float32")[main_task_index(self, task_names)]

    def outer_weights(self):
        """(K,) the weights of the tasks' losses on the hold-out part: 1 for the main task, else 0."""
        return self._outer_weights

    def sample_weights(self, alignments, global_sum):
        """(K, n) weights from the (K, n) alignments `s`; `global_sum` sums a tensor over the global batch's samples."""
        clipped = keras.ops.maximum(alignments, 0.0)
        return keras.ops.divide_no_nan(clipped, global_sum(keras.ops.sum(clipped)))

    def get_config(self):
        return {**super().get_config(), "main_task": self.main_task, "parts": self.parts}
