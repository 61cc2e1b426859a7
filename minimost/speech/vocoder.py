"""The unit vocoder: deduplicated speech units + a speaker → 16 kHz speech.

MoST speaks by emitting deduplicated HuBERT units and handing them to Spirit-LM's unit HiFi-GAN,
which predicts how long each unit lasts, takes its voice from a speaker embedding (units carry no
speaker) and generates 16 kHz audio (most-reference.md §4.2). That checkpoint belongs to another
codebook and cannot be downloaded here, so minimost trains its own, small, on its own units:

    from minimost.speech.vocoder import VocoderConfig, train_vocoder
    voc = train_vocoder(corpus, unit_tokenizer, VocoderConfig(), cache_dir="data/cache/vocoder")
    seq = unit_tokenizer.encode(wav)                        # deduplicated units + run lengths
    audio = voc.synthesize(seq.units_dedup, "en-us+m3:p50:r175")        # predicted durations
    audio = voc.synthesize(seq.units_dedup, 0, durations=seq.durations)  # the true durations

The pipeline, with the three time axes it crosses (25 Hz units, the default):

    units (N,)  deduplicated: one entry per run, no time axis yet
      │  unit encoder: unit + speaker embeddings → transformer layers        (N, D)
      │  duration predictor: log(1 + frames) per unit                         (N,)
      ▼  length regulator: each unit repeated for its duration
    unit frames (U,)     U = Σ durations, 25 per second (40 ms, 640 samples each)
      │  conv blocks at the unit rate                                         (U, D)
      ▼  upsample × 4 (repeat + a learned position-within-frame embedding)
    mel frames (M,)      M = 4 U, 100 per second (hop 160 samples)
      │  conv blocks at the mel rate → log-mel                                (M, n_mels)
      ▼  mel → linear spectrogram (non-negative least squares) → Griffin-Lim
    samples (S,)         S = 160 M = 640 U, 16 kHz float32

- **Duration predictor**: a FastSpeech-style variance predictor (two convolutions over the unit
  sequence) trained with MSE on log(1 + d), where d is the true run length in unit frames; at
  synthesis d = max(1, round(exp(pred) − 1)), exactly what fairseq's / Spirit-LM's unit HiFi-GAN
  does. Training feeds the *true* durations to the length regulator (teacher forcing), so the
  mel predictor never learns from duration mistakes.
- **Mel predictor**: the target is the log-mel of the training audio (magnitude, 80 bins,
  n_fft 1024, hop 160), normalised per bin with the training set's mean and standard deviation
  (kept in the artefact). Mel frame j lies under unit frame j // 4: the unit tokenizer makes one
  unit frame from 4 feature frames of the same hop (`UnitConfig.stride`), so units and mels share
  one clock without any alignment search. Loss: L1 (FastSpeech 2's choice).
- **Waveform**: Griffin-Lim (torchaudio) on CPU out of the box: the mel is mapped back to a
  linear magnitude spectrogram by a few iterations of non-negative least squares, then the phase
  is estimated by Griffin-Lim from a fixed zero-phase start (`rand_init=False`), so the same
  input gives the same samples. Griffin-Lim's phase is only an estimate: the audio sounds
  buzzy/metallic and intelligibility is lower than a neural vocoder's; label every WER measured
  through it as Griffin-Lim. `VocoderConfig(waveform="hifigan")` selects a HiFi-GAN generator
  instead (`HifiGanGenerator`, `train_waveform_generator`), meant for GPU users: see there for
  what it is and is not.

Speakers: one embedding per voice in the training data (`speakers`, the corpus `voice` names,
TRAIN_VOICES order first). `synthesize` takes a name, a `Voice` or an index; anything else
raises `VocoderError` listing the valid speakers.

Versioning: the vocoder is only meaningful with the unit tokenizer it was trained on (unit ids
of another encoder are other sounds), so the artefact records `unit_artefact_id`, and
`UnitVocoder.load(dir, unit_tokenizer)`, `check_units(tokenizer)` and `resynthesize` refuse a
mismatch with `UnitArtefactMismatch`. `save`/`load` write `vocoder.safetensors` +
`vocoder.json` atomically; `train_vocoder` caches by a hash of the corpus content, the unit
artefact id and the config.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from minimost.speech.artefact import duration_batches, hash_tensors, write_artefact
from minimost.speech.audio import SAMPLE_RATE, audio_from_hf, resample
from minimost.speech.units import UnitArtefactMismatch, UnitSequence, UnitTokenizer, corpus_fingerprint

VOCODER_VERSION = 1            # bump when anything here changes what an artefact means
ARTEFACT_JSON = "vocoder.json"
ARTEFACT_TENSORS = "vocoder.safetensors"
PEAK = 0.95                    # output peak after normalisation, as minimost's espeak audio
WAVEFORMS = ("griffinlim", "hifigan")


class VocoderError(ValueError):
    """Input the vocoder cannot use (unknown speaker, unit id out of range, bad durations, ...)."""


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VocoderConfig:
    """Everything that defines a vocoder and its training (all but `threads` is hashed)."""

    # The mel spectrogram the network predicts and Griffin-Lim inverts. The hop must be the unit
    # tokenizer's feature hop (10 ms): that is what puts 4 mel frames under every 25 Hz unit.
    n_fft: int = 1024              # samples (64 ms): 513 frequency bins, so no mel filter is empty
    win_length: int = 400          # samples (25 ms): measured best for Griffin-Lim here (docs/vocoder.md)
    hop_length: int = 160          # samples (10 ms): 100 mel frames per second
    n_mels: int = 80
    f_min: float = 0.0             # Hz
    f_max: float = 8000.0          # Hz
    log_floor: float = 1e-5        # log(mel + floor): digital silence sits at log(1e-5) = -11.5

    # Network
    d_model: int = 192             # width at the unit level (unit encoder, unit-rate conv blocks)
    d_mel: int = 128               # width at the mel rate (4x as many frames, so narrower)
    n_enc_layers: int = 2          # transformer layers over the deduplicated units
    n_heads: int = 2
    n_unit_blocks: int = 3         # residual conv blocks at the unit-frame rate
    n_mel_blocks: int = 2          # residual conv blocks at the mel rate
    kernel: int = 5                # conv kernel (frames) of those blocks
    dur_kernel: int = 3            # conv kernel (units) of the duration predictor
    dropout: float = 0.1

    # Waveform stage
    waveform: str = "griffinlim"   # "griffinlim" (CPU, no training) or "hifigan" (a trained generator)
    gl_iters: int = 32             # Griffin-Lim iterations (torchaudio's default)
    gl_momentum: float = 0.99      # "fast Griffin-Lim" momentum (Perraudin et al. 2013)
    nnls_iters: int = 20           # multiplicative NNLS updates for mel → linear spectrogram
    hifigan_channels: int = 256    # width of the optional HiFi-GAN generator's first layer

    # Training: stops at max_steps or time_budget_s, whichever comes first.
    max_steps: int = 4000
    time_budget_s: float | None = 480.0
    batch_seconds: float = 40.0    # seconds of audio per batch
    lr: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    dur_loss_weight: float = 1.0   # the duration MSE (log domain) next to the mel L1
    max_utterances: int | None = None   # train on the first N rows only (None: all)
    seed: int = 0
    threads: int | None = None     # torch threads while training (None: leave as is); not hashed

    def __post_init__(self):
        if self.waveform not in WAVEFORMS:
            raise ValueError(f"VocoderConfig.waveform={self.waveform!r}; expected one of {WAVEFORMS}.")
        if not 0 < self.hop_length <= self.win_length <= self.n_fft:
            raise ValueError(f"hop_length={self.hop_length}, win_length={self.win_length}, n_fft={self.n_fft}: "
                             f"expected 0 < hop <= win <= n_fft.")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}.")

    @property
    def mel_rate(self) -> float:
        """Mel frames per second (100 by default)."""
        return SAMPLE_RATE / self.hop_length

    def identity(self) -> dict:
        d = asdict(self)
        d.pop("threads")
        return d


# --------------------------------------------------------------------------------------------
# Durations: deduplicated units ↔ unit frames
# --------------------------------------------------------------------------------------------

def expand_durations(units_N: torch.Tensor, durations_N: torch.Tensor) -> torch.Tensor:
    """The length regulator on ids: (N,) units held for (N,) durations → (Σ durations,) frames.

    The inverse of `minimost.speech.units.dedup` (which gives the runs back from the frames).
    """
    if units_N.shape != durations_N.shape:
        raise VocoderError(f"{units_N.numel()} units but {durations_N.numel()} durations; expected one per unit.")
    return torch.repeat_interleave(units_N, durations_N)


def durations_from_log(log_dur: torch.Tensor) -> torch.Tensor:
    """Predicted log(1 + frames) → whole frames: max(1, round(exp(x) − 1)), as Spirit-LM does."""
    return torch.clamp(torch.round(torch.exp(log_dur) - 1), min=1).long()


def _regulate(h_BND: torch.Tensor, dur_BN: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The length regulator on hidden states: every unit's vector repeated for its duration.

    Returns (frames (B, U, D), index of the unit each frame came from (B, U) with -1 on padding,
    position features (B, U, 2)): (k + 0.5) / d for the k-th of d frames, and log(d), so the
    frame-rate layers know where inside a unit they are and can shape transitions.
    """
    B, N, D = h_BND.shape
    lengths = dur_BN.sum(1)
    U = int(lengths.max()) if B else 0
    src = torch.full((B, U), -1, dtype=torch.long)
    pos = torch.zeros(B, U, 2)
    for b in range(B):
        d = dur_BN[b]
        idx = torch.repeat_interleave(torch.arange(N), d)                      # (U_b,)
        starts = torch.cumsum(d, 0) - d
        k = torch.arange(idx.numel()) - starts[idx]
        src[b, :idx.numel()] = idx
        pos[b, :idx.numel(), 0] = (k.float() + 0.5) / d[idx].float()
        pos[b, :idx.numel(), 1] = torch.log(d[idx].float())
    frames = torch.gather(h_BND, 1, src.clamp(min=0)[..., None].expand(B, U, D))
    return frames * (src >= 0)[..., None], src, pos


