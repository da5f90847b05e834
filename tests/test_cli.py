"""`keras-mtl`: help, version and argument errors answer without importing TensorFlow; its static lists match the library."""

import importlib.metadata
import json
import subprocess
import sys

import pytest

import keras_mtl_cli

# Runs the command line in a fresh interpreter, then reports what it imported.
PROBE = """
import json, sys
import keras_mtl_cli
try:
    code = keras_mtl_cli.main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "tensorflow": "tensorflow" in sys.modules, "keras": "keras" in sys.modules}), file=sys.stderr)
"""


def _command(*argv):
    """`(exit code, stdout, stderr without the probe line, imported TensorFlow or Keras)` of `keras-mtl ARGV`."""
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=60)
    *stderr, probe = done.stderr.strip().splitlines()
    probe = json.loads(probe)
    return probe["code"], done.stdout, "\n".join(stderr), probe["tensorflow"] or probe["keras"]


def test_help_lists_the_commands_and_exits_0_without_tensorflow():
    code, out, _, imported = _command("--help")
    assert code == 0 and not imported
    assert "benchmark" in out and "speed" in out and "study" in out


@pytest.mark.parametrize("command, option", [("benchmark", "--methods"), ("speed", "--methods"), ("study", "--tiny")])
def test_command_help_exits_0_without_tensorflow(command, option):
    code, out, _, imported = _command(command, "--help")
    assert code == 0 and not imported
    assert f"usage: keras-mtl {command}" in out and option in out


def test_version_is_the_package_metadata():
    code, out, _, imported = _command("--version")
    assert code == 0 and not imported
    assert out.strip() == f"keras-mtl {importlib.metadata.version('keras_mtl')}"


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "the following arguments are required: COMMAND"),
        (["benchmrk"], "invalid choice: 'benchmrk'"),
        (["benchmark", "--epoch", "2"], "unrecognized arguments: --epoch"),
        (["benchmark", "--seeds", "0"], "argument --seeds: must be at least 1, got 0"),
        (["benchmark", "--methods", "ew", "no_such_method"], "unknown method ids ['no_such_method']"),
        (["benchmark", "--methods", "pcgard"], "unknown method ids ['pcgard']; did you mean pcgrad?"),
        (["benchmark", "--seed", "3"], "unrecognized arguments: --seed 3; did you mean --seeds?"),
        (["benchmark", "--model", "my_models.build"], "argument --model: must be module:function"),
        (["benchmark", "--ray", "--gpus-per-run", "-1"], "argument --gpus-per-run: must be 0 or more"),
        (["speed", "--methods", "foo"], "unknown method ids ['foo']"),
        (["study", "--seeds", "0"], "argument --seeds: must be at least 1, got 0"),
        (["study", "--methods", "ew"], "unrecognized arguments: --methods ew"),
        (["speed", "--methods", "sam+nope", "sam+pcgrad:fancy"], "unknown method ids ['sam+nope', 'sam+pcgrad:fancy']"),
    ],
)
def test_argument_errors_exit_2_naming_the_problem_without_tensorflow(argv, message):
    code, _, err, imported = _command(*argv)
    assert code == 2 and not imported
    assert message in err


def test_speed_accepts_sam_rows_around_a_registered_method():
    assert (
        keras_mtl_cli.parse(["speed", "--methods", "sam", "sam+pcgrad", "sam+pcgrad:naive", "sam+mean:fmtl"]).methods[
            -1
        ]
        == "sam+mean:fmtl"
    )


def test_static_lists_match_the_library():
    """What the command line checks without importing keras_mtl is what importing it gives."""
    import keras_mtl
    from keras_mtl.benchmark import compare
    from keras_mtl.flat import sam

    read, registered = set(keras_mtl_cli.method_ids()), set(keras_mtl.available())
    assert read == registered, (
        f"@register lines of modules keras_mtl does not import: {sorted(read - registered)}; registered otherwise: {sorted(registered - read)}"
    )
    assert sorted(keras_mtl_cli.DATASETS) == sorted(compare.DATASETS)
    assert set(keras_mtl_cli.SAM_VARIANTS) == set(sam.VARIANTS)
    assert set(keras_mtl_cli.DEFAULT_METHODS) <= set(keras_mtl.available())
