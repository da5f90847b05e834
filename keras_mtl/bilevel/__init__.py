"""Methods that learn their weights from a second batch in each step: Auto-Lambda's outer batch, SLGrad's hold-out part.

A step gets the second batch by dealing the batch `fit` gives it into parts
(`keras_mtl.training.tasks.batch_parts`); each method has its own training
step kind, in the engines' `bilevel` modules.
"""

from keras_mtl.bilevel.auto_lambda import AutoLambda
from keras_mtl.bilevel.slgrad import SLGrad

__all__ = ["AutoLambda", "SLGrad"]
