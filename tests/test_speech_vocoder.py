"""Unit vocoder: durations, training, synthesis lengths, the artefact, speakers, determinism.

Everything here runs on CPU in seconds: a k-means unit tokenizer (fitted in well under a second)
and a micro vocoder trained for a few dozen steps on six synthesised utterances. The real
measurements (thousands of utterances, the ASR judge) are in bench/bench_vocoder.py and
docs/vocoder.md.
"""

import numpy as np
import pytest
import torch

from minimost.speech.corpus import synthesis_record
from minimost.speech.synth import TRAIN_VOICES, synthesize
from minimost.speech.units import UnitArtefactMismatch, UnitConfig, dedup, train_units
from minimost.speech.vocoder import (
    HifiGanGenerator,
    UnitVocoder,
    VocoderConfig,
    VocoderError,
    durations_from_log,
    expand_durations,
    train_vocoder,
    train_waveform_generator,
    vocoder_mel,
)

SENTENCES = ["The old man found a red kite near the river.", "My sister painted the heavy box upstairs.",
             "A small child carried seven green apples."]
VOICES = (TRAIN_VOICES[0], TRAIN_VOICES[9])

# A micro vocoder: narrow, one layer of each kind, no dropout, so that a few dozen steps learn.
MICRO = dict(d_model=48, d_mel=32, n_enc_layers=1, n_heads=2, n_unit_blocks=1, n_mel_blocks=1, dropout=0.0,
             max_steps=60, time_budget_s=None, batch_seconds=1000.0, lr=3e-3, warmup_steps=5, threads=1,
             gl_iters=8, hifigan_channels=16)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # On a shared 2-core machine, two torch threads per op are several times slower than one.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def rows():
    """6 training rows (3 sentences x 2 training voices), as the corpus stores them."""
    return [synthesis_record(f"v{i}-{j}", synthesize(s, v)) for i, s in enumerate(SENTENCES)
            for j, v in enumerate(VOICES)]


@pytest.fixture(scope="module")
def tok(rows):
    """A k-means unit tokenizer: fitted in a fraction of a second, ids are units all the same."""
    return train_units(rows, UnitConfig(kind="kmeans_mel", codebook_size=16), progress=False)


@pytest.fixture(scope="module")
def trained(rows, tok):
    logs = []
    voc = train_vocoder(rows, tok, VocoderConfig(**MICRO), progress=False, log=logs.append, log_every=10)
    return voc, logs


@pytest.fixture(scope="module")
def seq(tok):
    return tok.encode(synthesize(SENTENCES[0], VOICES[0]).wav)


# --- durations --------------------------------------------------------------------------------

def test_duration_expansion_round_trip():
    frames = [3, 3, 3, 7, 1, 1, 3]
    units, durations = dedup(frames)
    out = expand_durations(torch.tensor(units), torch.tensor(durations))
    assert out.tolist() == frames
    assert dedup(out.tolist()) == (units, durations)
    with pytest.raises(VocoderError, match="one per unit"):
        expand_durations(torch.tensor([1, 2]), torch.tensor([1]))
    # log(1 + d) → d, never below one frame (a unit the LM emitted is always heard)
    assert durations_from_log(torch.log1p(torch.tensor([1.0, 4.0, 9.0]))).tolist() == [1, 4, 9]
    assert durations_from_log(torch.tensor([-5.0, 0.0])).tolist() == [1, 1]


