"""The MoST transformation: turn a pretrained text MoE LM into a speech-text MAMoE model.

MoST (most-reference.md §7.1) builds its model from DeepSeek-V2-Lite by copying every tensor by name:
1. the 500 unit tokens take embedding / LM-head rows *above the real vocabulary* that DeepSeek never
   used (no resize, no special initialisation);
2. the routed experts are split **by index**: experts 0..E/2-1 form the text group, E/2..E-1 the audio
   group; expert i of MoST is DeepSeek's expert i (nothing is copied or duplicated);
3. the gate is kept as it is, and modality-aware routing is switched on.

`most_transform` does the same for any minimost model (the stage-0 model, or an imported DeepSeek
checkpoint), and makes each of those choices a named option so they can be ablated:

    new_token_init = "keep"      MoST: the rows are used as they are (for minimost's stage 0 they are
                                 the initial random rows, decayed by weight decay; never a gradient)
                   | "mean"      every new row = mean of the trained text rows (+ small noise)
                   | "normal"    fresh N(0, init_std) rows
    expert_init    = "keep"      MoST: the audio group is the pretrained experts with those indices
                   | "copy_text" audio expert j (and its gate row) := text expert j, so both groups
                                 start from the same functions and the router starts symmetric

What the transformation does to text: with MoST's rule (softmax over all experts, the other group
zeroed after it, raw weights), a text token's output is unchanged exactly when its stage-0 top-k
already lay inside the text group. Any routed contribution that stage 0 sent to an audio-group
expert is lost (and not replaced: the weights are not renormalised), so text quality drops at the
start of stage 1 in proportion to how much stage 0 used the second half. `tests/test_transform.py`
checks the exact equality in the case where it must hold.
"""

from __future__ import annotations

import dataclasses

import torch

from minimost.config import ConfigError, ModelConfig
from minimost.model import MAMoELM

NEW_TOKEN_INITS = ("keep", "mean", "normal")
EXPERT_INITS = ("keep", "copy_text")


def most_config(cfg: ModelConfig, vocab_size: int | None = None, text_experts=None, audio_experts=None,
                **changes) -> ModelConfig:
    """The stage-0 config with MAMoE routing on (groups by index unless given) and room for the units."""
    return dataclasses.replace(cfg, modality_routing=True, text_experts=text_experts, audio_experts=audio_experts,
                               vocab_size=max(cfg.vocab_size, vocab_size or 0), **changes)


@torch.no_grad()
def most_transform(model: MAMoELM, tokenizer, new_token_init: str = "keep", expert_init: str = "keep",
                   text_experts=None, audio_experts=None, seed: int = 0, **config_changes) -> MAMoELM:
    """A new MAMoE model from a pretrained (vanilla-routed) one and the tokenizer extended with units.

    tokenizer: the unit-extended tokenizer (`Tokenizer.with_units`); its unit ids must lie above every id
    the text model was trained on, and its id -> modality map becomes the model's. If the tokenizer needs
    more rows than the model has, the embedding and LM head grow (MoST never needs to: DeepSeek has
    spare rows). `config_changes` set other MAMoE options (mask_mode, renormalize, ...).
    Returns a new model; the input model is not modified.
    """
    if new_token_init not in NEW_TOKEN_INITS:
        raise ConfigError(f"new_token_init={new_token_init!r}; expected one of {', '.join(NEW_TOKEN_INITS)}.")
    if expert_init not in EXPERT_INITS:
        raise ConfigError(f"expert_init={expert_init!r}; expected one of {', '.join(EXPERT_INITS)}.")
    if not getattr(tokenizer, "n_units", 0):
        raise ConfigError("the tokenizer has no unit tokens; extend it first with tokenizer.with_units(n_units).")
    old_cfg = model.cfg
    cfg = most_config(old_cfg, tokenizer.vocab_size, text_experts, audio_experts, **config_changes)
    new = MAMoELM(cfg).to(model.embed.weight.dtype)

    # Copy every tensor by name; the embedding and head may have grown by whole rows.
    state = model.state_dict()
    for name, target in new.state_dict().items():
        if name == "token_modality" or name not in state:
            continue  # the map comes from the tokenizer below; fresh buffers (e.g. expert_bias) stay as built
        source = state[name]
        if source.shape == target.shape:
            target.copy_(source)
        elif name in ("embed.weight", "lm_head.weight") and source.shape[1:] == target.shape[1:]:
            target[: source.shape[0]].copy_(source)
        else:
            raise ConfigError(f"cannot carry {name} over: shape {tuple(source.shape)} -> {tuple(target.shape)}.")

    # New token rows: the unit tokens (and any rows added above the old vocabulary).
    start = tokenizer.unit_start
    gen = torch.Generator().manual_seed(seed)
    heads = [new.embed.weight] if cfg.tie_embeddings else [new.embed.weight, new.lm_head.weight]
    for w in heads:
        if new_token_init == "mean":
            text = w[tokenizer.text_start:tokenizer.text_stop]
            noise = torch.randn(w.shape[0] - start, w.shape[1], generator=gen) * cfg.init_std * 0.1
            w[start:] = text.mean(0, keepdim=True) + noise.to(w.dtype)
        elif new_token_init == "normal":
            w[start:] = (torch.randn(w.shape[0] - start, w.shape[1], generator=gen) * cfg.init_std).to(w.dtype)
        elif w.shape[0] > old_cfg.vocab_size:  # "keep": rows that did not exist before start fresh
            extra = w.shape[0] - old_cfg.vocab_size
            w[old_cfg.vocab_size:] = (torch.randn(extra, w.shape[1], generator=gen) * cfg.init_std).to(w.dtype)

    if expert_init == "copy_text":
        text_group, audio_group = cfg.expert_groups()
        if len(text_group) != len(audio_group):
            raise ConfigError("expert_init='copy_text' needs text and audio groups of the same size, got "
                              f"{len(text_group)} and {len(audio_group)}.")
        for block in new.blocks:
            if not block.is_moe:
                continue
            experts, gate = block.ffn.experts, block.ffn.router.gate.weight
            for t, a in zip(text_group, audio_group):
                for w in (experts.w_gate, experts.w_up, experts.w_down, gate):
                    w[a] = w[t]

    new.set_modality_map(tokenizer.modality_map(cfg.vocab_size))
    return new
