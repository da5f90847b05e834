"""keras_mtl: multi-task learning for Keras 3.

Pick a method by id with `keras_mtl.get(id, losses)` (ids: `keras_mtl.available()`)
and pass it as the `loss` of a model that uses `MultiTaskMixin`.
"""

from keras_mtl import architectures
from keras_mtl.aggregators import (
    CRMOGM,
    IMTLG,
    MGDA,
    AlignedMTL,
    CAGrad,
    ConFIG,
    DualProj,
    FairGrad,
    GradDrop,
    GradVac,
    Krum,
    MoDo,
    NashMTL,
    PCGrad,
    SDMGrad,
    TrimmedMean,
    UPGrad,
)
from keras_mtl.bilevel import AutoLambda, SLGrad
from keras_mtl.flat import SAM
from keras_mtl.gradients import (
    DualBalancing,
    ExcessMTL,
    GradientCosineSimilarity,
    GradientMethod,
    GradNorm,
    HydaLearn,
    MeanGradient,
    MoCo,
    OLAux,
    OrthogonalGradients,
    TaskGradients,
)
from keras_mtl.methods import LossWeighting, MultiTaskLoss
from keras_mtl.registry import available, get
from keras_mtl.training.mixin import MultiTaskMixin
from keras_mtl.training.model import MultiTaskModel
from keras_mtl.training.state import MultiTaskState
from keras_mtl.weightings import (
    FAMO,
    IMTLL,
    SLAW,
    AnalyticUncertaintyWeighting,
    DynamicWeightAverage,
    EqualWeighting,
    GeometricLossStrategy,
    PositiveUncertaintyWeighting,
    RandomLossWeighting,
    Scalarization,
    ScaleInvariant,
    SmoothTchebycheff,
    SoftAdapt,
    SoftmaxUncertaintyWeighting,
    UncertaintyWeighting,
    grid_search,
    scalarization_grid,
)

__version__ = "0.3.0"
