"""Reference solutions to `minimost.exercises.ch04` (notebooks/04_pretrain_text_moe.ipynb)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from minimost.config import TrainConfig


def next_token_loss(logits_BTV: torch.Tensor, labels_BT: torch.Tensor, valid_BT: torch.Tensor) -> torch.Tensor:
    """Shift by one, mask padding and unsupervised positions, mean over what is left."""
    targets_BT = labels_BT[:, 1:].masked_fill(~valid_BT[:, 1:].bool(), -100)        # (B, T-1)
    logits = logits_BTV[:, :-1].float()                                               # (B, T-1, V)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets_BT.reshape(-1), ignore_index=-100)


def lr_schedule(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr, then a half cosine down to cfg.lr * cfg.min_lr_ratio."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps - 1))
    r = cfg.min_lr_ratio
    return cfg.lr * (r + (1 - r) * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def greedy_continue(model, input_ids_1T: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """Re-run the whole sequence for every new token and append the argmax."""
    ids = input_ids_1T
    for _ in range(max_new_tokens):
        logits_1TV = model(ids).logits
        next_11 = logits_1TV[:, -1].argmax(dim=-1, keepdim=True)                       # (1, 1)
        ids = torch.cat([ids, next_11], dim=1)
    return ids


def load_entropy(frac_LE: torch.Tensor) -> torch.Tensor:
    """-sum p log p per row (0 log 0 = 0), divided by log E."""
    E = frac_LE.shape[-1]
    p = frac_LE.float()
    h_L = -(p * p.clamp(min=1e-12).log()).sum(-1)
    return h_L / math.log(E)
