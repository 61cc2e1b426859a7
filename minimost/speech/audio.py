"""Audio I/O for minimost: read and write WAV/FLAC with soundfile, check what comes in.

Everything in minimost's speech kit works on **16 kHz mono float32 in [-1, 1]**, the speech
default (LibriSpeech, HuBERT, Whisper). This module is the one door audio comes in by:

- `load_audio(path_or_bytes)` reads a WAV or FLAC file (or its bytes), resamples, and checks it.
- `save_audio(path, wav, sample_rate)` writes WAV or FLAC atomically (temp file + `os.replace`),
  so an interrupted run never leaves a half-written file behind.
- `encode_audio(wav, sample_rate)` gives FLAC/WAV bytes (what the corpus stores).
- `audio_from_hf(cell)` turns any Hugging Face `datasets` audio cell into `(wav, sample_rate)`.
- `resample(wav, orig_sr, new_sr)` is torchaudio's windowed-sinc resampler with a cached kernel.

Why soundfile and never `torchaudio.load`: since torchaudio 2.9, `load`/`save` are thin wrappers
over TorchCodec, which needs FFmpeg shared libraries. soundfile bundles libsndfile, reads and
writes WAV and FLAC with nothing else installed, and is what `datasets` used before 4.0.

Every problem raises `AudioError` (a `ValueError`) whose message says what was found, what was
expected and how to fix it. Arrays are numpy: mono audio has shape `(samples,)`, multi-channel
audio `(channels, samples)` (channels first, as torch and torchaudio use); `torch.from_numpy`
turns either into a tensor without a copy.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 16_000                  # Hz: the rate every minimost speech component uses
SILENCE_PEAK = 1e-4                   # a peak below this (-80 dBFS) counts as "all silent"
FORMATS = {".wav": "WAV", ".flac": "FLAC"}


class AudioError(ValueError):
    """Audio that minimost cannot use; the message says what was found, expected, and the fix."""


# --------------------------------------------------------------------------------------------
# Resampling
# --------------------------------------------------------------------------------------------

@lru_cache(maxsize=16)
def _resampler(orig_sr: int, new_sr: int):
    # torchaudio builds the windowed-sinc kernel once per transform; building it per call costs
    # ~6x the resampling itself on a 1.5 s clip, so keep one transform per rate pair.
    import torchaudio

    return torchaudio.transforms.Resample(orig_sr, new_sr)


def resample(wav: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Resample float audio `(..., samples)` from `orig_sr` to `new_sr` Hz (torchaudio, sinc/Hann).

    The output has `ceil(samples * new_sr / orig_sr)` samples and stays float32.
    """
    if orig_sr == new_sr:
        return np.asarray(wav, dtype=np.float32)
    import torch

    x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
    with torch.no_grad():
        return _resampler(int(orig_sr), int(new_sr))(x).numpy()


# --------------------------------------------------------------------------------------------
# Checks shared by every entry point
# --------------------------------------------------------------------------------------------