# --------------------------------------------------------------------------------------------
# Mel spectrogram and its inversion (Griffin-Lim)
# --------------------------------------------------------------------------------------------

@lru_cache(maxsize=4)
def _filterbank(n_fft: int, n_mels: int, f_min: float, f_max: float) -> torch.Tensor:
    """(n_fft // 2 + 1, n_mels) triangular HTK mel filters, as `features.log_mel` uses."""
    import torchaudio

    return torchaudio.functional.melscale_fbanks(n_fft // 2 + 1, f_min, f_max, n_mels, SAMPLE_RATE,
                                                 norm=None, mel_scale="htk")


def _window(cfg: VocoderConfig) -> torch.Tensor:
    return torch.hann_window(cfg.win_length)


def vocoder_mel(wav, cfg: VocoderConfig | None = None) -> torch.Tensor:
    """The vocoder's target frames: `(samples,)` 16 kHz → `(samples // hop + 1, n_mels)` log-mel.

    Magnitude (not power) spectrogram, centred frames, log(mel + `log_floor`). Not normalised per
    utterance (unlike the unit features): the absolute level is part of what must be rebuilt.
    """
    cfg = cfg or VocoderConfig()
    x = torch.as_tensor(np.asarray(wav, dtype=np.float32))
    spec = torch.stft(x, cfg.n_fft, cfg.hop_length, cfg.win_length, _window(cfg), center=True,
                      return_complex=True).abs()                                  # (freq, frames)
    mel = spec.T @ _filterbank(cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max)         # (frames, n_mels)
    return torch.log(mel + cfg.log_floor)


def mel_to_linear(log_mel_MC: torch.Tensor, cfg: VocoderConfig) -> torch.Tensor:
    """Log-mel (M, n_mels) → linear magnitude spectrogram (n_fft // 2 + 1, M), non-negative.

    The mel filterbank has far fewer rows than frequency bins, so many spectra give the same mel.
    We take a non-negative one close to it, by multiplicative NNLS updates (Lee & Seung 2001)
    from a smooth start (the filterbank's transpose): unlike a pseudo-inverse, whose negative
    lobes are clipped to zero, every step stays non-negative and the error never grows.
    """
    fb = _filterbank(cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max)                  # (freq, n_mels)
    mel = (torch.exp(log_mel_MC) - cfg.log_floor).clamp(min=0).T                      # (n_mels, M)
    # min ||fbᵀ S − mel||² over S >= 0; the update S ← S · (fb mel) / (fb fbᵀ S) keeps S >= 0.
    spec = fb @ (mel / fb.sum(0).clamp(min=1e-8)[:, None])                            # (freq, M)
    target = fb @ mel
    for _ in range(cfg.nnls_iters):
        spec = spec * target / (fb @ (fb.T @ spec) + 1e-10)
    return spec


