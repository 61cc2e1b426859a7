"""Tests for minimost/model.py: RoPE/YaRN, attention paths, KV cache, padding, packing, losses, errors."""

import dataclasses
import math

import pytest
import torch

from minimost.config import AUDIO, SPECIAL, TEXT, ModelConfig, preset
from minimost.model import (
    MAMoELM,
    RMSNorm,
    apply_rope,
    rope_cos_sin,
    rope_frequencies,
    softmax_scale,
    yarn_get_mscale,
)

V = 128


def small_cfg(kind: str = "mha", **kw) -> ModelConfig:
    """A two-layer model (layer 0 dense, layer 1 MoE) of the chosen attention kind."""
    base = dict(vocab_size=V, d_model=32, n_layers=2, n_heads=4, max_seq_len=64, first_k_dense=1,
                dense_hidden=48, n_experts=4, top_k=2, expert_hidden=16, n_shared_experts=1)
    if kind == "gqa":
        base.update(n_kv_heads=2)
    if kind == "mla":
        base.update(attention="mla", kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=12,
                    rope_interleaved=True, rope_scaling="yarn", yarn_factor=8.0, yarn_original_max_seq_len=16,
                    yarn_mscale=0.707, yarn_mscale_all_dim=0.707)
    base.update(kw)
    return ModelConfig(**base)


