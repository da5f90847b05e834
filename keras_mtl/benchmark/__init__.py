"""Which method for a model and its data: `compare_methods` (the `keras-mtl benchmark` command's code), the study, the timings."""

__all__ = ["compare_methods"]


def __getattr__(name):
    # On first use: `keras_mtl.benchmark.speed` and the others load without the benchmark's data sets.
    if name == "compare_methods":
        from keras_mtl.benchmark.compare import compare_methods

        return compare_methods
    raise AttributeError(f"module 'keras_mtl.benchmark' has no attribute {name!r}")
