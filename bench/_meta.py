"""The first line of every committed results file: what ran, where, when (bench/make_table.py reads it).

The meta line also records the machine's load average (`os.getloadavg()`: 1, 5 and 15 minutes) when the
script started and when it wrote its results. The CPU machines are shared 2-core VMs: with a load above
the core count, absolute times are inflated; the ratios between arms measured in one run (interleaved)
are what to trust.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shlex
import sys

import torch

from minimost.check_env import describe_machine as machine


def loadavg() -> list[float] | None:
    """(1, 5, 15)-minute load averages, rounded; None where the OS has none (Windows)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


LOAD_AT_START = loadavg()  # captured when a bench script imports this module


def write_results(path: str, kind: str, rows: list[dict], notes: str = "", **extra) -> None:
    """Write a meta line then the rows as JSON lines (replacing the file: one run per file)."""
    meta = {"bench": "meta", "kind": kind, "command": "python " + shlex.join(sys.argv),
            "machine": machine(), "date": datetime.date.today().isoformat(), "torch": torch.__version__,
            "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "loadavg_start": LOAD_AT_START, "loadavg_end": loadavg(), "notes": notes, **extra}
    with open(path, "w") as f:
        for row in [meta, *rows]:
            f.write(json.dumps(row) + "\n")


def error_summary(err: BaseException) -> str:
    """The most informative line of an error (Dynamo wraps the real cause), at most 300 characters."""
    text = f"{type(err).__name__}: {err}"
    inner = re.search(r"(Expected[^'\"\n]*)", text)  # e.g. grouped_mm's dtype check, wrapped by Dynamo
    if inner:
        return inner.group(1)[:300]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for key in ("Expected", "not supported", "Error"):
        hit = next((ln for ln in lines if key in ln and "when making fake tensor call" not in ln), None)
        if hit:
            return hit[:300]
    return lines[0][:300] if lines else type(err).__name__
