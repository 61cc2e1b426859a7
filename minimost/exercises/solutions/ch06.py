"""Reference solutions to `minimost.exercises.ch06` (notebooks/06_instruction_tuning_and_spoken_qa.ipynb)."""

from __future__ import annotations

from collections.abc import Sequence

from minimost.wer import normalize_text


def spoken_question_prompt(tok, units: Sequence[int], spoken_reply: bool = False) -> list[int]:
    """<bos> <reply> <user> <boa> units <eoa> <assistant>."""
    reply = tok.special("speech_reply" if spoken_reply else "text_reply")
    return ([tok.special("bos"), reply, tok.special("user"), tok.special("boa")] + tok.encode_units(list(units))
            + [tok.special("eoa"), tok.special("assistant")])


def answer_is_correct(prediction: str, gold: str) -> bool:
    """Whole-word containment after normalisation: pad both sides with spaces."""
    g = normalize_text(gold)
    return bool(g) and f" {g} " in f" {normalize_text(prediction)} "


def reply_units(tok, generated_ids: Sequence[int]) -> list[int]:
    """Unit tokens only, shifted down to unit numbers."""
    return [i - tok.unit_start for i in generated_ids if tok.unit_start <= i < tok.vocab_size]


def sqa_scores(s2t: Sequence[str], t2t: Sequence[str], gold: Sequence[str]) -> dict:
    """Accuracies of both answer lists, and their ratio (None when the reference is 0)."""
    def accuracy(preds):
        return round(sum(answer_is_correct(p, g) for p, g in zip(preds, gold)) / len(gold), 4)

    out = {"s2t": accuracy(s2t), "t2t": accuracy(t2t), "questions": len(gold)}
    out["s2t_over_t2t"] = round(out["s2t"] / out["t2t"], 4) if out["t2t"] else None
    return out
