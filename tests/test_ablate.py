"""The routing-variant registry (moe.py) and the ablation grid (ablate.py) at the micro preset."""

import dataclasses
import json
import random
import statistics

import pytest
import torch

from minimost.ablate import (
    ARMS,
    aggregate,
    arm_model_config,
    arm_param_table,
    carry_over,
    compare,
    dense_stage0_config,
    resolve_arm,
    run_ablation,
    task_loss_metrics,
    upcycle_dense,
    verdicts,
)
from minimost.config import AUDIO, TEXT, ConfigError, preset
from minimost.model import MAMoELM
from minimost.moe import ROUTING_VARIANTS, MoE, register_routing
from minimost.pipeline import stage_model_config

torch.set_num_threads(1)


# ------------------------------------------------------------------ the routing registry

def _inputs(cfg, seed=0, B=2, T=12):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, cfg.d_model, generator=g)
    marks = torch.randint(0, 3, (B, T), generator=g)
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[1, :3] = False
    return x, marks, valid


def _router_before_registry(router, x, marks):
    """The Router's steps 1-6 exactly as they were written before the registry existed."""
    cfg = router.cfg
    x_ND, marks_N = x.reshape(-1, cfg.d_model), marks.reshape(-1).long()
    logits_NE = x_ND.float() @ router.gate.weight.float().T
    allowed_NE = router.allowed_ME[marks_N]
    if cfg.mask_mode == "after_softmax":
        probs_NE = torch.softmax(logits_NE, dim=-1).masked_fill(~allowed_NE, 0.0)
    else:
        probs_NE = torch.softmax(logits_NE.masked_fill(~allowed_NE, float("-inf")), dim=-1)
    select_NE = probs_NE + router.expert_bias if router.expert_bias is not None else probs_NE
    select_NE = select_NE.masked_fill(~allowed_NE, float("-inf"))
    indices_NK = torch.topk(select_NE, cfg.top_k, dim=-1).indices
    weights_NK = probs_NE.gather(1, indices_NK)
    if cfg.renormalize:
        weights_NK = weights_NK / weights_NK.sum(dim=-1, keepdim=True)
    return weights_NK * cfg.routed_scaling_factor, indices_NK


@pytest.mark.parametrize("changes", [{}, {"mask_mode": "before_softmax"}, {"renormalize": True},
                                     {"modality_routing": False}, {"routed_scaling_factor": 2.5},
                                     {"bias_balancing": True}])
def test_default_routing_is_bit_identical_to_the_rule_before_the_registry(changes):
    cfg = dataclasses.replace(preset("micro"), **changes)
    assert cfg.routing == "most"
    torch.manual_seed(0)
    moe = MoE(cfg)
    if moe.router.expert_bias is not None:
        moe.router.expert_bias.copy_(torch.randn(cfg.n_experts) * 0.01)
    x, marks, valid = _inputs(cfg)
    w, idx, _ = moe.router(x, marks, valid)
    w_ref, idx_ref = _router_before_registry(moe.router, x, marks)
    assert torch.equal(idx, idx_ref) and torch.equal(w, w_ref)


def test_a_registered_variant_changes_routing_and_is_an_arm():
    @register_routing("test_least_likely", overwrite=True)
    def least_likely(logits_NE, allowed_NE, cfg, expert_bias=None):
        probs_NE = torch.softmax(logits_NE, dim=-1).masked_fill(~allowed_NE, 0.0)
        select_NE = (-probs_NE).masked_fill(~allowed_NE, float("-inf"))   # the K *least* likely allowed
        indices_NK = torch.topk(select_NE, cfg.top_k, dim=-1).indices
        return probs_NE, probs_NE.gather(1, indices_NK), indices_NK

    try:
        base = preset("micro")
        torch.manual_seed(0)
        most = MoE(base)
        torch.manual_seed(0)
        variant = MoE(dataclasses.replace(base, routing="test_least_likely"))
        x, marks, valid = _inputs(base)
        _, idx_most, _ = most.router(x, marks, valid)
        _, idx_var, stats = variant.router(x, marks, valid)
        assert not torch.equal(idx_most, idx_var)
        # the variant still respects the modality groups, and the MoE runs end to end with it
        text, audio = base.expert_groups()
        marks_N = marks.reshape(-1)
        assert set(idx_var[marks_N == AUDIO].flatten().tolist()) <= set(audio)
        assert set(idx_var[marks_N == TEXT].flatten().tolist()) <= set(text)
        y, _ = variant(x, marks, valid)
        assert y.shape == x.shape and torch.isfinite(stats.balance_loss)
        arm = resolve_arm("test_least_likely")
        assert arm_model_config(base, arm).routing == "test_least_likely"
    finally:
        ROUTING_VARIANTS.pop("test_least_likely", None)


