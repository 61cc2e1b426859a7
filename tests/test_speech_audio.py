"""Audio I/O with soundfile: round trips, atomic writes, every error case, the HF audio-cell adapter."""

import io

import numpy as np
import pytest
import soundfile as sf
import torch

from minimost.speech.audio import (
    AudioError,
    audio_from_hf,
    encode_audio,
    load_audio,
    resample,
    save_audio,
    to_float32,
)

SR = 16000


@pytest.fixture(scope="module")
def tone():
    """0.5 s of a 440 Hz tone at 16 kHz, peak 0.5."""
    t = np.arange(SR // 2) / SR
    return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


@pytest.mark.parametrize("ext", ["wav", "flac", "WAV"])
def test_round_trip(tmp_path, tone, ext):
    path = save_audio(tmp_path / f"a.{ext}", tone, SR)
    back = load_audio(path)
    assert back.dtype == np.float32 and back.shape == tone.shape
    np.testing.assert_allclose(back, tone, atol=1 / 32768)           # 16-bit quantisation
    assert np.array_equal(load_audio(path.read_bytes()), back)         # bytes in, same out
    assert [p.name for p in tmp_path.iterdir()] == [path.name]         # no temp file left behind


def test_save_accepts_torch_and_overwrites_atomically(tmp_path, tone):
    path = tmp_path / "sub" / "b.flac"
    save_audio(path, torch.from_numpy(tone), SR)
    save_audio(path, tone[: SR // 4], SR)
    assert len(load_audio(path)) == SR // 4
    with pytest.raises(AudioError, match="extension"):
        save_audio(tmp_path / "c.mp3", tone, SR)
    with pytest.raises(AudioError, match="outside"):
        save_audio(tmp_path / "d.wav", tone * 3, SR)
    assert sorted(p.name for p in path.parent.iterdir()) == ["b.flac"]


def test_resampling_and_wrong_rate(tmp_path, tone):
    path = save_audio(tmp_path / "a.wav", resample(tone, SR, 22050), 22050)
    assert abs(len(load_audio(path)) - len(tone)) <= 1
    assert len(load_audio(path, None)) == round(len(tone) * 22050 / SR)    # None keeps the file rate
    with pytest.raises(AudioError, match="22050 Hz; expected 16000 Hz.*resample=True"):
        load_audio(path, resample=False)


def test_stereo(tmp_path, tone):
    path = save_audio(tmp_path / "s.wav", np.stack([tone, tone * 0.5]), SR)    # (channels, samples)
    with pytest.raises(AudioError, match="2 channels; expected mono.*downmix=True"):
        load_audio(path)
    both = load_audio(path, mono=False)
    assert both.shape == (2, len(tone))
    np.testing.assert_allclose(load_audio(path, downmix=True), both.mean(0), atol=1e-6)


def test_pcm_range_and_dtypes(tone):
    assert to_float32(np.array([0, 16384, -32768], np.int16)).tolist() == [0.0, 0.5, -1.0]
    with pytest.raises(AudioError, match="no defined bit depth.*int16"):
        to_float32(np.array([0, 1000, -40]))                                  # int64
    with pytest.raises(AudioError, match="not scaled: divide by 32768"):
        to_float32((tone * 32767).astype(np.float32))                          # int PCM as float
    with pytest.raises(AudioError, match="NaN or Inf"):
        to_float32(np.array([0.1, np.nan], np.float32))


def test_bad_content(tmp_path, tone):
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), SR)
    with pytest.raises(AudioError, match="empty"):
        load_audio(empty)
    silent = save_audio(tmp_path / "silent.flac", np.zeros(SR, np.float32), SR)
    with pytest.raises(AudioError, match="all silent.*allow_silent=True"):
        load_audio(silent)
    assert load_audio(silent, allow_silent=True).shape == (SR,)
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.where(np.arange(SR) == 5, np.nan, 0.1).astype(np.float32), SR, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or Inf"):
        load_audio(nan)
    with pytest.raises(AudioError, match=r"0.50 s long, longer than max_seconds=0.25"):
        load_audio(save_audio(tmp_path / "long.wav", tone, SR), max_seconds=0.25)


def test_unreadable_and_truncated(tmp_path, tone):
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="cannot be read as audio"):
        load_audio(b"this is not audio" * 10)
    wav, flac = encode_audio(tone, SR, "WAV"), encode_audio(tone, SR, "FLAC")
    with pytest.raises(AudioError, match="truncated WAV.*declares"):
        load_audio(wav[: len(wav) // 2])                  # libsndfile alone would read half quietly
    cut = tmp_path / "cut.flac"
    cut.write_bytes(flac[: len(flac) // 2])
    with pytest.raises(AudioError, match="cannot be read"):
        load_audio(cut)


class _FakeSamples:
    def __init__(self, data, sample_rate):
        self.data, self.sample_rate = data, sample_rate


class _FakeDecoder:
    """Quacks like torchcodec's AudioDecoder (datasets >= 4 with decoding on)."""

    def __init__(self, wav, sr):
        self._s = _FakeSamples(torch.from_numpy(wav)[None], sr)

    def get_all_samples(self):
        return self._s


def test_hf_audio_cells(tmp_path, tone):
    flac = encode_audio(tone, SR)
    path = tmp_path / "a.flac"
    path.write_bytes(flac)
    ref = load_audio(flac)
    cells = [
        {"array": tone.astype(np.float64), "sampling_rate": SR},                  # datasets < 4
        {"array": (tone * 32767).astype(np.int16), "sampling_rate": SR},
        {"bytes": flac, "path": "a.flac"},                                         # Audio(decode=False)
        {"bytes": None, "path": str(path)},
        _FakeDecoder(tone, SR),
        flac,
        str(path),
    ]
    for cell in cells:
        wav, sr = audio_from_hf(cell)
        assert sr == SR and wav.dtype == np.float32 and wav.shape == tone.shape, type(cell)
        np.testing.assert_allclose(wav, ref, atol=2e-4)
    stereo = {"array": np.stack([tone, tone]).T, "sampling_rate": 8000}           # (samples, channels)
    wav, sr = audio_from_hf(stereo)
    assert sr == SR and wav.shape == (2 * len(tone),)                            # downmixed, resampled
    assert audio_from_hf({"array": tone, "sampling_rate": SR}, None)[1] == SR
    with pytest.raises(AudioError, match="no 'sampling_rate'"):
        audio_from_hf({"array": tone})
    with pytest.raises(AudioError, match="unsupported type"):
        audio_from_hf(3.0)


def test_encode_audio_is_plain_flac(tone):
    data = encode_audio(tone, SR)
    info = sf.info(io.BytesIO(data))
    assert (info.format, info.samplerate, info.channels, info.subtype) == ("FLAC", SR, 1, "PCM_16")
