"""Reference solutions to `minimost.exercises.ch07` (notebooks/07_evaluation_and_ablations.ipynb)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import torch

from minimost.wer import normalize_text


def _word_edits(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance on words, one row at a time."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1]


def word_error_rate(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Total word edits over total reference words, after normalisation."""
    edits = words = 0
    for r, h in zip(refs, hyps):
        rw, hw = normalize_text(r).split(), normalize_text(h).split()
        edits += _word_edits(rw, hw)
        words += len(rw)
    return edits / words


def pair_accuracy_with_ties(good: Sequence[float], bad: Sequence[float]) -> float:
    """1 per win, 0.5 per tie, averaged."""
    return sum(1.0 if g > b else 0.5 if g == b else 0.0 for g, b in zip(good, bad)) / len(good)


def seed_verdict(arm_values: Sequence[float], base_values: Sequence[float], lower_is_better: bool) -> str:
    """Mean gap against the larger sample standard deviation."""
    def mean_std(values):
        values = [float(v) for v in values]
        return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)

    (a, sa), (b, sb) = mean_std(arm_values), mean_std(base_values)
    gap = (b - a) if lower_is_better else (a - b)
    if abs(gap) <= max(sa, sb):
        return "noise"
    return "better" if gap > 0 else "worse"


def group_softmax_route(logits_NE: torch.Tensor, allowed_NE: torch.Tensor, cfg, expert_bias=None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mask the logits with -inf, softmax, top-k of (probs + bias) among the allowed experts."""
    probs_NE = torch.softmax(logits_NE.masked_fill(~allowed_NE, float("-inf")), dim=-1)   # (N, E)
    select_NE = probs_NE + expert_bias if expert_bias is not None else probs_NE
    select_NE = select_NE.masked_fill(~allowed_NE, float("-inf"))
    indices_NK = torch.topk(select_NE, cfg.top_k, dim=-1).indices                          # (N, K)
    return probs_NE, probs_NE.gather(1, indices_NK), indices_NK
