"""Tokenizer: id layout, round trips, modality marks, save/load, the MoST unit extension, errors."""

import json

import pytest
import torch

from minimost.config import AUDIO, SPECIAL, TEXT, preset
from minimost.data.world import generate_world, world_config
from minimost.tokenizer import N_SPECIAL_SLOTS, SPECIAL_TOKENS, Tokenizer, TokenizerError, normalize_text


@pytest.fixture(scope="module")
def world():
    return generate_world(world_config("micro"))


@pytest.fixture(scope="module")
def texts(world):
    return [d["text"] for d in world.corpus["train"]] + world.vocabulary


@pytest.fixture(scope="module")
def tok(texts):
    """Text-only tokenizer sized like the tiny preset: 2048 ids with 256 left for units."""
    return Tokenizer.train(texts, vocab_size=2048, unit_budget=256)


def test_layout_specials_first_then_text(tok):
    assert [tok.special(n) for n, _, _ in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert tok.text_start == N_SPECIAL_SLOTS and tok.n_units == 0
    assert tok.vocab_size == tok.text_stop <= 2048 - 256
    tok.check()
    assert [g[0] for g in tok.groups()][:3] == ["special:pad", "special:bos", "special:eos"]


def test_text_round_trip(tok, world):
    for split in ("train", "valid", "test"):
        for d in world.corpus[split][:300]:
            ids = tok.encode_text(d["text"])
            assert all(tok.text_start <= i < tok.text_stop for i in ids)
            assert tok.decode_text(ids) == d["text"]
    for r in world.swuggy:     # non-words were never seen: still encodable, piece by piece
        assert tok.decode_text(tok.encode_text(r["nonword"])) == r["nonword"]
    assert tok.encode_text("") == []


def test_frequent_words_are_single_tokens(tok):
    assert tok.tokens(tok.encode_text("the dog runs.")) == ["\u2581the", "\u2581dog", "\u2581runs", "."]


def test_units_round_trip_and_marks_of_a_mixed_sequence(tok):
    t = tok.with_units(256)
    units = [0, 17, 255, 3]
    ids = t.encode_units(units)
    assert ids == [t.text_stop + u for u in units] and t.decode_units(ids) == units
    text = t.encode_text("a cat.")
    seq = [t.special("bos"), t.special("user")] + text + t.encode_audio(units) + [t.special("eos")]
    expect = [SPECIAL, SPECIAL] + [TEXT] * len(text) + [AUDIO] * (len(units) + 2) + [SPECIAL]
    assert t.marks(seq).tolist() == expect
    assert t.marks(torch.tensor([seq, seq])).shape == (2, len(seq))
    assert t.decode(seq) == ("<|bos|><|user|>a cat.<|begin_of_audio|><|unit_0|><|unit_17|><|unit_255|>"
                             "<|unit_3|><|end_of_audio|><|eos|>")


def test_modality_map_is_declared_and_covers_the_vocabulary(tok):
    t = tok.with_units(256)
    m = t.modality_map()
    assert m.shape == (t.vocab_size,)
    assert (m[t.text_start:t.text_stop] == TEXT).all() and (m[t.unit_start:] == AUDIO).all()
    assert m[t.special("boa")] == AUDIO and m[t.special("eoa")] == AUDIO      # declared, documented
    assert m[t.special("pad")] == SPECIAL and m[t.special("asr")] == SPECIAL
    padded = t.modality_map(preset("tiny").vocab_size)
    assert padded.shape == (2048,) and (padded[t.vocab_size:] == SPECIAL).all()
    starts = [(g[1], g[2]) for g in t.groups()]
    assert starts[0][0] == 0 and starts[-1][1] == t.vocab_size
    assert all(a[1] == b[0] for a, b in zip(starts, starts[1:]))     # disjoint and contiguous


def test_with_units_keeps_every_existing_id(tok, texts):
    t = tok.with_units(200)
    assert t.vocab_size == tok.vocab_size + 200
    for s in texts[:200]:
        assert t.encode_text(s) == tok.encode_text(s)
    assert {n: t.special(n) for n, _, _ in SPECIAL_TOKENS} == {n: tok.special(n) for n, _, _ in SPECIAL_TOKENS}
    assert torch.equal(t.modality_map()[:tok.vocab_size], tok.modality_map())
    assert [t.token(i) for i in range(tok.vocab_size)] == [tok.token(i) for i in range(tok.vocab_size)]
    assert t.with_units(200) is t
    named = tok.with_units(200, artefact="units-phonetic-k200-25hz-abc")
    assert named.unit_artefact == "units-phonetic-k200-25hz-abc"
    with pytest.raises(TokenizerError, match="units come from"):
        named.with_units(200, artefact="units-kmeans_mel-k200-25hz-def")
    with pytest.raises(TokenizerError, match="already has 200"):
        t.with_units(100)
    with pytest.raises(TokenizerError, match="exceeds the vocabulary budget"):
        tok.with_units(2048)


def test_save_and_load(tok, tmp_path, texts):
    t = tok.with_units(64)
    t.save(tmp_path / "tok")
    assert (tmp_path / "tok" / "tokenizer.json").is_file()
    layout = json.loads((tmp_path / "tok" / "minimost_tokenizer.json").read_text())
    assert layout["units"] == {"start": t.text_stop, "count": 64, "artefact": ""}
    assert {s["name"]: s["mark"] for s in layout["specials"]}["boa"] == "audio"
    u = Tokenizer.load(tmp_path / "tok")
    assert u.vocab_size == t.vocab_size and u.layout == t.layout
    for s in texts[:100]:
        assert u.encode_text(s) == t.encode_text(s)
    assert torch.equal(u.modality_map(), t.modality_map())
    # a text-only tokenizer saved next to a checkpoint, extended after loading: same ids
    tok.save(tmp_path / "text_only")
    assert Tokenizer.load(tmp_path / "text_only").with_units(64).layout == t.layout
    with pytest.raises(FileNotFoundError, match="Tokenizer.save"):
        Tokenizer.load(tmp_path / "nowhere")


def test_micro_preset_fits_its_vocabulary(texts):
    t = Tokenizer.train(texts, vocab_size=preset("micro").vocab_size, unit_budget=100).with_units(100)
    assert t.vocab_size <= preset("micro").vocab_size
    s = "the dog runs."
    assert t.decode_text(t.encode_text(s)) == s


def test_errors_say_what_is_wrong(tok):
    t = tok.with_units(100)
    with pytest.raises(TokenizerError, match=r"'!', 'H', 'W'"):
        t.encode_text("Hello World!")
    with pytest.raises(TokenizerError, match="cannot encode"):
        t.encode_text("<|bos|>")            # text can never spell a special token
    with pytest.raises(TokenizerError, match="different codebook"):
        t.encode_units([5, 100])
    with pytest.raises(TokenizerError, match="different codebook"):
        t.encode_units([-1])
    with pytest.raises(TokenizerError, match="no unit tokens"):
        tok.encode_units([1])
    with pytest.raises(TokenizerError, match="non-text ids"):
        t.decode_text([t.special("bos")] + t.encode_text("a"))
    assert t.decode_text([t.special("bos")] + t.encode_text("a cat"), skip_special=True) == "a cat"
    with pytest.raises(TokenizerError, match="non-unit ids"):
        t.decode_units([t.special("boa")])
    with pytest.raises(TokenizerError, match="unknown special token 'sep'"):
        t.special("sep")
    with pytest.raises(TokenizerError, match="out of range"):
        t.marks([t.vocab_size])
    with pytest.raises(TokenizerError, match="alphabet"):
        Tokenizer.train(["a b"], vocab_size=40, unit_budget=20)


def test_normalize_text():
    assert normalize_text("  Hello,   World! Ok?") == "hello, world. ok?"
