"""Glue between the data build, the trainer and the CLI: what each stage trains on and how it is checked.

    data = prepare_data("tiny")                         # mini-world text + tokenizer (cached)
    source, tok = stage_source(data, model_cfg, train_cfg)   # the stage's mixture sampler
    eval_fn = text_eval_fn(data, tok)                   # validation loss / perplexity on text

Stage 0 (`pretrain`) trains on the text-LM task only; stages 1 and 2 need the speech tasks, which
exist once the speech kit's units have rendered them (`minimost synth`). Asking for a stage whose
data is missing is an error that says what to run.
"""

from __future__ import annotations

import math

import torch

from minimost.config import ModelConfig, TrainConfig


def stage_model_config(model_cfg: ModelConfig, stage: str) -> ModelConfig:
    """The model a stage starts from. Presets describe the MoST model (MAMoE on); stage 0 is the plain
    text MoE that stands in for DeepSeek-V2-Lite, so it routes top-k over *all* experts. The MoST
    transformation (`minimost.convert.most_transform`) switches modality routing on afterwards.
    `--set modality_routing=true` after this still wins, for experiments.
    """
    import dataclasses
    if stage == "pretrain":
        return dataclasses.replace(model_cfg, modality_routing=False, text_experts=None, audio_experts=None)
    return model_cfg


class StageDataError(RuntimeError):
    """The data a stage needs has not been built yet; the message says how to build it."""


def prepare_data(preset: str, data_dir: str = "data/cache", verbose: bool = False):
    """The preset's text data and tokenizer (built on first use, then loaded from the cache)."""
    from minimost.data.build import build_text_data
    return build_text_data(preset, data_dir, verbose=verbose)


def stage_tokenizer(data, train_cfg: TrainConfig):
    """Stage 0 uses the text-only tokenizer; later stages the one extended with unit tokens."""
    if train_cfg.stage == "pretrain":
        return data.tokenizer
    if not (data.path / "tokenizer_units").exists():
        raise StageDataError(f"stage {train_cfg.stage!r} trains on speech tasks, but this build has no unit "
                             f"tokens yet ({data.path}); render the speech data first with "
                             "`python -m minimost synth --preset ...` once the speech units exist.")
    return data.unit_tokenizer()


def stage_source(data, model_cfg: ModelConfig, train_cfg: TrainConfig, split: str = "train"):
    """(MixtureSampler, tokenizer) for one stage, checked against the model's vocabulary."""
    tok = stage_tokenizer(data, train_cfg)
    if tok.vocab_size > model_cfg.vocab_size:
        raise StageDataError(f"the tokenizer has {tok.vocab_size} ids but the model's vocab_size is "
                             f"{model_cfg.vocab_size}; raise vocab_size (--set vocab_size=...) or shrink the "
                             "tokenizer.")
    pools = data.token_pools(split)
    missing = sorted(t for t, w in train_cfg.mixture.items() if w > 0 and t not in pools)
    if missing:
        raise StageDataError(f"the {train_cfg.stage} mixture {train_cfg.mixture} needs task(s) {missing}, "
                             f"which are not rendered in {data.path} (rendered: {sorted(pools)}). Speech "
                             "tasks appear once `python -m minimost synth` has rendered speech units.")
    # Packing with document-aware attention: short mini-world documents would otherwise waste most of
    # each row on padding (docs/data.md measures 4 % padding bucketed, 0.3 % packed).
    sampler = data.sampler(train_cfg.mixture, train_cfg.batch_size, min(train_cfg.seq_len, model_cfg.max_seq_len),
                           seed=train_cfg.seed, split=split, packing=True)
    return sampler, tok


def text_eval_fn(data, tok, batch_size: int = 32, max_batches: int = 20):
    """An `eval_fn(model, step)` giving the validation loss and perplexity of the text-LM task."""
    from minimost.data.batching import eval_batches

    examples = data.token_pools("valid")["text_lm"]

    @torch.no_grad()
    def evaluate(model, step: int) -> dict:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        total, count = 0.0, 0
        for i, batch in enumerate(eval_batches(examples, batch_size, tok.pad_id)):
            if i >= max_batches:
                break
            out = model(batch["input_ids"].to(device), attention_mask_BT=batch["attention_mask"].to(device),
                        labels_BT=batch["labels"].to(device), check_inputs=False)
            n = int((batch["labels"][:, 1:] != -100).sum())
            total, count = total + float(out.lm_loss) * n, count + n
        model.train(was_training)
        loss = total / max(count, 1)
        return {"valid_text_loss": round(loss, 4), "valid_text_ppl": round(math.exp(min(loss, 50.0)), 2)}

    return evaluate
