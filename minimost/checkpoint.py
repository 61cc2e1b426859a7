"""Checkpoints: write atomically, keep the last N, find the latest, load with clear errors.

One checkpoint is a folder `runs/<name>/checkpoints/step_00000100/` holding

    model.safetensors  the weights and persistent buffers (tied weights stored once, the alias in
                       the file's metadata), readable by any safetensors tool
    state.pt           everything else needed to continue exactly: optimizer and scheduler state,
                       the batch source's state, the RNG states (python, numpy, torch CPU and CUDA),
                       the step and token counters. Only tensors and plain Python values, so it
                       loads with `torch.load(..., weights_only=True)` (no pickled code runs)
    config.json        {"model": ModelConfig dict, "train": TrainConfig dict, "step": ..., ...}
    tokenizer/         the tokenizer files, when the caller passes a tokenizer with `save(dir)`

The folder is first written as `.tmp-step_...` and renamed when complete, so a crash mid-write
leaves the previous checkpoints untouched and never a half checkpoint under a `step_*` name.
This file knows nothing about models or torch.distributed: it receives plain state dicts.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

WEIGHTS, STATE, CONFIG, TOKENIZER = "model.safetensors", "state.pt", "config.json", "tokenizer"
_STEP_DIR = re.compile(r"^step_(\d+)$")

# TrainConfig fields that may change between a run and its resume without changing the result.
RESUMABLE_CHANGES = ("log_every", "eval_every", "ckpt_every", "keep_last", "compile",
                     "activation_checkpointing", "out_dir", "run_name")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupt, or does not match the current configuration."""


# ------------------------------------------------------------------------------ RNG state

def capture_rng() -> dict[str, Any]:
    """Every RNG the training loop may touch, as tensors and plain values (weights_only-safe)."""
    state: dict[str, Any] = {"python": random.getstate(), "torch_cpu": torch.get_rng_state()}
    try:
        import numpy as np
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = {"kind": str(kind), "keys": torch.from_numpy(keys.astype("int64")),
                          "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}
    except ImportError:
        pass
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch_cpu"])
    if "numpy" in state:
        import numpy as np
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype("uint32"), n["pos"], n["has_gauss"],
                             n["cached"]))
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_cuda"])


# ------------------------------------------------------------------------------ weights

def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write a text file so that readers see the old content or the new, never half of it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def save_weights(state_dict: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors refuses tensors that share memory (tied embedding / LM head): store each once."""
    seen: dict[tuple, str] = {}
    unique: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    for name, t in state_dict.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
        if t.numel() and key in seen:
            tied[name] = seen[key]
            continue
        seen[key] = name
        unique[name] = t.detach().contiguous().cpu()
    save_file(unique, str(path), metadata={"format": "pt", "tied": json.dumps(tied)})


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            tied = json.loads((f.metadata() or {}).get("tied", "{}"))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read the weights in {path}: {err}. The file is corrupt or was "
                              "not written by minimost; resume from an earlier checkpoint.") from err
    for alias, source in tied.items():
        tensors[alias] = tensors[source]
    return tensors


# ------------------------------------------------------------------------------ folders

def _step_dirs(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return sorted(found)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete `step_*` folder under root (a checkpoints folder), or None."""
    dirs = [p for _, p in _step_dirs(Path(root)) if (p / WEIGHTS).exists() and (p / STATE).exists()]
    return dirs[-1] if dirs else None


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a checkpoint folder, a checkpoints folder or a run folder; return one checkpoint folder."""
    path = Path(path)
    if (path / WEIGHTS).exists():
        if not (path / STATE).exists():
            raise CheckpointError(f"{path} has {WEIGHTS} but no {STATE}: it holds weights only and "
                                  "cannot resume a run (use it to initialise a new stage instead).")
        return path
    for root in (path, path / "checkpoints"):
        found = latest_checkpoint(root)
        if found is not None:
            return found
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: the path does not exist.")
    raise CheckpointError(f"no checkpoint found in {path}: expected a folder with {WEIGHTS} and {STATE}, "
                          "or a run/checkpoints folder containing step_* folders.")


def save_checkpoint(root: str | Path, step: int, model_state: dict[str, torch.Tensor],
                    train_state: dict[str, Any], config: dict[str, Any], tokenizer=None,
                    keep_last: int = 2) -> Path:
    """Write `root/step_<step>/` atomically (temp folder + rename), then prune to the last `keep_last`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-step_*"):  # left behind by a crash during an earlier save
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    try:
        tmp.mkdir()
        save_weights(model_state, tmp / WEIGHTS)
        torch.save(train_state, tmp / STATE)
        (tmp / CONFIG).write_text(json.dumps(config | {"step": step}, indent=2, sort_keys=True))
        if tokenizer is not None:
            tokenizer.save(tmp / TOKENIZER)
        for f in tmp.rglob("*"):  # data on disk before the rename makes it visible
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        old = None
        if final.exists():  # re-saving a step (e.g. after a resume): swap, then delete the old one
            old = root / f".old-{final.name}-{os.getpid()}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for _, p in _step_dirs(root)[:-keep_last]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(model state dict, training state, config dict) of a checkpoint folder (or its run folder)."""
    folder = resolve_checkpoint(path)
    weights = load_weights(folder / WEIGHTS)
    try:
        state = torch.load(folder / STATE, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read {folder / STATE}: {err}. The file is corrupt or incomplete; "
                              "resume from an earlier checkpoint.") from err
    try:
        config = json.loads((folder / CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {folder / CONFIG}: {err}.") from err
    return weights, state, config


def check_config_match(saved: dict[str, Any], current: dict[str, Any], section: str,
                       allowed: tuple[str, ...] = ()) -> None:
    """Raise a CheckpointError naming every field of `section` whose value differs (except `allowed`)."""
    saved = json.loads(json.dumps(saved))  # tuples vs lists: compare as JSON would store them
    current = json.loads(json.dumps(current))
    # A field the checkpoint does not have was added to the config later; its default keeps the old
    # behaviour (the rule for adding fields), so it is not a difference.
    diffs = [f"{section}.{k}: checkpoint {saved.get(k, '<absent>')!r} != now {current.get(k, '<absent>')!r}"
             for k in sorted(set(saved) | set(current))
             if k not in allowed and k in saved and saved.get(k) != current.get(k)]
    if diffs:
        raise CheckpointError("the checkpoint was made with a different configuration, so the resumed run "
                              "would not continue the same training:\n  " + "\n  ".join(diffs)
                              + "\nResume with the checkpoint's values (see its config.json) or start a "
                              "new run.")
