"""Chapter 2 exercises (minimost/exercises/ch02.py) checked against minimost.moe.Router."""

import pytest
import torch

import minimost.exercises.solutions.ch02 as solutions
from minimost.config import AUDIO, SPECIAL, TEXT, ModelConfig
from minimost.moe import MoE

D, H, E, K = 32, 16, 8, 2
MARKS_BT = torch.tensor([[TEXT, TEXT, SPECIAL, AUDIO, AUDIO, AUDIO, SPECIAL, TEXT],
                         [TEXT, TEXT, TEXT, SPECIAL, TEXT, TEXT, AUDIO, AUDIO],
                         [TEXT, TEXT, TEXT, TEXT, TEXT, TEXT, TEXT, TEXT]])
VALID_BT = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 1],
                         [0, 0, 0, 1, 1, 1, 1, 1],
                         [0, 0, 0, 0, 0, 0, 0, 0]], dtype=torch.bool)  # left padding, one empty row


@pytest.fixture
def ex(ex_kind, load):
    return load(ex_kind, "ch02")


def make_moe(seed=0, **overrides) -> MoE:
    torch.manual_seed(seed)
    base = dict(d_model=D, expert_hidden=H, n_experts=E, top_k=K, init_std=0.3)
    return MoE(ModelConfig(**(base | overrides)))


def route(moe: MoE, seed=1):
    """The package's decision on a fixed mixed batch, plus the inputs an exercise needs."""
    x = torch.randn(*MARKS_BT.shape, D, generator=torch.Generator().manual_seed(seed))
    weights, indices, stats = moe.router(x, MARKS_BT, VALID_BT)
    logits = x.reshape(-1, D) @ moe.router.gate.weight.T
    return logits.detach(), weights, indices, stats


GROUPS = [None, ((0, 2, 4, 6), (1, 3, 5, 7))]  # MoST's index halves, and explicit interleaved groups


@pytest.mark.parametrize("groups", GROUPS)
@pytest.mark.parametrize("special", ["text", "audio", "all"])
def test_mamoe_mask(ex, groups, special):
    extra = {} if groups is None else dict(text_experts=groups[0], audio_experts=groups[1])
    moe = make_moe(special_token_route=special, **extra)
    text, audio = moe.cfg.expert_groups()
    logits, weights, indices, _ = route(moe)
    probs = torch.softmax(logits, dim=-1).requires_grad_()
    masked = ex.mamoe_mask(probs, MARKS_BT.reshape(-1), text, audio, special)
    allowed = moe.router.allowed_ME[MARKS_BT.reshape(-1)]
    assert torch.equal(masked[~allowed], torch.zeros_like(masked[~allowed]))
    assert torch.equal(masked[allowed], probs[allowed])
    torch.testing.assert_close(masked.gather(1, indices), weights)
    masked.sum().backward()
    assert torch.equal(probs.grad, allowed.float())


@pytest.mark.parametrize("mask_mode", ["after_softmax", "before_softmax"])
@pytest.mark.parametrize("renormalize", [False, True])
@pytest.mark.parametrize("groups", GROUPS)
@pytest.mark.parametrize("special", ["text", "all"])
def test_mamoe_route_matches_router(ex, mask_mode, renormalize, groups, special):
    extra = {} if groups is None else dict(text_experts=groups[0], audio_experts=groups[1])
    moe = make_moe(mask_mode=mask_mode, renormalize=renormalize, special_token_route=special, **extra)
    text, audio = moe.cfg.expert_groups()
    logits, weights, indices, _ = route(moe)
    my_w, my_i = ex.mamoe_route(logits, MARKS_BT.reshape(-1), text, audio, K, mask_mode, renormalize, special)
    assert torch.equal(my_i, indices)
    torch.testing.assert_close(my_w, weights, rtol=0, atol=1e-6)


def test_most_rule_weights_sum_below_one(ex):
    moe = make_moe()
    text, audio = moe.cfg.expert_groups()
    logits, *_ = route(moe)
    w, _ = ex.mamoe_route(logits, MARKS_BT.reshape(-1), text, audio, K)
    w_before, _ = ex.mamoe_route(logits, MARKS_BT.reshape(-1), text, audio, K, "before_softmax")
    assert (w.sum(-1) < 1).all()
    assert (w_before > w).all()  # renormalised within the group: every kept weight grows


@pytest.mark.parametrize("mask_mode", ["after_softmax", "before_softmax"])
def test_sequence_balance_loss_matches_router(ex, mask_mode):
    moe = make_moe(balance_loss="sequence", balance_alpha=0.01, mask_mode=mask_mode)
    text, audio = moe.cfg.expert_groups()
    logits, _, indices, stats = route(moe)
    marks = MARKS_BT.reshape(-1)
    if mask_mode == "after_softmax":
        probs = solutions.mamoe_mask(torch.softmax(logits, -1), marks, text, audio)
    else:
        allowed = moe.router.allowed_ME[marks]
        probs = torch.softmax(logits.masked_fill(~allowed, float("-inf")), -1)
    loss = ex.sequence_balance_loss(probs, indices, VALID_BT, E)
    torch.testing.assert_close(loss * 0.01, stats.balance_loss.detach(), rtol=1e-5, atol=1e-8)


def test_sequence_balance_loss_ignores_padding(ex):
    """Changing what sits at padded positions changes nothing."""
    moe = make_moe()
    text, audio = moe.cfg.expert_groups()
    logits, _, indices, _ = route(moe)
    probs = solutions.mamoe_mask(torch.softmax(logits, -1), MARKS_BT.reshape(-1), text, audio)
    pad = ~VALID_BT.reshape(-1)
    probs2, indices2 = probs.clone(), indices.clone()
    probs2[pad] = torch.rand(int(pad.sum()), E)
    indices2[pad] = 0
    torch.testing.assert_close(ex.sequence_balance_loss(probs, indices, VALID_BT, E),
                               ex.sequence_balance_loss(probs2, indices2, VALID_BT, E))


@pytest.mark.parametrize("modality_routing", [True, False])
def test_group_shares(ex, modality_routing):
    moe = make_moe(modality_routing=modality_routing)
    text, audio = moe.cfg.expert_groups()
    *_, stats = route(moe)
    shares = ex.group_shares(stats.tokens_per_expert_ME, text, audio)
    assert shares.shape == (3, 2)
    load = stats.tokens_per_expert_ME
    for m in (TEXT, AUDIO, SPECIAL):
        total = load[m].sum()
        expected = torch.stack([load[m, list(text)].sum(), load[m, list(audio)].sum()]) / total
        torch.testing.assert_close(shares[m], expected)
    if modality_routing:
        torch.testing.assert_close(shares[TEXT], torch.tensor([1.0, 0.0]))
        torch.testing.assert_close(shares[AUDIO], torch.tensor([0.0, 1.0]))


def test_group_shares_empty_mark_is_zero(ex):
    load = torch.zeros(3, E)
    load[TEXT, :2] = 3.0
    shares = ex.group_shares(load, tuple(range(4)), tuple(range(4, 8)))
    torch.testing.assert_close(shares, torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]))
