"""Chapter 6 exercises: stage 2 and spoken question answering (notebooks/06_instruction_tuning_and_spoken_qa.ipynb).

Fill in each function, then run `MINIMOST_EXERCISES=student pytest tests/exercises/test_ch06.py`.
The tests compare your result with `minimost.evaluate` (the prompt `answer` builds, `contains_answer`,
`units_of`, `eval_sqa`).
"""

from __future__ import annotations

from collections.abc import Sequence


def spoken_question_prompt(tok, units: Sequence[int], spoken_reply: bool = False) -> list[int]:
    """Exercise 1 - the stage-2 prompt for a spoken question, built by hand.

    The ids, in order: <bos>, the reply token (`tok.special("text_reply")`, or "speech_reply" when
    `spoken_reply`), <user>, <boa>, the units as tokens (`tok.encode_units(units)`), <eoa>, <assistant>.
    (`tok.special(name)` gives a special token's id; the names are bos, user, boa, eoa, assistant.)
    The model continues after <assistant>. Checked against the prompt `minimost.evaluate.answer` builds.
    """
    raise NotImplementedError("exercise 1 of chapter 6: write spoken_question_prompt")


def answer_is_correct(prediction: str, gold: str) -> bool:
    """Exercise 2 - does a predicted answer count as correct?

    Normalise both with `minimost.wer.normalize_text` (lower case, punctuation dropped, numbers as words...).
    Correct when the normalised gold answer is non-empty and appears in the normalised prediction as whole
    words ("a cat" is in "it is a cat", but "cat" is not in "a catalogue"). Checked against
    `minimost.evaluate.contains_answer`.
    """
    raise NotImplementedError("exercise 2 of chapter 6: write answer_is_correct")


def reply_units(tok, generated_ids: Sequence[int]) -> list[int]:
    """Exercise 3 - the units of a generated spoken answer.

    `generated_ids` is what the model produced after <assistant> for a <speech_reply> prompt: usually
    <boa> unit tokens <eoa>, but a weak model may mix in text or special tokens. Keep only the unit tokens
    (ids from `tok.unit_start` up to `tok.vocab_size`), in order, as unit numbers 0..n_units-1 (what the
    vocoder takes). Checked against `minimost.evaluate.units_of`.
    """
    raise NotImplementedError("exercise 3 of chapter 6: write reply_units")


def sqa_scores(s2t: Sequence[str], t2t: Sequence[str], gold: Sequence[str]) -> dict:
    """Exercise 4 - the spoken-QA numbers from the answers to N questions.

    s2t[i]: the text answer to question i asked in speech; t2t[i]: the text answer to the same question
    asked in text; gold[i]: the gold answer. Return {"s2t": accuracy, "t2t": accuracy, "questions": N,
    "s2t_over_t2t": s2t / t2t, or None when t2t is 0}; accuracies are fractions of `answer_is_correct`,
    every value rounded to 4 decimals (the ratio is computed from the rounded accuracies, as
    `minimost.evaluate.eval_sqa` does). Checked against `eval_sqa` fed with the same answers.
    """
    raise NotImplementedError("exercise 4 of chapter 6: write sqa_scores")