def to_float32(array: Any, what: str = "audio") -> np.ndarray:
    """Convert PCM samples to float32 in [-1, 1], refusing values that cannot be audio.

    int16 / int32 / uint8 PCM are scaled by their full range (as libsndfile does). A float array
    with values beyond 1.0 is almost always integer PCM that was never scaled (e.g. int16 stored
    as float), and int64 (numpy's default for Python ints) has no defined bit depth: both raise.
    """
    a = np.asarray(array)
    if a.dtype == np.int16:
        return (a.astype(np.float32) / 32768.0)
    if a.dtype == np.int32:
        return (a.astype(np.float64) / 2**31).astype(np.float32)
    if a.dtype == np.uint8:
        return ((a.astype(np.float32) - 128.0) / 128.0)
    if np.issubdtype(a.dtype, np.integer):
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        fits16 = lo >= -32768 and hi <= 32767
        raise AudioError(
            f"{what}: integer PCM of dtype {a.dtype} (values {lo}..{hi}) has no defined bit depth; "
            f"expected int16, int32, uint8 or float in [-1, 1]. Fix: cast to the PCM type it was "
            f"recorded in, e.g. `array.astype(np.{'int16' if fits16 else 'int32'})`, or scale to float.")
    if not np.issubdtype(a.dtype, np.floating):
        raise AudioError(f"{what}: samples of dtype {a.dtype} are not audio; expected float or int PCM.")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        bad = int((~np.isfinite(a)).sum())
        raise AudioError(
            f"{what}: {bad} sample(s) are NaN or Inf; expected finite values in [-1, 1]. Fix: find the "
            f"step that produced them (a division by a zero peak is the usual cause).")
    peak = float(np.abs(a).max()) if a.size else 0.0
    if peak > 1.0:
        hint = (" It looks like integer PCM that was not scaled: divide by 32768 (16-bit) or 2**31 (32-bit)."
                if peak >= 2.0 else " Fix: scale it down (e.g. `wav / abs(wav).max() * 0.95`).")
        raise AudioError(f"{what}: float samples reach {peak:g}, outside [-1, 1].{hint}")
    return a


def check_audio(wav: np.ndarray, sample_rate: int, what: str = "audio", *,
                max_seconds: float | None = None, allow_silent: bool = False) -> None:
    """Raise `AudioError` for empty, all-silent or too-long float audio `(..., samples)`."""
    n = wav.shape[-1] if wav.ndim else 0
    if wav.size == 0 or n == 0:
        raise AudioError(f"{what}: no samples (empty audio); expected at least one. Fix: drop this item "
                         f"or check the file was written completely.")
    seconds = n / sample_rate
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(f"{what}: {seconds:.2f} s long, longer than max_seconds={max_seconds:g}. Fix: "
                         f"raise max_seconds, or cut or drop long items.")
    peak = float(np.abs(wav).max())
    if not allow_silent and peak < SILENCE_PEAK:
        raise AudioError(f"{what}: all silent (peak {peak:.2g}, below {SILENCE_PEAK:g} = -80 dBFS); expected "
                         f"speech. Fix: check the recording, or pass allow_silent=True if silence is intended.")


def _channels_first(a: np.ndarray, what: str) -> np.ndarray:
    """(samples,) or (channels, samples) from soundfile's (samples, channels) convention."""
    if a.ndim == 1:
        return a
    if a.ndim == 2:
        return a.T if a.shape[1] <= 16 and a.shape[0] > a.shape[1] else a
    raise AudioError(f"{what}: array of shape {a.shape}; expected (samples,) or (channels, samples).")


def _to_mono(a: np.ndarray, what: str, mono: bool, downmix: bool) -> np.ndarray:
    """Mono `(samples,)`, or `(channels, samples)` when mono=False."""
    if a.ndim == 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 1:
        return a if mono else a[None, :]
    if not mono:
        return a
    if downmix:
        return a.mean(axis=0).astype(np.float32)
    raise AudioError(
        f"{what}: {a.shape[0]} channels; expected mono. Fix: pass downmix=True to average the channels, "
        f"or mono=False to get (channels, samples).")


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

def _wav_truncation(head: bytes, total_size: int) -> str | None:
    """If a RIFF/WAVE header declares more data than the file holds, say so (else None).

    libsndfile quietly reads a truncated WAV up to where the bytes stop, so a copy that was cut
    short would otherwise pass as a shorter, valid clip. FLAC has frame checksums and fails loudly.
    """
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(head):
        chunk_id, size = head[pos:pos + 4], struct.unpack("<I", head[pos + 4:pos + 8])[0]
        if chunk_id == b"data":
            # 0 and 0xFFFFFFFF-ish sizes are "unknown length" placeholders of streamed WAVs.
            if 0 < size < 0x7FFF0000 and pos + 8 + size > total_size:
                return f"its header declares {size} data bytes but only {total_size - pos - 8} are present"
            return None
        pos += 8 + size + (size & 1)      # RIFF chunks are padded to even sizes
    return None


def _describe(source: Any) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes of audio>"
    return str(source)


