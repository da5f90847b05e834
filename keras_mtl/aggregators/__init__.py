"""Gradient methods as pure `keras.ops` functions of the Gramian ``G = J J^T``, on every backend.

Each ``*_weights`` function maps the K x K Gramian of the per-task gradients
(plus method state, random draws or options) to task weights ``w`` (K,), the
shared update being ``d = J^T w``; GradDrop and the trimmed mean, being
elementwise, map J to ``d``. See ``_common`` for the shared non-finite-input
convention and the compile decorator (float64 on JAX). Beside each function,
its registered `GradientMethod` class, pure as every method: its state in,
its new state out. The catalogue grows by one file and one test.
"""

from keras_mtl.aggregators.aligned_mtl import AlignedMTL, aligned_mtl_weights
from keras_mtl.aggregators.cagrad import CAGrad, cagrad_weights
from keras_mtl.aggregators.config import ConFIG, config_weights
from keras_mtl.aggregators.cr_mogm import CRMOGM, cr_mogm_weights
from keras_mtl.aggregators.dualproj import DualProj, dualproj_weights
from keras_mtl.aggregators.fairgrad import FairGrad, fairgrad_weights
from keras_mtl.aggregators.graddrop import GradDrop, graddrop_update
from keras_mtl.aggregators.gradvac import GradVac, gradvac_weights
from keras_mtl.aggregators.imtl_g import IMTLG, imtl_g_weights
from keras_mtl.aggregators.krum import Krum, krum_weights
from keras_mtl.aggregators.mgda import MGDA, mgda_weights
from keras_mtl.aggregators.modo import MoDo, modo_weights
from keras_mtl.aggregators.nash_mtl import NashMTL, nash_mtl_weights
from keras_mtl.aggregators.pcgrad import PCGrad, pcgrad_weights
from keras_mtl.aggregators.sdmgrad import SDMGrad, sdmgrad_weights
from keras_mtl.aggregators.trimmed_mean import TrimmedMean, trimmed_mean_update
from keras_mtl.aggregators.upgrad import UPGrad, upgrad_weights

__all__ = [
    "AlignedMTL",
    "CAGrad",
    "CRMOGM",
    "ConFIG",
    "DualProj",
    "FairGrad",
    "GradDrop",
    "GradVac",
    "IMTLG",
    "Krum",
    "MGDA",
    "MoDo",
    "NashMTL",
    "PCGrad",
    "SDMGrad",
    "TrimmedMean",
    "UPGrad",
    "aligned_mtl_weights",
    "cagrad_weights",
    "config_weights",
    "cr_mogm_weights",
    "dualproj_weights",
    "fairgrad_weights",
    "graddrop_update",
    "gradvac_weights",
    "imtl_g_weights",
    "krum_weights",
    "mgda_weights",
    "modo_weights",
    "nash_mtl_weights",
    "pcgrad_weights",
    "sdmgrad_weights",
    "trimmed_mean_update",
    "upgrad_weights",
]
