"""Chapter 4 exercises (minimost/exercises/ch04.py) checked against minimost.train and minimost.generate."""

import pytest
import torch

from minimost.config import TEXT, TrainConfig, preset
from minimost.generate import generate
from minimost.model import MAMoELM
from minimost.pipeline import stage_model_config
from minimost.train import expert_load_metrics, lr_at, row_losses


@pytest.fixture
def ex(ex_kind, load):
    return load(ex_kind, "ch04")


def test_next_token_loss_matches_trainer(ex):
    torch.manual_seed(0)
    B, T, V = 3, 9, 17
    logits = torch.randn(B, T, V, requires_grad=True)
    labels = torch.randint(0, V, (B, T))
    labels[0, :4] = -100                                   # a prompt that is not supervised
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[2, 6:] = False                                   # right padding
    ce_B, count_B = row_losses(logits, labels, valid)
    got = ex.next_token_loss(logits, labels, valid)
    torch.testing.assert_close(got, ce_B.sum() / count_B.sum(), rtol=1e-6, atol=1e-6)
    got.backward()
    assert logits.grad[:, -1].abs().sum() == 0           # the last position predicts nothing


@pytest.mark.parametrize("steps,warmup,ratio", [(20, 2, 0.1), (100, 10, 0.0), (7, 0, 0.5)])
def test_lr_schedule_matches_trainer(ex, steps, warmup, ratio):
    cfg = TrainConfig(steps=steps, warmup_steps=warmup, lr=3e-3, min_lr_ratio=ratio)
    for step in range(steps):
        assert ex.lr_schedule(step, cfg) == pytest.approx(lr_at(step, cfg), rel=1e-12), step


def test_greedy_continue_matches_generate(ex):
    torch.manual_seed(0)
    cfg = stage_model_config(preset("micro"), "pretrain")
    model = MAMoELM(cfg).eval()
    model.set_modality_map(torch.full((cfg.vocab_size,), TEXT, dtype=torch.long))
    prompt = torch.randint(3, cfg.vocab_size, (1, 5))
    want = generate(model, prompt, max_new_tokens=8, temperature=0.0)
    got = ex.greedy_continue(model, prompt, 8)
    assert got.shape == (1, 13) and torch.equal(got, want)


def test_load_entropy_matches_trainer_metrics(ex):
    torch.manual_seed(0)
    L, M, E = 3, 3, 8
    load_LME = torch.zeros(L, M, E)
    load_LME[:, TEXT] = torch.randint(0, 50, (L, E)).float()
    load_LME[1, TEXT] = torch.tensor([100.0, 0, 0, 0, 0, 0, 0, 0])   # a collapsed layer
    allowed_ME = torch.ones(M, E, dtype=torch.bool)
    metrics = expert_load_metrics(load_LME, allowed_ME)
    frac_LE = torch.tensor(metrics["load/text/frac"])
    got = ex.load_entropy(frac_LE)
    assert got.shape == (L,)
    assert got[1].item() == pytest.approx(0.0, abs=1e-6)
    assert got.mean().item() == pytest.approx(metrics["load/text/entropy"], abs=1e-4)
    assert ex.load_entropy(torch.full((2, E), 1.0 / E)) == pytest.approx(torch.ones(2))