def griffin_lim(log_mel_MC: torch.Tensor, cfg: VocoderConfig, num_samples: int | None = None) -> np.ndarray:
    """Log-mel (M, n_mels) → waveform (num_samples,) float32, by NNLS + Griffin-Lim, peak PEAK.

    Deterministic: the phase starts at zero (`rand_init=False`), so no random numbers are drawn.
    `num_samples` defaults to `M * hop` (what `synthesize` promises); for a mel computed from a
    clip of n samples (n // hop + 1 frames) pass n.
    """
    import torchaudio

    M = log_mel_MC.shape[0]
    n = num_samples if num_samples is not None else M * cfg.hop_length
    if n // cfg.hop_length + 1 == M:        # the mel of an n-sample clip: it has its last frame already
        log_mel_MC = log_mel_MC[:-1]
    with torch.no_grad():
        spec = mel_to_linear(log_mel_MC.float(), cfg)
        # Centred frames: M * hop samples have M + 1 frames, the last one centred on the final
        # sample; it repeats frame M - 1 (the network predicts M frames, one per 10 ms).
        spec = torch.cat([spec, spec[:, -1:]], dim=1)
        wav = torchaudio.functional.griffinlim(spec, _window(cfg), cfg.n_fft, cfg.hop_length, cfg.win_length,
                                               power=1.0, n_iter=cfg.gl_iters, momentum=cfg.gl_momentum,
                                               length=n, rand_init=False)
    return _peak(wav.numpy())


def _peak(wav: np.ndarray) -> np.ndarray:
    """Peak-normalise to PEAK, like the corpus audio; silence stays silence."""
    wav = np.asarray(wav, dtype=np.float32)
    top = float(np.abs(wav).max()) if wav.size else 0.0
    return (wav * (PEAK / top)).astype(np.float32) if top > 1e-8 else wav


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------

