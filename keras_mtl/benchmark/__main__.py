"""`python -m keras_mtl.benchmark`: the same as `keras-mtl benchmark`."""

import sys

from keras_mtl_cli import main

sys.exit(main(["benchmark", *sys.argv[1:]]))
