"""The notebook policy (docs/notebooks.md), checked on every notebook in notebooks/.

Executing the notebooks is nbval's job (`make test` passes notebooks/*.ipynb to pytest with
--nbval-lax); these tests check what a notebook must look like in git:
- outputs stripped: no outputs, no execution counts, no widget state;
- no class or function that shadows a name of minimost's public API (teaching copies get other
  names, e.g. `my_router`, and are checked against the package inside the notebook);
- the structure: a title and learning goals first, a seed, a preset switch, and Summary /
  Exercises / Going further at the end; pyplot cells end with plt.show(); no absolute paths.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import json
import pkgutil
import re
from functools import cache
from pathlib import Path

import pytest

import minimost

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
STRIP_HOWTO = (
    "Strip outputs before committing: `jupyter nbconvert --clear-output --inplace notebooks/NAME.ipynb` "
    "(and remove metadata.widgets if present), or in Python: "
    "`import nbformat; nb = nbformat.read(p, 4); "
    "[c.update(outputs=[], execution_count=None) for c in nb.cells if c.cell_type == 'code']; "
    "nb.metadata.pop('widgets', None); nbformat.write(nb, p)`."
)


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def python_source(cell: dict) -> str:
    """A code cell's source with IPython magics and shell escapes blanked, so `ast` can parse it."""
    lines = source(cell).splitlines()
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in lines)


@cache
def public_api() -> dict[str, str]:
    """Public class and function names defined in minimost's modules -> the module defining them."""
    names: dict[str, str] = {}
    modules = [minimost.__name__] + [m.name for m in pkgutil.walk_packages(minimost.__path__, "minimost.")]
    for name in modules:
        if name.endswith("__main__"):
            continue
        try:
            module = importlib.import_module(name)
        except Exception:  # e.g. an optional dependency is missing
            # fall back to the names the source file defines at top level
            spec = importlib.util.find_spec(name)
            try:
                tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
            except (SyntaxError, OSError, TypeError):
                continue
            for node in tree.body:
                is_def = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                if is_def and not node.name.startswith("_"):
                    names.setdefault(node.name, name)
            continue
        for attr, obj in vars(module).items():
            if attr.startswith("_") or not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if getattr(obj, "__module__", None) == name:
                names.setdefault(attr, name)
    return names


# ---------------------------------------------------------------- checks: each returns a list of problems

def stripping_problems(nb: dict) -> list[str]:
    dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"
             and (c.get("outputs") or c.get("execution_count") is not None)]
    problems = [f"code cells {dirty} carry outputs or execution counts"] if dirty else []
    if "widgets" in nb.get("metadata", {}):
        problems.append("metadata.widgets is present")
    return problems


def api_problems(nb: dict) -> list[str]:
    api = public_api()
    problems = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        try:
            tree = ast.parse(python_source(cell))
        except SyntaxError as err:
            problems.append(f"code cell {i} does not parse: {err}")
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name in api:
                problems.append(f"cell {i} defines {node.name}, a name of {api[node.name]}")
    return problems


def structure_problems(nb: dict) -> list[str]:
    cells, problems = nb["cells"], []
    first = cells[0] if cells else {"cell_type": "", "source": ""}
    if first["cell_type"] != "markdown" or not source(first).lstrip().startswith("# "):
        problems.append("the first cell must be markdown starting with a '# ' title")
    if not re.search(r"learning goals", source(first), re.I):
        problems.append("the first cell must state the learning goals")
    code = [source(c) for c in cells if c["cell_type"] == "code"]
    if not any("torch.manual_seed(" in s for s in code):
        problems.append("no seed cell (torch.manual_seed)")
    if not any(re.search(r"^PRESET = ", s, re.M) for s in code):
        problems.append('no preset switch (a line `PRESET = "micro"  # or "tiny"; "small" on a GPU`)')
    tail = "\n".join(source(c) for c in cells[-4:] if c["cell_type"] == "markdown")
    for heading in ("Summary", "Exercises", "Going further"):
        if not re.search(rf"^#+ .*{heading}", tail, re.M):
            problems.append(f"the last cells need a '{heading}' heading")
    found = re.search(r"^#+ .*Exercises.*?$(.*?)(?=^#+ |\Z)", tail, re.M | re.S)
    if found:
        n = len(re.findall(r"^\d+\. ", found.group(1), re.M))
        if not 3 <= n <= 5:
            problems.append(f"the Exercises section should list 3-5 numbered exercises, found {n}")
    return problems


def plot_and_path_problems(nb: dict) -> list[str]:
    problems = []
    for i, cell in enumerate(nb["cells"]):
        src = source(cell)
        if re.search(r"(?<![\w.])/(home|Users|work|tmp|root)/", src):
            problems.append(f"cell {i} contains an absolute path; use paths relative to the repo")
        if cell["cell_type"] == "code" and re.search(r"\bplt\.(subplots|figure|plot|bar|imshow|hist|scatter)\(", src) \
                and "plt.show()" not in src:
            problems.append(f"cell {i} draws with pyplot but does not end with plt.show()")
    return problems


# ---------------------------------------------------------------- the tests

def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no .ipynb file"


def test_public_api_is_collected():
    api = public_api()
    for expected in ("MoE", "Router", "MAMoELM", "plot_routing", "routing_explorer", "preset"):
        assert expected in api, f"{expected} missing from the collected public API"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_are_stripped(path):
    nb = load(path)
    assert nb.get("nbformat") == 4, f"{path.name}: not an nbformat-4 notebook"
    problems = stripping_problems(nb)
    assert not problems, f"{path.name}: {'; '.join(problems)}. {STRIP_HOWTO}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_redefinition_of_the_package_api(path):
    problems = api_problems(load(path))
    assert not problems, (f"{path.name} redefines minimost's public API: {problems}. Give the teaching version "
                          "another name (my_router, naive_topk, ...) and assert that it matches the package.")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_structure(path):
    problems = structure_problems(load(path))
    assert not problems, f"{path.name}: {'; '.join(problems)} (docs/notebooks.md, notebook policy)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_plots_and_paths(path):
    problems = plot_and_path_problems(load(path))
    assert not problems, f"{path.name}: {'; '.join(problems)}"


def test_the_checks_catch_a_bad_notebook():
    """A notebook that breaks every rule is flagged by every check."""
    code_cell = {"cell_type": "code", "execution_count": 3, "metadata": {}, "source": [
        "import matplotlib.pyplot as plt\n", "class MoE: pass\n", "def routing_matrix(): pass\n",
        "plt.plot([1, 2])\n", "print('/home/me/x')\n"],
        "outputs": [{"output_type": "stream", "name": "stdout", "text": "x"}]}
    bad = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"widgets": {}}, "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": "no title"}, code_cell,
        {"cell_type": "markdown", "metadata": {}, "source": "## Summary\n## Exercises\n1. one\n"}]}
    assert len(stripping_problems(bad)) == 2
    assert [p.split(" defines ")[1].split(",")[0] for p in api_problems(bad)] == ["MoE", "routing_matrix"]
    structure = " ".join(structure_problems(bad))
    for fragment in ("title", "learning goals", "seed", "preset", "Going further", "found 1"):
        assert fragment in structure
    assert len(plot_and_path_problems(bad)) == 2
