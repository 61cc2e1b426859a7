"""Reference solutions to `minimost.exercises.ch02` (notebooks/02_mamoe.ipynb)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from minimost.config import AUDIO, SPECIAL, TEXT


def _allowed(marks_N: torch.Tensor, n_experts: int, text_experts, audio_experts, special_route) -> torch.Tensor:
    """(N, E) bool: may token n use expert e?"""
    allowed_ME = torch.zeros(3, n_experts, dtype=torch.bool)
    allowed_ME[TEXT, list(text_experts)] = True
    allowed_ME[AUDIO, list(audio_experts)] = True
    allowed_ME[SPECIAL] = {"text": allowed_ME[TEXT], "audio": allowed_ME[AUDIO],
                           "all": torch.ones(n_experts, dtype=torch.bool)}[special_route]
    return allowed_ME.to(marks_N.device)[marks_N.long()]                   # (N, E)


def mamoe_mask(probs_NE, marks_N, text_experts: Sequence[int], audio_experts: Sequence[int],
               special_route: str = "text") -> torch.Tensor:
    """Zero every probability outside the token's group (a `where`, so gradients reach the rest)."""
    allowed_NE = _allowed(marks_N, probs_NE.shape[1], text_experts, audio_experts, special_route)
    return torch.where(allowed_NE, probs_NE, torch.zeros_like(probs_NE))


def mamoe_route(logits_NE, marks_N, text_experts, audio_experts, k: int, mask_mode: str = "after_softmax",
                renormalize: bool = False, special_route: str = "text"):
    """Mask after (MoST) or before the softmax, top-k among allowed experts, optional renormalisation."""
    logits_NE = logits_NE.float()
    allowed_NE = _allowed(marks_N, logits_NE.shape[1], text_experts, audio_experts, special_route)
    if mask_mode == "after_softmax":
        probs_NE = mamoe_mask(torch.softmax(logits_NE, dim=-1), marks_N, text_experts, audio_experts,
                              special_route)
    elif mask_mode == "before_softmax":
        probs_NE = torch.softmax(logits_NE.masked_fill(~allowed_NE, float("-inf")), dim=-1)
    else:
        raise ValueError(f"mask_mode must be 'after_softmax' or 'before_softmax', got {mask_mode!r}")
    # select among allowed experts only: a disallowed 0 must never beat an allowed probability
    indices_NK = torch.topk(probs_NE.masked_fill(~allowed_NE, float("-inf")), k, dim=-1).indices
    weights_NK = probs_NE.gather(1, indices_NK)
    if renormalize:
        weights_NK = weights_NK / weights_NK.sum(dim=-1, keepdim=True)
    return weights_NK, indices_NK


def sequence_balance_loss(probs_NE, indices_NK, valid_BT, n_experts: int) -> torch.Tensor:
    """Per-sequence f·P on valid tokens only, averaged over the sequences that have any."""
    (B, T), K = valid_BT.shape, indices_NK.shape[1]
    losses = []
    for b in range(B):
        rows = torch.arange(b * T, (b + 1) * T)[valid_BT[b].bool().cpu()]  # this sequence's real tokens
        if rows.numel() == 0:
            continue                                                       # all padding: contributes nothing
        T_b = rows.numel()
        counts_E = torch.bincount(indices_NK[rows].reshape(-1), minlength=n_experts).float()
        f_E = counts_E * n_experts / (K * T_b)
        P_E = probs_NE[rows].float().sum(dim=0) / T_b
        losses.append((f_E * P_E).sum())
    if not losses:
        return probs_NE.new_zeros((), dtype=torch.float32)
    return torch.stack(losses).mean()


def group_shares(tokens_per_expert_ME, text_experts, audio_experts) -> torch.Tensor:
    """Sum each mark's assignments over each group and divide by the mark's total."""
    load_ME = tokens_per_expert_ME.float()
    to_groups_M2 = torch.stack([load_ME[:, list(text_experts)].sum(dim=1),
                                load_ME[:, list(audio_experts)].sum(dim=1)], dim=1)   # (M, 2)
    total_M1 = load_ME.sum(dim=1, keepdim=True)
    return torch.where(total_M1 > 0, to_groups_M2 / total_M1.clamp(min=1e-12), torch.zeros_like(to_groups_M2))
