"""Chapter 2 exercises: modality-aware routing, MAMoE (notebooks/02_mamoe.ipynb).

Fill in each function, then run `MINIMOST_EXERCISES=student pytest tests/exercises/test_ch02.py`.
The tests compare your result with `minimost.moe.Router`. Marks: 0 = TEXT, 1 = AUDIO, 2 = SPECIAL
(`minimost.config`). Shapes: B batch, T time, N = B*T tokens, E experts, K top-k, M = 3 mark values.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def mamoe_mask(probs_NE: torch.Tensor, marks_N: torch.Tensor, text_experts: Sequence[int],
               audio_experts: Sequence[int], special_route: str = "text") -> torch.Tensor:
    """Exercise 1 - MoST's modality mask, applied *after* the softmax (most-reference.md §2.4 step 4).

    Keep probs[n, e] where expert e belongs to token n's group and set every other entry to 0. A TEXT
    token's group is `text_experts`, an AUDIO token's `audio_experts`; a SPECIAL token follows
    `special_route` ("text", "audio" or "all": minimost's fix of MoST's "no expert" bug, §2.7).
    Returns (N, E), same dtype as probs; gradients must still flow into the kept entries.
    """
    raise NotImplementedError("exercise 1 of chapter 2: write mamoe_mask")


def mamoe_route(logits_NE: torch.Tensor, marks_N: torch.Tensor, text_experts: Sequence[int],
                audio_experts: Sequence[int], k: int, mask_mode: str = "after_softmax",
                renormalize: bool = False, special_route: str = "text") -> tuple[torch.Tensor, torch.Tensor]:
    """Exercise 2 - the whole MAMoE routing decision and its two variants. -> (weights_NK, indices_NK).

    mask_mode="after_softmax" (MoST): softmax over all E experts in fp32, zero the other group
    (exercise 1), take the top-k among the allowed experts; the weights are those global
    probabilities. mask_mode="before_softmax": set the disallowed logits to -inf first, so the
    softmax is taken within the group. renormalize=True divides the K weights by their sum.
    Top-k must only ever pick allowed experts (order: largest first, as `torch.topk`).
    """
    raise NotImplementedError("exercise 2 of chapter 2: write mamoe_route")


def sequence_balance_loss(probs_NE: torch.Tensor, indices_NK: torch.Tensor, valid_BT: torch.Tensor,
                          n_experts: int) -> torch.Tensor:
    """Exercise 3 - the per-sequence balance loss with padding excluded (no alpha). -> scalar.

    For each sequence b with T_b valid (non-padding) tokens, over its valid tokens only:
        f_{b,i} = E / (K * T_b) * #{(t, k) : indices[b, t, k] = i}
        P_{b,i} = (1 / T_b) * sum_t probs[b, t, i]          (probs are the *masked* probabilities)
        loss_b  = sum_i f_{b,i} * P_{b,i}
    Return the mean of loss_b over the sequences that have at least one valid token. Rows of
    probs/indices are ordered as (b, t) flattened: n = b * T + t. Checked against
    `minimost.moe.Router` with `balance_loss="sequence"` (whose value is this times `balance_alpha`).
    """
    raise NotImplementedError("exercise 3 of chapter 2: write sequence_balance_loss")


def group_shares(tokens_per_expert_ME: torch.Tensor, text_experts: Sequence[int],
                 audio_experts: Sequence[int]) -> torch.Tensor:
    """Exercise 4 - where did each modality go? -> (M, 2) float.

    tokens_per_expert_ME is `RouterStats.tokens_per_expert_ME` (assignments per mark and expert).
    Row m is the share of mark m's assignments that reached the text group (column 0) and the audio
    group (column 1); a mark with no assignments gives a row of zeros. With MAMoE the TEXT row is
    [1, 0] and the AUDIO row [0, 1]; with vanilla routing they are whatever the router learned.
    """
    raise NotImplementedError("exercise 4 of chapter 2: write group_shares")
