"""What a training step computes, written once for every backend (see `keras_mtl.training.backends`)."""
