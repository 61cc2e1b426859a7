"""Tests for minimost/moe.py: the MoST routing rule, every routing option, the three dispatches, losses.

CPU, tiny shapes (d_model 32, 8 experts, top-2). The MoST rule is checked against an independent
per-token implementation written here from most-reference.md §2.4.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from minimost.config import AUDIO, SPECIAL, TEXT, ModelConfig
from minimost.moe import MoE, RouterStats, SwiGLU

D, H, E, K = 32, 16, 8, 2


def make_cfg(**overrides) -> ModelConfig:
    base = dict(d_model=D, expert_hidden=H, n_experts=E, top_k=K, n_shared_experts=1, init_std=0.1)
    return ModelConfig(**(base | overrides))


def make_moe(seed: int = 0, **overrides) -> MoE:
    torch.manual_seed(seed)
    return MoE(make_cfg(**overrides))


def mixed_batch(seed: int = 0):
    """3 sequences of 8: text, audio, special, left padding, and one sequence that is all padding."""
    g = torch.Generator().manual_seed(seed)
    x_BTD = torch.randn(3, 8, D, generator=g)
    marks_BT = torch.tensor([[0, 0, 2, 1, 1, 1, 2, 0],
                             [0, 0, 0, 2, 0, 0, 1, 1],
                             [0, 0, 0, 0, 0, 0, 0, 0]])
    valid_BT = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 1],
                             [0, 0, 0, 1, 1, 1, 1, 1],
                             [0, 0, 0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    return x_BTD, marks_BT, valid_BT


def group_of(cfg: ModelConfig, mark: int) -> set[int]:
    text, audio = cfg.expert_groups()
    route = {TEXT: "text", AUDIO: "audio", SPECIAL: cfg.special_token_route}[mark]
    return {"text": set(text), "audio": set(audio), "all": set(range(cfg.n_experts))}[route]


def probs_of(moe: MoE, x_BTD) -> torch.Tensor:
    return torch.softmax(x_BTD.reshape(-1, D).float() @ moe.router.gate.weight.float().T, dim=-1)


# ------------------------------------------------------------------ the MoST rule, exactly

def most_reference(moe: MoE, x_BTD, marks_BT, valid_BT):
    """MoST's MAMoEGate written per token, straight from most-reference.md §2.4 (plus minimost's fixes:
    SPECIAL uses the text group, padding is excluded from the balance loss)."""
    cfg = moe.cfg
    B, T, _ = x_BTD.shape
    probs = probs_of(moe, x_BTD).detach()                          # fp32 softmax over ALL experts
    weights, indices = [], []
    for n, mark in enumerate(marks_BT.reshape(-1).tolist()):
        keep = torch.zeros(E)
        keep[sorted(group_of(cfg, mark))] = 1.0                    # zero the other group's probabilities
        w, i = torch.topk(probs[n] * keep, K)                       # top-k of the masked probabilities
        weights.append(w * cfg.routed_scaling_factor)               # raw global probs, not renormalised
        indices.append(i)
    weights, indices = torch.stack(weights), torch.stack(indices)
    per_seq = []
    for b in range(B):
        rows = [b * T + t for t in range(T) if valid_BT[b, t]]
        if not rows:
            continue
        f = [0.0] * E
        P = [0.0] * E
        for n in rows:
            for i in indices[n].tolist():
                f[i] += E / (K * len(rows))
            keep = torch.zeros(E)
            keep[sorted(group_of(cfg, int(marks_BT.reshape(-1)[n])))] = 1.0
            for i in range(E):
                P[i] += float(probs[n, i] * keep[i]) / len(rows)
        per_seq.append(sum(fi * pi for fi, pi in zip(f, P)))
    return weights, indices, cfg.balance_alpha * sum(per_seq) / len(per_seq)


@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_most_rule_matches_reference(scale):
    moe = make_moe(routed_scaling_factor=scale)
    x, marks, valid = mixed_batch()
    weights, indices, stats = moe.router(x, marks, valid)
    ref_w, ref_i, ref_loss = most_reference(moe, x, marks, valid)
    assert torch.equal(indices, ref_i)
    assert torch.equal(weights, ref_w)
    assert weights.dtype == torch.float32
    assert stats.balance_loss.item() == pytest.approx(ref_loss, rel=1e-6)
    assert stats.dropped == 0 and isinstance(stats, RouterStats)


def test_router_runs_in_fp32_under_bf16():
    x, marks, valid = mixed_batch()
    moe = make_moe().to(torch.bfloat16)
    weights, idx, stats = moe.router(x.bfloat16(), marks, valid)
    assert weights.dtype == torch.float32 and stats.balance_loss.dtype == torch.float32
    # the logits are an fp32 product of the bf16 values, not a bf16 matmul
    torch.testing.assert_close(weights, probs_of(moe, x.bfloat16()).gather(1, idx), rtol=1e-6, atol=0)
    # and bf16 autocast does not lower them either
    moe32 = make_moe()
    w32, _, _ = moe32.router(x, marks, valid)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        w_auto, _, _ = moe32.router(x, marks, valid)
    assert torch.equal(w_auto, w32)


# ------------------------------------------------------------------ each routing option

def test_mask_before_vs_after_softmax():
    x, marks, valid = mixed_batch()
    after = make_moe(mask_mode="after_softmax")
    before = make_moe(mask_mode="before_softmax")  # same seed: same weights
    w_a, i_a, _ = after.router(x, marks, valid)
    w_b, i_b, _ = before.router(x, marks, valid)
    # The order inside a group is the same either way, so the same experts are picked...
    assert torch.equal(i_a, i_b)
    # ...but "before" renormalises within the group: w_before = w_after / (probability mass of the group).
    probs = probs_of(after, x)
    mass = torch.stack([probs[n, sorted(group_of(after.cfg, m))].sum()
                        for n, m in enumerate(marks.reshape(-1).tolist())])
    torch.testing.assert_close(w_b, w_a / mass[:, None])
    assert (w_b > w_a).all()


def test_renormalize_sums_to_one():
    moe = make_moe(renormalize=True, routed_scaling_factor=1.5)
    x, marks, valid = mixed_batch()
    w, _, _ = moe.router(x, marks, valid)
    torch.testing.assert_close(w.sum(-1), torch.full((w.shape[0],), 1.5))
    raw, _, _ = make_moe(renormalize=False).router(x, marks, valid)
    assert (raw.sum(-1) < 1).all()


def test_explicit_groups():
    moe = make_moe(text_experts=(0, 2, 4, 6), audio_experts=(1, 3, 5, 7))
    x, marks, valid = mixed_batch()
    _, idx, _ = moe.router(x, marks, valid)
    marks_N = marks.reshape(-1)
    assert (idx[marks_N == TEXT] % 2 == 0).all()
    assert (idx[marks_N == AUDIO] % 2 == 1).all()
    assert (idx[marks_N == SPECIAL] % 2 == 0).all()  # special_token_route="text"


def test_modality_routing_off_is_plain_topk():
    moe = make_moe(modality_routing=False)
    x, marks, valid = mixed_batch()
    w, idx, _ = moe.router(x, marks, valid)
    ref_w, ref_i = torch.topk(probs_of(moe, x), K)
    assert torch.equal(idx, ref_i) and torch.equal(w, ref_w)
    # the modality-aware router on the same weights keeps text tokens away from audio experts
    _, idx_mamoe, _ = make_moe(modality_routing=True).router(x, marks, valid)
    assert not torch.equal(idx, idx_mamoe)


@pytest.mark.parametrize("route", ["text", "audio", "all"])
def test_special_token_route(route):
    moe = make_moe(special_token_route=route)
    x = torch.randn(2, 16, D)
    marks = torch.full((2, 16), SPECIAL)
    w, idx, _ = moe.router(x, marks, torch.ones(2, 16, dtype=torch.bool))
    assert set(idx.unique().tolist()) <= group_of(moe.cfg, SPECIAL)
    assert (w > 0).all()  # never MoST's "no expert" (zero weights), most-reference.md §2.7
    if route == "all":
        torch.testing.assert_close(w, torch.topk(probs_of(moe, x), K).values)


@pytest.mark.parametrize("n_shared", [0, 1, 2])
def test_shared_experts(n_shared):
    moe = make_moe(n_shared_experts=n_shared)
    x, marks, valid = mixed_batch()
    if n_shared == 0:
        assert moe.shared is None
        return
    assert isinstance(moe.shared, SwiGLU)
    assert moe.shared.gate.weight.shape == (n_shared * H, D)
    assert moe.shared.down.weight.shape == (D, n_shared * H)
    y, _ = moe(x, marks, valid)
    shared, moe.shared = moe.shared, None
    y_routed, _ = moe(x, marks, valid)
    # every token gets the shared output with weight 1, whatever its modality
    torch.testing.assert_close(y - y_routed, shared(x))


# ------------------------------------------------------------------ losses, by hand

def test_balance_loss_values_by_hand():
    """f·P written with one_hot over the routing the router chose, on two sequences (one left-padded)."""
    x, marks, valid = mixed_batch()
    for kind in ("none", "global", "sequence"):
        moe = make_moe(balance_loss=kind, balance_alpha=0.5)
        _, idx, stats = moe.router(x[:2], marks[:2], valid[:2])
        if kind == "none":
            assert stats.balance_loss.item() == 0.0
            continue
        probs = probs_of(moe, x[:2]).view(2, 8, E)
        allowed = moe.router.allowed_ME[marks[:2]]                   # (2, 8, E)
        probs = probs * allowed                                      # MoST: masked probabilities
        onehot = torch.nn.functional.one_hot(idx.view(2, 8, K), E).sum(2).float()  # (2, 8, E)
        v = valid[:2].float()[:, :, None]
        if kind == "sequence":
            n = v.sum(1)                                             # (2, 1)
            f = E / K * (onehot * v).sum(1) / n
            P = (probs * v).sum(1) / n
            expected = 0.5 * (f * P).sum(1).mean()
        else:
            n = v.sum()
            f = E / K * (onehot * v).sum((0, 1)) / n
            P = (probs * v).sum((0, 1)) / n
            expected = 0.5 * (f * P).sum()
        torch.testing.assert_close(stats.balance_loss, expected)


@pytest.mark.parametrize("top_k", [1, 2, 4])
@pytest.mark.parametrize("kind", ["global", "sequence"])
def test_balance_loss_scale_does_not_depend_on_top_k(top_k, kind):
    # With modality routing on, uniform probabilities give Σ_groups (share of tokens)², so the scale
    # depends on the text/audio mix (most-reference.md §2.4 step 7); this checks the top-k part only.
    moe = make_moe(top_k=top_k, balance_loss=kind, modality_routing=False)
    torch.nn.init.zeros_(moe.router.gate.weight)               # uniform probabilities -> Σ f·P = 1
    x, marks, valid = mixed_batch()
    _, _, stats = moe.router(x, marks, valid)
    assert stats.balance_loss.item() == pytest.approx(moe.cfg.balance_alpha, rel=1e-6)


def test_empty_sequence_is_ignored_not_nan():
    moe = make_moe()
    x, marks, valid = mixed_batch()                            # sequence 2 is all padding
    _, _, with_empty = moe.router(x, marks, valid)
    _, _, without = moe.router(x[:2], marks[:2], valid[:2])
    assert torch.isfinite(with_empty.balance_loss)
    torch.testing.assert_close(with_empty.balance_loss, without.balance_loss)
    _, _, all_pad = moe.router(x, marks, torch.zeros_like(valid))
    assert all_pad.balance_loss.item() == 0.0


def test_z_loss_by_hand():
    moe = make_moe(z_loss_coef=0.01)
    x, marks, valid = mixed_batch()
    _, _, stats = moe.router(x, marks, valid)
    logits = x.reshape(-1, D) @ moe.router.gate.weight.T
    lse = torch.logsumexp(logits, -1)[valid.reshape(-1)]
    torch.testing.assert_close(stats.z_loss, 0.01 * (lse ** 2).mean())
    assert make_moe(z_loss_coef=0.0).router(x, marks, valid)[2].z_loss.item() == 0.0


def test_gate_gets_gradient_from_balance_loss_alone():
    moe = make_moe()
    x, marks, valid = mixed_batch()
    _, stats = moe(x, marks, valid)
    stats.balance_loss.backward()
    assert moe.router.gate.weight.grad is not None and moe.router.gate.weight.grad.abs().sum() > 0


def test_tokens_per_expert_counts_valid_slots_per_mark():
    moe = make_moe()
    x, marks, valid = mixed_batch()
    _, stats = moe(x, marks, valid)
    counts = stats.tokens_per_expert_ME
    for m in (TEXT, AUDIO, SPECIAL):
        assert counts[m].sum().item() == K * ((marks == m) & valid).sum().item()
        outside = sorted(set(range(E)) - group_of(moe.cfg, m))
        assert counts[m, outside].sum().item() == 0


# ------------------------------------------------------------------ bias balancing

def test_bias_changes_selection_not_weights():
    moe = make_moe(bias_balancing=True, modality_routing=False)
    x, marks, valid = mixed_batch()
    _, idx0, _ = moe.router(x, marks, valid)
    moe.router.expert_bias[5] = 10.0                           # force expert 5 into every top-k
    w, idx, _ = moe.router(x, marks, valid)
    assert (idx == 5).any(-1).all() and not (idx0 == 5).any(-1).all()
    torch.testing.assert_close(w, probs_of(moe, x).gather(1, idx))  # weights: unbiased probabilities


def test_bias_never_crosses_modality_groups():
    moe = make_moe(bias_balancing=True)
    moe.router.expert_bias[6] = 10.0                           # an audio expert
    x, marks, valid = mixed_batch()
    _, idx, _ = moe.router(x, marks, valid)
    assert not (idx[marks.reshape(-1) != AUDIO] == 6).any()
    assert (idx[marks.reshape(-1) == AUDIO] == 6).any(-1).all()


def test_update_bias_moves_toward_underloaded_experts():
    moe = make_moe(bias_balancing=True, bias_update_rate=0.1)
    load = torch.tensor([5.0, 1.0, 3.0, 3.0, 0.0, 0.0, 0.0, 8.0])  # text group mean 3, audio mean 2
    with torch.enable_grad():
        moe.update_bias(torch.stack([load, torch.zeros(E), torch.zeros(E)]))  # (M, E) is summed over M
    bias = moe.router.expert_bias
    assert not bias.requires_grad and bias.grad_fn is None
    expected = 0.1 * torch.tensor([-1.0, 1, 0, 0, 1, 1, 1, -1])
    torch.testing.assert_close(bias, expected - expected.mean())
    assert abs(bias.mean().item()) < 1e-7
    make_moe().update_bias(load)                               # bias balancing off: a no-op


# ------------------------------------------------------------------ modality isolation and padding

@pytest.mark.parametrize("groups", [None, ((0, 2, 4, 6), (1, 3, 5, 7))])
def test_modalities_never_cross(groups):
    extra = {} if groups is None else dict(text_experts=groups[0], audio_experts=groups[1])
    moe = make_moe(**extra)
    text, audio = moe.cfg.expert_groups()
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(4, 16, D, generator=g) * 3
        marks = torch.randint(0, 2, (4, 16), generator=g)
        _, stats = moe(x, marks)
        idx, marks_N = stats.indices_NK, marks.reshape(-1)
        assert set(idx[marks_N == TEXT].unique().tolist()) <= set(text)
        assert set(idx[marks_N == AUDIO].unique().tolist()) <= set(audio)


def test_padding_does_not_change_losses_or_stats():
    moe = make_moe(z_loss_coef=0.01, balance_loss="sequence")
    x, marks, valid = mixed_batch()
    _, s1 = moe(x, marks, valid)
    x2 = torch.where(valid[:, :, None], x, 100.0 * torch.randn_like(x))
    marks2 = torch.where(valid, marks, torch.full_like(marks, AUDIO))
    y2, s2 = moe(x2, marks2, valid)
    for name in ("balance_loss", "z_loss", "tokens_per_expert_ME"):
        assert torch.equal(getattr(s1, name), getattr(s2, name)), name
    assert torch.isfinite(y2).all()


# ------------------------------------------------------------------ grouped == loop == dense

def run_all_dispatches(moe: MoE, x, marks, valid):
    results = {}
    for dispatch in ("grouped", "loop", "dense"):
        moe.zero_grad()
        moe.experts.dispatch = dispatch
        xx = x.clone().requires_grad_()
        y, stats = moe(xx, marks, valid)
        r = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
        ((y * r).sum() + stats.balance_loss + stats.z_loss).backward()
        params = {n: p.grad.clone() for n, p in moe.named_parameters()}
        results[dispatch] = (y.detach(), xx.grad, params, stats.indices_NK)
    return results


@pytest.mark.parametrize("batch", ["mixed", "text_only"])
def test_dispatch_grouped_loop_dense_agree(batch):
    moe = make_moe(z_loss_coef=1e-3, n_shared_experts=1, bias_balancing=True)
    moe.router.expert_bias[[2, 5]] = -10.0                     # experts 2 and 5 get no token at all
    x, marks, valid = mixed_batch()
    if batch == "text_only":
        marks = torch.zeros_like(marks)                        # the audio group gets no token at all
    res = run_all_dispatches(moe, x, marks, valid)
    counts = torch.bincount(res["grouped"][3].reshape(-1), minlength=E)
    assert (counts == 0).any(), "the batch must leave some expert without tokens"
    y_ref, gx_ref, gp_ref, _ = res["loop"]
    for dispatch in ("grouped", "dense"):
        y, gx, gp, _ = res[dispatch]
        torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(gx, gx_ref, atol=1e-5, rtol=0)
        for name in ("experts.w_gate", "experts.w_up", "experts.w_down", "router.gate.weight",
                     "shared.gate.weight"):
            torch.testing.assert_close(gp[name], gp_ref[name], atol=1e-5, rtol=0, msg=f"{dispatch} {name}")
        assert gp["experts.w_gate"][counts == 0].abs().max() == 0  # unused experts get exactly 0


def test_grouped_is_deterministic():
    moe = make_moe()
    x, marks, valid = mixed_batch()
    assert torch.equal(moe(x, marks, valid)[0], moe(x, marks, valid)[0])


# ------------------------------------------------------------------ no host sync, compile

def _compile_check(moe: MoE, backend: str):
    torch._dynamo.reset()
    x, marks, valid = mixed_batch()
    x = x.to(torch.bfloat16)
    y_eager, s_eager = moe(x, marks, valid)
    compiled = torch.compile(moe, fullgraph=True, backend=backend)
    y, s = compiled(x, marks, valid)
    scale = y_eager.float().abs().max().item()
    torch.testing.assert_close(y.float(), y_eager.float(), atol=2e-2 * scale, rtol=0)
    torch.testing.assert_close(s.balance_loss, s_eager.balance_loss, rtol=1e-3, atol=0)
    assert torch.equal(s.tokens_per_expert_ME, s_eager.tokens_per_expert_ME)
    return compiled, x, marks, valid


def test_grouped_compiles_fullgraph_without_host_sync():
    """fullgraph=True refuses graph breaks, and `.item()`, `bincount`, `nonzero` or boolean indexing in
    the dispatch would each break the graph. aot_eager also traces the backward. (grouped_mm only
    compiles in bf16: its fake-tensor kernel rejects fp32, performance-anchors §1.3.)"""
    moe = make_moe(z_loss_coef=1e-3).to(torch.bfloat16)
    compiled, x, marks, valid = _compile_check(moe, "aot_eager")
    y, s = compiled(x.requires_grad_(), marks, valid)
    (y.float().square().sum() + s.balance_loss).backward()
    assert moe.experts.w_gate.grad is not None and moe.router.gate.weight.grad is not None


def test_loop_dispatch_does_sync():
    """The check above has teeth: the per-expert loop (torch.where per expert) cannot compile fullgraph."""
    moe = make_moe(dispatch="loop").to(torch.bfloat16)
    x, marks, valid = mixed_batch()
    torch._dynamo.reset()
    with pytest.raises(Exception):  # noqa: B017 - dynamo's error type varies by version
        torch.compile(moe, fullgraph=True, backend="eager")(x.bfloat16(), marks, valid)


@pytest.mark.slow
def test_grouped_compiles_with_inductor_bf16():
    """The real compiler on CPU (~25-35 s on 2 cores, hence slow)."""
    _compile_check(make_moe().to(torch.bfloat16), "inductor")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_grouped_has_no_host_sync_on_cuda():
    moe = make_moe().cuda().to(torch.bfloat16)
    x, marks, valid = (t.cuda() for t in mixed_batch())
    moe(x.bfloat16(), marks, valid, check_inputs=False)        # warm up (lazy init may sync)
    torch.cuda.set_sync_debug_mode("error")
    try:
        y, stats = moe(x.bfloat16(), marks, valid, check_inputs=False)
        (y.float().square().sum() + stats.balance_loss).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


# ------------------------------------------------------------------ input checks

@pytest.mark.parametrize("bad", [3, -1])
def test_bad_marks_raise(bad):
    moe = make_moe()
    x, marks, valid = mixed_batch()
    marks = marks.clone()
    marks[0, 1] = bad
    with pytest.raises(ValueError, match="modality marks must be"):
        moe(x, marks, valid)


def test_mark_shape_mismatch_raises():
    moe = make_moe()
    x, marks, valid = mixed_batch()
    with pytest.raises(ValueError, match="shape"):
        moe(x, marks[:, :4], valid)


def test_config_round_trip_keeps_moe_shapes():
    cfg = make_cfg(n_shared_experts=2)
    moe = MoE(ModelConfig.from_dict(dataclasses.asdict(cfg)))
    assert moe.experts.w_gate.shape == (E, H, D) and moe.experts.w_down.shape == (E, D, H)
    assert moe.router.gate.weight.shape == (E, D)
    n_params = sum(p.numel() for p in moe.parameters())
    assert n_params == E * D + E * 3 * D * H + 3 * D * 2 * H
