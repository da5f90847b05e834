"""The docs site builds in strict mode, and every registered method has its reference page and documents its arguments."""

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import keras_mtl
from keras_mtl.registry import _METHODS

ROOT = Path(__file__).parents[1]
METHOD_PAGES = ROOT / "docs" / "api" / "methods"


def test_site_builds_with_no_warning(tmp_path):
    # --strict turns every warning (a broken link, an `Args:` entry naming no parameter, a missing page) into a failure.
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # no end-of-life banner
    )
    assert result.returncode == 0, result.stderr[-5000:]
    assert "WARNING" not in result.stderr, result.stderr[-5000:]
    for page in ("index.html", "api/methods/upgrad/index.html", "guides/index.html", "api/commands/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
    # The options come from the parsers themselves (mkdocs_hooks.py).
    assert "--methods" in (tmp_path / "site" / "api/commands/index.html").read_text()


@pytest.mark.parametrize("method_id", sorted(_METHODS))
def test_every_registered_id_has_a_reference_page(method_id):
    cls = _METHODS[method_id]
    page = METHOD_PAGES / f"{method_id}.md"
    assert page.is_file(), f"no reference page {page.relative_to(ROOT)} for the registered id {method_id!r}"
    assert f"::: {cls.__module__}.{cls.__name__}\n" in page.read_text(), f"{page.name} does not render {cls.__name__}"
    nav = (ROOT / "mkdocs.yml").read_text()
    assert f"api/methods/{method_id}.md" in nav, f"{method_id!r} is not in mkdocs.yml's nav"
    index = (METHOD_PAGES / "index.md").read_text()
    assert f"[`{method_id}`]({method_id}.md)" in index, f"{method_id!r} is not in the methods' index"
    readme = (ROOT / "README.md").read_text()
    assert f"[`{method_id}`](docs/api/methods/{method_id}.md)" in readme, (
        f"{method_id!r} has no row in the README's table"
    )


def test_no_page_for_an_unregistered_id():
    pages = {p.stem for p in METHOD_PAGES.glob("*.md")} - {"index"}
    assert pages == set(_METHODS), pages ^ set(_METHODS)


def documented_arguments(obj):
    """The names an object's Google-style `Args:` section documents."""
    match = re.search(r"^Args:\n((?:    .*\n|\n)*)", inspect.getdoc(obj) + "\n", re.M)
    return set(re.findall(r"^    (\*{0,2}\w+):", match.group(1), re.M)) if match else set()


@pytest.mark.parametrize(
    "obj",
    [
        *(_METHODS[i] for i in sorted(_METHODS)),
        *(getattr(keras_mtl.architectures, n) for n in ("CrossStitch", "MMoE", "CGC", "DSelectK", "TaskAttention")),
    ],
    ids=lambda obj: obj.__name__,
)
def test_every_constructor_argument_is_documented(obj):
    arguments = [p for p in inspect.signature(obj.__init__).parameters if p != "self"]
    documented = documented_arguments(obj)
    missing = [a for a in arguments if a not in documented and f"**{a}" not in documented]
    assert not missing, f"{obj.__name__}'s docstring has no `Args:` entry for {missing}"
