"""Tests for minimost/checkpoint.py: atomic writes, keep-last-N, latest discovery, weights_only loading,
tied weights, RNG capture, and the errors for missing / corrupt checkpoints and config mismatches."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from minimost import checkpoint as ckpt


def weights(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(4, 3, generator=g), "b.bias": torch.randn(3, generator=g),
            "ids": torch.arange(5)}


def train_state(step: int) -> dict:
    return {"step": step, "optimizer": {"state": {"a.weight": {"exp_avg": torch.ones(4, 3), "step": torch.tensor(2.)}},
                                        "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.95), "params": ["a.weight"]}]},
            "sampler": {"generator": torch.Generator().get_state(), "pos": 7}, "rng": ckpt.capture_rng()}


class FakeTokenizer:
    def save(self, folder):
        folder.mkdir()
        (folder / "tokenizer.json").write_text("{}")


def test_round_trip_weights_only_and_tokenizer(tmp_path):
    path = ckpt.save_checkpoint(tmp_path, 5, weights(), train_state(5), {"model": {"d": 1}}, FakeTokenizer())
    assert path.name == "step_00000005"
    assert (path / "tokenizer" / "tokenizer.json").exists()
    state = torch.load(path / ckpt.STATE, weights_only=True)
    assert state["step"] == 5 and state["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.95)
    w, s, config = ckpt.load_checkpoint(tmp_path)                    # a checkpoints folder resolves to latest
    assert all(torch.equal(w[k], v) for k, v in weights().items())
    assert s["sampler"]["pos"] == 7 and config == {"model": {"d": 1}, "step": 5}


def test_tied_weights_stored_once(tmp_path):
    shared = torch.randn(6, 4)
    sd = {"embed.weight": shared, "lm_head.weight": shared, "norm.weight": torch.ones(4)}
    ckpt.save_weights(sd, tmp_path / "m.safetensors")
    from safetensors import safe_open
    with safe_open(str(tmp_path / "m.safetensors"), "pt") as f:
        assert sorted(f.keys()) == ["embed.weight", "norm.weight"]
    loaded = ckpt.load_weights(tmp_path / "m.safetensors")
    assert torch.equal(loaded["lm_head.weight"], shared) and loaded["lm_head.weight"] is loaded["embed.weight"]


def test_keep_last_and_latest(tmp_path):
    for step in (1, 2, 3, 10):
        ckpt.save_checkpoint(tmp_path, step, weights(step), train_state(step), {}, keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000003", "step_00000010"]
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000010"          # numeric, not by name or time
    assert ckpt.resolve_checkpoint(tmp_path).name == "step_00000010"
    ckpt.save_checkpoint(tmp_path, 10, weights(99), train_state(10), {}, keep_last=2)   # re-save a step
    assert torch.equal(ckpt.load_checkpoint(tmp_path)[0]["a.weight"], weights(99)["a.weight"])


def test_failure_mid_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    ckpt.save_checkpoint(tmp_path, 1, weights(1), train_state(1), {"x": 1})

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", broken_save)                     # weights written, state fails
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(tmp_path, 2, weights(2), train_state(2), {"x": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["step_00000001"]          # no half checkpoint, no temp
    w, s, config = ckpt.load_checkpoint(tmp_path)
    assert s["step"] == 1 and config["x"] == 1 and torch.equal(w["a.weight"], weights(1)["a.weight"])


def test_leftover_temp_folder_is_ignored_and_cleaned(tmp_path):
    ckpt.save_checkpoint(tmp_path, 1, weights(), train_state(1), {})
    stale = tmp_path / ".tmp-step_00000002-123"                                # a crash during an old save
    stale.mkdir()
    (stale / ckpt.WEIGHTS).write_bytes(b"partial")
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000001"
    ckpt.save_checkpoint(tmp_path, 2, weights(), train_state(2), {})
    assert not stale.exists()


def test_missing_and_corrupt_checkpoints_explain_themselves(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        ckpt.load_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint found"):
        ckpt.load_checkpoint(tmp_path / "empty")
    path = ckpt.save_checkpoint(tmp_path / "c", 1, weights(), train_state(1), {})
    data = (path / ckpt.WEIGHTS).read_bytes()
    (path / ckpt.WEIGHTS).write_bytes(data[: len(data) // 2])                  # truncated
    with pytest.raises(ckpt.CheckpointError, match="corrupt"):
        ckpt.load_checkpoint(path)
    path = ckpt.save_checkpoint(tmp_path / "d", 1, weights(), train_state(1), {})
    (path / ckpt.STATE).write_bytes(b"garbage")
    with pytest.raises(ckpt.CheckpointError, match="corrupt"):
        ckpt.load_checkpoint(path)
    (path / ckpt.STATE).unlink()
    with pytest.raises(ckpt.CheckpointError, match="weights only"):
        ckpt.resolve_checkpoint(path)


def test_config_mismatch_names_fields():
    ckpt.check_config_match({"a": 1, "t": (1, 2)}, {"a": 1, "t": [1, 2]}, "model")   # tuple == list
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.check_config_match({"lr": 1e-3, "steps": 10, "log_every": 1}, {"lr": 2e-3, "steps": 10,
                                "log_every": 5}, "train", allowed=("log_every",))
    assert "train.lr" in str(err.value) and "steps" not in str(err.value) and "log_every" not in str(err.value)


def test_rng_capture_restore(tmp_path):
    state = ckpt.capture_rng()
    torch.save(state, tmp_path / "rng.pt")
    state = torch.load(tmp_path / "rng.pt", weights_only=True)
    expected = (random.random(), np.random.rand(), torch.rand(2))
    random.random(), np.random.rand(), torch.rand(5)                          # move every stream on
    ckpt.restore_rng(state)
    again = (random.random(), np.random.rand(), torch.rand(2))
    assert expected[:2] == again[:2] and torch.equal(expected[2], again[2])
    assert json.dumps(state["numpy"]["kind"]) == '"MT19937"'
