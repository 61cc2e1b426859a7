"""Task formats and loss masks, the speech plan, and the cached text-data build."""

import json
import random
import time

import pytest

from minimost.config import TASKS
from minimost.data.batching import collate
from minimost.data.build import (
    build_text_data,
    render_rows,
    render_speech_tasks,
    speech_plan,
    task_rows,
    tokenizer_texts,
)
from minimost.data.tasks import IGNORE_INDEX, TaskError, make_row, render, render_prompt, show_loss
from minimost.data.world import generate_world, split_sentences, world_config
from minimost.tokenizer import Tokenizer, TokenizerError

TRAIN_VOICES = ["en-us+m1:p35:r145", "en-us+f1:p50:r165"]
TEST_VOICES = ["en-us+m2:p55:r175", "en+f4:p55:r150"]


@pytest.fixture(scope="module")
def world():
    return generate_world(world_config("micro"))


@pytest.fixture(scope="module")
def tok(world):
    return Tokenizer.train(tokenizer_texts(world), vocab_size=2048, unit_budget=64).with_units(64)


UNITS = {"u1": [5, 9, 2], "u2": [7, 7, 1, 63]}      # made-up deduplicated unit sequences


def rows():
    return [
        make_row("text_lm", "a", answer_text="the dog runs."),
        make_row("asr", "b", prompt_speech="u1", answer_text="a cat."),
        make_row("tts", "c", prompt_text="a cat.", answer_speech="u2"),
        make_row("text_instruct", "d", instruction="what color is milk?", answer_text="white"),
        make_row("speech_instruct", "e", prompt_speech="u1", answer_text="white"),
        make_row("speech_instruct", "f", prompt_speech="u1", answer_text="white", answer_speech="u2"),
        make_row("speech_lm", "g", answer_speech="u2"),
    ]


def test_a_decoded_batch_shows_exactly_which_tokens_carry_loss(tok):
    batch = collate([render(tok, r, UNITS) for r in rows()], tok.pad_id)
    shown = [show_loss(tok, i, lab) for i, lab in zip(batch["input_ids"].tolist(), batch["labels"].tolist())]
    assert shown == [
        "<|bos|> [▁the] [▁dog] [▁runs] [.] [<|eos|>]",
        "<|bos|> <|asr|> <|user|> ▁transcribe ▁the ▁following ▁speech ▁into ▁text . <|begin_of_audio|> "
        "<|unit_5|> <|unit_9|> <|unit_2|> <|end_of_audio|> <|assistant|> [▁a] [▁cat] [.] [<|eos|>]",
        "<|bos|> <|tts|> <|user|> ▁convert ▁the ▁following ▁text ▁into ▁speech . ▁a ▁cat . <|assistant|> "
        "[<|begin_of_audio|>] [<|unit_7|>] [<|unit_7|>] [<|unit_1|>] [<|unit_63|>] [<|end_of_audio|>] [<|eos|>]",
        "<|bos|> <|text_reply|> <|user|> ▁what ▁color ▁is ▁milk ? <|assistant|> [▁white] [<|eos|>]",
        "<|bos|> <|text_reply|> <|user|> <|begin_of_audio|> <|unit_5|> <|unit_9|> <|unit_2|> <|end_of_audio|> "
        "<|assistant|> [▁white] [<|eos|>]",
        "<|bos|> <|speech_reply|> <|user|> <|begin_of_audio|> <|unit_5|> <|unit_9|> <|unit_2|> "
        "<|end_of_audio|> <|assistant|> [<|begin_of_audio|>] [<|unit_7|>] [<|unit_7|>] [<|unit_1|>] "
        "[<|unit_63|>] [<|end_of_audio|>] [<|eos|>]",
        # the speech-only LM: every unit scored after the two tokens evaluate.py's spoken-LM scoring starts from
        "<|bos|> <|begin_of_audio|> [<|unit_7|>] [<|unit_7|>] [<|unit_1|>] [<|unit_63|>] [<|end_of_audio|>] [<|eos|>]",
    ]
    # padding never carries loss, and the batch is padded to its own longest row only
    assert ((batch["labels"] == IGNORE_INDEX) | batch["attention_mask"]).all()
    assert batch["input_ids"].shape[1] == max(len(render(tok, r, UNITS)) for r in rows())
    assert batch["task_ids"].tolist() == [TASKS.index(r["task"]) for r in rows()]


