"""Which method for a model and its data: `compare_methods` (the `keras-mtl benchmark` command's code), the study, the timings."""

from keras_mtl.benchmark.compare import compare_methods

__all__ = ["compare_methods"]
