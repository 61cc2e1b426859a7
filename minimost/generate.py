"""Sampling from a MAMoELM with a KV cache: greedy, temperature, top-k, top-p; batched with left padding.

Each new token is routed by its *own* id: its modality mark is looked up in `model.token_modality`
at every step. MoST's release slices a caller-given marks tensor without extending it, so after the
first step the marks stop matching the generated tokens (most-reference.md §2.5); here the marks
are always recomputed from the ids.

Shape legend: B batch, T prompt length, N new tokens, V vocabulary.
"""

from __future__ import annotations

import torch

from minimost.model import MAMoELM


def sample_next(logits_BV: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick one id per row (B,) from next-token logits (B, V). temperature 0 = greedy (argmax)."""
    if temperature == 0:
        return logits_BV.argmax(dim=-1)
    logits = logits_BV.float() / temperature
    if top_k is not None:  # keep the k largest logits
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]     # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:  # keep the smallest set of top ids whose probability reaches top_p
        sorted_logits, order = logits.sort(dim=-1, descending=True)                 # (B, V)
        probs = sorted_logits.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # mass of the strictly more likely ids; the top id always stays
        sorted_logits = sorted_logits.masked_fill(before >= top_p, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)             # (B,)


@torch.no_grad()
def generate(model: MAMoELM, input_ids_BT: torch.Tensor, attention_mask_BT: torch.Tensor | None = None,
             max_new_tokens: int = 32, temperature: float = 0.0, top_k: int | None = None,
             top_p: float | None = None, stop_tokens=(), pad_id: int = 0,
             generator: torch.Generator | None = None, audio_BTC: torch.Tensor | None = None,
             audio_mask_BT: torch.Tensor | None = None) -> torch.Tensor:
    """Continue each prompt by up to `max_new_tokens` ids; returns (B, T + max_new_tokens).

    Prompts of different lengths are *left*-padded with attention_mask 0 so every row's next token
    sits in the same column. A row stops after it emits one of `stop_tokens` (the stop token is kept);
    its remaining columns are `pad_id`. Generation ends early once every row has stopped.
    audio_BTC / audio_mask_BT: continuous speech frames spliced into the prompt (minimost.continuous);
    they enter the prefill only, after which the KV cache holds them.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}.")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be a positive integer or None, got {top_k}.")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p}.")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}.")
    B, T = input_ids_BT.shape
    total = T + max_new_tokens
    if total > model.cfg.max_seq_len:
        raise ValueError(f"prompt length {T} + max_new_tokens {max_new_tokens} = {total} exceeds the model's "
                         f"max_seq_len={model.cfg.max_seq_len}; shorten the prompt or ask for fewer tokens.")
    model.eval()
    dev = input_ids_BT.device
    mask_BT = (attention_mask_BT.bool() if attention_mask_BT is not None
               else torch.ones(B, T, dtype=torch.bool, device=dev))
    stop = torch.tensor(list(stop_tokens), dtype=torch.long, device=dev)
    out_BN = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=dev)
    if max_new_tokens == 0:
        return torch.cat((input_ids_BT, out_BN), dim=1)

    cache = model.make_cache(B, total)
    logits = model(input_ids_BT, attention_mask_BT=mask_BT, cache=cache, audio_BTC=audio_BTC,
                   audio_mask_BT=audio_mask_BT).logits[:, -1]                           # prefill: (B, V)
    done_B = torch.zeros(B, dtype=torch.bool, device=dev)
    for i in range(max_new_tokens):
        next_B = sample_next(logits, temperature, top_k, top_p, generator)
        out_BN[:, i] = next_B.masked_fill(done_B, pad_id)  # finished rows only collect padding
        done_B = done_B | torch.isin(next_B, stop)
        if i == max_new_tokens - 1 or done_B.all():
            break
        # Feed the new token back. Its mark comes from its own id (MoST's generation bug, §2.5).
        # Finished rows feed their (valid) sample marked as padding: nothing attends to it, and
        # pad_id need not be a valid id.
        ids_B1 = next_B[:, None]
        logits = model(ids_B1, marks_BT=model.token_modality[ids_B1], attention_mask_BT=~done_B[:, None],
                       cache=cache, check_inputs=False).logits[:, -1]                  # (B, V)
    return torch.cat((input_ids_BT, out_BN), dim=1)                                     # (B, T + N)
