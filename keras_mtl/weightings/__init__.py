"""Loss weightings: methods that need only the K task losses."""

from keras_mtl.weightings.dwa import DynamicWeightAverage
from keras_mtl.weightings.equal import EqualWeighting
from keras_mtl.weightings.famo import FAMO
from keras_mtl.weightings.gls import GeometricLossStrategy
from keras_mtl.weightings.imtl_l import IMTLL
from keras_mtl.weightings.rlw import RandomLossWeighting
from keras_mtl.weightings.scalarization import Scalarization, grid_search, scalarization_grid
from keras_mtl.weightings.si import ScaleInvariant
from keras_mtl.weightings.slaw import SLAW
from keras_mtl.weightings.softadapt import SoftAdapt
from keras_mtl.weightings.stch import SmoothTchebycheff
from keras_mtl.weightings.uncertainty import (
    AnalyticUncertaintyWeighting,
    SoftmaxUncertaintyWeighting,
    UncertaintyWeighting,
)
from keras_mtl.weightings.uw_log1p import PositiveUncertaintyWeighting
