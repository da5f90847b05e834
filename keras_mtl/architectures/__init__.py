"""Multi-task architectures: Keras layers, and builders that return a `keras_mtl.MultiTaskModel`.

| architecture | layer | builder | paper |
|---|---|---|---|
| hard parameter sharing | — | `shared_bottom` | Caruana 1997; Ma et al. 2018 (baseline) |
| Cross-stitch | `CrossStitch` | `cross_stitch` | Misra et al., CVPR 2016 |
| MMoE | `MMoE` | `mmoe` | Ma et al., KDD 2018 |
| CGC, PLE | `CGC` | `cgc`, `ple` | Tang et al., RecSys 2020 |
| DSelect-k | `DSelectK` | `dselect_k` | Hazimeh et al., NeurIPS 2021 |
| MTAN | `TaskAttention` | `mtan` | Liu et al., CVPR 2019 |

Every builder takes a `keras.Input` and `tasks`, a dict {task name: output
units}, and returns a model with one linear output per task, named after it.
The layers use `keras.ops` only and save with the model.
"""

from keras_mtl.architectures.cgc import CGC, cgc
from keras_mtl.architectures.cross_stitch import CrossStitch, cross_stitch
from keras_mtl.architectures.dselect_k import DSelectK, dselect_k
from keras_mtl.architectures.mmoe import MMoE, mmoe
from keras_mtl.architectures.mtan import TaskAttention, mtan
from keras_mtl.architectures.ple import ple
from keras_mtl.architectures.shared_bottom import shared_bottom
