"""Chapter 7 exercises: evaluation and ablations (notebooks/07_evaluation_and_ablations.ipynb).

Fill in each function, then run `MINIMOST_EXERCISES=student pytest tests/exercises/test_ch07.py`.
The tests compare your result with `minimost.wer`, `minimost.evaluate`, `minimost.ablate` and `minimost.moe`.
Shapes: N tokens, E routed experts, K experts per token.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def word_error_rate(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Exercise 1 - corpus-level word error rate.

    Normalise every transcript with `minimost.wer.normalize_text` and split on spaces. For each pair, the
    minimum number of word substitutions + deletions + insertions turning the reference into the hypothesis
    (Levenshtein distance on words); WER = total edits / total reference words. It can exceed 1.
    Checked against `minimost.wer.wer_report(refs, hyps).wer` (references are never all empty in the tests).
    """
    raise NotImplementedError("exercise 1 of chapter 7: write word_error_rate")


def pair_accuracy_with_ties(good: Sequence[float], bad: Sequence[float]) -> float:
    """Exercise 2 - the spoken-LM score: the fraction of pairs whose right member scores higher.

    good[i] and bad[i] are the log-likelihoods of the right and the wrong member of pair i. A win counts 1,
    a tie 0.5, a loss 0, so a model that scores everything equally gets chance, 0.5. Checked against
    `minimost.evaluate.pair_accuracy`.
    """
    raise NotImplementedError("exercise 2 of chapter 7: write pair_accuracy_with_ties")


def seed_verdict(arm_values: Sequence[float], base_values: Sequence[float], lower_is_better: bool) -> str:
    """Exercise 3 - is an arm better than the baseline beyond the seed-to-seed noise?

    Compute each side's mean and *sample* standard deviation (n - 1 in the denominator; 0 for one seed). The
    gap is (base mean - arm mean) when lower is better, else (arm mean - base mean). Return "noise" when
    |gap| <= the larger of the two standard deviations, otherwise "better" (gap > 0) or "worse".
    Checked against `minimost.ablate.compare` on `minimost.ablate.aggregate`d cells.
    """
    raise NotImplementedError("exercise 3 of chapter 7: write seed_verdict")


def group_softmax_route(logits_NE: torch.Tensor, allowed_NE: torch.Tensor, cfg, expert_bias=None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exercise 4 - a routing variant: softmax within the token's group (MoST's mask *before* the softmax).

    logits_NE: fp32 gate logits over all E experts; allowed_NE: bool, the experts the token may use.
    Return (probs_NE, weights_NK, indices_NK): probs = softmax over the allowed experts only (0 elsewhere),
    indices = the cfg.top_k allowed experts with the largest probabilities (if `expert_bias` (E,) is given,
    add it to the probabilities for the *choice* only), weights = probs at those indices. Registered with
    `minimost.moe.register_routing`, it must reproduce `mask_mode="before_softmax"` exactly.
    """
    raise NotImplementedError("exercise 4 of chapter 7: write group_softmax_route")
