"""Chapter 6 exercises (minimost/exercises/ch06.py) checked against minimost.evaluate."""

from types import SimpleNamespace

import pytest

import minimost.evaluate as evaluate
from minimost.tokenizer import Tokenizer

TEXTS = ["the red fox sees the blue bird", "a small dog runs to the old house", "where is the green cup ?"] * 20


@pytest.fixture
def ex(ex_kind, load):
    return load(ex_kind, "ch06")


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(TEXTS, vocab_size=256, unit_budget=64).with_units(64)


@pytest.mark.parametrize("spoken_reply", [False, True])
def test_spoken_question_prompt_is_what_answer_sends(ex, tok, monkeypatch, spoken_reply):
    sent = []

    def capture(model, prompts, max_new, stop_tokens, pad_id, batch_size=32):
        sent.extend(prompts)
        return [[] for _ in prompts]

    monkeypatch.setattr(evaluate, "decode_batched", capture)
    questions = [[3, 17, 5, 60], [0], list(range(20))]
    evaluate.answer(None, tok, questions, spoken_reply=spoken_reply)
    assert [ex.spoken_question_prompt(tok, q, spoken_reply) for q in questions] == sent


@pytest.mark.parametrize("prediction,gold", [
    ("It is a purple cat.", "purple"), ("a catalogue", "cat"), ("the answer is a nurse", "a nurse"),
    ("nurse", "a nurse"), ("", "purple"), ("anything", ""), ("She is SIX years old!", "six"),
    ("there are 3 birds", "three"), ("blue-green", "blue"), ("a farmer.", "A Farmer"),
])
def test_answer_is_correct_matches_contains_answer(ex, prediction, gold):
    assert ex.answer_is_correct(prediction, gold) == evaluate.contains_answer(prediction, gold)


def test_reply_units_matches_units_of(ex, tok):
    u = tok.unit_start
    cases = [[tok.special("boa"), u + 3, u + 3, u + 10, tok.special("eoa")], [],
             [tok.special("boa"), 20, u, 21, u + 63, tok.special("eos")], [u + 1, u + 2]]
    for ids in cases:
        assert ex.reply_units(tok, ids) == evaluate.units_of(tok, ids)


@pytest.mark.parametrize("s2t,t2t", [
    (["purple", "no idea", "a farmer"], ["purple", "a nurse", "a farmer"]),
    (["purple", "x", "y"], ["a", "b", "c"]),                     # T→T is 0: the ratio is None
    (["it is purple", "a nurse", "x"], ["purple", "x", "x"]),
])
def test_sqa_scores_match_eval_sqa(ex, monkeypatch, s2t, t2t):
    gold = ["purple", "a nurse", "a farmer"]
    rows = [{"prompt_speech": f"q{i}", "answer_text": g} for i, g in enumerate(gold)]
    inp = SimpleNamespace(rows=lambda split, task, prefix="": rows, kit=None,
                          plan={f"q{i}": {"text": f"question {i}?"} for i in range(3)},
                          units={f"q{i}": [i, i + 1] for i in range(3)})
    inp.speech = lambda ids, path="units": [inp.units[i] for i in ids]
    model = SimpleNamespace(cfg=SimpleNamespace(audio_feature_dim=0))      # a unit-input model, never called
    monkeypatch.setattr(evaluate, "answer",
                        lambda model, tok, qs, spoken_reply=False, cfg=None: t2t if isinstance(qs[0], str) else s2t)
    want = evaluate.eval_sqa(model, None, inp, evaluate.EvalConfig())
    got = ex.sqa_scores(s2t, t2t, gold)
    assert got == {k: want[k] for k in ("s2t", "t2t", "questions", "s2t_over_t2t")}
