"""The benchmark's run cache: a file is used only as the result of the configuration it was asked for; writes are atomic."""

import json

import pytest

from keras_mtl.benchmark import cache

CONFIG = {
    "dataset": "gradnorm_toy",
    "epochs": 1,
    "label": "uw_so",
    "method_id": "uw_so",
    "method_kwargs": {"temperature": 3.0},
    "seed": 1,
    "learning_rate": 0.001,
}
RESULT = {"config": CONFIG, "test": {"a": 0.5}, "validation": {"a": 0.4}, "seconds_per_step": 0.01, "history": {}}


@pytest.fixture
def path(tmp_path):
    return cache.run_path(tmp_path, CONFIG)


def test_a_saved_result_reads_back_with_its_format_version(path):
    assert cache.read(path, CONFIG) == (None, None)  # no file yet: nothing to report
    cache.save(path, RESULT)
    result, problem = cache.read(path, CONFIG)
    assert problem is None and result == {"format": cache.FORMAT_VERSION, **RESULT}
    assert path.name.startswith("uw_so_seed1_") and list(path.parent.iterdir()) == [path]  # no temporary file left


def test_the_file_name_follows_the_whole_configuration(tmp_path):
    assert cache.run_path(tmp_path, CONFIG) != cache.run_path(
        tmp_path, {**CONFIG, "method_kwargs": {"temperature": 5.0}}
    )
    assert cache.run_path(tmp_path, {"label": "sam+pcgrad:naive", "seed": 0}).name.startswith("sam_pcgrad_naive_seed0_")


def test_a_truncated_file_is_not_read_as_results(path):
    cache.save(path, RESULT)
    path.write_text(path.read_text()[:40])
    result, problem = cache.read(path, CONFIG)
    assert result is None and problem.startswith("it is not readable JSON")


def test_a_file_with_other_settings_is_not_read_as_results(path):
    cache.save(path, {**RESULT, "config": {**CONFIG, "epochs": 5}})
    result, problem = cache.read(path, CONFIG)
    assert result is None and "'epochs': 5" in problem and "not the requested" in problem


def test_a_file_of_an_older_format_is_not_read_as_results(path):
    # What the benchmark wrote before format versions: the result alone.
    path.write_text(json.dumps(RESULT))
    assert cache.read(path, CONFIG) == (None, f"it has format version 1, not {cache.FORMAT_VERSION}")
    path.write_text(json.dumps({**RESULT, "format": cache.FORMAT_VERSION - 1}))
    assert cache.read(path, CONFIG)[0] is None


def test_a_write_killed_halfway_leaves_the_previous_file_whole(path, monkeypatch):
    cache.save(path, RESULT)
    before = path.read_bytes()

    def dump_half_then_die(value, file):
        file.write(json.dumps(value)[:30])
        raise KeyboardInterrupt

    monkeypatch.setattr(cache.json, "dump", dump_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        cache.save(path, {**RESULT, "test": {"a": 0.9}})
    assert path.read_bytes() == before and list(path.parent.iterdir()) == [path]
