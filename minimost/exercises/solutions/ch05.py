"""Reference solutions to `minimost.exercises.ch05` (notebooks/05_asr_tts_posttraining.ipynb)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def unchanged_by_transform(indices_NK: torch.Tensor, text_experts: Sequence[int]) -> torch.Tensor:
    """All K chosen experts in the text group: MoST's rule picks them again, with the same raw weights."""
    group = torch.as_tensor(list(text_experts), device=indices_NK.device)
    return torch.isin(indices_NK, group).all(dim=-1)                                   # (N,)


def copy_text_experts(w_EXY: torch.Tensor, text_experts: Sequence[int], audio_experts: Sequence[int]) -> torch.Tensor:
    """Row a of the audio group := row t of the text group, pairwise."""
    out = w_EXY.clone()
    out[list(audio_experts)] = w_EXY[list(text_experts)]
    return out


def splice_input_spans(ids: Sequence[int], labels: Sequence[int], n_frames: Sequence[int], boa: int, eoa: int
                       ) -> tuple[list[int], list[int], list[bool]]:
    """Walk the sequence; an input span (no supervised label) becomes n placeholder positions."""
    out_ids, out_labels, is_frame = [], [], []
    spans_done, t = 0, 0
    while t < len(ids):
        if ids[t] == boa:
            end = list(ids[t:]).index(eoa) + t                                           # the span's <eoa>
            if all(int(x) == -100 for x in labels[t:end + 1]):
                n = n_frames[spans_done]
                spans_done += 1
                out_ids += [boa] * n
                out_labels += [-100] * n
                is_frame += [True] * n
            else:                                                                          # an output span
                out_ids += [int(i) for i in ids[t:end + 1]]
                out_labels += [int(x) for x in labels[t:end + 1]]
                is_frame += [False] * (end + 1 - t)
            t = end + 1
            continue
        out_ids.append(int(ids[t]))
        out_labels.append(int(labels[t]))
        is_frame.append(False)
        t += 1
    return out_ids, out_labels, is_frame
