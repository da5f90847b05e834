"""Gradient methods: combine the per-task gradients of the shared part."""

from keras_mtl.gradients.auxiliary import GradientCosineSimilarity, HydaLearn
from keras_mtl.gradients.base import GradientMethod, TaskGradients
from keras_mtl.gradients.db_mtl import DualBalancing
from keras_mtl.gradients.excess_mtl import ExcessMTL
from keras_mtl.gradients.gradnorm import GradNorm
from keras_mtl.gradients.mean import MeanGradient
from keras_mtl.gradients.moco import MoCo
from keras_mtl.gradients.ol_aux import OLAux
from keras_mtl.gradients.orthogonal import OrthogonalGradients
