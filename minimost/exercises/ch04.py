"""Chapter 4 exercises: stage 0, pretraining the text MoE (notebooks/04_pretrain_text_moe.ipynb).

Fill in each function, then run `MINIMOST_EXERCISES=student pytest tests/exercises/test_ch04.py`.
The tests compare your result with `minimost.train` and `minimost.generate`. Shapes: B batch,
T time, V vocabulary, L MoE layers, E routed experts.
"""

from __future__ import annotations

import torch

from minimost.config import TrainConfig


def next_token_loss(logits_BTV: torch.Tensor, labels_BT: torch.Tensor, valid_BT: torch.Tensor) -> torch.Tensor:
    """Exercise 1 - the language-model loss: mean next-token cross-entropy over supervised targets.

    The logits at position t predict the token at t + 1, so compare logits[:, :-1] with labels[:, 1:].
    A target is supervised when its label is not -100 *and* its position is valid (valid_BT[:, 1:],
    False on padding). Average the cross-entropy (computed in fp32) over supervised targets only:
    a batch with long and short rows weighs every target equally. Return a scalar tensor.
    Checked against `minimost.train.row_losses` (total cross-entropy / total targets).
    Hint: `labels.masked_fill(~valid, -100)`, `F.cross_entropy(..., ignore_index=-100)`.
    """
    raise NotImplementedError("exercise 1 of chapter 4: write next_token_loss")


def lr_schedule(step: int, cfg: TrainConfig) -> float:
    """Exercise 2 - the learning rate of optimizer step `step` (0-based), warmup then cosine.

    - warmup: for step < cfg.warmup_steps, lr = cfg.lr * (step + 1) / cfg.warmup_steps;
    - then progress = min(1, (step - warmup) / max(1, cfg.steps - warmup - 1)) goes from 0 to 1, and
      lr = cfg.lr * (r + (1 - r) * 0.5 * (1 + cos(pi * progress))) with r = cfg.min_lr_ratio,
      so the last step runs at cfg.lr * r.
    Only `cfg.schedule == "cosine"` is tested. Checked against `minimost.train.lr_at`.
    """
    raise NotImplementedError("exercise 2 of chapter 4: write lr_schedule")


def greedy_continue(model, input_ids_1T: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """Exercise 3 - greedy decoding the slow way: no KV cache, one full forward pass per new token.

    Repeat `max_new_tokens` times: run `model(ids).logits` (shape (1, T, V)) on the whole sequence so
    far, take the argmax of the last position's logits, append it. Return (1, T + max_new_tokens).
    Wrap it in `torch.no_grad()`. Checked against `minimost.generate.generate(..., temperature=0)`,
    which gets the same ids with a KV cache (one token per forward pass after the prompt).
    """
    raise NotImplementedError("exercise 3 of chapter 4: write greedy_continue")


def load_entropy(frac_LE: torch.Tensor) -> torch.Tensor:
    """Exercise 4 - how evenly does each MoE layer spread its tokens over the E experts?

    frac_LE[l, e] is the share of layer l's token-to-expert assignments that went to expert e (rows
    sum to 1; the trainer logs it as "load/text/frac"). Return the normalised entropy per layer,
    shape (L,): H_l / log(E) with H_l = -sum_e frac * log(frac) and 0 * log 0 = 0. 1 means perfectly
    even, 0 means every token went to one expert. Checked against the "load/text/entropy" summary
    of `minimost.train.expert_load_metrics` (which averages your (L,) values over layers).
    """
    raise NotImplementedError("exercise 4 of chapter 4: write load_entropy")
