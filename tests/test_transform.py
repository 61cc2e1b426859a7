"""The MoST transformation: ids and weights carried over, groups, initialisation options, exact text equality."""

import dataclasses

import pytest
import torch

from minimost.config import AUDIO, SPECIAL, TEXT, ConfigError, preset
from minimost.data.batching import collate
from minimost.model import MAMoELM
from minimost.pipeline import stage_model_config
from minimost.tokenizer import Tokenizer
from minimost.transform import most_transform

TEXTS = ["the red fox sees the blue bird", "a small dog runs to the old house", "where is the green cup ?"] * 20


@pytest.fixture(scope="module")
def tokenizers():
    text_tok = Tokenizer.train(TEXTS, vocab_size=256, unit_budget=64)
    return text_tok, text_tok.with_units(64)


def stage0_model(vocab_size=256, seed=0):
    torch.manual_seed(seed)
    return MAMoELM(stage_model_config(dataclasses.replace(preset("micro"), vocab_size=vocab_size), "pretrain"))


def text_batch(tok):
    rows = [tok.encode_text(t) for t in TEXTS[:3]]
    return collate([{"input_ids": r, "labels": r} for r in rows], tok.pad_id)


def test_transform_switches_mamoe_on_and_keeps_weights(tokenizers):
    _, unit_tok = tokenizers
    s0 = stage0_model()
    new = most_transform(s0, unit_tok)
    assert new.cfg.modality_routing and not s0.cfg.modality_routing
    assert new.cfg.expert_groups() == ((0, 1, 2, 3), (4, 5, 6, 7))
    for name, t in s0.state_dict().items():
        if name != "token_modality":
            assert torch.equal(new.state_dict()[name], t), name
    marks = new.token_modality
    assert (marks[unit_tok.unit_start:unit_tok.vocab_size] == AUDIO).all()
    assert (marks[unit_tok.text_start:unit_tok.text_stop] == TEXT).all()
    assert (marks[unit_tok.vocab_size:] == SPECIAL).all()


@pytest.mark.parametrize("dispatch", ["dense", "grouped"])
def test_text_logits_unchanged_exactly_where_stage0_routing_stayed_in_the_text_group(tokenizers, dispatch):
    """MoST's rule keeps a text token's output exactly when its stage-0 top-k lay in the text group.

    With one layer, position t's MoE output depends only on its own hidden state (attention comes
    before the MoE and is unchanged), so the statement can be checked position by position. The dense
    dispatch computes the same shapes in both models, so equality is bitwise; the grouped dispatch
    feeds each expert a different number of rows in the two models (matmul blocking differs), so
    equality holds to float rounding.
    """
    text_tok, unit_tok = tokenizers
    torch.manual_seed(0)
    cfg = dataclasses.replace(preset("micro"), vocab_size=256, n_layers=1, dispatch=dispatch)
    s0 = MAMoELM(stage_model_config(cfg, "pretrain"))
    batch = text_batch(text_tok)
    new = most_transform(s0, unit_tok)
    with torch.no_grad():
        out = s0(batch["input_ids"], attention_mask_BT=batch["attention_mask"])
        after = new(batch["input_ids"], attention_mask_BT=batch["attention_mask"]).logits
    B, T = batch["input_ids"].shape
    in_group = (out.router_stats[0].indices_NK < 4).all(dim=1).view(B, T)        # (B, T)
    valid = batch["attention_mask"]
    assert (in_group & valid).any() and (~in_group & valid).any()              # both cases occur
    tolerance = 0.0 if dispatch == "dense" else 1e-6
    assert (out.logits[in_group] - after[in_group]).abs().max() <= tolerance
    differs = (out.logits - after).abs().amax(-1) > 1e-4                        # (B, T)
    assert differs[~in_group & valid].all()


def test_text_logits_change_when_stage0_used_the_second_half(tokenizers):
    text_tok, unit_tok = tokenizers
    s0 = stage0_model()
    batch = text_batch(text_tok)
    out = s0(batch["input_ids"], attention_mask_BT=batch["attention_mask"])
    assert any(s.indices_NK.ge(4).any() for s in out.router_stats)  # stage 0 really used experts 4..7
    new = most_transform(s0, unit_tok)
    with torch.no_grad():
        after = new(batch["input_ids"], attention_mask_BT=batch["attention_mask"]).logits
    assert not torch.allclose(out.logits, after)


def test_new_token_and_expert_init_options(tokenizers):
    text_tok, unit_tok = tokenizers
    s0 = stage0_model()
    start = unit_tok.unit_start
    mean = most_transform(s0, unit_tok, new_token_init="mean")
    text_mean = s0.embed.weight[text_tok.text_start:text_tok.text_stop].mean(0)
    assert torch.allclose(mean.embed.weight[start], text_mean, atol=0.01)
    normal = most_transform(s0, unit_tok, new_token_init="normal", seed=1)
    assert not torch.equal(normal.embed.weight[start:], s0.embed.weight[start:])
    assert torch.equal(normal.embed.weight[:start], s0.embed.weight[:start])
    copied = most_transform(s0, unit_tok, expert_init="copy_text")
    for block in copied.blocks:
        e = block.ffn.experts
        assert torch.equal(e.w_up[4:], e.w_up[:4]) and torch.equal(e.w_down[4:], e.w_down[:4])
        assert torch.equal(block.ffn.router.gate.weight[4:], block.ffn.router.gate.weight[:4])


def test_vocabulary_grows_when_the_tokenizer_needs_more_rows():
    text_tok = Tokenizer.train(TEXTS, vocab_size=256, unit_budget=64)
    s0 = stage0_model(vocab_size=text_tok.vocab_size + 8)
    new = most_transform(s0, text_tok.with_units(64))
    assert new.cfg.vocab_size == text_tok.vocab_size + 64
    assert torch.equal(new.embed.weight[:s0.cfg.vocab_size], s0.embed.weight)


def test_bad_options_are_refused(tokenizers):
    text_tok, unit_tok = tokenizers
    with pytest.raises(ConfigError, match="with_units"):
        most_transform(stage0_model(), text_tok)
    with pytest.raises(ConfigError, match="new_token_init"):
        most_transform(stage0_model(), unit_tok, new_token_init="zeros")
    with pytest.raises(ConfigError, match="same size"):
        most_transform(stage0_model(), unit_tok, expert_init="copy_text", text_experts=(0, 1, 2),
                       audio_experts=(3, 4, 5, 6, 7))
