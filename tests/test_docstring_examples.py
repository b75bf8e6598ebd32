"""The examples in the package's docstrings run as written (those that need a trained model or a
calculation are marked to be skipped), so an example cannot drift away from the API it shows."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import perovskite_pes

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(perovskite_pes.__path__, prefix="perovskite_pes.")
    if not info.name.endswith("__main__")  # importing it runs the command line
)


def test_the_package_has_runnable_examples():
    finder = doctest.DocTestFinder()
    runnable = [
        ex
        for name in MODULES
        for test in finder.find(importlib.import_module(name))
        for ex in test.examples
        if not ex.options.get(doctest.SKIP)
    ]
    assert len(runnable) >= 20  # a finder that found nothing would pass every module below


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder().find(module):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} fail"
