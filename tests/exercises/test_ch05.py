"""Chapter 5 exercises (minimost/exercises/ch05.py) checked against minimost.moe, .transform and .continuous."""

import dataclasses

import pytest
import torch

from minimost.config import TEXT, preset
from minimost.continuous import splice
from minimost.model import MAMoELM
from minimost.moe import MoE
from minimost.pipeline import stage_model_config
from minimost.tokenizer import Tokenizer
from minimost.transform import most_config, most_transform

TEXTS = ["the red fox sees the blue bird", "a small dog runs to the old house", "where is the green cup ?"] * 20


@pytest.fixture
def ex(ex_kind, load):
    return load(ex_kind, "ch05")


@pytest.mark.parametrize("seed", [0, 1])
def test_unchanged_by_transform_matches_a_moe_layer(ex, seed):
    torch.manual_seed(seed)
    cfg0 = dataclasses.replace(stage_model_config(preset("micro"), "pretrain"), dispatch="dense")
    vanilla, mamoe = MoE(cfg0).eval(), MoE(most_config(cfg0)).eval()
    mamoe.load_state_dict(vanilla.state_dict())
    x_BTD = torch.randn(3, 20, cfg0.d_model)
    marks_BT = torch.full((3, 20), TEXT)
    with torch.no_grad():
        y0, stats = vanilla(x_BTD, marks_BT)
        y1, _ = mamoe(x_BTD, marks_BT)
    keep_N = ex.unchanged_by_transform(stats.indices_NK, mamoe.cfg.expert_groups()[0])
    assert keep_N.shape == (60,) and keep_N.dtype == torch.bool
    assert keep_N.any() and (~keep_N).any()
    diff_N = (y0 - y1).abs().amax(-1).flatten()
    assert diff_N[keep_N].max() == 0                         # dense dispatch: bitwise equal
    assert (diff_N[~keep_N] > 1e-6).all()


def test_copy_text_experts_matches_most_transform(ex):
    tok = Tokenizer.train(TEXTS, vocab_size=256, unit_budget=64).with_units(64)
    torch.manual_seed(0)
    s0 = MAMoELM(stage_model_config(preset("micro"), "pretrain"))
    want = most_transform(s0, tok, expert_init="copy_text")
    text, audio = want.cfg.expert_groups()
    for block, before in zip(want.blocks, s0.blocks):
        if not block.is_moe:
            continue
        for name in ("w_gate", "w_up", "w_down"):
            w = getattr(before.ffn.experts, name).detach()
            original = w.clone()
            got = ex.copy_text_experts(w, text, audio)
            assert torch.equal(got, getattr(block.ffn.experts, name)), name
            assert torch.equal(w, original)                  # the input is not modified
        gate = before.ffn.router.gate.weight.detach()
        assert torch.equal(ex.copy_text_experts(gate, text, audio), block.ffn.router.gate.weight)


def test_splice_input_spans_matches_continuous_splice(ex):
    boa, eoa, N = 3, 4, -100
    #        bos task user boa u  u  u  eoa asst  t   t  eos | a TTS answer: boa u u eoa supervised
    ids = [1, 9, 5, boa, 20, 21, 22, eoa, 6, 30, 31, 2, boa, 23, 24, eoa, 2]
    labels = [N] * 9 + [30, 31, 2] + [boa, 23, 24, eoa, 2]
    for n_frames in ([5], [1], [12]):
        assert ex.splice_input_spans(ids, labels, n_frames, boa, eoa) == splice(ids, labels, n_frames, boa, eoa)
    two = [1, boa, 20, eoa, 7, boa, 21, 22, eoa, 6, 30, 2]
    two_labels = [N] * 10 + [30, 2]
    got = ex.splice_input_spans(two, two_labels, [3, 2], boa, eoa)
    assert got == splice(two, two_labels, [3, 2], boa, eoa)
    assert sum(got[2]) == 5 and len(got[0]) == len(got[1]) == len(got[2])