def build(cfg: ModelConfig, seed: int = 0) -> MAMoELM:
    torch.manual_seed(seed)
    model = MAMoELM(cfg).eval()
    # A mixed id map, so both expert groups (and the SPECIAL route) are exercised.
    modality = torch.full((cfg.vocab_size,), TEXT)
    modality[cfg.vocab_size // 2:] = AUDIO
    modality[:2] = SPECIAL
    model.set_modality_map(modality)
    return model


def left_padded_batch(lengths, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, V, (len(lengths), T), generator=g)
    mask = torch.zeros(len(lengths), T, dtype=torch.bool)
    for b, n in enumerate(lengths):
        mask[b, T - n:] = True
    return ids.masked_fill(~mask, 0), mask


# ---------------------------------------------------------------- norms and RoPE

def test_rmsnorm_normalises_in_fp32():
    norm = RMSNorm(8)
    x = torch.randn(3, 8) * 100
    y = norm(x)
    assert torch.allclose(y.pow(2).mean(-1), torch.ones(3), atol=1e-4)
    assert norm.bfloat16()(x.bfloat16()).dtype == torch.bfloat16  # stats in fp32, result in the model dtype


def test_rope_interleaved_equals_half_rotation_up_to_permutation():
    cfg = small_cfg()
    x = torch.randn(2, 3, 5, 8)
    cos, sin = rope_cos_sin(cfg, 8, torch.arange(5).expand(2, 5))
    perm = torch.cat((torch.arange(0, 8, 2), torch.arange(1, 8, 2)))  # (x0,x2,x4,x6,x1,x3,x5,x7)
    inverse = perm.argsort()
    half = apply_rope(x[..., perm], cos, sin, interleaved=False)[..., inverse]
    assert torch.allclose(apply_rope(x, cos, sin, interleaved=True), half, atol=1e-6)


@pytest.mark.parametrize("interleaved", [True, False])
def test_rope_scores_depend_only_on_offset(interleaved):
    cfg = small_cfg()
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(pq, pk):
        cq, sq = rope_cos_sin(cfg, 8, torch.tensor([[pq]]))
        ck, sk = rope_cos_sin(cfg, 8, torch.tensor([[pk]]))
        return (apply_rope(q, cq, sq, interleaved) * apply_rope(k, ck, sk, interleaved)).sum()

    assert torch.allclose(score(7, 3), score(40, 36), atol=1e-5)
    assert torch.allclose(score(0, 0), (q * k).sum(), atol=1e-6)  # position 0 is the identity
    assert not torch.allclose(score(7, 3), score(7, 4), atol=1e-3)


def test_yarn_with_factor_one_is_plain_rope():
    plain = small_cfg(rope_scaling="none")
    yarn = small_cfg(rope_scaling="yarn", yarn_factor=1.0, yarn_mscale=0.707, yarn_mscale_all_dim=0.707)
    f_plain, s_plain = rope_frequencies(plain, 16)
    f_yarn, s_yarn = rope_frequencies(yarn, 16)
    assert torch.allclose(f_plain, f_yarn) and s_plain == s_yarn == 1.0
    assert softmax_scale(yarn, 16) == softmax_scale(plain, 16) == 16 ** -0.5


def test_yarn_keeps_fast_dims_and_interpolates_slow_dims():
    cfg = small_cfg(rope_scaling="yarn", yarn_factor=40.0, yarn_original_max_seq_len=4096, yarn_mscale=0.707,
                    yarn_mscale_all_dim=0.707)
    plain, _ = rope_frequencies(small_cfg(), 64)
    inv_freq, cos_sin_scale = rope_frequencies(cfg, 64)
    assert torch.allclose(inv_freq[:5], plain[:5])         # many turns in 4096 tokens: extrapolate
    assert torch.allclose(inv_freq[-5:], plain[-5:] / 40)  # less than one turn: interpolate by s
    assert cos_sin_scale == 1.0                            # mscale == mscale_all_dim (DeepSeek)
    m = 0.1 * 0.707 * math.log(40) + 1
    assert yarn_get_mscale(40, 0.707) == pytest.approx(m)
    assert softmax_scale(cfg, 192) == pytest.approx(192 ** -0.5 * m * m)  # ~1.59x, most-reference §2.1


# ---------------------------------------------------------------- attention paths and masking

@pytest.mark.parametrize("kind", ["mha", "gqa", "mla"])
def test_sdpa_attention_matches_manual_reference(kind):
    sdpa = build(small_cfg(kind, attn_impl="sdpa"))
    manual = MAMoELM(dataclasses.replace(sdpa.cfg, attn_impl="manual")).eval()
    manual.load_state_dict(sdpa.state_dict())
    ids, mask = left_padded_batch([12, 7, 3], 12)
    doc_ids = torch.tensor([[0] * 5 + [1] * 4 + [2] * 3] * 3)
    for kwargs in (dict(attention_mask_BT=mask), dict(doc_ids_BT=doc_ids)):
        with torch.no_grad():
            a, b = sdpa(ids, **kwargs).logits, manual(ids, **kwargs).logits
        assert torch.isfinite(a).all() and torch.isfinite(b).all()
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


@pytest.mark.parametrize("kind", ["mha", "mla"])
def test_left_padding_does_not_change_real_tokens(kind):
    model = build(small_cfg(kind))
    ids, mask = left_padded_batch([10, 6], 10)
    with torch.no_grad():
        batched = model(ids, attention_mask_BT=mask).logits
        alone = model(ids[1:, 4:]).logits
    assert (batched[1, 4:] - alone[0]).abs().max() < 1e-5


def test_packed_documents_equal_separate_forwards():
    model = build(small_cfg("mla"))
    ids, _ = left_padded_batch([9], 9)
    doc_ids = torch.tensor([[0, 0, 0, 0, 7, 7, 7, 7, 7]])
    with torch.no_grad():
        packed = model(ids, doc_ids_BT=doc_ids).logits
        first, second = model(ids[:, :4]).logits, model(ids[:, 4:]).logits
    assert (packed - torch.cat((first, second), dim=1)).abs().max() < 1e-5


# ---------------------------------------------------------------- KV cache

@pytest.mark.parametrize("kind", ["gqa", "mla"])
def test_kv_cache_decoding_matches_full_forward(kind):
    model = build(small_cfg(kind))
    T = 14
    ids, mask = left_padded_batch([14, 9, 5], T)
    with torch.no_grad():
        full = model(ids, attention_mask_BT=mask).logits
        cache = model.make_cache(3, T)
        # prefill 6 columns (row 2 is all padding there), a chunk of 3, then one token at a time
        steps = [model(ids[:, :6], attention_mask_BT=mask[:, :6], cache=cache).logits,
                 model(ids[:, 6:9], attention_mask_BT=mask[:, 6:9], cache=cache).logits]
        steps += [model(ids[:, t:t + 1], attention_mask_BT=mask[:, t:t + 1], cache=cache).logits
                  for t in range(9, T)]
    incremental = torch.cat(steps, dim=1)
    assert cache.length == T
    assert (incremental - full)[mask].abs().max() <= 1e-5


# ---------------------------------------------------------------- parameters, init, losses

@pytest.mark.parametrize("name", ["micro", "tiny"])
def test_num_params_matches_config(name):
    cfg = preset(name)
    assert MAMoELM(cfg).num_params() == cfg.num_params()


@pytest.mark.parametrize("name", ["small", "most"])
def test_num_params_matches_config_on_meta_device(name):
    cfg = preset(name)
    with torch.device("meta"):  # no memory is allocated: 15.7 B parameters for `most`
        model = MAMoELM(cfg)
    assert model.embed.weight.is_meta
    assert model.num_params() == cfg.num_params()


def test_tied_embeddings_and_attention_variants_count_right():
    for cfg in (small_cfg(tie_embeddings=True), small_cfg("gqa"), small_cfg("mla", q_lora_rank=8)):
        assert MAMoELM(cfg).num_params() == cfg.num_params()


def test_residual_output_projections_get_smaller_init():
    cfg = small_cfg(d_model=64, n_layers=8, first_k_dense=0, init_std=0.02)
    model = MAMoELM(cfg)
    block = model.blocks[0]
    assert block.attn.q_proj.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert block.attn.o_proj.weight.std().item() == pytest.approx(0.02 / 4, rel=0.1)
    assert block.ffn.experts.w_down.std().item() == pytest.approx(0.02 / 4, rel=0.1)


def test_lm_loss_is_shifted_cross_entropy_over_supervised_positions():
    model = build(small_cfg())
    ids, _ = left_padded_batch([8, 8], 8)
    labels = ids.clone()
    labels[:, :3] = -100
    out = model(ids, labels_BT=labels)
    logits = out.logits[:, 2:-1].reshape(-1, V)
    expected = torch.nn.functional.cross_entropy(logits, ids[:, 3:].reshape(-1))
    assert torch.allclose(out.lm_loss, expected, atol=1e-6)
    assert torch.allclose(out.loss, out.lm_loss + out.router_loss)
    assert len(out.router_stats) == 1  # one MoE layer


def test_router_gets_gradient_from_balance_loss_alone():
    model = build(small_cfg(balance_alpha=0.01)).train()
    ids, _ = left_padded_batch([8, 8], 8)
    out = model(ids, labels_BT=torch.full_like(ids, -100))  # nothing supervised: lm_loss is 0
    assert out.lm_loss.item() == 0 and out.router_loss.item() > 0
    out.loss.backward()
    gate = model.blocks[1].ffn.router.gate.weight
    assert gate.grad is not None and gate.grad.abs().sum() > 0
    assert model.lm_head.weight.grad.abs().sum() == 0


# ---------------------------------------------------------------- clear errors

def test_bad_inputs_raise_clear_errors():
    model = build(small_cfg())
    ids = torch.randint(2, V // 2, (2, 6))  # text ids
    cases = [
        (dict(input_ids_BT=ids[0]), "shape"),
        (dict(input_ids_BT=ids.float()), "integer"),
        (dict(input_ids_BT=ids + V), "vocab_size"),
        (dict(input_ids_BT=ids - 10), r"\[0, vocab_size"),
        (dict(input_ids_BT=ids, marks_BT=torch.full_like(ids, AUDIO)), "disagree"),
        (dict(input_ids_BT=ids, marks_BT=ids[:, :3]), "marks must have the shape"),
        (dict(input_ids_BT=ids, attention_mask_BT=torch.full((2, 6), 0.5)), "attention_mask"),
        (dict(input_ids_BT=ids, attention_mask_BT=torch.full((2, 6), 2)), "0/1"),
        (dict(input_ids_BT=ids, labels_BT=ids + V), "labels"),
        (dict(input_ids_BT=torch.zeros(1, 65, dtype=torch.long)), "max_seq_len=64"),
        (dict(input_ids_BT=ids, cache=model.make_cache(3, 16)), "batch size 3"),
        (dict(input_ids_BT=ids, cache=model.make_cache(2, 4)), "cache holds 4"),
        (dict(input_ids_BT=ids, doc_ids_BT=torch.zeros_like(ids), cache=model.make_cache(2)), "doc_ids"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            model(**kwargs)
    # marks that agree on real tokens are fine, whatever they say on padding
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[:, 0] = False
    marks = model.token_modality[ids].masked_fill(~mask, AUDIO)
    model(ids, marks_BT=marks, attention_mask_BT=mask)


def test_cache_length_counts_against_max_seq_len():
    model = build(small_cfg(max_seq_len=8))
    cache = model.make_cache(1, 16)
    model(torch.ones(1, 6, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="6 cached \\+ 3 new"):
        model(torch.ones(1, 3, dtype=torch.long), cache=cache)


def test_set_modality_map_validates():
    model = build(small_cfg())
    with pytest.raises(ValueError, match="length vocab_size"):
        model.set_modality_map(torch.zeros(V - 1, dtype=torch.long))
    with pytest.raises(ValueError, match="values must be"):
        model.set_modality_map(torch.full((V,), 3))


# ---------------------------------------------------------------- the DeepSeek-V2 reference

def test_mla_yarn_matches_transformers_deepseek_v2():
    """Attention, RoPE (interleaved) and YaRN agree with transformers' DeepSeek-V2 (dense layers only)."""
    transformers = pytest.importorskip("transformers")
    cfg = small_cfg("mla", n_layers=2, first_k_dense=2, n_heads=2, yarn_factor=40.0)
    model = build(cfg)
    hf_cfg = transformers.DeepseekV2Config(
        vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=640, rms_norm_eps=cfg.norm_eps,
        first_k_dense_replace=2,
        kv_lora_rank=16, q_lora_rank=None, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=12,
        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0, "beta_fast": 32,
                         "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707,
                         "original_max_position_embeddings": 16})
    hf_cfg._attn_implementation = "eager"
    hf = transformers.DeepseekV2ForCausalLM(hf_cfg).eval()
    renames = ((".attn_norm.", ".input_layernorm."), (".ffn_norm.", ".post_attention_layernorm."),
               (".attn.", ".self_attn."), (".ffn.gate.", ".mlp.gate_proj."), (".ffn.up.", ".mlp.up_proj."),
               (".ffn.down.", ".mlp.down_proj."), (".blocks.", ".model.layers."),
               (".embed.", ".model.embed_tokens."), (".norm.", ".model.norm."))
    state = {}
    for name, tensor in model.state_dict().items():
        if name != "token_modality":
            name = "." + name
            for old, new in renames:
                name = name.replace(old, new)
            state[name[1:]] = tensor
    hf.load_state_dict(state, strict=True)
    ids = torch.randint(0, V, (2, 60))  # past the 16-token "original" context, so YaRN matters
    with torch.no_grad():
        assert (model(ids).logits - hf(ids).logits).abs().max() < 1e-4
