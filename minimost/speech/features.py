"""Frame features for speech units: log-mel and MFCC(+Δ+ΔΔ), plain torch/torchaudio transforms.

Everything downstream of audio in the speech kit (the phonetic unit encoder, the k-means teaching
contrast, the vocoder's targets) starts from frames computed here:

    from minimost.speech.features import FeatureConfig, log_mel
    feats = log_mel(wav)                  # wav: (samples,) float32 at 16 kHz -> (frames, 80)

- **Frames**: a 25 ms window (400 samples) every 10 ms (160 samples): 100 frames per second,
  the speech-recognition standard (HuBERT's CNN also lands on 20 ms, Kaldi and Whisper on 10 ms).
  Frames are centred (`center=True`): frame `j` is centred on sample `160 j`, i.e. time
  `j / 100` seconds, and a clip of `n` samples gives `n // 160 + 1` frames.
- **log-mel**: power spectrum → 80 triangular mel filters (HTK mel scale, 0–8 kHz) →
  `log(mel + 1e-6)`. 80 bins is what Whisper and most speech encoders use.
- **MFCC**: the DCT of the log-mel (first 13 coefficients), with Δ and ΔΔ (torchaudio's
  regression over ±2 frames): 39 numbers per frame, the classic GMM-HMM front end. It is here
  for the k-means teaching contrast (units-feasibility.md: k-means on MFCC is no better than
  on log-mel).
- **Per-utterance mean/variance normalisation** (`normalize=True`): every feature dimension
  minus its mean over the utterance, divided by its standard deviation. It removes a fixed
  channel / loudness / spectral tilt per clip, a cheap first step towards speaker invariance
  (units-feasibility.md used it for every unit type).

No `torchaudio.load` anywhere: audio comes in as arrays (see `minimost.speech.audio`), so no
FFmpeg or TorchCodec is needed. The transforms are built once per configuration and cached.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import torch

from minimost.speech.audio import SAMPLE_RATE

LOG_FLOOR = 1e-6          # added before the log: silence (digital zero) gives log(1e-6) = -13.8, not -inf


@dataclass(frozen=True)
class FeatureConfig:
    """How frames are computed. Part of every unit artefact (a change changes its hash)."""

    kind: str = "log_mel"        # "log_mel" (n_mels numbers per frame) or "mfcc" (3 * n_mfcc with deltas)
    sample_rate: int = SAMPLE_RATE
    n_fft: int = 400             # samples: 25 ms at 16 kHz (also the window length)
    hop_length: int = 160        # samples: 10 ms -> 100 frames per second
    n_mels: int = 80
    f_min: float = 0.0           # Hz
    f_max: float = 8000.0        # Hz (Nyquist at 16 kHz)
    n_mfcc: int = 13             # MFCC only: cepstral coefficients before deltas
    deltas: bool = True          # MFCC only: append Δ and ΔΔ
    normalize: bool = True       # per-utterance mean/variance normalisation of every dimension

    def __post_init__(self):
        if self.kind not in ("log_mel", "mfcc"):
            raise ValueError(f"FeatureConfig.kind={self.kind!r}; expected 'log_mel' or 'mfcc'.")
        if not 0 < self.hop_length <= self.n_fft:
            raise ValueError(f"hop_length={self.hop_length}, n_fft={self.n_fft}: expected 0 < hop <= n_fft.")

    @property
    def frame_rate(self) -> float:
        """Frames per second (100.0 by default)."""
        return self.sample_rate / self.hop_length

    @property
    def dim(self) -> int:
        """Numbers per frame: n_mels, or n_mfcc (x3 with deltas)."""
        if self.kind == "log_mel":
            return self.n_mels
        return self.n_mfcc * (3 if self.deltas else 1)

    def num_frames(self, num_samples: int) -> int:
        """Frames of a clip of `num_samples` samples (centred frames: samples // hop + 1)."""
        return num_samples // self.hop_length + 1

    def to_dict(self) -> dict:
        return asdict(self)


@lru_cache(maxsize=8)
def _mel_transform(cfg: FeatureConfig):
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(
        sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, win_length=cfg.n_fft, hop_length=cfg.hop_length,
        f_min=cfg.f_min, f_max=cfg.f_max, n_mels=cfg.n_mels, power=2.0, center=True,
        mel_scale="htk", norm=None)


@lru_cache(maxsize=8)
def _dct_matrix(n_mfcc: int, n_mels: int) -> torch.Tensor:
    import torchaudio

    return torchaudio.functional.create_dct(n_mfcc, n_mels, norm="ortho")     # (n_mels, n_mfcc)


def _as_tensor(wav) -> torch.Tensor:
    x = wav if isinstance(wav, torch.Tensor) else torch.from_numpy(np.asarray(wav, dtype=np.float32))
    if x.dim() != 1:
        raise ValueError(f"wav has shape {tuple(x.shape)}; expected mono (samples,). "
                         f"Load audio with minimost.speech.audio.load_audio (mono by default).")
    return x.float()


def normalize_utterance(feats_TF: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-utterance mean/variance normalisation: every column of (frames, dims) to mean 0, std 1."""
    mean = feats_TF.mean(dim=0, keepdim=True)
    std = feats_TF.std(dim=0, keepdim=True, unbiased=False)
    return (feats_TF - mean) / (std + eps)


def log_mel(wav, cfg: FeatureConfig | None = None, *, normalize: bool | None = None) -> torch.Tensor:
    """Log-mel frames of a mono clip: `(samples,)` at 16 kHz → `(frames, n_mels)` float32.

    `frames = samples // hop + 1` (100 per second). `normalize` overrides `cfg.normalize`.
    """
    cfg = cfg or FeatureConfig()
    x = _as_tensor(wav)
    with torch.no_grad():
        mel = _mel_transform(cfg)(x)                       # (n_mels, frames), power
        feats = torch.log(mel + LOG_FLOOR).T.contiguous()  # (frames, n_mels)
    if cfg.normalize if normalize is None else normalize:
        feats = normalize_utterance(feats)
    return feats


def mfcc(wav, cfg: FeatureConfig | None = None, *, normalize: bool | None = None) -> torch.Tensor:
    """MFCC frames, with Δ and ΔΔ when `cfg.deltas`: `(samples,)` → `(frames, 39)` by default.

    The cepstrum is the orthonormal DCT-II of the (unnormalised) log-mel; deltas are torchaudio's
    `compute_deltas` (a ±2-frame regression), computed before the optional normalisation.
    """
    cfg = cfg or FeatureConfig(kind="mfcc")
    import torchaudio

    lm = log_mel(wav, cfg, normalize=False)                       # (frames, n_mels)
    with torch.no_grad():
        cep = lm @ _dct_matrix(cfg.n_mfcc, cfg.n_mels)            # (frames, n_mfcc)
        if cfg.deltas:
            d1 = torchaudio.functional.compute_deltas(cep.T).T    # deltas run along the last axis
            d2 = torchaudio.functional.compute_deltas(d1.T).T
            cep = torch.cat([cep, d1, d2], dim=1)                 # (frames, 3 * n_mfcc)
    if cfg.normalize if normalize is None else normalize:
        cep = normalize_utterance(cep)
    return cep


def features(wav, cfg: FeatureConfig | None = None) -> torch.Tensor:
    """The frames `cfg.kind` asks for: `(samples,)` → `(frames, cfg.dim)`."""
    cfg = cfg or FeatureConfig()
    return log_mel(wav, cfg) if cfg.kind == "log_mel" else mfcc(wav, cfg)


def stack_frames(feats_TF: torch.Tensor, factor: int) -> torch.Tensor:
    """Concatenate every `factor` consecutive frames: `(T, F)` → `(ceil(T / factor), factor * F)`.

    The last group is padded by repeating the last frame. This is how 100 Hz features become
    25 Hz (factor 4) or 50 Hz (factor 2) vectors for k-means, one per unit frame.
    """
    T, F = feats_TF.shape
    n = -(-T // factor)
    if n * factor > T:
        feats_TF = torch.cat([feats_TF, feats_TF[-1:].expand(n * factor - T, F)], dim=0)
    return feats_TF.reshape(n, factor * F)
