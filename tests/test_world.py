"""The mini-world generator: determinism, splits, vocabulary, template coverage, test sets, QA."""

import os
import re
import subprocess
import sys
from collections import Counter

import pytest

from minimost.data import lexicon as L
from minimost.data.instructions import INSTRUCTION_KINDS
from minimost.data.spoken_lm import SBLIMP_PHENOMENA, all_lexicon_words, segments
from minimost.data.stories import STORY_TOPICS
from minimost.data.world import (
    SENTENCE_KINDS,
    SPLITS,
    WorldError,
    generate_world,
    split_sentences,
    words_of,
    world_config,
    world_digest,
)


@pytest.fixture(scope="module")
def micro():
    return generate_world(world_config("micro"))


@pytest.fixture(scope="module")
def tiny():
    return generate_world(world_config("tiny"))


def test_same_seed_same_world_in_another_process(micro):
    # String hashing is randomised per process; the world must not depend on it.
    code = ("from minimost.data.world import *; "
            "print(world_digest(generate_world(world_config('micro'))))")
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == world_digest(micro) == world_digest(generate_world(world_config("micro")))


def test_other_seed_other_world(micro):
    assert world_digest(generate_world(world_config("micro", seed=1))) != world_digest(micro)


def test_splits_are_disjoint_by_sentence(tiny):
    by_split = tiny.sentences_by_split()
    assert all(by_split[s] for s in SPLITS)
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            assert not by_split[a] & by_split[b], (a, b, sorted(by_split[a] & by_split[b])[:3])
    # every sentence of every train document was claimed by train
    assert all(set(split_sentences(d["text"])) <= by_split["train"] for d in tiny.corpus["train"])


def test_split_sizes_follow_config(tiny):
    cfg = tiny.config
    n = {s: sum(d["kind"] in SENTENCE_KINDS for d in tiny.corpus[s]) for s in SPLITS}
    assert n["valid"] == round(cfg.n_sentences * cfg.valid_frac)
    assert n["test"] == round(cfg.n_sentences * cfg.test_frac)
    assert sum(n.values()) == cfg.n_sentences
    assert sum(d["kind"] == "story" for s in SPLITS for d in tiny.corpus[s]) == cfg.n_stories


def test_vocabulary_size_and_charset(micro, tiny):
    assert 900 <= len(tiny.vocabulary) <= 1300       # ~1 k words for the CPU course
    assert len(micro.vocabulary) < len(tiny.vocabulary)
    allowed = set(L.CHARSET)
    for text in tiny.texts():
        assert set(text) <= allowed, text
        assert text == text.strip() and "  " not in text


def test_every_template_kind_is_present(tiny, micro):
    for world in (tiny, micro):
        kinds = Counter(d["kind"] for d in world.corpus["train"])
        assert set(SENTENCE_KINDS) | {"story", "fact", "profile"} <= set(kinds)
        assert set(STORY_TOPICS) <= {d["topic"] for d in world.corpus["train"] if d["kind"] == "story"}
        assert set(INSTRUCTION_KINDS) | {"answer"} <= {x["kind"] for x in world.instructions["train"]}


def test_stories_have_five_sentences(tiny):
    stories = [d for d in tiny.corpus["train"] if d["kind"] == "story"]
    assert all(len(split_sentences(d["text"])) == 5 for d in stories)


def test_agreement_in_simple_sentences(tiny):
    # "the dogs runs" must never be generated: plural subject + third-person verb
    third = {v[1] for v in L.INTRANSITIVE_VERBS}
    for d in tiny.corpus["train"]:
        m = re.fullmatch(r"(these|those) (\w+) (\w+)\.", d["text"])
        if d["kind"] == "intransitive" and m:
            assert m.group(3) not in third, d["text"]


def test_lexicon_noun_lists_do_not_overlap():
    lists = {"names": [n for n, _ in L.NAMES], "animals": [w for a in L.ANIMALS for w in a[:2]],
             "foods": [w for f in L.FOODS for w in f[:2] if w], "drinks": list(L.DRINKS),
             "objects": [w for o in L.OBJECTS for w in o], "places": [p for p, _ in L.PLACES],
             "jobs": [j for j, _ in L.JOBS], "colors": list(L.COLORS)}
    seen = {}
    for name, words in lists.items():
        for w in set(words):
            assert w not in seen or seen[w] == name, (w, seen.get(w), name)
            seen[w] = name


def test_swuggy_nonwords(tiny, micro):
    lexicon = set(all_lexicon_words())
    for world in (tiny, micro):
        assert len(world.swuggy) == world.config.n_swuggy
        vocab = set(world.vocabulary)
        train_words = {w for d in world.corpus["train"] for w in words_of(d["text"])}
        assert len({r["nonword"] for r in world.swuggy}) == len(world.swuggy)
        for r in world.swuggy:
            assert r["nonword"] not in vocab and r["nonword"] not in lexicon
            assert r["word"] in train_words
            assert len(r["word"]) == len(r["nonword"]) == r["length"]
            assert len(segments(r["word"])) == len(segments(r["nonword"]))   # same C/V structure


