"""The examples in the library's docstrings run and show what they say they show."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import wno

REPO = Path(__file__).resolve().parents[1]
# Every module of the package except the entry points (importing those runs the CLI).
MODULES = sorted(m.name for m in pkgutil.walk_packages(wno.__path__, "wno.")
                 if not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    # Examples read the repository's study files and write (wno-runs/...) in a scratch folder.
    (tmp_path / "studies").symlink_to(REPO / "studies")
    monkeypatch.chdir(tmp_path)
    # Defaults, not this shell's settings; and undo what an example sets (pin_device("cpu")
    # hides the GPUs from the rest of the process).
    for var in ("WNO_STORAGE", "WNO_HOME", "WNO_DATA_DIR", "MLFLOW_TRACKING_URI",
                "CUDA_VISIBLE_DEVICES"):
        monkeypatch.setenv(var, "")  # recorded even when unset, so teardown restores it
        monkeypatch.delenv(var)
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (above)"


def test_the_package_has_examples():
    # A module without examples passes the test above vacuously: make sure there are some.
    finder = doctest.DocTestFinder()
    examples = sum(len(t.examples) for name in MODULES
                   for t in finder.find(importlib.import_module(name)))
    assert examples >= 20
