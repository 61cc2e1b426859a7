"""Tests for minimost/convert.py: DeepSeek-V2 import checked against transformers, export, clear errors.

The peer is a tiny *random* transformers `DeepseekV2ForCausalLM` (3 layers, layer 0 dense, 8 experts top-2,
2 shared, MLA, YaRN with mscale 0.707), saved with `save_pretrained` into several shards. Every weight is
re-drawn at a scale where logits are O(1), so a wrong rename, RoPE layout or routing shows up as a large
difference, not as a 1e-5 one (checked: a wrong RoPE layout moves logits by > 0.1).
"""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch

from minimost.config import AUDIO, SPECIAL, TEXT, preset
from minimost.convert import (
    DEEPSEEK_V2_LITE_CONFIG,
    CheckpointError,
    config_from_deepseek,
    config_to_deepseek,
    hf_layout_problems,
    load_checkpoint,
    load_deepseek_v2,
    load_minimost,
    save_hf,
)
from minimost.model import MAMoELM

V, E, K = 96, 8, 2


def hf_config(transformers, q_lora_rank=None, **kw):
    base = dict(
        vocab_size=V, hidden_size=32, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=3,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=640, first_k_dense_replace=1,
        n_routed_experts=E, num_experts_per_tok=K, n_shared_experts=2, kv_lora_rank=16,
        q_lora_rank=q_lora_rank, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=12,
        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0, "beta_fast": 32,
                         "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707,
                         "original_max_position_embeddings": 16},
        # the readable reference paths: eager attention, and the per-expert loop for the MoE
        attn_implementation="eager", experts_implementation="eager")
    return transformers.DeepseekV2Config(**(base | kw))


def random_hf_model(transformers, seed=0, **kw):
    torch.manual_seed(seed)
    model = transformers.DeepseekV2ForCausalLM(hf_config(transformers, **kw)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)  # norms away from 1, so swapping two norms is visible
            else:
                p.normal_(0.0, 0.3 if name.endswith("mlp.gate.weight") else 0.15)
    return model


def input_ids(T=40, seed=1):  # longer than the 16-position "original" context: YaRN matters
    return torch.randint(0, V, (2, T), generator=torch.Generator().manual_seed(seed))


def same_weights(a: MAMoELM, b: MAMoELM) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_folder(transformers, tmp_path_factory):
    """A saved random DeepSeek-V2 (plain q_proj, as V2-Lite), in several shards + an index."""
    model = random_hf_model(transformers)
    folder = tmp_path_factory.mktemp("deepseek")
    model.save_pretrained(folder, max_shard_size="20KB")
    return model, folder


# ---------------------------------------------------------------- config

def test_v2_lite_config_gives_the_most_preset():
    assert config_from_deepseek(DEEPSEEK_V2_LITE_CONFIG, modality_routing=True) == preset("most")
    plain = config_from_deepseek(DEEPSEEK_V2_LITE_CONFIG)
    assert not plain.modality_routing and plain.rope_interleaved
    assert abs(plain.num_params() / 1e9 - 15.7) < 0.05
    assert config_from_deepseek(config_to_deepseek(plain)) == plain  # the DeepSeek layout round trip


def test_config_accepts_both_rope_spellings(transformers):
    new = hf_config(transformers).to_dict()  # transformers 5: rope_parameters with rope_type
    old = dict(new, rope_scaling={"type": "yarn", "factor": 40.0, "original_max_position_embeddings": 16,
                                  "mscale": 0.707, "mscale_all_dim": 0.707}, rope_theta=10000.0)
    del old["rope_parameters"]
    assert config_from_deepseek(new) == config_from_deepseek(old)


# ---------------------------------------------------------------- import, against transformers

@pytest.mark.parametrize("q_lora_rank", [None, 24])
def test_import_matches_transformers(transformers, tmp_path, q_lora_rank):
    hf = random_hf_model(transformers, q_lora_rank=q_lora_rank)
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 3
    model = load_deepseek_v2(tmp_path, dtype=torch.float32)
    ids = input_ids()
    with torch.no_grad():
        out, ref = model(ids), hf(ids).logits
    assert (out.logits - ref).abs().max() <= 1e-4
    assert ref.std() > 0.3  # logits are O(1): the comparison above is not between near-zeros
    for stats in out.router_stats:  # the MoE layers really route, over both halves of the experts
        used = stats.tokens_per_expert_ME.sum(0)
        assert (used > 0).sum() >= 6 and stats.indices_NK.max() >= E // 2
    # The test is sensitive to RoPE's layout: the GPT-NeoX pairing gives visibly different logits.
    wrong = load_deepseek_v2(tmp_path, dtype=torch.float32, overrides={"rope_interleaved": False})
    with torch.no_grad():
        assert (wrong(ids).logits - ref).abs().max() > 0.1