def test_labels_are_ids_on_the_response_and_ignored_on_the_prompt(tok):
    for r in rows():
        out = render(tok, r, UNITS)
        assert len(out.input_ids) == len(out.labels)
        assert out.labels[:out.prompt_len] == [IGNORE_INDEX] * out.prompt_len
        assert out.labels[out.prompt_len:] == out.input_ids[out.prompt_len:]
        assert out.input_ids[0] == tok.special("bos") and out.input_ids[-1] == tok.special("eos")
        prompt = render_prompt(tok, r, UNITS)
        assert prompt == out.input_ids[:out.prompt_len]
        last = {"text_lm": tok.special("bos"), "speech_lm": tok.special("boa")}.get(r["task"], tok.special("assistant"))
        assert prompt[-1] == last


def test_render_errors(tok):
    with pytest.raises(TaskError, match="no units for speech id 'u9'"):
        render(tok, make_row("asr", "x", prompt_speech="u9", answer_text="a"), UNITS)
    with pytest.raises(TaskError, match="needs prompt_speech"):
        render(tok, make_row("asr", "x", answer_text="a"), UNITS)
    with pytest.raises(TaskError, match="unknown task"):
        make_row("translate", "x")
    with pytest.raises(TaskError, match="needs a non-empty answer_text"):
        render(tok, make_row("text_lm", "x"))
    with pytest.raises(TokenizerError, match="different codebook"):
        render(tok, make_row("asr", "x", prompt_speech="big", answer_text="a"), {"big": [64]})
    with pytest.raises(TokenizerError, match="cannot encode"):
        render(tok, make_row("text_lm", "x", answer_text="The Dog."))


def test_speech_plan_voices_and_task_rows(world):
    plan = speech_plan(world, TRAIN_VOICES, TEST_VOICES)
    assert len({r["id"] for r in plan}) == len(plan)
    answer_voice = TRAIN_VOICES[0]
    for r in plan:
        if r["purpose"] in ("asr_tts", "instruct_prompt", "speech_story") and r["split"] != "test":
            assert r["voice"] in TRAIN_VOICES
        elif r["purpose"] in ("instruct_answer", "spoken_qa_answer"):
            assert r["voice"] == answer_voice
        else:   # every test stimulus: held-out voices only
            assert r["split"] == "test" and r["voice"] in TEST_VOICES, r
    by_id = {r["id"]: r for r in plan}
    for pair in ("word", "nonword"), ("good", "bad"):
        for r in plan:
            if r["id"].endswith("-" + pair[0]):
                other = by_id[r["id"][: -len(pair[0])] + pair[1]]
                assert other["voice"] == r["voice"]
    # no fact statement is spoken: knowledge stays in text (spoken QA measures the transfer)
    fact_texts = {s for f in world.facts for s in f["statements"]}
    assert not fact_texts & {r["text"] for r in plan}
    with pytest.raises(ValueError, match="overlap"):
        speech_plan(world, TRAIN_VOICES, TRAIN_VOICES[:1])

    out = task_rows(world, plan)
    assert {r["task"] for r in out["train"]} == set(TASKS)
    for split_rows in out.values():
        for r in split_rows:
            for col in ("prompt_speech", "answer_speech"):
                assert not r[col] or r[col] in by_id
    # the speech-only LM reads the ASR/TTS utterances of its own split, each once, and (train only)
    # whole spoken stories: train stories of the world, each one of its text-LM documents
    for split, split_rows in out.items():
        slm = sorted(r["answer_speech"] for r in split_rows if r["task"] == "speech_lm")
        assert slm == sorted(r["id"] for r in plan if r["split"] == split
                             and r["purpose"] in ("asr_tts", "speech_story"))
    stories = [r for r in plan if r["purpose"] == "speech_story"]
    assert len(stories) == world.config.n_speech_stories and {r["split"] for r in stories} == {"train"}
    train_stories = {d["text"] for d in world.corpus["train"] if d["kind"] == "story"}
    assert {r["text"] for r in stories} <= train_stories
    assert all(len(split_sentences(r["text"])) == 5 for r in stories)
    # the plan without its stories is the plan of a world that speaks none (their own random stream)
    no_stories = generate_world(world_config("micro", n_speech_stories=0))
    assert speech_plan(no_stories, TRAIN_VOICES, TEST_VOICES) == [r for r in plan if r["purpose"] != "speech_story"]
    spoken_qa = [r for r in out["test"] if r["kind"] == "spoken_qa"]
    assert len(spoken_qa) == 2 * len(world.spoken_qa)             # S->T and S->S
    text_tok = Tokenizer.train(tokenizer_texts(world), 2048, unit_budget=64)
    text_ids = render_rows(text_tok, [r for r in out["valid"] if r["task"] == "text_lm"])
    assert all(x["length"] == len(x["input_ids"]) for x in text_ids)


