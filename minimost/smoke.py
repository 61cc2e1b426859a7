"""A one-minute check of the model core, used by `minimost run` until the data pipeline exists.

It builds the preset's model, declares an id -> modality map (the top quarter of the ids stand for
speech units, four ids are special tokens), fits a few dozen AdamW steps on a fixed synthetic batch
that mixes text and "speech" spans, and shows what a student should see: the loss falls, text
tokens only reach text experts and audio tokens only audio experts, shared experts see both, and
KV-cache generation runs. The tokens are synthetic; no data or speech is involved yet.
"""

from __future__ import annotations

import time

import torch

from minimost.config import AUDIO, SPECIAL, TEXT, ModelConfig
from minimost.generate import generate
from minimost.model import MAMoELM


def synthetic_modality_map(vocab_size: int) -> torch.Tensor:
    """(V,) marks: ids [0, 3V/4 - 4) text, [3V/4 - 4, V - 4) audio "units", the last 4 special."""
    marks = torch.full((vocab_size,), TEXT, dtype=torch.long)
    marks[3 * vocab_size // 4 - 4:] = AUDIO
    marks[-4:] = SPECIAL
    return marks


def synthetic_batch(cfg: ModelConfig, token_modality: torch.Tensor, batch: int, length: int,
                    generator: torch.Generator) -> torch.Tensor:
    """(batch, length) ids: a special token, a text span, a special token, an audio span, repeated."""
    text_ids = (token_modality == TEXT).nonzero().flatten()
    audio_ids = (token_modality == AUDIO).nonzero().flatten()
    special_ids = (token_modality == SPECIAL).nonzero().flatten()
    rows = []
    for _ in range(batch):
        row: list[int] = []
        spans = 0
        while len(row) < length:
            span = int(torch.randint(4, 12, (1,), generator=generator))
            pool = text_ids if spans % 2 == 0 else audio_ids                 # text and audio alternate
            start = int(torch.randint(0, len(pool) - span, (1,), generator=generator))
            row += [int(special_ids[0])] + pool[start:start + span].tolist()  # runs of consecutive ids
            spans += 1
        rows.append(row[:length])
    return torch.tensor(rows)


def model_smoke_test(cfg: ModelConfig, seed: int = 0, steps: int = 30, batch: int = 8, length: int = 128,
                     verbose: bool = True) -> dict:
    """Train the model core briefly on synthetic mixed tokens and check the MAMoE invariants.

    Returns the measured numbers (first/last loss, tokens/s, expert-load fractions per modality).
    """
    say = print if verbose else (lambda *a, **k: None)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = MAMoELM(cfg)
    model.set_modality_map(synthetic_modality_map(cfg.vocab_size))
    ids = synthetic_batch(cfg, model.token_modality, batch, min(length, cfg.max_seq_len), gen)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95))

    say(f"  model core check: {steps} AdamW steps on a fixed synthetic batch of {ids.numel()} mixed tokens")
    losses, start = [], time.perf_counter()
    for _ in range(steps):
        out = model(ids, labels_BT=ids, check_inputs=False)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        losses.append(out.lm_loss.item())
    seconds = time.perf_counter() - start
    tokens_per_s = steps * ids.numel() / seconds
    say(f"  loss {losses[0]:.3f} -> {losses[-1]:.3f} in {seconds:.1f} s ({tokens_per_s / 1e3:.1f} k tokens/s)")

    # Where did each modality go? tokens_per_expert_ME counts (token, slot) assignments.
    load = sum(s.tokens_per_expert_ME for s in out.router_stats)          # (M, E) summed over layers
    text_group, audio_group = cfg.expert_groups()
    frac = {}
    for mark, name in ((TEXT, "text"), (AUDIO, "audio")):
        total = load[mark].sum().clamp(min=1)
        frac[name] = {"to_text_experts": float(load[mark][list(text_group)].sum() / total),
                      "to_audio_experts": float(load[mark][list(audio_group)].sum() / total)}
        say(f"  {name:5s} tokens -> text experts {frac[name]['to_text_experts']:6.1%}, "
            f"audio experts {frac[name]['to_audio_experts']:6.1%}"
            + (f", shared experts 100% ({cfg.n_shared_experts} shared)" if cfg.n_shared_experts else ""))
    if cfg.modality_routing:
        assert frac["text"]["to_audio_experts"] == 0 and frac["audio"]["to_text_experts"] == 0, frac

    prompt = ids[:2, :16]
    new = generate(model, prompt, max_new_tokens=16)
    say(f"  greedy generation with the KV cache: {tuple(prompt.shape)} prompt -> {tuple(new.shape)} tokens")
    return {"first_loss": losses[0], "last_loss": losses[-1], "tokens_per_s": tokens_per_s, "routing": frac}