class ConvBlock(nn.Module):
    """Pre-norm residual block over time: x + Dropout(Conv(GELU(Conv(LayerNorm(x))))), (B, T, C)."""

    def __init__(self, channels: int, kernel: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.conv1 = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        self.drop = nn.Dropout(dropout)

    def forward(self, x_BTC: torch.Tensor, keep_BT1: torch.Tensor) -> torch.Tensor:
        # Padding frames are zeroed before every convolution, so a clip's output does not depend
        # on what it was batched with (the convs would otherwise read the padding's values).
        y = (self.norm(x_BTC) * keep_BT1).transpose(1, 2)
        y = self.conv2(F.gelu(self.conv1(y)) * keep_BT1.transpose(1, 2)).transpose(1, 2)
        return (x_BTC + self.drop(y)) * keep_BT1


class DurationPredictor(nn.Module):
    """FastSpeech's variance predictor: (B, N, D) unit states → (B, N) log(1 + frames)."""

    def __init__(self, d: int, kernel: int, dropout: float):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv1d(d, d, kernel, padding=kernel // 2) for _ in range(2)])
        self.norms = nn.ModuleList([nn.LayerNorm(d) for _ in range(2)])
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(d, 1)

    def forward(self, h_BND: torch.Tensor, keep_BN1: torch.Tensor) -> torch.Tensor:
        x = h_BND
        for conv, norm in zip(self.convs, self.norms):
            x = conv((x * keep_BN1).transpose(1, 2)).transpose(1, 2)
            x = self.drop(norm(F.relu(x)))
        return self.out(x).squeeze(-1)


def _sinusoids(length: int, dim: int) -> torch.Tensor:
    """(length, dim) sinusoidal positions ("Attention is all you need")."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(10_000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe


class UnitToMel(nn.Module):
    """Units + speaker → durations and log-mel frames (normalised). See the module docstring.

    `forward(units (B, N), lengths (B,), speaker (B,), durations (B, N) or None)` returns
    `(log_dur (B, N), mel (B, M, n_mels), durations used (B, N))` with M = up × Σ durations.
    """

    def __init__(self, cfg: VocoderConfig, num_units: int, num_speakers: int, up: int):
        super().__init__()
        D, Dm = cfg.d_model, cfg.d_mel
        self.up = up
        self.unit_emb = nn.Embedding(num_units, D)
        self.spk_emb = nn.Embedding(num_speakers, D)
        layer = nn.TransformerEncoderLayer(D, cfg.n_heads, 4 * D, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.n_enc_layers, enable_nested_tensor=False)
        self.enc_norm = nn.LayerNorm(D)
        self.duration = DurationPredictor(D, cfg.dur_kernel, cfg.dropout)
        self.frame_pos = nn.Linear(2, D)               # position inside the unit, log duration
        self.unit_blocks = nn.ModuleList([ConvBlock(D, cfg.kernel, cfg.dropout) for _ in range(cfg.n_unit_blocks)])
        self.to_mel_rate = nn.Linear(D, Dm)
        self.sub_pos = nn.Parameter(torch.zeros(up, Dm))   # which of the `up` mel frames of a unit frame
        self.spk_mel = nn.Embedding(num_speakers, Dm)      # the voice again, where the spectrum is made
        self.mel_blocks = nn.ModuleList([ConvBlock(Dm, cfg.kernel, cfg.dropout) for _ in range(cfg.n_mel_blocks)])
        self.out_norm = nn.LayerNorm(Dm)
        self.out = nn.Linear(Dm, cfg.n_mels)

    def encode(self, units_BN: torch.Tensor, lengths_B: torch.Tensor, speaker_B: torch.Tensor):
        """Context-aware unit states (B, N, D) and the padding mask's complement (B, N, 1)."""
        B, N = units_BN.shape
        keep = (torch.arange(N)[None, :] < lengths_B[:, None])
        x = self.unit_emb(units_BN) + self.spk_emb(speaker_B)[:, None] + _sinusoids(N, self.unit_emb.embedding_dim)
        h = self.enc_norm(self.encoder(x, src_key_padding_mask=~keep))
        return h * keep[..., None], keep[..., None].float()

    def forward(self, units_BN, lengths_B, speaker_B, durations_BN=None):
        h, keep = self.encode(units_BN, lengths_B, speaker_B)
        log_dur = self.duration(h, keep)                                          # (B, N)
        if durations_BN is None:
            durations_BN = durations_from_log(log_dur)
        durations_BN = durations_BN * keep[..., 0].long()                          # padding lasts 0 frames
        frames, src, pos = _regulate(h, durations_BN)                              # (B, U, D)
        fkeep = (src >= 0)[..., None].float()
        x = (frames + self.frame_pos(pos)) * fkeep
        for block in self.unit_blocks:
            x = block(x, fkeep)
        B, U, _ = x.shape
        # Unit frames → mel frames: repeat each `up` times, tell the copies apart by a learned offset.
        y = self.to_mel_rate(x).repeat_interleave(self.up, dim=1) + self.sub_pos.repeat(U, 1)[None]
        y = y + self.spk_mel(speaker_B)[:, None]
        mkeep = fkeep.repeat_interleave(self.up, dim=1)
        y = y * mkeep
        for block in self.mel_blocks:
            y = block(y, mkeep)
        return log_dur, self.out(self.out_norm(y)) * mkeep, durations_BN


# --------------------------------------------------------------------------------------------
# Optional waveform stage for GPU users: a HiFi-GAN generator
# --------------------------------------------------------------------------------------------

class _ResBlock(nn.Module):
    """HiFi-GAN's multi-receptive-field residual block (type 1): dilated convs with leaky ReLU."""

    def __init__(self, ch: int, kernel: int, dilations: Sequence[int]):
        super().__init__()
        self.c1 = nn.ModuleList([nn.Conv1d(ch, ch, kernel, dilation=d, padding=d * (kernel - 1) // 2)
                                 for d in dilations])
        self.c2 = nn.ModuleList([nn.Conv1d(ch, ch, kernel, padding=(kernel - 1) // 2) for _ in dilations])

    def forward(self, x):
        for a, b in zip(self.c1, self.c2):
            x = x + b(F.leaky_relu(a(F.leaky_relu(x, 0.1)), 0.1))
        return x


class HifiGanGenerator(nn.Module):
    """HiFi-GAN's generator (Kong et al. 2020, V1 layout, narrower): log-mel (B, n_mels, M) → (B, M·hop).

    Transposed convolutions upsample the mel frames by `prod(rates)` = hop (5·4·4·2 = 160), each
    followed by the average of multi-receptive-field residual blocks (kernels 3, 7, 11). This is
    the generator only: `train_waveform_generator` trains it with spectral losses, without
    HiFi-GAN's multi-period and multi-scale discriminators. It is an option for GPU users and was
    not trained for the figures in docs/vocoder.md (which are all Griffin-Lim).
    """

    def __init__(self, n_mels: int = 80, channels: int = 256, rates: Sequence[int] = (5, 4, 4, 2),
                 kernels: Sequence[int] = (3, 7, 11), dilations: Sequence[int] = (1, 3, 5)):
        super().__init__()
        self.rates = tuple(rates)
        self.pre = nn.Conv1d(n_mels, channels, 7, padding=3)
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        ch = channels
        for r in self.rates:
            self.ups.append(nn.ConvTranspose1d(ch, ch // 2, 2 * r, stride=r, padding=r // 2 + r % 2,
                                               output_padding=r % 2))
            ch //= 2
            self.blocks.append(nn.ModuleList([_ResBlock(ch, k, dilations) for k in kernels]))
        self.post = nn.Conv1d(ch, 1, 7, padding=3)

    @property
    def hop(self) -> int:
        return int(np.prod(self.rates))

    def forward(self, mel_BCM: torch.Tensor) -> torch.Tensor:
        x = self.pre(mel_BCM)
        for up, blocks in zip(self.ups, self.blocks):
            x = up(F.leaky_relu(x, 0.1))
            x = sum(b(x) for b in blocks) / len(blocks)
        return torch.tanh(self.post(F.leaky_relu(x))).squeeze(1)


# --------------------------------------------------------------------------------------------
# The artefact
# --------------------------------------------------------------------------------------------

def _as_units(units: Any, num_units: int) -> torch.Tensor:
    if isinstance(units, UnitSequence):
        units = units.units_dedup
    t = torch.as_tensor(np.asarray(units, dtype=np.int64)).reshape(-1)
    if t.numel() == 0:
        raise VocoderError("no units to synthesise: expected at least one deduplicated unit.")
    if int(t.min()) < 0 or int(t.max()) >= num_units:
        raise VocoderError(f"unit ids must be in 0..{num_units - 1} (this vocoder's codebook); got "
                           f"{int(t.min())}..{int(t.max())}. Were they made by another unit tokenizer?")
    return t


def _as_durations(durations: Any, n: int) -> torch.Tensor:
    d = torch.as_tensor(np.asarray(durations, dtype=np.int64)).reshape(-1)
    if d.numel() != n:
        raise VocoderError(f"{n} units but {d.numel()} durations; expected one duration (unit frames) per unit.")
    if int(d.min()) < 1:
        raise VocoderError(f"durations must be >= 1 unit frame; got {int(d.min())}.")
    return d


class UnitVocoder:
    """Deduplicated units + speaker → 16 kHz audio, as one versioned artefact (module docstring).

    `tensors` hold the network (`net.*`), the mel normalisation (`mel_mean`, `mel_std`) and, once
    trained, a HiFi-GAN generator (`generator.*`). `info` holds training facts; it is saved but not
    hashed.
    """

    def __init__(self, cfg: VocoderConfig, speakers: Sequence[str], unit_artefact_id: str, num_units: int,
                 unit_rate_hz: float, tensors: dict[str, torch.Tensor], info: dict | None = None):
        self.cfg = cfg
        self.speakers = list(speakers)
        self.unit_artefact_id = unit_artefact_id
        self.num_units = int(num_units)
        self.unit_rate_hz = unit_rate_hz
        up = cfg.mel_rate / unit_rate_hz
        if abs(up - round(up)) > 1e-6:
            raise VocoderError(f"{cfg.mel_rate:g} mel frames per second is not a whole multiple of the "
                               f"{unit_rate_hz:g} Hz unit rate; change hop_length.")
        self.up = int(round(up))             # mel frames per unit frame (4 at 25 Hz, 2 at 50 Hz)
        self.tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        self.info = dict(info or {})
        self.net = UnitToMel(cfg, self.num_units, len(self.speakers), self.up)
        self.net.load_state_dict({k[4:]: v for k, v in self.tensors.items() if k.startswith("net.")})
        self.net.eval()
        self.generator: HifiGanGenerator | None = None
        if any(k.startswith("generator.") for k in self.tensors):
            self.generator = HifiGanGenerator(cfg.n_mels, cfg.hifigan_channels)
            self.generator.load_state_dict({k[10:]: v for k, v in self.tensors.items() if k.startswith("generator.")})
            self.generator.eval()
        self.mel_mean = self.tensors["mel_mean"]
        self.mel_std = self.tensors["mel_std"]

    # --- identity -----------------------------------------------------------------------------
    @property
    def samples_per_unit_frame(self) -> int:
        """Output samples per unit frame: 640 at 25 Hz (40 ms at 16 kHz)."""
        return self.up * self.cfg.hop_length

    def _meta(self) -> dict:
        return {"format": "minimost-vocoder", "vocoder_version": VOCODER_VERSION, "config": self.cfg.identity(),
                "speakers": self.speakers, "unit_artefact_id": self.unit_artefact_id,
                "num_units": self.num_units, "unit_rate_hz": self.unit_rate_hz}

    @property
    def hash(self) -> str:
        h = hashlib.sha256(json.dumps(self._meta(), sort_keys=True).encode())
        hash_tensors(h, self.tensors)
        return h.hexdigest()

    def check_units(self, tokenizer: UnitTokenizer) -> None:
        """Raise `UnitArtefactMismatch` unless `tokenizer` is the unit artefact this vocoder was trained on."""
        tokenizer.check_compatible(self.unit_artefact_id)

    def speaker_id(self, speaker: Any) -> int:
        """Index of a speaker given as a name ("en-us+m3:p50:r175" or short "en-us+m3"), a Voice or an index."""
        if isinstance(speaker, (int, np.integer)) and not isinstance(speaker, bool):
            if 0 <= int(speaker) < len(self.speakers):
                return int(speaker)
        else:
            name = getattr(speaker, "name", speaker)
            if name in self.speakers:
                return self.speakers.index(name)
            try:                                   # the short form of a voice name
                from minimost.speech.synth import Voice

                full = Voice.parse(name).name
                if full in self.speakers:
                    return self.speakers.index(full)
            except (ValueError, TypeError):
                pass
        close = difflib.get_close_matches(str(getattr(speaker, "name", speaker)), self.speakers, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise VocoderError(f"unknown speaker {speaker!r}.{hint} This vocoder knows {len(self.speakers)} speakers "
                           f"(a name or an index 0..{len(self.speakers) - 1}): {', '.join(self.speakers)}.")

    # --- synthesis ----------------------------------------------------------------------------
    def predict(self, units: Any, speaker: Any, durations: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The network alone: (durations (N,) in unit frames, log-mel (M, n_mels)) with M = up · Σ durations."""
        d, m = self.predict_batch([units], [speaker], None if durations is None else [durations])
        return d[0], m[0]

    def predict_batch(self, units_list: Sequence, speakers: Sequence, durations_list: Sequence | None = None):
        """`predict` for many clips at once (padded, masked): lists of durations and log-mels."""
        if len(speakers) != len(units_list):
            raise VocoderError(f"{len(units_list)} unit sequences but {len(speakers)} speakers.")
        us = [_as_units(u, self.num_units) for u in units_list]
        spk = torch.tensor([self.speaker_id(s) for s in speakers])
        lengths = torch.tensor([u.numel() for u in us])
        units = nn.utils.rnn.pad_sequence(us, batch_first=True)
        dur = None
        if durations_list is not None:
            if len(durations_list) != len(us):
                raise VocoderError(f"{len(us)} unit sequences but {len(durations_list)} duration lists.")
            dur = nn.utils.rnn.pad_sequence([_as_durations(d, u.numel()) for d, u in zip(durations_list, us)],
                                            batch_first=True)
        with torch.no_grad():
            _, mel, used = self.net(units, lengths, spk, dur)
        mel = mel * self.mel_std + self.mel_mean                                     # back to log-mel
        out_d, out_m = [], []
        for b, n in enumerate(lengths.tolist()):
            d = used[b, :n]
            out_d.append(d)
            out_m.append(mel[b, :self.up * int(d.sum())])
        return out_d, out_m

    def mel_to_wave(self, log_mel_MC: torch.Tensor) -> np.ndarray:
        """Log-mel (M, n_mels) → (M · hop,) float32 at 16 kHz, by the configured waveform stage."""
        if self.cfg.waveform == "hifigan":
            if self.generator is None:
                raise VocoderError("waveform='hifigan' but this vocoder has no trained generator; train one "
                                   "with train_waveform_generator(vocoder, corpus) or use waveform='griffinlim'.")
            with torch.no_grad():
                return _peak(self.generator(log_mel_MC.T[None].float())[0].numpy())
        return griffin_lim(log_mel_MC, self.cfg)

    def synthesize(self, units: Any, speaker: Any, durations: Any = None) -> np.ndarray:
        """Deduplicated units `(N,)` spoken by `speaker` → float32 `(samples,)` at 16 kHz.

        `durations` (N,) in unit frames: the true run lengths (`UnitSequence.durations`); None
        lets the duration predictor choose. Output length = Σ durations × samples_per_unit_frame
        (640 at 25 Hz). Deterministic: the same input gives the same samples.
        """
        return self.synthesize_batch([units], [speaker], None if durations is None else [durations])[0]

    def synthesize_batch(self, units_list: Sequence, speakers: Any, durations_list: Sequence | None = None,
                         batch_size: int = 16) -> list[np.ndarray]:
        """`synthesize` for many clips: the network runs in batches, the waveform stage per clip.

        `speakers`: one per clip, or a single speaker for all.
        """
        if isinstance(speakers, (str, int)) or hasattr(speakers, "accent"):
            speakers = [speakers] * len(units_list)
        out = []
        for i in range(0, len(units_list), batch_size):
            sl = slice(i, i + batch_size)
            _, mels = self.predict_batch(units_list[sl], speakers[sl],
                                         None if durations_list is None else durations_list[sl])
            out.extend(self.mel_to_wave(m) for m in mels)
        return out

    def resynthesize(self, wav: np.ndarray, tokenizer: UnitTokenizer, speaker: Any, *,
                     true_durations: bool = False, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """Audio → units (with `tokenizer`, checked against this vocoder) → audio in `speaker`'s voice."""
        self.check_units(tokenizer)
        if sample_rate != SAMPLE_RATE:
            wav = resample(wav, sample_rate, SAMPLE_RATE)
        seq = tokenizer.encode(wav)
        return self.synthesize(seq.units_dedup, speaker, seq.durations if true_durations else None)

    # --- save / load --------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Write `vocoder.json` + `vocoder.safetensors` into `directory`, atomically (all or nothing)."""
        meta = {**self._meta(), "hash": self.hash, "info": self.info}
        return write_artefact(directory, ARTEFACT_TENSORS, self.tensors, ARTEFACT_JSON,
                              json.dumps(meta, indent=1))

    @classmethod
    def load(cls, directory: str | os.PathLike, unit_tokenizer: UnitTokenizer | None = None) -> UnitVocoder:
        """Read a saved vocoder, check its hash, and (given `unit_tokenizer`) that the units match."""
        from safetensors.torch import load_file

        directory = Path(directory)
        try:
            meta = json.loads((directory / ARTEFACT_JSON).read_text())
            tensors = load_file(str(directory / ARTEFACT_TENSORS))
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{directory}: not a vocoder artefact (expected {ARTEFACT_JSON} and "
                                    f"{ARTEFACT_TENSORS}); save one with UnitVocoder.save.") from e
        if meta.get("format") != "minimost-vocoder" or meta.get("vocoder_version") != VOCODER_VERSION:
            raise VocoderError(f"{directory}: vocoder format {meta.get('format')!r} version "
                               f"{meta.get('vocoder_version')!r}; this code reads version {VOCODER_VERSION}.")
        known = {f.name for f in fields(VocoderConfig)}
        cfg = VocoderConfig(**{k: v for k, v in meta["config"].items() if k in known})
        voc = cls(cfg, meta["speakers"], meta["unit_artefact_id"], meta["num_units"], meta["unit_rate_hz"],
                  tensors, meta.get("info"))
        if voc.hash != meta.get("hash"):
            raise VocoderError(f"{directory}: stored hash {str(meta.get('hash'))[:12]} does not match its "
                               f"contents ({voc.hash[:12]}); the artefact is corrupted or was edited.")
        if unit_tokenizer is not None:
            voc.check_units(unit_tokenizer)
        return voc

    def __repr__(self) -> str:
        return (f"UnitVocoder({len(self.speakers)} speakers, units {self.unit_artefact_id}, "
                f"waveform={self.cfg.waveform})")


# --------------------------------------------------------------------------------------------
# Training data
# --------------------------------------------------------------------------------------------

def _rows(corpus_or_rows: Any):
    """Dict rows from a `datasets.Dataset` (read in batches: much faster than indexing) or any iterable."""
    if hasattr(corpus_or_rows, "iter") and hasattr(corpus_or_rows, "column_names"):
        for batch in corpus_or_rows.iter(batch_size=256):
            keys = list(batch)
            for i in range(len(batch[keys[0]])):
                yield {k: batch[k][i] for k in keys}
    else:
        yield from corpus_or_rows


def _wav(row: dict) -> np.ndarray:
    return audio_from_hf(row["audio"], SAMPLE_RATE)[0]


@dataclass
class _Example:
    units: torch.Tensor           # (N,) deduplicated unit ids
    durations: torch.Tensor       # (N,) unit frames per unit
    mel: torch.Tensor             # (up · Σ durations, n_mels) log-mel, float16 to halve memory
    speaker: str
    seconds: float


def speaker_list(voices: Sequence[str]) -> list[str]:
    """The speakers of a corpus: TRAIN_VOICES order first (stable ids), then any others sorted."""
    from minimost.speech.synth import TRAIN_VOICES

    seen = set(voices)
    ordered = [v.name for v in TRAIN_VOICES if v.name in seen]
    return ordered + sorted(seen - set(ordered))


def prepare_example(wav: np.ndarray, tokenizer: UnitTokenizer, cfg: VocoderConfig, speaker: str = "",
                    seq: UnitSequence | None = None) -> _Example:
    """Units (with run lengths) and the matching log-mel of one clip (`seq`: its units, if encoded already).

    The tokenizer gives U unit frames for n samples (U = ceil((n // 160 + 1) / 4) at 25 Hz). The
    clip is zero-padded to U · 640 samples, whose mel has 4 U + 1 frames: the first 4 U are the
    target, frame j under unit frame j // 4, exactly the frames the unit encoder grouped.
    """
    seq = seq if seq is not None else tokenizer.encode(wav)
    up = int(round(cfg.mel_rate / tokenizer.rate_hz))
    n = seq.num_frames * up * cfg.hop_length
    padded = np.zeros(max(n, len(wav)), dtype=np.float32)
    padded[:len(wav)] = wav
    mel = vocoder_mel(padded[:n], cfg)[: seq.num_frames * up]
    return _Example(torch.tensor(seq.units_dedup), torch.tensor(seq.durations), mel.half(), speaker,
                    len(wav) / SAMPLE_RATE)


def _prepare(corpus_or_rows: Any, tokenizer: UnitTokenizer, cfg: VocoderConfig, progress: bool) -> list[_Example]:
    from tqdm.auto import tqdm

    rows = _rows(corpus_or_rows)
    total = len(corpus_or_rows) if hasattr(corpus_or_rows, "__len__") else None
    if cfg.max_utterances is not None:
        total = min(total, cfg.max_utterances) if total is not None else cfg.max_utterances
    out, chunk = [], []

    def flush():
        # Encoded a few hundred clips at a time (`encode_batch`: the same units as one by one, faster).
        for (wav, voice), seq in zip(chunk, tokenizer.encode_batch([w for w, _ in chunk])):
            out.append(prepare_example(wav, tokenizer, cfg, voice, seq=seq))
        bar.update(len(chunk))
        chunk.clear()

    with tqdm(total=total, desc="vocoder data", unit="utt", disable=not progress) as bar:
        for row in rows:
            if cfg.max_utterances is not None and len(out) + len(chunk) >= cfg.max_utterances:
                break
            chunk.append((_wav(row), str(row.get("voice") or "")))
            if len(chunk) == 256:
                flush()
        flush()
    if not out:
        raise ValueError("no rows to train the vocoder on.")
    return out


def _collate(batch: list[_Example], spk_index: dict[str, int], mean: torch.Tensor, std: torch.Tensor):
    units = nn.utils.rnn.pad_sequence([e.units for e in batch], batch_first=True)
    durs = nn.utils.rnn.pad_sequence([e.durations for e in batch], batch_first=True)
    lengths = torch.tensor([e.units.numel() for e in batch])
    mels = nn.utils.rnn.pad_sequence([(e.mel.float() - mean) / std for e in batch], batch_first=True)
    mel_len = torch.tensor([e.mel.shape[0] for e in batch])
    spk = torch.tensor([spk_index[e.speaker] for e in batch])
    return units, durs, lengths, mels, mel_len, spk


def losses(net: UnitToMel, batch) -> dict[str, torch.Tensor]:
    """Mel L1 and L2 (normalised log-mel, true durations) and duration MSE (log(1 + d)), masked means."""
    units, durs, lengths, mels, mel_len, spk = batch
    log_dur, pred, _ = net(units, lengths, spk, durs)
    mkeep = (torch.arange(mels.shape[1])[None] < mel_len[:, None]).float()[..., None]
    ukeep = (torch.arange(units.shape[1])[None] < lengths[:, None]).float()
    n_mel = mkeep.sum() * mels.shape[2]
    diff = (pred - mels) * mkeep
    return {"mel_l1": diff.abs().sum() / n_mel, "mel_l2": (diff ** 2).sum() / n_mel,
            "dur_mse": (((log_dur - torch.log1p(durs.float())) * ukeep) ** 2).sum() / ukeep.sum()}


def _schedule(step: int, progress: float, cfg: VocoderConfig) -> float:
    """Learning rate: linear warm-up, then cosine to 0 over progress (steps or time, the larger)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

def _fit(examples: list[_Example], tokenizer: UnitTokenizer, cfg: VocoderConfig, progress: bool, log,
         log_every: int) -> UnitVocoder:
    from tqdm.auto import tqdm

    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    speakers = speaker_list([e.speaker for e in examples])
    spk_index = {s: i for i, s in enumerate(speakers)}
    # Per-bin statistics of the target, so every bin weighs alike in the loss.
    allmel = torch.cat([e.mel.float() for e in examples])
    mean, std = allmel.mean(0), allmel.std(0).clamp(min=1e-3)
    del allmel
    up = int(round(cfg.mel_rate / tokenizer.rate_hz))
    net = UnitToMel(cfg, tokenizer.num_units, len(speakers), up)
    decay = [p for n, p in net.named_parameters() if p.dim() >= 2 and "emb" not in n]
    rest = [p for n, p in net.named_parameters() if p.dim() < 2 or "emb" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0}],
                            lr=cfg.lr, betas=(0.9, 0.98))
    net.train()
    t0 = time.perf_counter()
    step, epoch, batches, history = 0, 0, [], []
    first = avg = None
    bar = tqdm(total=cfg.max_steps, desc="vocoder", unit="step", disable=not progress)
    while True:
        elapsed = time.perf_counter() - t0
        frac = max(step / cfg.max_steps, elapsed / cfg.time_budget_s if cfg.time_budget_s else 0.0)
        if frac >= 1.0:
            break
        if not batches:
            batches = duration_batches([e.seconds for e in examples], cfg.batch_seconds, rng)
            epoch += 1
        batch = _collate([examples[i] for i in batches.pop()], spk_index, mean, std)
        parts = losses(net, batch)
        loss = parts["mel_l1"] + cfg.dur_loss_weight * parts["dur_mse"]
        for g in opt.param_groups:
            g["lr"] = _schedule(step, frac, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step += 1
        now = {k: v.item() for k, v in parts.items()}
        first = first or now
        avg = now if avg is None else {k: 0.95 * avg[k] + 0.05 * now[k] for k in now}
        bar.update(1)
        bar.set_postfix(mel_l1=f"{avg['mel_l1']:.3f}", dur=f"{avg['dur_mse']:.3f}", epoch=epoch)
        if step % log_every == 0 or step == 1:
            # smoothed (exponential average over ~20 steps) and this batch's own losses
            rec = {"step": step, "seconds": round(time.perf_counter() - t0, 1), "epoch": epoch,
                   **{k: round(v, 4) for k, v in avg.items()}, **{f"batch_{k}": round(v, 4) for k, v in now.items()}}
            history.append(rec)
            if log is not None:
                log(rec)
    bar.close()
    net.eval()
    tensors = {f"net.{k}": v for k, v in net.state_dict().items()}
    tensors.update(mel_mean=mean, mel_std=std)
    info = {"steps": step, "epochs": epoch, "train_seconds": round(time.perf_counter() - t0, 1),
            "first_loss": first, "final_loss": avg, "history": history, "utterances": len(examples),
            "audio_hours": round(sum(e.seconds for e in examples) / 3600, 4), "voices": len(speakers),
            "threads": torch.get_num_threads(), "parameters": sum(p.numel() for p in net.parameters())}
    return UnitVocoder(cfg, speakers, tokenizer.artefact_id, tokenizer.num_units, tokenizer.rate_hz, tensors, info)


def vocoder_key(fingerprint: str, tokenizer: UnitTokenizer, cfg: VocoderConfig) -> str:
    """The cache key: SHA-256 of the code version, the config, the unit artefact and the corpus content."""
    return hashlib.sha256(json.dumps({"vocoder_version": VOCODER_VERSION, "config": cfg.identity(),
                                      "units": tokenizer.artefact_id, "corpus": fingerprint},
                                     sort_keys=True).encode()).hexdigest()


def train_vocoder(corpus_or_rows: Any, unit_tokenizer: UnitTokenizer, cfg: VocoderConfig | None = None, *,
                  cache_dir: str | os.PathLike | None = None, progress: bool = True, log=None,
                  log_every: int = 50) -> UnitVocoder:
    """Train a unit vocoder on a speech corpus; cached under `cache_dir` by a hash of its inputs.

    `corpus_or_rows`: a corpus `datasets.Dataset` (`minimost.speech.corpus`) or an iterable of dict
    rows with `audio` (any form `audio_from_hf` takes) and `voice` (the speaker name). Each clip
    is tokenised with `unit_tokenizer` (its ground-truth units and run lengths) and its log-mel
    becomes the target. The cache key hashes the corpus content (`units.corpus_fingerprint`),
    `unit_tokenizer.artefact_id` and `cfg.identity()`: the same inputs load the saved artefact at
    once (with a time budget, the first training's weights are the cached ones). `log`, if given,
    gets a dict of smoothed losses every `log_every` steps.
    """
    cfg = cfg or VocoderConfig()
    if not isinstance(corpus_or_rows, Sequence) and not hasattr(corpus_or_rows, "column_names"):
        corpus_or_rows = list(corpus_or_rows)        # a generator would be used up by the fingerprint
    path = None
    if cache_dir is not None:
        key = vocoder_key(corpus_fingerprint(corpus_or_rows), unit_tokenizer, cfg)
        path = Path(cache_dir) / f"vocoder-{key[:16]}"
        if (path / ARTEFACT_JSON).exists():
            return UnitVocoder.load(path, unit_tokenizer)
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        examples = _prepare(corpus_or_rows, unit_tokenizer, cfg, progress)
        voc = _fit(examples, unit_tokenizer, cfg, progress, log, log_every)
    finally:
        torch.set_num_threads(threads)
    if path is not None:
        voc.save(path)
    return voc


# --------------------------------------------------------------------------------------------
# Evaluation without a judge: mel and duration errors against the ground truth
# --------------------------------------------------------------------------------------------

def evaluate_vocoder(vocoder: UnitVocoder, tokenizer: UnitTokenizer, corpus_or_rows: Any, *,
                     progress: bool = False) -> dict:
    """Mel and duration errors on clips whose voice the vocoder knows (use held-out sentences).

    For every clip: its units and true durations (from `tokenizer`), the vocoder's log-mel with
    those durations against the clip's own log-mel (`mel_l1`, `mel_l2`, in units of the training
    set's per-bin standard deviation, as the training loss), and the predicted durations against
    the true ones: `dur_mae` (unit frames per unit), `dur_exact` (share predicted exactly), and
    `length_ratio` (predicted total / true total frames).
    """
    from tqdm.auto import tqdm

    vocoder.check_units(tokenizer)
    spk_index = {s: i for i, s in enumerate(vocoder.speakers)}
    l1 = l2 = frames = 0.0
    abs_err, exact, units, pred_total, true_total = 0.0, 0, 0, 0, 0
    rows = list(_rows(corpus_or_rows))
    for row in tqdm(rows, desc="evaluating vocoder", unit="utt", disable=not progress):
        ex = prepare_example(_wav(row), tokenizer, vocoder.cfg, str(row.get("voice") or ""))
        vocoder.speaker_id(ex.speaker)                      # unknown voice: a clear error
        batch = _collate([ex], spk_index, vocoder.mel_mean, vocoder.mel_std)
        with torch.no_grad():
            parts = losses(vocoder.net, batch)
            pred_d, _ = vocoder.predict(ex.units, ex.speaker)
        n = ex.mel.shape[0]
        l1 += parts["mel_l1"].item() * n
        l2 += parts["mel_l2"].item() * n
        frames += n
        abs_err += (pred_d - ex.durations).abs().sum().item()
        exact += int((pred_d == ex.durations).sum())
        units += ex.units.numel()
        pred_total += int(pred_d.sum())
        true_total += int(ex.durations.sum())
    return {"mel_l1": l1 / frames, "mel_l2": l2 / frames, "dur_mae": abs_err / units, "dur_exact": exact / units,
            "length_ratio": pred_total / true_total, "utterances": len(rows), "units": units}


# --------------------------------------------------------------------------------------------
# Optional: training the HiFi-GAN generator (GPU users)
# --------------------------------------------------------------------------------------------

def _stft_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Multi-resolution STFT loss (Parallel WaveGAN): spectral convergence + log-magnitude L1."""
    total = pred.new_zeros(())
    for n_fft, hop in ((512, 50), (1024, 120), (2048, 240)):
        win = torch.hann_window(n_fft, device=pred.device)
        p = torch.stft(pred, n_fft, hop, window=win, return_complex=True).abs().clamp(min=1e-7)
        t = torch.stft(target, n_fft, hop, window=win, return_complex=True).abs().clamp(min=1e-7)
        total = total + torch.linalg.norm(t - p) / torch.linalg.norm(t) + (t.log() - p.log()).abs().mean()
    return total / 3


def train_waveform_generator(vocoder: UnitVocoder, corpus_or_rows: Any, *, max_steps: int = 100_000,
                             time_budget_s: float | None = 3600.0, segment_frames: int = 32, batch_size: int = 16,
                             lr: float = 2e-4, device: str | None = None,
                             progress: bool = True) -> UnitVocoder:
    """Train a `HifiGanGenerator` on (log-mel, audio) pairs of a corpus and attach it to `vocoder`.

    Random `segment_frames`-frame windows of the ground-truth log-mel → audio, trained with the
    multi-resolution STFT loss plus an L1 on the log-mel of the output. No discriminators: the
    adversarial losses that give HiFi-GAN its crisp high frequencies are not implemented, so
    expect audio clearer than Griffin-Lim's phase but duller than a real HiFi-GAN. Meant for a
    GPU (`device` defaults to CUDA when present); on 2 CPU cores it does not reach useful quality
    in minutes. Returns a new vocoder with `generator.*` tensors and `waveform="hifigan"`; save
    it with `save`.
    """
    from tqdm.auto import tqdm

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    cfg = vocoder.cfg
    hop = cfg.hop_length
    clips = []
    for row in _rows(corpus_or_rows):
        wav = _wav(row)
        mel = vocoder_mel(wav, cfg)[: len(wav) // hop]
        if mel.shape[0] > segment_frames:
            clips.append((mel, torch.from_numpy(wav[: mel.shape[0] * hop])))
    if not clips:
        raise ValueError(f"no clip longer than {segment_frames} mel frames to train the generator on.")
    gen = HifiGanGenerator(cfg.n_mels, cfg.hifigan_channels).to(device)
    if gen.hop != hop:
        raise VocoderError(f"the generator upsamples by {gen.hop}, the mel hop is {hop}.")
    opt = torch.optim.AdamW(gen.parameters(), lr=lr, betas=(0.8, 0.99))
    fb = _filterbank(cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max).to(device)
    win = _window(cfg).to(device)
    rng = random.Random(cfg.seed)
    t0 = time.perf_counter()
    step, last = 0, None
    bar = tqdm(total=max_steps, desc="hifigan generator", unit="step", disable=not progress)
    while step < max_steps and (time_budget_s is None or time.perf_counter() - t0 < time_budget_s):
        mels, wavs = [], []
        for mel, wav in rng.choices(clips, k=batch_size):
            s = rng.randrange(mel.shape[0] - segment_frames)
            mels.append(mel[s:s + segment_frames].T)
            wavs.append(wav[s * hop:(s + segment_frames) * hop])
        x, y = torch.stack(mels).to(device), torch.stack(wavs).to(device)
        out = gen(x)
        spec = torch.stft(out, cfg.n_fft, hop, cfg.win_length, win, return_complex=True).abs()
        out_mel = torch.log(torch.einsum("bft,fm->btm", spec, fb) + cfg.log_floor)
        tgt_spec = torch.stft(y, cfg.n_fft, hop, cfg.win_length, win, return_complex=True).abs()
        tgt_mel = torch.log(torch.einsum("bft,fm->btm", tgt_spec, fb) + cfg.log_floor)
        loss = _stft_loss(out, y) + (out_mel - tgt_mel).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        last = round(loss.item(), 4)
        bar.update(1)
        bar.set_postfix(loss=f"{last:.3f}")
    bar.close()
    gen = gen.cpu().eval()
    tensors = {**{k: v for k, v in vocoder.tensors.items() if not k.startswith("generator.")},
               **{f"generator.{k}": v for k, v in gen.state_dict().items()}}
    info = {**vocoder.info, "generator": {"steps": step, "seconds": round(time.perf_counter() - t0, 1),
                                          "final_loss": last, "device": device}}
    out_voc = UnitVocoder(replace(cfg, waveform="hifigan"), vocoder.speakers, vocoder.unit_artefact_id,
                          vocoder.num_units, vocoder.unit_rate_hz, tensors, info)
    return out_voc


__all__ = [
    "PEAK", "VOCODER_VERSION", "DurationPredictor", "HifiGanGenerator", "UnitArtefactMismatch", "UnitToMel",
    "UnitVocoder", "VocoderConfig", "VocoderError", "durations_from_log", "evaluate_vocoder", "expand_durations",
    "griffin_lim", "mel_to_linear", "prepare_example", "speaker_list", "train_vocoder", "train_waveform_generator",
    "vocoder_key", "vocoder_mel",
]
