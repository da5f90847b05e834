"""`python -m keras_mtl.benchmark`: the same as `keras-mtl benchmark`."""

from keras_mtl.benchmark.compare import main

main()
