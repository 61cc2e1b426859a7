"""espeak-ng synthesis: format, no clipping, determinism, timings, the voice set and its errors, G2P."""

import threading
import time

import numpy as np
import pytest

from minimost.speech.synth import (
    PEAK,
    TEST_VOICES,
    TRAIN_VOICES,
    VOICES,
    SynthesisError,
    Voice,
    VoiceError,
    available_accents,
    available_variants,
    engine,
    phonemize,
    strip_stress,
    synthesize,
)

TEXT = "The cat sat on the mat."
VOICE = TRAIN_VOICES[1]


@pytest.fixture(scope="module")
def syn():
    return synthesize(TEXT, VOICE)


def test_output_is_16k_mono_float32_peak_normalised(syn):
    assert syn.sample_rate == 16000
    assert syn.wav.dtype == np.float32 and syn.wav.ndim == 1
    assert 0.5 < syn.duration < 5.0
    assert np.isfinite(syn.wav).all()
    assert np.abs(syn.wav).max() == pytest.approx(PEAK, abs=1e-6)     # loud, never clipped


def test_espeak_itself_does_not_clip():
    # At espeak's default amplitude some voices hit int16 full scale; minimost renders at half.
    for voice in (Voice("en-gb-scotland", "klatt", 80), VOICES[0], VOICES[-1]):
        raw, _ = engine().synth("Why did you do that? I really want to know!", voice.validate())
        assert np.abs(raw.astype(np.int32)).max() < 32000, voice


def test_deterministic_whatever_ran_before(syn):
    synthesize("Something else entirely, with a question?", TEST_VOICES[0])
    again = synthesize(TEXT, VOICE)
    assert np.array_equal(again.wav, syn.wav)
    assert again.phonemes == syn.phonemes and again.words == syn.words


def test_breathy_voices_are_deterministic_too():
    # espeak seeds its breath noise from the clock (seconds) at every initialisation
    breathy = Voice("en-gb-x-rp", "f2")
    first = synthesize("Is it raining?", breathy).wav
    time.sleep(1.05)
    assert np.array_equal(synthesize("Is it raining?", breathy).wav, first)
    assert not np.array_equal(synthesize("Is it raining?", breathy, seed=1).wav, first)


def test_timings_monotonic_and_inside_the_clip(syn):
    for segs in (syn.phonemes, syn.words):
        starts = [s.start for s in segs]
        assert starts == sorted(starts)
        assert all(0 <= s.start <= s.end <= syn.duration for s in segs)
    # espeak speaks "on the" as one dictionary phrase: one word event, labelled with both words
    assert [w.label for w in syn.words] == ["The", "cat", "sat", "on the", "mat"]
    # each word spans its phonemes; phonemes do not overlap
    assert all(a.end <= b.start + 1e-9 for a, b in zip(syn.phonemes, syn.phonemes[1:]))
    inside = [p for p in syn.phonemes if syn.words[1].start <= p.start < syn.words[1].end]
    assert [strip_stress(p.label) for p in inside] == ["k", "æ", "t"]
    # the speech starts near the start and ends before the clip does (espeak adds a short tail)
    assert syn.phonemes[0].start < 0.1 and syn.phonemes[-1].end <= syn.duration


def test_voice_set_and_split():
    assert len(VOICES) >= 32 and len({v.name for v in VOICES}) == len(VOICES)
    assert (len(TRAIN_VOICES), len(TEST_VOICES)) == (24, 8)
    assert not {v.name for v in TRAIN_VOICES} & {v.name for v in TEST_VOICES}
    train_pairs = {(v.accent, v.variant) for v in TRAIN_VOICES}
    assert all((v.accent, v.variant) not in train_pairs for v in TEST_VOICES)
    assert {v.variant for v in TEST_VOICES} - {v.variant for v in TRAIN_VOICES}       # unseen variants
    assert {v.accent for v in TEST_VOICES} - {v.accent for v in TRAIN_VOICES}         # unseen accents
    for v in VOICES:
        assert v.validate() is v and Voice.parse(v.name) == v


def test_unknown_accent_or_variant_is_a_clear_error():
    with pytest.raises(VoiceError, match=r"unknown espeak voice \(accent\) 'en-gb'.*en-gb-x-rp.*en-us"):
        synthesize("hello", "en-gb")                  # espeak would keep the previous voice
    with pytest.raises(VoiceError, match=r"variant 'zz'.*m1"):
        synthesize("hello", "en-us+zz")               # espeak would ignore it silently
    with pytest.raises(VoiceError, match="pitch"):
        Voice("en-us", "m1", pitch=120)
    with pytest.raises(VoiceError, match="expected"):
        Voice.parse("en-us+m1:x9")
    assert "en-us" in available_accents() and "m3" in available_variants()


def test_different_voices_sound_different(syn):
    other = synthesize(TEXT, TRAIN_VOICES[4])
    n = min(len(other.wav), len(syn.wav))
    assert len(other.wav) != len(syn.wav) or not np.allclose(other.wav[:n], syn.wav[:n])


def test_g2p_matches_the_timed_phonemes(syn):
    ph = phonemize(TEXT, VOICE.accent)
    assert ph == [p.label for p in syn.phonemes]
    assert phonemize("cat", ipa=False) == ["k", "'a", "t"]                  # espeak ASCII mnemonics
    assert phonemize("the cat", word_sep="|") == ["ð", "ə", "|", "k", "ˈæ", "t"]


def test_words_follow_the_written_text():
    s = synthesize("Hello world, it's 42 cats!")
    assert [w.label for w in s.words] == ["Hello", "world", "it's", "42", "cats"]
    forty_two = s.words[3]
    assert [p.label for p in s.phonemes if forty_two.start <= p.start < forty_two.end] == \
        phonemize("42")                                           # "forty two", both numbers' words


def test_empty_text_is_an_error():
    with pytest.raises(SynthesisError, match="non-empty"):
        synthesize("   ")


def test_threads_share_the_engine_safely(syn):
    out = [None] * 4

    def work(i):
        out[i] = synthesize(TEXT, VOICE).wav

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(w, syn.wav) for w in out)