def test_mel_frames_line_up_with_unit_frames(tok, rows):
    from minimost.speech.vocoder import prepare_example

    wav = synthesize(SENTENCES[1], VOICES[1]).wav
    ex = prepare_example(wav, tok, VocoderConfig())
    assert ex.mel.shape == (4 * int(ex.durations.sum()), 80)        # 4 mel frames per 25 Hz unit frame
    assert int(ex.durations.sum()) == len(tok.encode_frames(wav))
    assert vocoder_mel(wav).shape == (len(wav) // 160 + 1, 80)


# --- training ---------------------------------------------------------------------------------

def test_micro_vocoder_lowers_its_mel_loss(trained):
    voc, logs = trained
    first, last = logs[0], logs[-1]
    assert last["step"] == 60 and voc.info["steps"] == 60
    # one batch holds all six clips, so the batch loss is the training loss
    assert last["batch_mel_l1"] < 0.6 * first["batch_mel_l1"], (first, last)
    assert last["batch_dur_mse"] < 0.5 * first["batch_dur_mse"], (first, last)
    assert voc.speakers == [v.name for v in VOICES]                 # TRAIN_VOICES order


# --- synthesis ----------------------------------------------------------------------------------

def test_synthesize_with_true_durations_has_the_expected_length(trained, seq):
    voc, _ = trained
    wav = voc.synthesize(seq.units_dedup, VOICES[0].name, durations=seq.durations)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert voc.samples_per_unit_frame == 640
    assert len(wav) == sum(seq.durations) * 640                     # unit frames x 640 samples
    assert np.isfinite(wav).all() and 0.5 < np.abs(wav).max() <= 0.951


def test_predicted_durations_are_positive_integers(trained, seq):
    voc, _ = trained
    d, mel = voc.predict(seq.units_dedup, 1)
    assert d.dtype == torch.long and d.shape == (len(seq),) and int(d.min()) >= 1
    assert mel.shape == (4 * int(d.sum()), 80)
    wav = voc.synthesize(seq.units_dedup, 1)
    assert len(wav) == int(d.sum()) * 640


def test_deterministic_and_batched_matches_single(trained, seq, tok):
    voc, _ = trained
    a = voc.synthesize(seq.units_dedup, 0)
    b = voc.synthesize(seq.units_dedup, 0)
    assert np.array_equal(a, b)                                      # same input, same samples
    # Batched, the shorter clip is padded; the masks keep the padding out of its frames. (Compared
    # on the mel: Griffin-Lim's iterations and the peak normalisation magnify float rounding.)
    other = tok.encode(synthesize(SENTENCES[2], VOICES[1]).wav)
    _, mels = voc.predict_batch([seq.units_dedup, other.units_dedup], [0, 1], [seq.durations, other.durations])
    _, single = voc.predict(other.units_dedup, 1, other.durations)
    assert mels[1].shape == single.shape
    assert torch.allclose(mels[1], single, atol=1e-4)
    batch = voc.synthesize_batch([seq.units_dedup, other.units_dedup], [0, 1], [seq.durations, other.durations])
    assert [len(w) for w in batch] == [sum(seq.durations) * 640, sum(other.durations) * 640]


def test_bad_inputs_fail_clearly(trained, seq):
    voc, _ = trained
    with pytest.raises(VocoderError, match="unit ids must be in 0..15"):
        voc.synthesize([0, 16], 0)
    with pytest.raises(VocoderError, match="durations"):
        voc.synthesize(seq.units_dedup, 0, durations=[1] * (len(seq) - 1))
    with pytest.raises(VocoderError, match=">= 1"):
        voc.synthesize([1, 2], 0, durations=[1, 0])


def test_unknown_speaker_lists_the_valid_ones(trained, seq):
    voc, _ = trained
    with pytest.raises(VocoderError) as e:
        voc.synthesize(seq.units_dedup, "en-us+zz:p50:r175")
    msg = str(e.value)
    assert "unknown speaker" in msg and all(v.name in msg for v in VOICES) and "2 speakers" in msg
    with pytest.raises(VocoderError, match="unknown speaker"):
        voc.synthesize(seq.units_dedup, 2)                            # index out of range
    # a Voice, its full name, and the short form of the name all work
    assert voc.speaker_id(VOICES[1]) == voc.speaker_id(VOICES[1].name) == 1


# --- the artefact ---------------------------------------------------------------------------------

def test_save_load_round_trip_gives_identical_output(trained, seq, tok, tmp_path):
    voc, _ = trained
    voc.save(tmp_path / "voc")
    back = UnitVocoder.load(tmp_path / "voc", tok)
    assert back.hash == voc.hash and back.speakers == voc.speakers
    assert back.unit_artefact_id == tok.artefact_id
    assert np.array_equal(back.synthesize(seq.units_dedup, 1), voc.synthesize(seq.units_dedup, 1))


def test_mismatched_unit_artefact_fails_loudly(trained, rows, tok, tmp_path):
    voc, _ = trained
    other = train_units(rows, UnitConfig(kind="kmeans_mel", codebook_size=16, seed=1), progress=False)
    assert other.artefact_id != tok.artefact_id
    voc.save(tmp_path / "voc")
    with pytest.raises(UnitArtefactMismatch, match="unit artefact mismatch"):
        UnitVocoder.load(tmp_path / "voc", other)
    with pytest.raises(UnitArtefactMismatch):
        voc.resynthesize(synthesize(SENTENCES[0], VOICES[0]).wav, other, 0)
    voc.check_units(tok)                                             # the right one passes


def test_training_is_cached(rows, tok, tmp_path):
    cfg = VocoderConfig(**{**MICRO, "max_steps": 3})
    a = train_vocoder(rows[:2], tok, cfg, cache_dir=tmp_path, progress=False)
    b = train_vocoder(rows[:2], tok, cfg, cache_dir=tmp_path, progress=False)
    assert a.hash == b.hash and len(list(tmp_path.glob("vocoder-*"))) == 1


# --- the optional HiFi-GAN generator ----------------------------------------------------------------

def test_hifigan_generator_option(trained, rows, seq):
    voc, _ = trained
    g = HifiGanGenerator(80, channels=16)
    assert g.hop == 160 and g(torch.zeros(2, 80, 7)).shape == (2, 7 * 160)
    with pytest.raises(VocoderError, match="no trained generator"):
        UnitVocoder(VocoderConfig(**{**MICRO, "waveform": "hifigan"}), voc.speakers, voc.unit_artefact_id,
                    voc.num_units, voc.unit_rate_hz, voc.tensors).synthesize(seq.units_dedup, 0)
    hg = train_waveform_generator(voc, rows[:2], max_steps=2, segment_frames=8, batch_size=2, progress=False,
                                  device="cpu")
    assert hg.cfg.waveform == "hifigan" and hg.info["generator"]["steps"] == 2
    wav = hg.synthesize(seq.units_dedup, 0, durations=seq.durations)
    assert wav.dtype == np.float32 and len(wav) == sum(seq.durations) * 640