def test_fused_expert_tensors_are_accepted(transformers, hf_folder, tmp_path):
    """transformers keeps experts fused in memory (gate_up_proj); a raw save_file of that also imports."""
    from safetensors.torch import save_file

    hf, folder = hf_folder
    state = hf.state_dict()
    assert any(k.endswith("experts.gate_up_proj") for k in state)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    assert same_weights(load_deepseek_v2(tmp_path, dtype=torch.float32),
                        load_deepseek_v2(folder, dtype=torch.float32))


def test_mamoe_restricts_text_tokens_to_the_text_half(hf_folder):
    _, folder = hf_folder
    model = load_deepseek_v2(folder, dtype=torch.float32, modality_routing=True)
    assert model.cfg.expert_groups() == (tuple(range(E // 2)), tuple(range(E // 2, E)))
    ids = input_ids()
    assert (model.token_modality == TEXT).all()  # imported: every id is text
    with torch.no_grad():
        text = model(ids).router_stats
        audio = model(ids, marks_BT=torch.full_like(ids, AUDIO), check_inputs=False).router_stats
    for s in text:
        assert s.indices_NK.max() < E // 2 and s.tokens_per_expert_ME[TEXT, : E // 2].sum() == ids.numel() * K
    for s in audio:
        assert s.indices_NK.min() >= E // 2
    # the gate is kept: the text routing is DeepSeek's, restricted to the text half
    plain = load_deepseek_v2(folder, dtype=torch.float32)
    assert same_weights(plain, model)


def test_bf16_import(hf_folder):
    hf, folder = hf_folder
    model = load_deepseek_v2(folder)  # default dtype: bf16
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.token_modality.dtype == torch.long
    ids = input_ids(T=12)
    with torch.no_grad():
        diff = (model(ids).logits.float() - hf(ids).logits).abs().max()
    assert diff < 0.5  # bf16 rounding only (logits are O(1))


# ---------------------------------------------------------------- export

def test_export_in_deepseek_layout_loads_in_transformers(transformers, hf_folder, tmp_path):
    hf, folder = hf_folder
    model = load_deepseek_v2(folder, dtype=torch.float32)
    assert hf_layout_problems(model.cfg) == []
    out = tmp_path / "export"
    assert save_hf(model, out, max_shard_bytes=30_000) == "deepseek_v2"
    assert json.loads((out / "config.json").read_text())["architectures"] == ["DeepseekV2ForCausalLM"]
    assert (out / "model.safetensors.index.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    again = transformers.DeepseekV2ForCausalLM.from_pretrained(
        out, attn_implementation="eager", experts_implementation="eager").eval()
    ids = input_ids()
    with torch.no_grad():
        assert (again(ids).logits - hf(ids).logits).abs().max() <= 1e-5
    back = load_deepseek_v2(out, dtype=torch.float32)
    assert same_weights(back, model) and back.cfg == model.cfg


def test_export_minimost_layout_round_trip(hf_folder, tmp_path):
    _, folder = hf_folder
    model = load_deepseek_v2(folder, dtype=torch.float32, modality_routing=True)
    marks = torch.full((V,), TEXT)
    marks[V // 2:], marks[:2] = AUDIO, SPECIAL  # a tokenizer's map must survive the round trip
    model.set_modality_map(marks)
    assert save_hf(model, tmp_path / "most", max_shard_bytes=40_000) == "minimost"
    back = load_minimost(tmp_path / "most")
    assert same_weights(back, model) and back.cfg == model.cfg
    assert torch.equal(back.token_modality, marks)
    assert same_weights(load_checkpoint(tmp_path / "most"), model)


def test_mha_model_exports_in_minimost_layout(tmp_path):
    cfg = dataclasses.replace(preset("micro"), tie_embeddings=True, bias_balancing=True)
    torch.manual_seed(0)
    model = MAMoELM(cfg).eval()
    for block in model.blocks:
        if block.is_moe:
            block.ffn.router.expert_bias.normal_()
    assert "attention is MHA" in hf_layout_problems(cfg)[0]
    assert save_hf(model, tmp_path / "micro") == "minimost"
    assert sorted(os.listdir(tmp_path / "micro")) == ["config.json", "model.safetensors"]
    back = load_minimost(tmp_path / "micro", dtype=torch.float32)
    assert same_weights(back, model) and back.cfg == cfg
    assert back.lm_head.weight is back.embed.weight  # still tied
    ids = torch.randint(0, cfg.vocab_size, (2, 10))
    with torch.no_grad():
        assert torch.equal(back(ids).logits, model(ids).logits)


# ---------------------------------------------------------------- clear errors

def copy_folder(src, dst, skip=()):
    dst.mkdir(exist_ok=True)
    for p in src.iterdir():
        if p.name not in skip:
            (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_missing_config_or_weights(hf_folder, tmp_path):
    _, folder = hf_folder
    with pytest.raises(CheckpointError, match="no config.json"):
        load_deepseek_v2(copy_folder(folder, tmp_path / "a", skip=("config.json",)))
    only_config = tmp_path / "b"
    only_config.mkdir()
    (only_config / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(CheckpointError, match="no safetensors weights"):
        load_deepseek_v2(only_config)
    shard = sorted(folder.glob("model-*.safetensors"))[2].name
    with pytest.raises(CheckpointError, match=f"missing.*{shard}"):
        load_deepseek_v2(copy_folder(folder, tmp_path / "c", skip=(shard,)))
    with pytest.raises(CheckpointError, match="not a folder"):
        load_deepseek_v2(tmp_path / "nowhere")


def test_truncated_shard(hf_folder, tmp_path):
    _, folder = hf_folder
    broken = copy_folder(folder, tmp_path / "t")
    shard = sorted(broken.glob("model-*.safetensors"))[1]
    shard.write_bytes(shard.read_bytes()[:-64])
    with pytest.raises(CheckpointError, match=f"{shard.name}.*truncated or corrupt"):
        load_deepseek_v2(broken)


def test_unsupported_configs_are_refused():
    lite = DEEPSEEK_V2_LITE_CONFIG
    cases = [
        (dict(lite, model_type="llama"), "model_type='llama'"),
        (dict(lite, model_type="deepseek_v3"), "only DeepSeek-V2"),
        (dict(lite, scoring_func="sigmoid"), "scoring_func='sigmoid'"),
        (dict(lite, topk_method="group_limited_greedy", n_group=8, topk_group=3), "n_group=8"),
        (dict(lite, moe_layer_freq=2), "moe_layer_freq=2"),
        (dict(lite, hidden_act="gelu"), "hidden_act"),
        (dict(lite, rope_scaling={"type": "dynamic", "factor": 2.0}), "rope type 'dynamic'"),
        (dict(lite, hidden_size=2044), "multiple of 8"),
        ({k: v for k, v in lite.items() if k != "kv_lora_rank"}, "kv_lora_rank"),
    ]
    for hf, message in cases:
        with pytest.raises(CheckpointError, match=message):
            config_from_deepseek(hf)
    # one group is plain greedy routing
    assert config_from_deepseek(dict(lite, topk_method="group_limited_greedy", n_group=1)).n_experts == 64


def test_wrong_model_type_in_a_folder(hf_folder, tmp_path):
    _, folder = hf_folder
    other = copy_folder(folder, tmp_path / "m")
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(cfg | {"model_type": "mixtral"}))
    with pytest.raises(CheckpointError, match="model_type='mixtral'"):
        load_deepseek_v2(other)
    with pytest.raises(CheckpointError, match="use load_deepseek_v2"):
        load_minimost(folder)


def write_single_file(folder, state, config_text):
    from safetensors.torch import save_file

    folder.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(config_text)
    return folder


def test_shape_mismatch_unmapped_and_missing_tensors_are_named(hf_folder, tmp_path):
    hf, folder = hf_folder
    config = (folder / "config.json").read_text()
    state = {k: v for k, v in hf.state_dict().items()}

    bad = dict(state)
    bad["model.layers.0.self_attn.kv_b_proj.weight"] = torch.zeros(5, 16)
    with pytest.raises(CheckpointError, match=r"kv_b_proj.weight in model.safetensors: expected shape "
                                              r"\(40, 16\).*found \(5, 16\)"):
        load_deepseek_v2(write_single_file(tmp_path / "shape", bad, config))

    extra = dict(state)
    extra["model.layers.1.mlp.mystery.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"unmapped checkpoint tensors.*\(1\):\n  model.layers.1.mlp.mystery"):
        load_deepseek_v2(write_single_file(tmp_path / "extra", extra, config))

    fewer = {k: v for k, v in state.items() if k != "model.layers.2.post_attention_layernorm.weight"}
    with pytest.raises(CheckpointError, match=r"missing from the checkpoint \(1\):\n  model.layers.2.post_attention"):
        load_deepseek_v2(write_single_file(tmp_path / "fewer", fewer, config))


def test_export_refuses_to_overwrite_a_folder_that_is_not_a_checkpoint(tmp_path):
    model = MAMoELM(preset("micro"))
    (tmp_path / "notes.txt").write_text("precious")
    with pytest.raises(CheckpointError, match="refusing to overwrite"):
        save_hf(model, tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "precious"
    save_hf(model, tmp_path / "ckpt")
    save_hf(model, tmp_path / "ckpt")  # an existing checkpoint is replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "notes.txt"]