def test_build_is_cached_and_rebuilds_on_change(tmp_path):
    voices = (TRAIN_VOICES, TEST_VOICES)
    first = build_text_data("micro", tmp_path, voices=voices)
    assert first.stats["cache"] == {"hit": False}
    t = time.perf_counter()
    second = build_text_data("micro", tmp_path, voices=voices)
    assert time.perf_counter() - t < 1.0 and second.stats["cache"]["hit"]
    assert second.path == first.path
    strip = lambda s: {k: v for k, v in s.items() if k != "cache"}
    assert strip(second.stats) == strip(first.stats)
    assert second.tokenizer.layout == first.tokenizer.layout
    assert not list(tmp_path.glob(".tmp-*"))                       # built in a temp dir, renamed
    # what was saved
    assert set(first.dataset("corpus")) == {"train", "valid", "test"}
    assert len(first.dataset("eval/sblimp")) == len(generate_world(world_config("micro")).sblimp)
    pools = first.token_pools("train")
    assert set(pools) == {"text_lm", "text_instruct"}
    assert pools["text_lm"][0]["labels"][0] == IGNORE_INDEX
    stats = json.loads((first.path / "stats.json").read_text())
    assert stats["tokens"]["text_lm"]["train"]["tokens"] > 0 and 0 <= stats["padding"]["text_lm_bucketed"] < 0.2
    # the seam for the speech kit: made-up units for every planned utterance render the speech tasks
    rng = random.Random(0)
    units = {r["id"]: [rng.randrange(32) for _ in range(rng.randint(3, 12))]
             for r in first.dataset("speech_plan") if r["split"] != "test"}
    speech_stats = render_speech_tasks(first, units, n_units=32)
    assert set(first.token_pools("train")) == set(TASKS) and speech_stats["asr"]["train"]["examples"] > 0
    utok = first.unit_tokenizer()
    assert utok.n_units == 32 and utok.vocab_size <= 256
    sampler = first.sampler({"asr": 0.4, "tts": 0.4, "text_lm": 0.2}, batch_size=4, max_len=256, seed=0)
    batch = sampler.next_batch()
    assert set(batch) == {"input_ids", "attention_mask", "labels", "task_ids"}
    assert (utok.marks(batch["input_ids"]) == utok.modality_map()[batch["input_ids"]]).all()
    # a different world config is a different build
    other = build_text_data("micro", tmp_path, voices=voices, world=world_config("micro", seed=3))
    assert other.path != first.path and not other.stats["cache"]["hit"]
    assert other.stats["world"] != first.stats["world"]
