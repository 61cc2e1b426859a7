"""The first line of every committed results file: what ran, where, when (bench/make_table.py reads it)."""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import sys

import torch


def machine() -> str:
    """A short description of the machine: GPU name, or CPU model and the torch thread count."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def write_results(path: str, kind: str, rows: list[dict], notes: str = "") -> None:
    """Write a meta line then the rows as JSON lines (replacing the file: one run per file)."""
    meta = {"bench": "meta", "kind": kind, "command": "python " + shlex.join(sys.argv),
            "machine": machine(), "date": datetime.date.today().isoformat(), "torch": torch.__version__,
            "python": platform.python_version(), "notes": notes}
    with open(path, "w") as f:
        for row in [meta, *rows]:
            f.write(json.dumps(row) + "\n")
