"""What the three trained speech artefacts (units, vocoder, judge) share: atomic saving and batching.

- `write_artefact`: one folder of a safetensors file + a JSON file, replaced all at once (temp folder,
  then rename), so a reader never sees weights from one training and metadata from another.
- `hash_tensors`: feed named tensors into a hash (the artefacts' ids name their weights);
- `duration_batches`: length-sorted batches of about N seconds of audio, in random order.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch


def write_artefact(directory: str | os.PathLike, tensors_name: str, tensors: dict[str, torch.Tensor],
                   json_name: str, json_text: str, tensor_metadata: dict[str, str] | None = None) -> Path:
    """Write `tensors_name` (safetensors) and `json_name` into `directory`, atomically; returns it."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(tensors, str(tmp / tensors_name), metadata=tensor_metadata)
    (tmp / json_name).write_text(json_text)
    old = directory.with_name(f".{directory.name}.{os.getpid()}.old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)            # both files appear together
    shutil.rmtree(old, ignore_errors=True)
    return directory


def hash_tensors(h, tensors: dict[str, torch.Tensor]) -> None:
    """Update the hashlib object `h` with every tensor of `tensors` (name, dtype, shape, bytes), by name."""
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())


def duration_batches(durations: Sequence[float], seconds: float, rng: random.Random) -> list[list[int]]:
    """Indices in length-sorted batches of about `seconds` of audio each (little padding), in random order."""
    order = sorted(range(len(durations)), key=lambda i: (durations[i], rng.random()))
    batches, cur, total = [], [], 0.0
    for i in order:
        if cur and total + durations[i] > seconds:
            batches.append(cur)
            cur, total = [], 0.0
        cur.append(i)
        total += durations[i]
    if cur:
        batches.append(cur)
    rng.shuffle(batches)
    return batches
