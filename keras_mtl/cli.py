"""The `keras-mtl` command: `keras-mtl benchmark ...`, `keras-mtl speed ...`."""

import sys

COMMANDS = {
    "benchmark": "keras_mtl.benchmark.compare",
    "speed": "keras_mtl.benchmark.speed",
}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: keras-mtl {{{','.join(COMMANDS)}}} [options]   (keras-mtl COMMAND --help)", file=sys.stderr)
        return 2
    import importlib

    importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])
    return 0
