"""Exercise tests run against the reference solutions; MINIMOST_EXERCISES=student adds your stubs.

Each test file defines an `ex` fixture on top of `ex_kind` below, so every exercise test runs twice:
[solution] checks `minimost.exercises.solutions.chNN` (always), [student] checks your
`minimost.exercises.chNN` and is skipped unless MINIMOST_EXERCISES=student is set.
"""

import importlib
import os

import pytest

STUDENT = os.environ.get("MINIMOST_EXERCISES", "").lower() == "student"


@pytest.fixture(params=["solution", "student"])
def ex_kind(request) -> str:
    if request.param == "student" and not STUDENT:
        pytest.skip("your stubs are tested with MINIMOST_EXERCISES=student")
    return request.param


def load_chapter(kind: str, chapter: str):
    package = "minimost.exercises.solutions" if kind == "solution" else "minimost.exercises"
    return importlib.import_module(f"{package}.{chapter}")


@pytest.fixture
def load():
    return load_chapter
