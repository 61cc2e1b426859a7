"""The first line of every committed results file: what ran, where, when (bench/make_table.py reads it)."""

from __future__ import annotations

import datetime
import json
import platform
import shlex
import sys

import torch

from minimost.check_env import describe_machine as machine


def write_results(path: str, kind: str, rows: list[dict], notes: str = "") -> None:
    """Write a meta line then the rows as JSON lines (replacing the file: one run per file)."""
    meta = {"bench": "meta", "kind": kind, "command": "python " + shlex.join(sys.argv),
            "machine": machine(), "date": datetime.date.today().isoformat(), "torch": torch.__version__,
            "python": platform.python_version(), "notes": notes}
    with open(path, "w") as f:
        for row in [meta, *rows]:
            f.write(json.dumps(row) + "\n")
