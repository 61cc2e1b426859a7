"""Tests for minimost/generate.py: greedy equivalence, batching with left padding, routing marks, sampling."""

import pytest
import torch

from minimost.config import AUDIO, TEXT, ModelConfig
from minimost.generate import generate, sample_next
from minimost.model import MAMoELM

V = 64


def make_model(kind: str = "mha", seed: int = 0, **kw) -> MAMoELM:
    cfg = dict(vocab_size=V, d_model=32, n_layers=2, n_heads=4, max_seq_len=48, n_experts=4, top_k=2,
               expert_hidden=16, n_shared_experts=1, first_k_dense=1, dense_hidden=48)
    if kind == "mla":
        cfg.update(attention="mla", kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8,
                   rope_interleaved=True, rope_scaling="yarn", yarn_factor=4.0, yarn_original_max_seq_len=16,
                   yarn_mscale=0.707, yarn_mscale_all_dim=0.707)
    cfg.update(kw)
    torch.manual_seed(seed)
    model = MAMoELM(ModelConfig(**cfg)).eval()
    modality = torch.full((V,), TEXT)
    modality[torch.randperm(V)[: V // 2]] = AUDIO  # a scattered map: no id-range shortcut can pass
    model.set_modality_map(modality)
    return model


def greedy_without_cache(model, ids_1T, n):
    for _ in range(n):
        next_id = model(ids_1T).logits[:, -1].argmax(-1, keepdim=True)
        ids_1T = torch.cat((ids_1T, next_id), dim=1)
    return ids_1T


@pytest.mark.parametrize("kind", ["mha", "mla"])
def test_greedy_generate_equals_argmax_of_full_forward(kind):
    model = make_model(kind)
    prompt = torch.randint(0, V, (1, 5))
    with torch.no_grad():
        expected = greedy_without_cache(model, prompt, 10)
    assert torch.equal(generate(model, prompt, max_new_tokens=10), expected)


@pytest.mark.parametrize("kind", ["mha", "mla"])
def test_batched_left_padded_generation_equals_per_row(kind):
    model = make_model(kind)
    prompts = [torch.randint(0, V, (n,)) for n in (7, 3, 5)]
    T, pad = 7, 0
    ids = torch.full((3, T), pad)
    mask = torch.zeros(3, T, dtype=torch.bool)
    for b, p in enumerate(prompts):
        ids[b, T - len(p):], mask[b, T - len(p):] = p, True
    batched = generate(model, ids, mask, max_new_tokens=8, pad_id=pad)
    for b, p in enumerate(prompts):
        alone = generate(model, p[None], max_new_tokens=8)
        assert torch.equal(batched[b, T:], alone[0, len(p):])


def test_new_tokens_are_routed_by_their_own_ids():
    """The marks each MoE layer sees always equal token_modality[ids] of the tokens being read (§2.5)."""
    model = make_model()
    seen_ids, seen_marks = [], []
    model.embed.register_forward_pre_hook(lambda mod, args: seen_ids.append(args[0].clone()))
    model.blocks[1].ffn.register_forward_pre_hook(lambda mod, args: seen_marks.append(args[1].clone()))
    out = generate(model, torch.randint(0, V, (3, 4)), max_new_tokens=12, temperature=1.0,
                   generator=torch.Generator().manual_seed(0))
    assert len(seen_ids) == len(seen_marks) == 12  # prefill + 11 decoding steps
    for ids, marks in zip(seen_ids, seen_marks):
        assert torch.equal(marks, model.token_modality[ids])
    generated_marks = model.token_modality[out[:, 4:]]
    assert (generated_marks == AUDIO).any() and (generated_marks == TEXT).any()  # both kinds were fed back


def test_stop_tokens_end_rows_and_pad_the_rest():
    model = make_model()
    prompt = torch.randint(0, V, (3, 4))
    free = generate(model, prompt, max_new_tokens=10)
    stop = int(free[0, 6])  # the third token of row 0
    out = generate(model, prompt, max_new_tokens=10, stop_tokens=(stop,), pad_id=-1)
    assert out.shape == free.shape
    for b in range(3):
        new, ref = out[b, 4:], free[b, 4:]
        hits = (ref == stop).nonzero()
        end = int(hits[0]) + 1 if len(hits) else 10
        assert torch.equal(new[:end], ref[:end]) and (new[end:] == -1).all()
    assert (out[0, 4:7] == free[0, 4:7]).all() and (out[0, 7:] == -1).all()


def test_sampling_restricts_support():
    g = torch.Generator().manual_seed(0)
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().expand(2000, 4)

    def support(**kw):
        return set(sample_next(logits, generator=g, **kw).unique().tolist())

    assert support(temperature=0.0) == {0}
    assert support(temperature=1.0) == {0, 1, 2, 3}
    assert support(temperature=1.0, top_k=2) == {0, 1}
    assert support(temperature=1.0, top_p=0.7) == {0, 1}     # 0.5 < 0.7, 0.5 + 0.3 reaches it
    assert support(temperature=1.0, top_p=0.9) == {0, 1, 2}
    assert support(temperature=1.0, top_p=0.1) == {0}         # the top id always survives
    counts = sample_next(logits, temperature=1.0, generator=g).bincount(minlength=4) / 2000
    assert torch.allclose(counts, probs, atol=0.04)
    sharp = sample_next(logits, temperature=0.1, generator=g).bincount(minlength=4) / 2000
    assert sharp[0] > 0.95  # low temperature concentrates on the mode


def test_seeded_sampling_is_reproducible():
    model = make_model()
    prompt = torch.randint(0, V, (2, 3))
    kw = dict(max_new_tokens=8, temperature=1.0, top_k=10, top_p=0.9)
    a = generate(model, prompt, generator=torch.Generator().manual_seed(7), **kw)
    b = generate(model, prompt, generator=torch.Generator().manual_seed(7), **kw)
    assert torch.equal(a, b)


def test_generate_rejects_bad_arguments():
    model = make_model()
    prompt = torch.randint(0, V, (1, 40))
    with pytest.raises(ValueError, match="max_seq_len=48"):
        generate(model, prompt, max_new_tokens=9)
    for kw, message in ((dict(temperature=-1.0), "temperature"), (dict(top_k=0), "top_k"),
                        (dict(top_p=0.0), "top_p"), (dict(max_new_tokens=-1), "max_new_tokens")):
        with pytest.raises(ValueError, match=message):
            generate(model, prompt[:, :4], **kw)
    assert generate(model, prompt, max_new_tokens=0).shape == (1, 40)
