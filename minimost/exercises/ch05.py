"""Chapter 5 exercises: the MoST transformation and stage 1 (notebooks/05_asr_tts_posttraining.ipynb).

Fill in each function, then run `MINIMOST_EXERCISES=student pytest tests/exercises/test_ch05.py`.
The tests compare your result with `minimost.moe`, `minimost.transform` and `minimost.continuous`.
Shapes: N tokens, K experts per token, E routed experts, T sequence length.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def unchanged_by_transform(indices_NK: torch.Tensor, text_experts: Sequence[int]) -> torch.Tensor:
    """Exercise 1 - which text tokens keep exactly the same MoE output after the MoST transformation?

    indices_NK: the experts a *vanilla* (stage-0) MoE layer chose for N text tokens. After the transformation
    the same layer routes text tokens with MoST's rule (softmax over all experts, the audio group zeroed after
    it, raw weights). Return a bool tensor (N,): True where the token's output cannot change, i.e. where all
    its K experts are in `text_experts`. Checked by running a MoE layer before and after switching
    `modality_routing` on with the same weights.
    Hint: `torch.isin`.
    """
    raise NotImplementedError("exercise 1 of chapter 5: write unchanged_by_transform")


def copy_text_experts(w_EXY: torch.Tensor, text_experts: Sequence[int], audio_experts: Sequence[int]) -> torch.Tensor:
    """Exercise 2 - `expert_init="copy_text"`: every audio expert starts as a copy of a text expert.

    w_EXY: one stacked per-expert tensor (E, X, Y) (an expert weight such as `w_up`; the gate's weight
    (E, D) works too). The j-th audio expert becomes a copy of the j-th text expert (zip the two lists).
    Return a new tensor; do not modify the input. Checked against
    `minimost.transform.most_transform(..., expert_init="copy_text")`.
    """
    raise NotImplementedError("exercise 2 of chapter 5: write copy_text_experts")


def splice_input_spans(ids: Sequence[int], labels: Sequence[int], n_frames: Sequence[int], boa: int, eoa: int
                       ) -> tuple[list[int], list[int], list[bool]]:
    """Exercise 3 - MoST-C splicing: replace each *input* audio span by encoder-frame placeholders.

    A span runs from a `boa` id to the next `eoa` id, both included. It is an *input* span when none of its
    labels is supervised (all -100); output spans (TTS answers) stay as they are. Replace the i-th input
    span by n_frames[i] positions with id `boa`, label -100; keep every other position with its label.
    Return (new_ids, new_labels, is_frame) of the spliced length, is_frame True on the placeholders.
    Checked against `minimost.continuous.splice` (you may assume well-formed spans and one n_frames entry per
    input span).
    """
    raise NotImplementedError("exercise 3 of chapter 5: write splice_input_spans")
