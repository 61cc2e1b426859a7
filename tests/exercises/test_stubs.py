"""Every chapter's exercise stubs have the signatures and docstrings of their reference solutions."""

import importlib
import inspect
from pathlib import Path

import pytest

CHAPTERS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "minimost" / "exercises").glob("ch*.py"))


def _params(fn):
    return [(p.name, p.default, p.kind) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_stubs_match_solutions(chapter):
    stubs = importlib.import_module(f"minimost.exercises.{chapter}")
    solutions = importlib.import_module(f"minimost.exercises.solutions.{chapter}")
    names = [n for n, f in inspect.getmembers(stubs, inspect.isfunction) if f.__module__ == stubs.__name__]
    assert names, f"no exercises found in {chapter}"
    for name in names:
        assert _params(getattr(stubs, name)) == _params(getattr(solutions, name)), name
        assert getattr(stubs, name).__doc__, name