def test_unknown_routing_names_raise_and_list_the_registered_ones():
    cfg = dataclasses.replace(preset("micro"), routing="no_such_rule")  # the config only checks the form
    with pytest.raises(ConfigError, match="registered: most, topk"):
        MoE(cfg)
    with pytest.raises(ConfigError, match="routing must name"):
        dataclasses.replace(preset("micro"), routing="not a name")
    with pytest.raises(ConfigError, match="already registered"):
        register_routing("most")(lambda *a: None)


def test_topk_variant_equals_modality_routing_off():
    base = preset("micro")
    torch.manual_seed(0)
    topk = MoE(dataclasses.replace(base, routing="topk"))
    torch.manual_seed(0)
    vanilla = MoE(dataclasses.replace(base, modality_routing=False))
    x, marks, valid = _inputs(base)
    (w1, i1, _), (w2, i2, _) = topk.router(x, marks, valid), vanilla.router(x, marks, valid)
    assert torch.equal(i1, i2) and torch.equal(w1, w2)


# ------------------------------------------------------------------ arms, parameter matching, surgery

def test_unknown_arm_names_raise_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown ablation arm 'bogus'.*built-in arms: mamoe, vanilla"):
        run_ablation("micro", ["mamoe", "bogus"], [0], data=None, out_dir=tmp_path, metrics_fn=lambda *a: {})
    assert not any(tmp_path.iterdir())  # nothing trained or written


def test_dense_init_matches_total_params_after_upcycling_and_active_params_before():
    base = preset("micro")
    stage0 = stage_model_config(base, "pretrain")
    table = arm_param_table(base, [ARMS["mamoe"], ARMS["dense_init"], ARMS["no_shared"]])
    assert table["dense_init"]["params"] == table["mamoe"]["params"]
    # the dense stage 0 has the MoE's active parameters less the router's E x D per MoE layer
    router = base.n_layers * base.n_experts * base.d_model
    assert table["dense_init"]["stage0_params"] == table["mamoe"]["stage0_active_params"] - router
    # micro: the shared width divides evenly, so removing the shared expert keeps the total exactly
    assert table["no_shared"]["params"] == table["mamoe"]["params"]

    torch.manual_seed(0)
    dense = MAMoELM(dense_stage0_config(stage0))
    assert dense.num_params() == table["dense_init"]["stage0_params"]
    moe = upcycle_dense(dense, stage0, seed=0)
    assert moe.num_params() == table["mamoe"]["stage0_params"]
    S, H, K = base.n_shared_experts, base.expert_hidden, base.top_k
    src, ffn = dense.blocks[1].ffn, moe.blocks[1].ffn
    assert torch.equal(ffn.shared.up.weight, src.up.weight[: S * H])
    for e in range(base.n_experts):
        lo = S * H + (e % K) * H
        assert torch.equal(ffn.experts.w_down[e], src.down.weight[:, lo:lo + H])
    assert torch.equal(moe.blocks[0].attn.q_proj.weight, dense.blocks[0].attn.q_proj.weight)


def test_no_shared_carries_the_shared_units_into_the_experts():
    base = preset("micro")
    torch.manual_seed(0)
    model = MAMoELM(base)
    arm_cfg = arm_model_config(base, ARMS["no_shared"])
    new = carry_over(model, arm_cfg)
    assert arm_cfg.n_shared_experts == 0 and new.num_params() == model.num_params()
    H, w = base.expert_hidden, arm_cfg.expert_hidden - base.expert_hidden
    old, ffn = model.blocks[0].ffn, new.blocks[0].ffn
    assert torch.equal(ffn.experts.w_gate[:, :H], old.experts.w_gate)
    assert torch.equal(ffn.experts.w_gate[3, H:], old.shared.gate.weight[3 * w:4 * w])
    assert torch.equal(ffn.experts.w_down[3, :, H:], old.shared.down.weight[:, 3 * w:4 * w])


def test_aggregate_and_verdicts_by_hand():
    cells = [{"arm": "mamoe", "metrics": {"asr_wer": v, "slm_acc": a}} for v, a in ((0.1, 0.8), (0.2, 0.9), (0.3, 0.7))]
    cells += [{"arm": "vanilla", "metrics": {"asr_wer": v, "slm_acc": a}} for v, a in ((0.5, 0.8), (0.6, 0.75), (0.7, 0.85))]
    s = aggregate(cells)
    assert s["mamoe"]["asr_wer"]["mean"] == pytest.approx(0.2)
    assert s["mamoe"]["asr_wer"]["std"] == pytest.approx(0.1)            # sample std: sqrt(0.02 / 2)
    assert s["vanilla"]["slm_acc"]["std"] == pytest.approx(0.05)
    assert compare(s, "asr_wer", "mamoe", "vanilla") == "better"          # lower WER by 0.4 > 0.1
    assert compare(s, "slm_acc", "mamoe", "vanilla") == "noise"
    lines = verdicts(s)
    assert lines[0].startswith("**asr**: mamoe beats vanilla beyond one standard deviation")
    assert "inside the noise" in lines[1] and lines[1].startswith("**slm**")


