"""Chapter 0 exercises (minimost/exercises/ch00.py) checked against minimost's own run records and arithmetic."""

import dataclasses
import json

import pytest
import torch

from minimost.config import TrainConfig, preset
from minimost.model import MAMoELM
from minimost.pipeline import _last_eval
from minimost.train import run_training


@pytest.fixture
def ex(ex_kind, load):
    return load(ex_kind, "ch00")


def test_read_log_on_a_handmade_log(ex, tmp_path):
    lines = [{"step": 5, "loss": 5.1, "lm_loss": 5.0}, {"step": 10, "loss": 4.6, "lm_loss": 4.5},
             {"step": 10, "eval/valid_text_loss": 4.4, "eval/valid_text_ppl": 81.5},
             {"step": 20, "loss": 4.2, "lm_loss": 4.1},
             {"step": 20, "eval/valid_text_loss": 4.3, "eval/valid_text_ppl": 73.7}]
    path = tmp_path / "log.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n\n")
    train, evals = ex.read_log(path)
    assert [r["step"] for r in train] == [5, 10, 20] and train[1]["lm_loss"] == 4.5
    assert evals == [{"step": 10, "valid_text_loss": 4.4, "valid_text_ppl": 81.5},
                     {"step": 20, "valid_text_loss": 4.3, "valid_text_ppl": 73.7}]
    assert {k: v for k, v in evals[-1].items() if k != "step"} == _last_eval(tmp_path)


def test_read_log_on_a_real_run(ex, tmp_path):
    torch.set_num_threads(1)
    cfg = TrainConfig(steps=4, batch_size=2, seq_len=32, warmup_steps=1, log_every=2, eval_every=2, ckpt_every=4,
                      out_dir=str(tmp_path), run_name="run")
    run_training(preset("micro"), cfg, preset="micro", eval_fn=lambda model, step: {"valid_text_loss": step / 10},
                 progress=False)
    train, evals = ex.read_log(tmp_path / "run" / "log.jsonl")
    assert [r["step"] for r in train] == [2, 4] and all("load/text/frac" in r for r in train)
    assert [r["step"] for r in evals] == [2, 4]
    assert {k: v for k, v in evals[-1].items() if k != "step"} == _last_eval(tmp_path / "run")


@pytest.mark.parametrize("name", ["micro", "tiny"])
def test_routed_expert_params_match_the_model(ex, name):
    cfg = preset(name)
    with torch.device("meta"):
        model = MAMoELM(cfg)
    counted = sum(p.numel() for n, p in model.named_parameters() if ".experts." in f".{n}")
    assert counted > 0
    assert ex.routed_expert_params(cfg) == counted


def test_routed_expert_params_skip_dense_layers(ex):
    cfg = dataclasses.replace(preset("tiny"), first_k_dense=1)
    assert ex.routed_expert_params(cfg) == 3 * cfg.n_experts * 3 * cfg.d_model * cfg.expert_hidden


@pytest.mark.parametrize("name", ["micro", "tiny", "small", "most"])
def test_active_params_match_the_config(ex, name):
    cfg = preset(name)
    got = ex.active_params(cfg)
    assert isinstance(got, int) and got == cfg.num_active_params()
    assert ex.active_params(dataclasses.replace(cfg, top_k=1)) < got
