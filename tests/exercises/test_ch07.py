"""Chapter 7 exercises (minimost/exercises/ch07.py) checked against minimost.wer, .evaluate, .ablate and .moe."""

import dataclasses

import pytest
import torch

from minimost.ablate import aggregate, compare
from minimost.config import AUDIO, TEXT, preset
from minimost.evaluate import pair_accuracy
from minimost.moe import ROUTING_VARIANTS, MoE, register_routing
from minimost.wer import wer_report


@pytest.fixture
def ex(ex_kind, load):
    return load(ex_kind, "ch07")


@pytest.mark.parametrize("refs,hyps", [
    (["the cat sleeps"], ["the cat sleeps"]),
    (["the cat sleeps", "a dog runs fast"], ["the bat sleeps", "dog runs very fast"]),
    (["Emma sent Sam the green bag."], [""]),
    (["hi"], ["oh no not again"]),                                   # insertions: WER above 1
    (["there are 3 birds!", "where is it?"], ["there are three birds", "where it is"]),
])
def test_word_error_rate_matches_wer_report(ex, refs, hyps):
    assert ex.word_error_rate(refs, hyps) == pytest.approx(wer_report(refs, hyps).wer, abs=1e-12)


def test_pair_accuracy_matches_evaluate(ex):
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        good = torch.randint(-5, 5, (17,), generator=gen).float().tolist()   # small ints: ties happen
        bad = torch.randint(-5, 5, (17,), generator=gen).float().tolist()
        assert ex.pair_accuracy_with_ties(good, bad) == pytest.approx(pair_accuracy(good, bad))
    assert ex.pair_accuracy_with_ties([1.0, 2.0], [1.0, 2.0]) == 0.5


@pytest.mark.parametrize("lower", [True, False])
def test_seed_verdict_matches_ablate_compare(ex, lower):
    metric = "asr_loss" if lower else "swuggy_acc"
    gen = torch.Generator().manual_seed(1)
    for trial in range(30):
        n = 1 + trial % 4
        arm = (torch.randn(n, generator=gen) * 0.1 + (trial % 3 - 1) * 0.15).tolist()
        base = (torch.randn(n, generator=gen) * 0.1).tolist()
        cells = [{"arm": "a", "metrics": {metric: v}} for v in arm] + [{"arm": "b", "metrics": {metric: v}} for v in base]
        want = compare(aggregate(cells), metric, "a", "b")
        assert ex.seed_verdict(arm, base, lower) == want, (arm, base)


@pytest.mark.parametrize("bias", [False, True])
def test_group_softmax_route_reproduces_mask_before_softmax(ex, bias):
    name = "exercise_ch07_group_softmax"
    register_routing(name, overwrite=True)(ex.group_softmax_route)
    try:
        torch.manual_seed(0)
        cfg = dataclasses.replace(preset("micro"), bias_balancing=bias, dispatch="dense")
        want_layer = MoE(dataclasses.replace(cfg, mask_mode="before_softmax")).eval()
        got_layer = MoE(dataclasses.replace(cfg, mask_mode="before_softmax", routing=name)).eval()
        got_layer.load_state_dict(want_layer.state_dict())
        if bias:
            for layer in (want_layer, got_layer):
                layer.router.expert_bias.copy_(torch.linspace(-0.2, 0.2, cfg.n_experts))
        x = torch.randn(2, 16, cfg.d_model)
        marks = torch.where(torch.rand(2, 16) < 0.5, TEXT, AUDIO)
        with torch.no_grad():
            want, s_want = want_layer(x, marks)
            got, s_got = got_layer(x, marks)
        assert torch.equal(s_got.indices_NK, s_want.indices_NK)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
        torch.testing.assert_close(s_got.balance_loss, s_want.balance_loss)
    finally:
        ROUTING_VARIANTS.pop(name, None)
