"""The speech kit facade: one call builds (then loads) units, vocoder and judge; the three-line round trip."""

import numpy as np
import pytest

from minimost.speech.judge import JudgeConfig
from minimost.speech.kit import KitConfig, build_speech_kit, kit_summary
from minimost.speech.synth import TEST_VOICES, TRAIN_VOICES
from minimost.speech.units import UnitConfig, UnitSequence
from minimost.speech.vocoder import VocoderConfig


@pytest.fixture(scope="module")
def kit_and_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("kit")
    cfg = KitConfig(judge_sentences=12, judge_voices_per_sentence=1,
                    units=UnitConfig(max_steps=5, time_budget_s=60.0),
                    vocoder=VocoderConfig(max_steps=5, time_budget_s=60.0),
                    judge=JudgeConfig(max_steps=5, max_minutes=1.0))
    return build_speech_kit("micro", cache_dir=str(cache), cfg=cfg, progress=False), cache, cfg


def test_three_line_round_trip(kit_and_cache):
    kit, _, _ = kit_and_cache
    wav = kit.synthesize("there are two bags in the forest.", TRAIN_VOICES[0])
    units = kit.tokenize(wav)
    assert isinstance(units, UnitSequence) and len(units) > 0
    assert all(0 <= u < kit.units.num_units for u in units.units_dedup)
    speech = kit.resynthesize(units, TRAIN_VOICES[1], durations=units.durations)   # true durations
    assert speech.dtype == np.float32 and speech.ndim == 1
    assert len(speech) == units.num_frames * kit.vocoder.samples_per_unit_frame
    predicted = kit.resynthesize(units, TRAIN_VOICES[1])                          # the vocoder's durations
    assert predicted.dtype == np.float32 and len(predicted) >= len(units) * kit.vocoder.samples_per_unit_frame
    assert isinstance(kit.transcribe(speech), str)
    assert len(kit.transcribe([wav, speech])) == 2


def test_second_build_loads_the_same_artefacts(kit_and_cache):
    kit, cache, cfg = kit_and_cache
    again = build_speech_kit("micro", cache_dir=str(cache), cfg=cfg, progress=False)
    assert kit_summary(again) == kit_summary(kit)


def test_vocoder_refuses_held_out_voices(kit_and_cache):
    kit, _, _ = kit_and_cache
    units = kit.tokenize(kit.synthesize("a cat sleeps.", TRAIN_VOICES[0]))
    with pytest.raises(Exception, match="speaker|voice"):
        kit.resynthesize(units, TEST_VOICES[0])