def test_swuggy_nonwords_are_spoken_words_not_spelled_out(micro):
    synth = pytest.importorskip("minimost.speech.synth")
    try:
        phones = {w: tuple(synth.phonemize(w)) for r in micro.swuggy for w in (r["word"], r["nonword"])}
    except Exception as e:  # espeak missing on this machine
        pytest.skip(f"espeak-ng unavailable: {e}")
    for r in micro.swuggy:
        assert phones[r["nonword"]] != phones[r["word"]], r         # not a homophone of its word
        assert len(phones[r["nonword"]]) <= len(r["nonword"]) + 1, r   # espeak did not spell it out


def _minimal(good: str, bad: str) -> bool:
    g, b = words_of(good), words_of(bad)
    if len(g) != len(b):
        return False
    diff = [i for i in range(len(g)) if g[i] != b[i]]
    return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                              and g[diff[0]] == b[diff[1]] and g[diff[1]] == b[diff[0]])


def test_sblimp_pairs_differ_minimally_and_are_labelled(tiny):
    per = Counter(r["phenomenon"] for r in tiny.sblimp)
    assert set(per) == set(SBLIMP_PHENOMENA)
    assert all(n == tiny.config.n_sblimp_per_phenomenon for n in per.values())
    train = tiny.sentences_by_split()["train"]
    for r in tiny.sblimp:
        assert r["good"] != r["bad"] and _minimal(r["good"], r["bad"]), r
        assert r["good"] not in train


def test_sblimp_examples():
    world = generate_world(world_config("micro"))
    by = {r["phenomenon"]: r for r in world.sblimp}
    r = by["reflexive_agreement"]
    assert r["good"].split()[-1].rstrip(".") in ("himself", "herself")
    r = by["question_word_order"]
    assert r["good"].endswith("?") and r["bad"].endswith("?")


def test_storycloze_pairs(tiny):
    assert len(tiny.sstorycloze) == len(tiny.tstorycloze) == tiny.config.n_storycloze
    train = tiny.sentences_by_split()["train"]
    topic_of_ending = {r["good_ending"]: r["topic"] for r in tiny.sstorycloze}
    for s, t in zip(tiny.sstorycloze, tiny.tstorycloze):
        assert len(split_sentences(s["context"])) == 4
        assert s["context"] == t["context"] and s["good_ending"] == t["good_ending"]
        assert s["bad_ending"] != s["good_ending"]
        assert s["good_ending"] not in train and s["bad_ending"] not in train
        # tStoryCloze: the wrong ending is the right ending of a story on another topic
        assert topic_of_ending[t["bad_ending"]] != t["topic"]
    # sStoryCloze wrong endings swap one detail (rainy_day contradicts the weather instead)
    one_word = [s for s in tiny.sstorycloze if s["topic"] != "rainy_day"]
    assert all(sum(a != b for a, b in zip(s["good_ending"].split(), s["bad_ending"].split())) == 1
               for s in one_word)


def test_qa_answers_match_facts_and_facts_are_in_train_text(tiny):
    facts = {f["id"]: f for f in tiny.facts}
    train_docs = {d["text"] for d in tiny.corpus["train"]}
    for f in tiny.facts:
        assert all(s in train_docs for s in f["statements"])
    for split in SPLITS:
        for q in tiny.qa[split]:
            fact = facts[q["fact_id"]]
            assert any(q["answer"] in s for s in fact["statements"]), q
            assert q["person"] in q["question"] or q["relation"] == "owner"
    # held-out questions are never asked in training (text or speech instructions)
    train_prompts = {x["prompt"] for x in tiny.instructions["train"]}
    assert tiny.spoken_qa and not {q["question"] for q in tiny.spoken_qa} & train_prompts
    assert {q["question"] for q in tiny.qa["train"]} <= train_prompts
    # every held-out (person, relation) is held out entirely
    train_pairs = {(q["person"], q["relation"]) for q in tiny.qa["train"]}
    assert not {(q["person"], q["relation"]) for q in tiny.qa["test"]} & train_pairs


def test_instruction_answers(tiny):
    for x in tiny.instructions["train"]:
        if x["kind"] == "reverse":
            words = x["prompt"].removeprefix("say the words ").removesuffix(" in reverse order.").split()
            assert x["answer"].split() == words[::-1]
        if x["kind"] == "count" and x["prompt"].startswith("count from"):
            assert len(x["answer"].split()) >= 3


def test_config_errors():
    with pytest.raises(WorldError, match="unknown preset"):
        world_config("huge")
    with pytest.raises(WorldError, match="n_people"):
        world_config("micro", n_people=1000)
    with pytest.raises(WorldError, match="fraction"):
        world_config("micro", test_frac=0.7)