def _read_file(source: str | os.PathLike | bytes, what: str) -> tuple[np.ndarray, int]:
    """Decode a WAV/FLAC file or its bytes: float32 `(channels, samples)` and the file's rate."""
    import soundfile as sf

    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        trunc = _wav_truncation(data[:65536], len(data))
        handle: Any = io.BytesIO(data)
    else:
        path = Path(source)
        if not path.is_file():
            raise AudioError(f"{what}: no such file. Fix: check the path (relative paths are relative to "
                             f"{os.getcwd()}).")
        with open(path, "rb") as f:
            trunc = _wav_truncation(f.read(65536), path.stat().st_size)
        handle = str(path)
    if trunc:
        raise AudioError(f"{what}: truncated WAV file: {trunc}. Fix: copy or re-create the file.")
    try:
        # always_2d: (samples, channels) whatever the file holds, so channel logic is in one place
        raw, file_sr = sf.read(handle, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(
            f"{what}: cannot be read as audio ({e}); expected a complete WAV or FLAC file. Fix: check the "
            f"file is not truncated or another format (mp3/ogg need FFmpeg: convert with "
            f"`ffmpeg -i in.mp3 -ar 16000 -ac 1 out.flac`).") from e
    return to_float32(raw.T, what), int(file_sr)   # float files can hold |x| > 1: to_float32 checks


def load_audio(source: str | os.PathLike | bytes, sample_rate: int | None = SAMPLE_RATE, *,
               mono: bool = True, downmix: bool = False, resample: bool = True,
               max_seconds: float | None = None, allow_silent: bool = False) -> np.ndarray:
    """Read a WAV or FLAC file (path, or the file's bytes) as float32 in [-1, 1].

    Returns `(samples,)` when `mono` (the default), else `(channels, samples)`, at `sample_rate` Hz
    (None keeps the file's rate; `resample=False` makes a different rate an error instead of
    converting it). Multi-channel audio is an error when `mono`, unless `downmix=True` averages it.
    Raises `AudioError` for unreadable or truncated files, empty, all-silent (unless
    `allow_silent`), NaN/Inf, or longer than `max_seconds`.
    """
    what = _describe(source)
    wav, file_sr = _read_file(source, what)
    wav = _to_mono(wav, what, mono, downmix)
    check_audio(wav, file_sr, what, max_seconds=max_seconds, allow_silent=allow_silent)
    if sample_rate is not None and file_sr != sample_rate:
        if not resample:
            raise AudioError(f"{what}: sample rate {file_sr} Hz; expected {sample_rate} Hz. Fix: pass "
                             f"resample=True, or convert the file (`sox in.wav -r {sample_rate} out.wav`).")
        wav = _resample(wav, file_sr, sample_rate)
    return np.ascontiguousarray(wav, dtype=np.float32)


_resample = resample    # load_audio's `resample` argument shadows the function inside it


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

def _as_numpy(wav: Any) -> np.ndarray:
    if hasattr(wav, "detach"):            # a torch tensor, without importing torch here
        wav = wav.detach().cpu().numpy()
    return np.asarray(wav)


def _prepare_for_writing(wav: Any, sample_rate: int, what: str) -> np.ndarray:
    """Validated (samples, channels) float32 for soundfile."""
    a = _channels_first(to_float32(_as_numpy(wav), what), what)
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise AudioError(f"{what}: sample_rate={sample_rate!r}; expected a positive integer (Hz).")
    if a.shape[-1] == 0:
        raise AudioError(f"{what}: no samples to write (empty audio).")
    return a.T if a.ndim == 2 else a


def encode_audio(wav: Any, sample_rate: int = SAMPLE_RATE, format: str = "FLAC",
                 subtype: str = "PCM_16") -> bytes:
    """The bytes of a FLAC (default) or WAV file holding `wav` ((samples,) or (channels, samples))."""
    data = _prepare_for_writing(wav, sample_rate, "encode_audio")
    buf = io.BytesIO()
    import soundfile as sf

    sf.write(buf, data, int(sample_rate), format=format.upper(), subtype=subtype)
    return buf.getvalue()


def save_audio(path: str | os.PathLike, wav: Any, sample_rate: int = SAMPLE_RATE,
               subtype: str = "PCM_16") -> Path:
    """Write `wav` to `path` as WAV or FLAC (chosen by the extension), atomically.

    The audio goes to a temporary file in the same folder first and is then renamed over `path`
    (`os.replace` is atomic on one file system), so readers see the old file or the new one,
    never half of one. Returns the path.
    """
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise AudioError(f"{path}: unknown extension {path.suffix!r}; expected one of {sorted(FORMATS)}.")
    data = _prepare_for_writing(wav, sample_rate, str(path))
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            sf.write(f, data, int(sample_rate), format=fmt, subtype=subtype)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --------------------------------------------------------------------------------------------
# Hugging Face `datasets` audio cells
# --------------------------------------------------------------------------------------------

def audio_from_hf(cell: Any, sample_rate: int | None = SAMPLE_RATE, *, downmix: bool = True,
                  max_seconds: float | None = None, allow_silent: bool = False) -> tuple[np.ndarray, int]:
    """Turn one `datasets` audio cell into `(float32 mono (samples,), sample_rate)`.

    Accepts every shape a cell takes across datasets versions:
    - `{"array": ..., "sampling_rate": ...}`: decoded audio (datasets < 4, or built by hand);
    - `{"bytes": ..., "path": ...}`: what `Audio(decode=False)` gives (bytes win; else the path);
    - a torchcodec `AudioDecoder` (datasets >= 4 with decoding on), used through duck typing so
      torchcodec is never imported here;
    - plain file bytes or a path.
    Resamples to `sample_rate` (None keeps the native rate). Multi-channel audio is averaged
    (`downmix=True`, the usual fix in corpora) and the same checks as `load_audio` apply.
    """
    what = "audio cell"
    if isinstance(cell, (bytes, bytearray, str, os.PathLike)):
        wav, sr = _read_file(cell, _describe(cell))
        return _finish_hf(_checked(wav, sr, what, downmix, max_seconds, allow_silent), sr, sample_rate)
    if hasattr(cell, "get_all_samples"):              # torchcodec AudioDecoder
        samples = cell.get_all_samples()
        wav, sr = samples.data.numpy(), int(samples.sample_rate)
        return _finish_hf(_checked(wav, sr, what, downmix, max_seconds, allow_silent), sr, sample_rate)
    if isinstance(cell, dict):
        if cell.get("array") is not None:
            sr = cell.get("sampling_rate")
            if not sr:
                raise AudioError(f"{what}: has 'array' but no 'sampling_rate'; expected both.")
            wav = _channels_first(np.asarray(cell["array"]), what)
            return _finish_hf(_checked(wav, int(sr), what, downmix, max_seconds, allow_silent), int(sr),
                              sample_rate)
        for key in ("bytes", "path"):
            if cell.get(key):
                return audio_from_hf(cell[key], sample_rate, downmix=downmix, max_seconds=max_seconds,
                                     allow_silent=allow_silent)
        raise AudioError(f"{what}: dict with keys {sorted(cell)} but no audio in 'array', 'bytes' or 'path'.")
    raise AudioError(f"{what}: unsupported type {type(cell).__name__}; expected a dict (array+sampling_rate "
                     f"or bytes/path), file bytes, a path, or a torchcodec AudioDecoder.")


def _checked(wav: np.ndarray, sr: int, what: str, downmix: bool, max_seconds, allow_silent) -> np.ndarray:
    wav = _to_mono(to_float32(wav, what), what, True, downmix)
    check_audio(wav, sr, what, max_seconds=max_seconds, allow_silent=allow_silent)
    return wav


def _finish_hf(wav: np.ndarray, sr: int, target: int | None) -> tuple[np.ndarray, int]:
    if target is not None and sr != target:
        return resample(wav, sr, target), target
    return np.ascontiguousarray(wav, dtype=np.float32), sr