# ------------------------------------------------------------------ the grid at micro

@pytest.fixture(scope="module")
def speech_data(tmp_path_factory):
    """The micro mini-world with made-up units for its speech tasks (no speech kit needed)."""
    from minimost.data.build import build_text_data, render_speech_tasks
    data = build_text_data("micro", tmp_path_factory.mktemp("data"))
    rng = random.Random(0)
    units = {r["id"]: [rng.randrange(32) for _ in range(rng.randint(3, 12))]
             for r in data.dataset("speech_plan") if r["split"] != "test"}
    render_speech_tasks(data, units, n_units=32)
    return data


CALLS = []


def small_metrics(model, tokenizer, data):
    """Text-LM and ASR teacher-forced validation loss on two batches (no minimost.evaluate needed)."""
    CALLS.append(1)
    return task_loss_metrics(data, tokenizer, model, tasks=("text_lm", "asr"), max_batches=2)


GRID = dict(overrides=["train.log_every=2", "train.eval_every=100", "train.ckpt_every=100", "train.batch_size=4"],
            steps={"stage0": 2, "stage1": 2}, metrics_fn=small_metrics, progress=False)


@pytest.fixture(scope="module")
def grid(speech_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ablate")
    CALLS.clear()
    result = run_ablation("micro", ["mamoe", "vanilla"], [0, 1], data=speech_data, out_dir=out, **GRID)
    return out, result


def test_grid_runs_two_arms_two_seeds_and_aggregates(grid):
    out, result = grid
    assert len(CALLS) == 4 and len(result["cells"]) == 4
    saved = json.loads((out / "ablation.json").read_text())
    assert saved["summary"] == result["summary"]
    assert set(saved["summary"]) == {"mamoe", "vanilla"}
    for arm in ("mamoe", "vanilla"):
        for metric in ("text_loss", "asr_loss", "text_ppl"):
            values = [c["metrics"][metric] for c in saved["cells"] if c["arm"] == arm]
            assert len(values) == 2
            got = saved["summary"][arm][metric]
            assert got["mean"] == pytest.approx((values[0] + values[1]) / 2)
            assert got["std"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)  # n-1 = 1
            assert got["std"] == pytest.approx(statistics.stdev(values))
    # one stage 0 per seed, shared by both arms; the arms start from it with different routing
    assert sorted(p.parent.name for p in out.glob("seed*/stage0_moe-*")) == ["seed0", "seed1"]
    assert len(list((out / "cells").iterdir())) == 4
    md = (out / "ablation.md").read_text()
    assert "| mamoe |" in md and "| vanilla |" in md and "Does MAMoE beat vanilla" in md
    assert any(s.startswith("**asr**") for s in result["verdicts"])
    cell = json.loads(next((out / "cells").glob("vanilla-seed0-*/metrics-*.json")).read_text())
    assert torch.tensor(cell["loads_LME"]).shape == (2, 3, 8)


def test_plots_are_written(grid):
    out, result = grid
    for name in ("metrics.png", "expert_load.png"):
        path = out / "plots" / name
        assert path.exists() and path.stat().st_size > 1000
    loads = torch.tensor(json.loads(next((out / "cells").glob("mamoe-seed0-*/metrics-*.json")).read_text())["loads_LME"])
    text, audio = preset("micro").expert_groups()
    # MAMoE confines audio tokens to the audio group (the heatmap's right half)
    assert loads[:, AUDIO, list(text)].sum() == 0 and loads[:, AUDIO, list(audio)].sum() > 0


def test_rerun_skips_finished_cells(grid, speech_data):
    out, first = grid
    CALLS.clear()
    again = run_ablation("micro", ["mamoe", "vanilla"], [0, 1], data=speech_data, out_dir=out, **GRID)
    assert CALLS == [] and all(c.get("skipped") for c in again["cells"])
    assert again["summary"] == first["summary"]


def test_every_headline_metric_has_a_family_and_a_direction():
    from minimost.ablate import family_of, lower_is_better
    from minimost.evaluate import LOWER_IS_BETTER, SLM_SETS
    for name in SLM_SETS + ("slm_mean",):
        assert family_of(name) == "slm" and not lower_is_better(name)
    for name in LOWER_IS_BETTER:
        assert lower_is_better(name), name
    assert family_of("tts_unit_edit") == "tts" and family_of("sqa_s2t") == "sqa"
