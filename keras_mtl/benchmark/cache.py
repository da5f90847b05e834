"""The benchmark's run cache: one JSON file per finished run, named by a hash of its configuration.

A file is only ever used as the result of the configuration it was asked
for: it must parse, carry the current `FORMAT_VERSION` and hold exactly the
requested configuration. Anything else (a file cut short by a killed run
before writes were atomic, one from an older version of the benchmark, one
whose settings differ) is reported by name and its run trained again.
Files are written to a temporary file in the same folder and moved into place
with `os.replace`, which is atomic, so a killed write leaves the old file or
none, never a truncated one.
"""

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

# Version 2: per-step weights read from the weight trackers' sums, validation curves, results from `model.evaluate`.
FORMAT_VERSION = 2


def run_path(folder, config):
    """Where a run's result is saved: its label, its seed and a hash of its whole configuration."""
    key = hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    return Path(folder) / f"{re.sub(r'[^A-Za-z0-9_.=-]', '_', config['label'])}_seed{config['seed']}_{key}.json"


def read(path, config):
    """The cached result of `config` at `path`, and why it cannot be used.

    Returns:
        `(result, None)` for a usable file; `(None, None)` when there is no
        file; `(None, reason)` when the file exists but is not the result of
        `config` (unreadable, another format version, other settings).
    """
    try:
        result = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, f"it is not readable JSON ({error})"
    if not isinstance(result, dict):
        return None, "it holds no run result"
    if result.get("format") != FORMAT_VERSION:
        return None, f"it has format version {result.get('format', 1)}, not {FORMAT_VERSION}"
    # A JSON round trip, so that the tuples of a requested config compare equal to the stored lists.
    if result.get("config") != json.loads(json.dumps(config)):
        return None, f"its settings {result.get('config')} are not the requested {config}"
    return result, None


def save(path, result):
    """Writes `result` with the current format version, atomically."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as file:
            json.dump({"format": FORMAT_VERSION, **result}, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
