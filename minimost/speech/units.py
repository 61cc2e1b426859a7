"""Discrete speech units: speaker-invariant, phone-like ids at 25 Hz, deduplicated, versioned.

MoST hears speech as HuBERT units: 25 frames per second, each frame the nearest of 500 k-means
centroids, consecutive duplicates removed (most-reference.md §4.1). HuBERT cannot be downloaded
here, so minimost trains its own unit encoder on its own (synthetic) speech:

    from minimost.speech.units import UnitConfig, train_units, evaluate_units
    tok = train_units(corpus, UnitConfig(), cache_dir="data/cache/units")   # a UnitTokenizer
    seq = tok.encode(wav)          # UnitSequence(units_dedup=[0, 17, 42, ...], durations=[3, 2, 4, ...], rate_hz=25)
    tok.save("units/"); tok.artefact_id     # "units-phonetic-k100-25hz-3f9a0c1d2e4b"

Unit types (`UnitConfig.kind`):

- **"phonetic"** (the default): a small encoder, log-mel at 100 Hz → two stride-2 convolutions
  (25 Hz) → a few transformer layers → a classifier over a phone inventory, trained with frame
  cross-entropy against espeak's phoneme labels (stress stripped, silence as a class). The unit
  is the class of each frame (the argmax, smoothed by a switch penalty). Why not k-means: units-feasibility.md measured that k-means
  on spectra encodes the speaker more than the content (PNMI 0.48, two voices reading the same
  sentence differ by 81-85 % of their units), while a phonetically supervised encoder's argmax
  gave PNMI 0.86 and a 22-35 % cross-voice edit rate, and k-means on that encoder's hidden layer
  brought the speaker back (48-52 %). Supervising with phone labels is the route of ASR-supervised
  speech tokenizers; HuBERT gets there without labels but needs far more data and compute.
  `objective="ctc"` trains the same encoder with CTC on phoneme *sequences* (espeak's G2P of the
  transcript), for real corpora that have no timings.
- **"kmeans_mel"**, **"kmeans_mfcc"**: the teaching contrast, plain k-means (k-means++ init,
  seeded) on 4 stacked frames of log-mel or MFCC+Δ+ΔΔ (one vector per 25 Hz unit frame).

The codebook size K (`codebook_size`, 100 for tiny, 500 like MoST) is the number of unit ids.
A phonetic encoder has as many classes as its phone inventory (about 80 with stress stripped);
`classes` decides what the extra ids are for (see `UnitConfig`, and docs/units.md for what was
measured). Every unit type produces ids in `range(K)`.

A `UnitTokenizer` is one **versioned artefact**: encoder weights or centroids, class labels,
feature config, rate and a SHA-256 over all of them. `artefact_id` names it; the vocoder and the
LM vocabulary store that id, and `check_compatible(their_id)` fails loudly on a mismatch, because
units from one encoder mean nothing to a vocoder trained on another (most-reference.md §4.2).

`evaluate_units` scores units against espeak's phoneme timings with the HuBERT paper's metrics
(Hsu et al. 2021, "HuBERT", its analysis of cluster quality: phone purity, cluster purity,
phone-normalised mutual information), plus units per second and the cross-voice unit edit rate.

Times: "frames" are unit frames at `rate_hz` (25 per second by default) unless said otherwise;
feature frames are 100 per second (`minimost.speech.features`).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from minimost.speech.artefact import duration_batches, hash_tensors, write_artefact
from minimost.speech.audio import SAMPLE_RATE, audio_from_hf, resample
from minimost.speech.features import FeatureConfig, features, normalize_utterance, stack_frames
from minimost.speech.synth import strip_stress

UNITS_VERSION = 1              # bump when anything here changes what an artefact means
SILENCE = "sil"                # class of every frame outside espeak's phoneme segments (class 0)
ARTEFACT_JSON = "units.json"
ARTEFACT_TENSORS = "units.safetensors"
KINDS = ("phonetic", "kmeans_mel", "kmeans_mfcc")


class UnitArtefactMismatch(RuntimeError):
    """Units from one unit artefact were about to meet a component built for another."""


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class UnitConfig:
    """Everything that defines a unit tokenizer and how it is trained (`identity()` is hashed)."""

    kind: str = "phonetic"         # "phonetic" | "kmeans_mel" | "kmeans_mfcc"
    codebook_size: int = 100       # K: unit ids are 0..K-1 (tiny 100; MoST 500)
    rate_hz: int = 25              # unit frames per second: 25 (MoST) or 50

    # Phonetic encoder. `classes` says what a class is:
    #   "phone"        one class per phone (stress stripped) + silence; ids >= #classes unused
    #   "phone_stress" + the most frequent stressed vowels as their own classes ("ˈæ" vs "æ")
    #   "phone_pos"    the most frequent phones split into first/second half of their segment
    #   (the last two fill the ids left over, up to K: see `_class_inventory`)
    objective: str = "frame"       # "frame": CE on timed phone labels; "ctc": CTC on phone sequences
    classes: str = "phone"
    d_model: int = 192
    n_layers: int = 3
    n_heads: int = 4
    ff_mult: int = 4
    # Unit frames each side a frame attends to (None: the whole utterance). Local attention keeps
    # decisions acoustic rather than lexical; 8 vs None at 1200 steps: PNMI 0.885 vs 0.882 and
    # edit rate 22.4 % vs 23.7 % on held-out voices (docs/units.md).
    attn_window: int | None = 8
    dropout: float = 0.0           # 0.1 cost PNMI at a fixed time budget (docs/units.md)
    # Decoding: the unit path maximises sum(log p(unit)) - switch_penalty * (number of changes),
    # a Viterbi pass that removes one-frame flicker between confusable classes (0: plain argmax).
    # Measured on held-out voices: 0 -> 2 took the cross-voice edit rate from 26.6 % to 22.5 %
    # and PNMI from 0.898 to 0.909 (docs/units.md).
    switch_penalty: float = 2.0

    # Training (phonetic). Stops at max_steps or time_budget_s, whichever comes first; the
    # learning rate follows a cosine over that same progress.
    max_steps: int = 3000
    time_budget_s: float | None = 540.0
    batch_seconds: float = 30.0    # seconds of audio per batch (more, smaller steps beat fewer, larger)
    lr: float = 2e-3
    warmup_steps: int = 60
    weight_decay: float = 0.01
    label_smoothing: float = 0.0

    # Voice augmentation, drawn per utterance and step (0 turns one off):
    aug_warp: float = 0.12         # frequency-axis (formant) scaling by U(1 - w, 1 + w), VTLP-style
    aug_warp_split: bool = True    # a second, independent factor above a random 0.8-2.5 kHz breakpoint
    aug_echo: float = 0.3          # echo: half the time, a copy 50-150 ms later at power gain U(0, e)
    aug_speed: float = 0.15        # tempo: time axis stretched by U(1 - s, 1 + s)
    aug_tilt: float = 0.5          # spectral tilt: log-mel + U(-t, t) * ramp(-1..1) over the bins
    aug_mask: bool = True          # SpecAugment-style: one frequency band and one time span zeroed

    # k-means (kmeans_mel / kmeans_mfcc)
    kmeans_frames: int = 100_000   # unit frames sampled from the corpus to fit on
    kmeans_iters: int = 50

    seed: int = 0
    threads: int | None = None     # torch threads while training (None: leave as is); not hashed

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"UnitConfig.kind={self.kind!r}; expected one of {KINDS}.")
        if self.rate_hz not in (25, 50):
            raise ValueError(f"UnitConfig.rate_hz={self.rate_hz}; expected 25 (MoST) or 50.")
        if self.objective not in ("frame", "ctc"):
            raise ValueError(f"UnitConfig.objective={self.objective!r}; expected 'frame' or 'ctc'.")
        if self.classes not in ("phone", "phone_stress", "phone_pos"):
            raise ValueError(f"UnitConfig.classes={self.classes!r}; expected 'phone', 'phone_stress' or 'phone_pos'.")
        if self.codebook_size < 2:
            raise ValueError(f"UnitConfig.codebook_size={self.codebook_size}; expected at least 2.")

    @property
    def feature(self) -> FeatureConfig:
        """Frames the units are computed from (normalised per utterance)."""
        return FeatureConfig(kind="mfcc" if self.kind == "kmeans_mfcc" else "log_mel")

    @property
    def stride(self) -> int:
        """Feature frames (100 Hz) per unit frame: 4 at 25 Hz, 2 at 50 Hz."""
        return int(round(self.feature.frame_rate / self.rate_hz))

    def identity(self) -> dict:
        """The fields that define the artefact: those its kind uses, without run-time knobs."""
        d = asdict(self)
        d.pop("threads")
        if self.kind == "phonetic":
            return {k: v for k, v in d.items() if not k.startswith("kmeans_")}
        return {k: d[k] for k in ("kind", "codebook_size", "rate_hz", "kmeans_frames", "kmeans_iters", "seed")}


# --------------------------------------------------------------------------------------------
# Deduplication: frame units <-> (units, run lengths)
# --------------------------------------------------------------------------------------------

@dataclass
class UnitSequence:
    """Deduplicated units of one utterance, with how many unit frames each one lasted.

    `units_dedup[i]` held for `durations[i]` frames at `rate_hz`; `sum(durations)` is the number of
    unit frames (`seconds = sum(durations) / rate_hz`). MoST's LM sees only `units_dedup`; the
    durations are what a vocoder's duration predictor learns to put back.
    """

    units_dedup: list[int]
    durations: list[int]
    rate_hz: float

    def __len__(self) -> int:
        return len(self.units_dedup)

    @property
    def num_frames(self) -> int:
        return int(sum(self.durations))

    @property
    def seconds(self) -> float:
        return self.num_frames / self.rate_hz

    def frames(self) -> list[int]:
        """The frame-level units again (`expand`)."""
        return expand(self.units_dedup, self.durations)

    @classmethod
    def from_frames(cls, frame_units: Sequence[int], rate_hz: float) -> UnitSequence:
        units, durations = dedup(frame_units)
        return cls(units, durations, rate_hz)


def dedup(frame_units: Sequence[int]) -> tuple[list[int], list[int]]:
    """Remove consecutive duplicates, keeping run lengths: [5,5,7,5,5,5] → ([5,7,5], [2,1,3])."""
    units: list[int] = []
    durations: list[int] = []
    for u, run in itertools.groupby(int(x) for x in frame_units):
        units.append(u)
        durations.append(sum(1 for _ in run))
    return units, durations


def expand(units: Sequence[int], durations: Sequence[int]) -> list[int]:
    """Inverse of `dedup`: each unit repeated for its duration (frames)."""
    if len(units) != len(durations):
        raise ValueError(f"{len(units)} units but {len(durations)} durations; expected one duration per unit.")
    return [int(u) for u, d in zip(units, durations) for _ in range(int(d))]


# --------------------------------------------------------------------------------------------
# Phone labels from espeak's timings
# --------------------------------------------------------------------------------------------

def phone_label(label: str, classes: str = "phone") -> str:
    """The class name of an espeak phoneme label: stress stripped unless `classes="phone_stress"`."""
    return label if classes == "phone_stress" else strip_stress(label)


def frame_phones(phonemes: Sequence[str], starts: Sequence[float], ends: Sequence[float], num_frames: int,
                 rate_hz: float, classes: str = "phone", positions: bool = False) -> list[str]:
    """The phone under the centre of every unit frame: frame i covers [i, i+1) / rate_hz seconds.

    Frames in the gaps between segments (espeak's pauses, leading and trailing silence) are
    `SILENCE`. With `positions`, a label gets ".1" in the first half of its segment and ".2" in
    the second (the sub-position classes of `classes="phone_pos"`).
    """
    centres = (np.arange(num_frames) + 0.5) / rate_hz
    starts = np.asarray(starts, dtype=np.float64)
    ends = np.asarray(ends, dtype=np.float64)
    k = np.searchsorted(starts, centres, side="right") - 1          # last segment starting before
    out = []
    for t, j in zip(centres, k):
        if j < 0 or t >= ends[j]:
            out.append(SILENCE)
            continue
        name = phone_label(phonemes[j], classes)
        if positions:
            name += ".1" if t < 0.5 * (starts[j] + ends[j]) else ".2"
        out.append(name)
    return out


def _class_inventory(rows: list[_Utterance], cfg: UnitConfig) -> list[str]:
    """Class names, silence first, at most `codebook_size` of them, from the training labels.

    Always silence + every stress-stripped phone, most frequent first. While ids are left over,
    `classes="phone_stress"` adds the most frequent stressed labels ("ˈæ"; the rest fall back to
    their stripped phone) and `classes="phone_pos"` splits the most frequent classes into the
    first and second half of their segments ("n.1", "n.2").
    """
    counts = Counter(strip_stress(p) for r in rows for p in r.phonemes)
    labels = [SILENCE, *sorted(counts, key=lambda p: (-counts[p], p))]
    if len(labels) > cfg.codebook_size:
        raise ValueError(f"the training corpus has {len(labels)} phone classes (stress stripped, with "
                         f"silence) but codebook_size={cfg.codebook_size}; raise codebook_size.")
    room = cfg.codebook_size - len(labels)
    if cfg.classes == "phone_stress":
        stressed = Counter(p for r in rows for p in r.phonemes if p != strip_stress(p))
        labels += sorted(stressed, key=lambda p: (-stressed[p], p))[:room]
    elif cfg.classes == "phone_pos":
        split = set(labels[:room])
        labels = [x for p in labels for x in ((f"{p}.1", f"{p}.2") if p in split else (p,))]
    return labels


def _class_id(name: str, index: dict[str, int]) -> int:
    """A frame name's class: itself, else without its half (".1"), else without stress, else silence."""
    if name in index:
        return index[name]
    if name.endswith((".1", ".2")):
        name = name[:-2]
        if name in index:
            return index[name]
    return index.get(strip_stress(name), 0)


# --------------------------------------------------------------------------------------------
# Training data in memory
# --------------------------------------------------------------------------------------------

@dataclass
class _Utterance:
    feats: torch.Tensor          # (T, F) unnormalised log-mel (or MFCC) at 100 Hz
    duration: float              # seconds
    text: str
    voice: str
    phonemes: list[str]          # espeak labels as stored (with stress)
    starts: np.ndarray           # seconds, empty for real corpora
    ends: np.ndarray


def _rows(corpus_or_rows: Any) -> Iterable[dict]:
    """Dict rows with the corpus columns from a `datasets.Dataset` or any iterable of dicts."""
    if hasattr(corpus_or_rows, "iter") and hasattr(corpus_or_rows, "column_names"):   # datasets.Dataset
        for batch in corpus_or_rows.iter(batch_size=256):
            keys = list(batch)
            for i in range(len(batch[keys[0]])):
                yield {k: batch[k][i] for k in keys}
    else:
        yield from corpus_or_rows


def _wav(row: dict) -> np.ndarray:
    wav, _ = audio_from_hf(row["audio"], SAMPLE_RATE)
    return wav


def corpus_fingerprint(corpus_or_rows: Any) -> str:
    """SHA-256 over every row's id, text, voice, audio and phoneme timings (what training sees)."""
    h = hashlib.sha256()
    for row in _rows(corpus_or_rows):
        audio = row["audio"]
        if isinstance(audio, dict) and audio.get("bytes"):
            blob = audio["bytes"]
        elif isinstance(audio, dict) and audio.get("array") is not None:
            blob = np.asarray(audio["array"], dtype=np.float32).tobytes() + str(audio.get("sampling_rate")).encode()
        else:
            blob = _wav(row).tobytes()
        meta = [row.get("id"), row.get("text"), row.get("voice"), list(row.get("phonemes") or []),
                [float(x) for x in row.get("phoneme_start") or []], [float(x) for x in row.get("phoneme_end") or []]]
        h.update(json.dumps(meta, ensure_ascii=False).encode())
        h.update(hashlib.sha256(blob).digest())
    return h.hexdigest()


def _load(corpus_or_rows: Any, feature_cfg: FeatureConfig, progress: bool) -> list[_Utterance]:
    """Decode every row once and keep its unnormalised frames (augmentation comes before normalising)."""
    from tqdm.auto import tqdm

    out = []
    n = len(corpus_or_rows) if hasattr(corpus_or_rows, "__len__") else None
    for row in tqdm(_rows(corpus_or_rows), total=n, desc="features", unit="utt", disable=not progress):
        wav = _wav(row)
        cfg = replace(feature_cfg, normalize=False)
        out.append(_Utterance(features(wav, cfg), len(wav) / SAMPLE_RATE, row.get("text", ""),
                              row.get("voice", ""), list(row.get("phonemes") or []),
                              np.asarray(row.get("phoneme_start") or [], np.float64),
                              np.asarray(row.get("phoneme_end") or [], np.float64)))
    if not out:
        raise ValueError("no rows to train units on.")
    return out


# --------------------------------------------------------------------------------------------
# The phonetic encoder
# --------------------------------------------------------------------------------------------

def _sinusoids(length: int, dim: int) -> torch.Tensor:
    """(length, dim) sinusoidal positions, as in "Attention is all you need"."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(10_000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe


class PhoneticEncoder(nn.Module):
    """Feature frames (B, T, F) at 100 Hz → class logits (B, U, C) at 25 Hz (or 50 Hz).

    Two convolutions (kernel 5, padding 2) of stride 2 (the second of stride 1 at 50 Hz) give
    U = ceil(T / 4) frames; pre-norm transformer layers follow (not causal: units are made
    offline), each frame attending to the frames within `window` of it (None: the whole
    utterance); a linear layer gives one score per class.
    """

    def __init__(self, n_in: int, n_out: int, d_model: int = 192, n_layers: int = 3, n_heads: int = 4,
                 ff_mult: int = 4, dropout: float = 0.1, stride: int = 4, window: int | None = None):
        super().__init__()
        if stride not in (2, 4):
            raise ValueError(f"stride={stride}; expected 4 (25 Hz) or 2 (50 Hz).")
        self.stride, self.window, self.n_heads = stride, window, n_heads
        self.conv1 = nn.Conv1d(n_in, d_model, 5, stride=2, padding=2)
        self.conv2 = nn.Conv1d(d_model, d_model, 5, stride=stride // 2, padding=2)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, ff_mult * d_model, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_out)
        self.drop = nn.Dropout(dropout)

    def out_lengths(self, lengths_B: torch.Tensor) -> torch.Tensor:
        """Unit frames from feature frames: ceil(T / 2), then ceil(. / 2) again at 25 Hz."""
        u = (lengths_B + 1) // 2
        return (u + 1) // 2 if self.stride == 4 else u

    def forward(self, feats_BTF: torch.Tensor, lengths_B: torch.Tensor | None = None) -> torch.Tensor:
        x = F.gelu(self.conv1(feats_BTF.transpose(1, 2)))             # (B, D, ceil(T / 2))
        if lengths_B is not None:
            # Zero what lies past each clip, as the second convolution's own padding would be:
            # a padded clip in a batch then gets the same units as the clip alone.
            half = torch.arange(x.shape[2], device=x.device)[None, :] < ((lengths_B + 1) // 2)[:, None]
            x = x * half[:, None, :]
        x = F.gelu(self.conv2(x)).transpose(1, 2)                     # (B, U, D)
        B, U, D = x.shape
        x = self.drop(x + _sinusoids(U, D).to(x))
        mask = None
        if lengths_B is not None or self.window:
            # An additive mask (B * heads, U, U) with -1e9, not -inf: a padding row whose window
            # holds only padding would otherwise turn into NaN and leak through the values.
            pos = torch.arange(U, device=x.device)
            bias = x.new_zeros(B, U, U)
            if lengths_B is not None:
                pad = pos[None, :] >= self.out_lengths(lengths_B)[:, None]          # (B, U) keys
                bias = bias.masked_fill(pad[:, None, :], -1e9)
            if self.window:
                far = (pos[:, None] - pos[None, :]).abs() > self.window
                bias = bias.masked_fill(far[None], -1e9)
            mask = bias.repeat_interleave(self.n_heads, dim=0)
        with _mha_fastpath(False):
            x = self.layers(x, mask=mask)
        return self.head(self.norm(x))                                # (B, U, C)


@contextlib.contextmanager
def _mha_fastpath(enabled: bool):
    """Switch PyTorch's fused inference path of `nn.TransformerEncoderLayer` (taken in eval mode
    without grad) on or off for a block, restoring the previous setting after.

    The encoder needs it off. That path reads an additive float mask as "masked where nonzero", so a
    padding frame whose window holds only padding gets a fully masked row and comes out NaN; the
    next layer's attention multiplies it by a zero weight, and NaN spreads to the real frames of
    every padded clip in a batch (pytorch/pytorch#118628). Measured on the tiny kit before this
    guard: batched unit encoding and MoST-C's frozen speech encoder gave NaN states for every clip
    shorter than its batch's longest. The ordinary path, which training uses, is exact.
    """
    was = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(enabled)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(was)


# --------------------------------------------------------------------------------------------
# Voice augmentation (on unnormalised log-mel frames)
# --------------------------------------------------------------------------------------------

def _mel_centres(cfg: FeatureConfig) -> np.ndarray:
    """Centre frequency (Hz) of every mel filter (HTK mel scale, as in `features`)."""
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)
    inv = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    pts = np.linspace(mel(cfg.f_min), mel(cfg.f_max), cfg.n_mels + 2)
    return inv(pts[1:-1])


def warp_frequency(feats_TF: torch.Tensor, alpha: float, cfg: FeatureConfig, alpha_high: float | None = None,
                   split_hz: float = 1500.0) -> torch.Tensor:
    """Scale the frequency axis of log-mel frames by `alpha` (formants move up for alpha > 1).

    Vocal tract length perturbation (Jaitly & Hinton 2013) on the mel scale: the output bin at
    centre frequency f takes the value at g⁻¹(f), linearly interpolated between bins, where
    g(f) = alpha · f. With `alpha_high`, g is piecewise linear: slope alpha up to `split_hz`, slope
    alpha_high above it, so the first formant and the higher ones move independently (as
    espeak's voice variants scale each formant by its own factor).
    """
    centres = _mel_centres(cfg)
    if alpha_high is None:
        src = centres / alpha
    else:
        knee = split_hz * alpha
        src = np.where(centres < knee, centres / alpha, split_hz + (centres - knee) / alpha_high)
    src = np.clip(src, centres[0], centres[-1])
    pos = torch.as_tensor(np.interp(src, centres, np.arange(len(centres))), dtype=torch.float32)
    lo = pos.floor().long().clamp(max=len(centres) - 2)
    w = pos - lo
    return feats_TF[:, lo] * (1 - w) + feats_TF[:, lo + 1] * w


def stretch_time(feats_TF: torch.Tensor, factor: float) -> torch.Tensor:
    """Tempo change: (T, F) → (round(T * factor), F) by linear interpolation along time."""
    T = feats_TF.shape[0]
    n = max(1, int(round(T * factor)))
    return F.interpolate(feats_TF.T[None], size=n, mode="linear", align_corners=False)[0].T


def _augment(u: _Utterance, cfg: UnitConfig, rng: random.Random) -> tuple[torch.Tensor, float]:
    """One random voice perturbation of an utterance: (normalised frames, time factor)."""
    x = u.feats
    if cfg.aug_warp:
        alpha = rng.uniform(1 - cfg.aug_warp, 1 + cfg.aug_warp)
        high = rng.uniform(1 - cfg.aug_warp, 1 + cfg.aug_warp) if cfg.aug_warp_split else None
        x = warp_frequency(x, alpha, cfg.feature, high, rng.uniform(800.0, 2500.0))
    if cfg.aug_echo and cfg.feature.kind == "log_mel" and rng.random() < 0.5:
        # In the power domain: p(t) + g * p(t - d); log-mel is log power.
        d, g = rng.randint(5, 15), rng.uniform(0.0, cfg.aug_echo)
        late = torch.cat([x.new_full((d, x.shape[1]), -30.0), x[:-d]])[:x.shape[0]]
        x = torch.logaddexp(x, late + math.log(max(g, 1e-6)))
    factor = rng.uniform(1 - cfg.aug_speed, 1 + cfg.aug_speed) if cfg.aug_speed else 1.0
    if factor != 1.0:
        x = stretch_time(x, factor)
    if cfg.aug_tilt and cfg.feature.kind == "log_mel":
        x = x + rng.uniform(-cfg.aug_tilt, cfg.aug_tilt) * torch.linspace(-1, 1, x.shape[1])[None, :]
    x = normalize_utterance(x)
    if cfg.aug_mask:
        # Zero (the normalised mean) one band of up to 10 bins and one span of up to 10 frames.
        f0, fw = rng.randrange(x.shape[1]), rng.randrange(11)
        t0, tw = rng.randrange(x.shape[0]), rng.randrange(11)
        x = x.clone()
        x[:, f0:f0 + fw] = 0.0
        x[t0:t0 + tw, :] = 0.0
    return x, factor


# --------------------------------------------------------------------------------------------
# The artefact
# --------------------------------------------------------------------------------------------

class UnitTokenizer:
    """Audio → discrete units, as one versioned artefact (see the module docstring).

    `labels[i]` names unit id i for the phonetic kind (a phone, or "sil"); ids from len(labels) to
    K-1 are never produced. For k-means kinds `labels` is empty and `tensors["codebook"]` holds
    the (K, 4 * feature dim) centroids. `info` holds training facts (steps, seconds, corpus size);
    it is saved but not hashed, so two trainings that end in the same weights share an id.
    """

    def __init__(self, cfg: UnitConfig, labels: list[str], tensors: dict[str, torch.Tensor],
                 info: dict | None = None):
        self.cfg = cfg
        self.labels = list(labels)
        self.tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        self.info = dict(info or {})
        self.hash = self._compute_hash()
        self._model: PhoneticEncoder | None = None

    # --- identity ---------------------------------------------------------------------------
    @property
    def num_units(self) -> int:
        """K: unit ids are 0..K-1 (the LM reserves one token per id)."""
        return self.cfg.codebook_size

    @property
    def rate_hz(self) -> int:
        return self.cfg.rate_hz

    @property
    def artefact_id(self) -> str:
        """A name that changes whenever the units would: e.g. "units-phonetic-k100-25hz-3f9a0c1d2e4b"."""
        return f"units-{self.cfg.kind}-k{self.cfg.codebook_size}-{self.cfg.rate_hz}hz-{self.hash[:12]}"

    def _meta(self) -> dict:
        return {"format": "minimost-units", "units_version": UNITS_VERSION, "config": self.cfg.identity(),
                "feature": self.cfg.feature.to_dict(), "rate_hz": self.cfg.rate_hz,
                "codebook_size": self.cfg.codebook_size, "labels": self.labels}

    def _compute_hash(self) -> str:
        h = hashlib.sha256(json.dumps(self._meta(), sort_keys=True, ensure_ascii=False).encode())
        hash_tensors(h, self.tensors)
        return h.hexdigest()

    def check_compatible(self, other_id: str) -> None:
        """Raise `UnitArtefactMismatch` unless `other_id` (stored by a vocoder, a tokenizer, a
        dataset of units) names this very artefact."""
        if other_id != self.artefact_id:
            raise UnitArtefactMismatch(
                f"unit artefact mismatch: this unit tokenizer is {self.artefact_id!r}, but the other side was "
                f"built for {other_id!r}. Their unit ids mean different sounds; retrain or re-encode the "
                f"other side with this tokenizer, or load the unit artefact it was built with.")

    # --- save / load ------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Write `units.json` + `units.safetensors` into `directory`, atomically (all or nothing)."""
        meta = {**self._meta(), "hash": self.hash, "artefact_id": self.artefact_id, "info": self.info}
        return write_artefact(directory, ARTEFACT_TENSORS, self.tensors, ARTEFACT_JSON,
                              json.dumps(meta, indent=1, ensure_ascii=False))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> UnitTokenizer:
        """Read a saved artefact and check its hash (a corrupted or edited artefact raises)."""
        from safetensors.torch import load_file

        directory = Path(directory)
        try:
            meta = json.loads((directory / ARTEFACT_JSON).read_text())
            tensors = load_file(str(directory / ARTEFACT_TENSORS))
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{directory}: not a unit artefact (expected {ARTEFACT_JSON} and "
                                    f"{ARTEFACT_TENSORS}); save one with UnitTokenizer.save.") from e
        if meta.get("format") != "minimost-units" or meta.get("units_version") != UNITS_VERSION:
            raise ValueError(f"{directory}: unit artefact format {meta.get('format')!r} version "
                             f"{meta.get('units_version')!r}; this code reads version {UNITS_VERSION}.")
        known = {f.name for f in fields(UnitConfig)}
        cfg = UnitConfig(**{k: v for k, v in meta["config"].items() if k in known})
        tok = cls(cfg, meta["labels"], tensors, meta.get("info"))
        if tok.hash != meta.get("hash"):
            raise UnitArtefactMismatch(f"{directory}: stored hash {str(meta.get('hash'))[:12]} does not match "
                                       f"its contents ({tok.hash[:12]}); the artefact is corrupted or was edited.")
        return tok

    # --- encoding ---------------------------------------------------------------------------
    @property
    def model(self) -> PhoneticEncoder:
        if self._model is None:
            if self.cfg.kind != "phonetic":
                raise AttributeError(f"a {self.cfg.kind} tokenizer has no encoder")
            self._model = _build_encoder(self.cfg, self._n_outputs())
            self._model.load_state_dict({k[len("encoder."):]: v for k, v in self.tensors.items()
                                         if k.startswith("encoder.")})
            self._model.eval()
        return self._model

    def _n_outputs(self) -> int:
        return len(self.labels) + (1 if self.cfg.objective == "ctc" else 0)   # CTC's blank is last

    def encode_frames(self, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
        """Frame-level units (not deduplicated): `(samples,)` → LongTensor `(ceil(frames / stride),)`.

        One unit per 1 / rate_hz seconds: a clip of n samples at 16 kHz gives
        ceil((n // 160 + 1) / 4) unit frames at 25 Hz.
        """
        if sample_rate != SAMPLE_RATE:
            wav = resample(wav, sample_rate, SAMPLE_RATE)
        feats = features(wav, self.cfg.feature)                                  # (T, F) normalised
        with torch.no_grad():
            if self.cfg.kind == "phonetic":
                logits = self.model(feats[None])[0]                              # (U, C)
                return self._decide(logits)
            x = stack_frames(feats, self.cfg.stride)                             # (U, stride * F)
            return _nearest(x, self.tensors["codebook"])

    def _decide(self, logits_UC: torch.Tensor) -> torch.Tensor:
        """Class per frame: the argmax, or the smoothed path when `switch_penalty` > 0.

        CTC posteriors are peaky instead: one-frame spikes between blanks, which a switch
        penalty would delete. There every frame takes the class of its nearest spike (the earlier
        one on a tie), and frames more than 3 from the first or last spike are silence. Measured
        on held-out voices against "a blank continues the previous spike": PNMI 0.58 vs 0.55,
        edit rate 16.5 % vs 17.3 % (docs/units.md).
        """
        logp = logits_UC.float().log_softmax(-1)
        if self.cfg.objective == "ctc":
            return _nearest_spike(logp.argmax(-1), blank=len(self.labels), edge=3)
        return smooth_path(logp, self.cfg.switch_penalty) if self.cfg.switch_penalty > 0 else logp.argmax(-1)

    def encode(self, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> UnitSequence:
        """Deduplicated units of a mono clip, with their run lengths in unit frames."""
        return UnitSequence.from_frames(self.encode_frames(wav, sample_rate).tolist(), self.cfg.rate_hz)

    def encode_batch(self, wavs: Sequence[np.ndarray], sample_rate: int = SAMPLE_RATE,
                     batch_seconds: float = 60.0) -> list[UnitSequence]:
        """`[encode(w) for w in wavs]`, faster for many clips (1.6x on the tiny kit's test clips,
        docs/performance.md): one padded forward per `batch_seconds` of length-sorted audio, and one
        smoothing pass over each batch.

        The encoder masks padding, so a clip's logits do not depend on its batch up to float
        rounding (a batched matrix product may sum in another order); a decision exactly on a tie
        could then differ in a rare frame. `tests/test_speech_units.py` compares the two.
        """
        if self.cfg.kind != "phonetic":
            return [self.encode(w, sample_rate) for w in wavs]
        feats = [features(w if sample_rate == SAMPLE_RATE else resample(w, sample_rate, SAMPLE_RATE),
                          self.cfg.feature) for w in wavs]
        out: list[UnitSequence | None] = [None] * len(feats)
        order = sorted(range(len(feats)), key=lambda i: feats[i].shape[0])
        budget = batch_seconds * self.cfg.feature.frame_rate
        start = 0
        while start < len(order):
            end = start + 1                         # padded frames stay under the budget (at least one clip)
            while end < len(order) and (end + 1 - start) * feats[order[end]].shape[0] <= budget:
                end += 1
            batch = order[start:end]
            lengths = torch.tensor([feats[i].shape[0] for i in batch])
            with torch.no_grad():
                logits = self.model(nn.utils.rnn.pad_sequence([feats[i] for i in batch], batch_first=True),
                                    lengths)                                     # (B, U, C)
            for i, frames in zip(batch, self._decide_batch(logits, self.model.out_lengths(lengths))):
                out[i] = UnitSequence.from_frames(frames.tolist(), self.cfg.rate_hz)
            start = end
        return out

    def _decide_batch(self, logits_BUC: torch.Tensor, lengths_B: torch.Tensor) -> list[torch.Tensor]:
        """`_decide` for each clip of a padded batch (its first `lengths_B[b]` frames)."""
        if self.cfg.objective == "frame" and self.cfg.switch_penalty > 0:
            logp = logits_BUC.float().log_softmax(-1)
            return smooth_paths(logp.cpu().numpy(), lengths_B.tolist(), self.cfg.switch_penalty)
        return [self._decide(logits_BUC[b, :n]) for b, n in enumerate(lengths_B.tolist())]

    def __repr__(self) -> str:
        return f"UnitTokenizer({self.artefact_id}, {len(self.labels) or self.num_units} classes used)"


def smooth_path(logp_UC: torch.Tensor, penalty: float) -> torch.Tensor:
    """The class path maximising Σ_t log p_t(c_t) − penalty · #{t: c_t ≠ c_t−1}, (U,) long.

    A two-state-per-class Viterbi: at every frame each class either continues (no cost) or is
    entered from the best class of the previous frame (cost `penalty`). O(U · C). A frame whose
    argmax differs from its neighbours by less than `penalty` nats is absorbed into them; a
    confident short phone survives. `penalty=0` gives the plain argmax.
    """
    return smooth_paths(logp_UC.detach().float().cpu().numpy()[None], [logp_UC.shape[0]], penalty)[0]


def smooth_paths(logp_BUC: np.ndarray, lengths: Sequence[int], penalty: float) -> list[torch.Tensor]:
    """`smooth_path` of every clip in a padded batch at once: float32 (B, U, C) log-probs, the first
    `lengths[b]` frames of clip b real. Returns one (lengths[b],) path per clip.

    In numpy, one step per frame for the whole batch: each frame's update is a handful of (B, C)
    operations, and numpy's per-operation cost is a fraction of torch's at these sizes (U is
    about 75 per clip, C about 80). Frames past a clip's end never reach its path: its score is
    kept at its last frame and its backtrace starts there.
    """
    B, U, C = logp_BUC.shape
    lengths = np.asarray(lengths)
    rows = np.arange(B)
    own = np.arange(C)[None, :]                                        # (1, C)
    score = logp_BUC[:, 0].copy()                                      # (B, C)
    final = score.copy()
    back = np.empty((U, B, C), dtype=np.int32)
    penalty = np.float32(penalty)
    for t in range(1, U):
        best = score.argmax(1)                                         # (B,)
        switch = score[rows, best] - penalty                           # (B,)
        enter = switch[:, None] > score                                # (B, C): cheaper to switch in
        back[t] = np.where(enter, best[:, None], own)
        score = np.where(enter, switch[:, None], score) + logp_BUC[:, t]
        ends = lengths - 1 == t
        final[ends] = score[ends]
    path = np.zeros((B, U), dtype=np.int64)
    path[rows, lengths - 1] = final.argmax(1)
    for t in range(U - 1, 0, -1):
        live = np.nonzero(lengths - 1 >= t)[0]                         # clips that reach frame t
        path[live, t - 1] = back[t, live, path[live, t]]
    return [torch.from_numpy(path[b, :n].copy()) for b, n in enumerate(lengths.tolist())]


def _nearest_spike(ids_U: torch.Tensor, blank: int, edge: int) -> torch.Tensor:
    """CTC frame ids → segments: each frame gets the id of its nearest non-blank frame (U,) long.

    Frames more than `edge` frames before the first or after the last spike are silence (0);
    with no spike at all, everything is silence.
    """
    spikes = torch.nonzero(ids_U != blank).flatten()
    if len(spikes) == 0:
        return torch.zeros_like(ids_U)
    pos = torch.arange(len(ids_U))
    nxt = torch.searchsorted(spikes, pos).clamp(max=len(spikes) - 1)      # first spike at or after
    prv = (nxt - 1).clamp(min=0)
    take_prev = (pos - spikes[prv]).abs() <= (spikes[nxt] - pos).abs()
    out = ids_U[spikes[torch.where(take_prev, prv, nxt)]].clone()
    out[(pos < spikes[0] - edge) | (pos > spikes[-1] + edge)] = 0
    return out


def _build_encoder(cfg: UnitConfig, n_out: int) -> PhoneticEncoder:
    return PhoneticEncoder(cfg.feature.dim, n_out, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.ff_mult,
                           cfg.dropout, cfg.stride, cfg.attn_window)


def _nearest(x_ND: torch.Tensor, centroids_KD: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid (squared Euclidean) for every row, (N,) long."""
    d = (x_ND * x_ND).sum(1, keepdim=True) - 2 * x_ND @ centroids_KD.T + (centroids_KD * centroids_KD).sum(1)[None]
    return d.argmin(1)


# --------------------------------------------------------------------------------------------
# k-means (the teaching contrast)
# --------------------------------------------------------------------------------------------

def kmeans(x_ND: torch.Tensor, k: int, iters: int = 50, seed: int = 0) -> torch.Tensor:
    """Lloyd's k-means with k-means++ initialisation (Arthur & Vassilvitskii 2007): (k, D) centroids.

    Seeded: the same data, k and seed give the same centroids. An empty cluster is re-seeded with
    the point farthest from its centroid. Stops early when no assignment changes.
    """
    g = torch.Generator().manual_seed(seed)
    N = x_ND.shape[0]
    if k > N:
        raise ValueError(f"k-means with k={k} needs at least {k} points, got {N}.")
    x = x_ND.float()
    # k-means++: each next centre drawn with probability proportional to squared distance.
    centres = [x[torch.randint(N, (1,), generator=g)].squeeze(0)]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        i = torch.multinomial(d2 / d2.sum(), 1, generator=g) if d2.sum() > 0 else torch.randint(N, (1,), generator=g)
        centres.append(x[i].squeeze(0))
        d2 = torch.minimum(d2, ((x - centres[-1]) ** 2).sum(1))
    c = torch.stack(centres)
    assign = None
    for _ in range(iters):
        new = _nearest(x, c)
        if assign is not None and torch.equal(new, assign):
            break
        assign = new
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).float()
        c = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], c)
        for j in torch.nonzero(counts == 0).flatten().tolist():
            far = ((x - c[assign]) ** 2).sum(1).argmax()
            c[j] = x[far]
            assign[far] = j
    return c


def _train_kmeans(utts: list[_Utterance], cfg: UnitConfig, progress: bool) -> UnitTokenizer:
    t0 = time.perf_counter()
    frames = torch.cat([stack_frames(normalize_utterance(u.feats), cfg.stride) for u in utts])
    g = torch.Generator().manual_seed(cfg.seed)
    if frames.shape[0] > cfg.kmeans_frames:
        frames = frames[torch.randperm(frames.shape[0], generator=g)[:cfg.kmeans_frames]]
    centroids = kmeans(frames, cfg.codebook_size, cfg.kmeans_iters, cfg.seed)
    info = {"train_seconds": time.perf_counter() - t0, "frames": int(frames.shape[0]), "utterances": len(utts),
            "audio_hours": sum(u.duration for u in utts) / 3600}
    return UnitTokenizer(cfg, [], {"codebook": centroids}, info)


# --------------------------------------------------------------------------------------------
# Training the phonetic encoder
# --------------------------------------------------------------------------------------------

def _targets(u: _Utterance, n: int, factor: float, cfg: UnitConfig, index: dict[str, int]) -> torch.Tensor:
    """Class ids of n unit frames of an utterance whose time axis was stretched by `factor`."""
    names = frame_phones(u.phonemes, u.starts * factor, u.ends * factor, n, cfg.rate_hz, cfg.classes,
                         positions=cfg.classes == "phone_pos")
    return torch.tensor([_class_id(x, index) for x in names])


def _sequence(u: _Utterance, index: dict[str, int]) -> list[int]:
    """CTC target: the utterance's phone classes in order (phones unknown to the inventory dropped)."""
    ids = [_class_id(p, index) for p in u.phonemes]
    return [i for i in ids if i != 0]


def _schedule(step: int, progress: float, cfg: UnitConfig) -> float:
    """Learning rate: linear warm-up, then cosine to 0 over progress (steps or time, the larger)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _train_phonetic(utts: list[_Utterance], cfg: UnitConfig, progress: bool, log, log_every: int) -> UnitTokenizer:
    from tqdm.auto import tqdm

    timed = all(len(u.starts) == len(u.phonemes) and len(u.phonemes) for u in utts)
    if cfg.objective == "frame" and not timed:
        raise ValueError("objective='frame' needs phoneme timings (phoneme_start/_end) in every row; "
                         "real corpora have none: use UnitConfig(objective='ctc').")
    labels = _class_inventory(utts, replace(cfg, classes="phone") if cfg.objective == "ctc" else cfg)
    index = {x: i for i, x in enumerate(labels)}
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    n_out = len(labels) + (1 if cfg.objective == "ctc" else 0)
    model = _build_encoder(cfg, n_out)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    rest = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0}],
                            lr=cfg.lr, betas=(0.9, 0.98))
    model.train()
    t0 = time.perf_counter()
    step, epoch, batches = 0, 0, []
    bar = tqdm(total=cfg.max_steps, desc=f"units ({cfg.objective})", unit="step", disable=not progress)
    loss_avg = acc_avg = None
    while True:
        elapsed = time.perf_counter() - t0
        frac = max(step / cfg.max_steps, elapsed / cfg.time_budget_s if cfg.time_budget_s else 0.0)
        if frac >= 1.0:
            break
        if not batches:
            batches = duration_batches([u.duration for u in utts], cfg.batch_seconds, rng)
            epoch += 1
        batch = [utts[i] for i in batches.pop()]
        xs, ys = [], []
        for u in batch:
            x, factor = _augment(u, cfg, rng)
            n = int(model.out_lengths(torch.tensor(x.shape[0])))
            xs.append(x)
            ys.append(_targets(u, n, factor, cfg, index) if cfg.objective == "frame" else _sequence(u, index))
        lengths = torch.tensor([x.shape[0] for x in xs])
        logits = model(nn.utils.rnn.pad_sequence(xs, batch_first=True), lengths)      # (B, U, C)
        out_len = model.out_lengths(lengths)
        if cfg.objective == "frame":
            target = nn.utils.rnn.pad_sequence(ys, batch_first=True, padding_value=-100)
            loss = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=-100,
                                   label_smoothing=cfg.label_smoothing)
            with torch.no_grad():
                valid = target != -100
                acc = ((logits.argmax(-1) == target) & valid).sum().item() / max(valid.sum().item(), 1)
        else:
            logp = logits.log_softmax(-1).transpose(0, 1)                              # (U, B, C)
            flat = torch.tensor([c for y in ys for c in y], dtype=torch.long)
            loss = F.ctc_loss(logp, flat, out_len, torch.tensor([len(y) for y in ys]), blank=n_out - 1,
                              zero_infinity=True)
            acc = float("nan")
        for g in opt.param_groups:
            g["lr"] = _schedule(step, frac, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        loss_avg = loss.item() if loss_avg is None else 0.95 * loss_avg + 0.05 * loss.item()
        acc_avg = acc if acc_avg is None else 0.95 * acc_avg + 0.05 * acc
        bar.update(1)
        bar.set_postfix(loss=f"{loss_avg:.3f}", acc=f"{acc_avg:.3f}", epoch=epoch)
        if log is not None and (step % log_every == 0 or step == 1):
            log({"step": step, "seconds": round(time.perf_counter() - t0, 1), "loss": round(loss_avg, 4),
                 "batch_loss": round(loss.item(), 4), "frame_acc": round(acc_avg, 4), "epoch": epoch})
    bar.close()
    model.eval()
    tensors = {f"encoder.{k}": v for k, v in model.state_dict().items()}
    info = {"steps": step, "epochs": epoch, "train_seconds": round(time.perf_counter() - t0, 1),
            "final_loss": loss_avg, "final_frame_acc": acc_avg, "utterances": len(utts),
            "audio_hours": sum(u.duration for u in utts) / 3600,
            "voices": len({u.voice for u in utts}), "threads": torch.get_num_threads(),
            "parameters": sum(p.numel() for p in model.parameters())}
    return UnitTokenizer(cfg, labels, tensors, info)


def train_units(corpus_or_rows: Any, cfg: UnitConfig | None = None, *, cache_dir: str | os.PathLike | None = None,
                progress: bool = True, log=None, log_every: int = 50) -> UnitTokenizer:
    """Train a unit tokenizer on a speech corpus; cached under `cache_dir` by a hash of its inputs.

    `corpus_or_rows`: a `datasets.Dataset` with the corpus columns (`minimost.speech.corpus`) or
    an iterable of such dict rows (`audio` in any form `audio_from_hf` takes). Frame training
    needs `phonemes`, `phoneme_start`, `phoneme_end`; CTC needs only `phonemes`. The cache key
    is a SHA-256 of the corpus content (`corpus_fingerprint`) and `cfg.identity()`: the same
    inputs load the saved artefact at once (a time budget makes the first training's weights
    the cached ones). `log`, if given, is called with a dict of training stats (step, seconds,
    smoothed loss and frame accuracy) every `log_every` steps.
    """
    cfg = cfg or UnitConfig()
    if not isinstance(corpus_or_rows, Sequence) and not hasattr(corpus_or_rows, "column_names"):
        corpus_or_rows = list(corpus_or_rows)       # a generator would be used up by the fingerprint
    path = None
    if cache_dir is not None:
        key = hashlib.sha256(json.dumps({"units_version": UNITS_VERSION, "config": cfg.identity(),
                                         "corpus": corpus_fingerprint(corpus_or_rows)},
                                        sort_keys=True).encode()).hexdigest()
        path = Path(cache_dir) / f"{cfg.kind}-{key[:16]}"
        if (path / ARTEFACT_JSON).exists():
            return UnitTokenizer.load(path)
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        utts = _load(corpus_or_rows, cfg.feature, progress)
        tok = _train_kmeans(utts, cfg, progress) if cfg.kind != "phonetic" else _train_phonetic(utts, cfg, progress, log, log_every)
    finally:
        torch.set_num_threads(threads)
    if path is not None:
        tok.save(path)
    return tok


# --------------------------------------------------------------------------------------------
# Evaluation (HuBERT paper metrics + what an LM and a vocoder care about)
# --------------------------------------------------------------------------------------------

def cluster_metrics(labels: Sequence[Any], units: Sequence[Any]) -> dict:
    """Phone purity, cluster purity and PNMI of frame-aligned (phone label, unit) pairs.

    From the joint distribution p(y, z) of phone y and unit z over frames (HuBERT, Hsu et al.
    2021, the analysis of cluster quality):
      phone purity   = Σ_z p(z) max_y p(y|z)   (how well one unit predicts its phone)
      cluster purity = Σ_y p(y) max_z p(z|y)   (how well one phone predicts its unit)
      PNMI           = I(y; z) / H(y)           (share of the phone's uncertainty a unit removes)
    """
    if len(labels) != len(units):
        raise ValueError(f"{len(labels)} labels but {len(units)} units; expected one per frame.")
    if not labels:
        raise ValueError("no frames to score.")
    ys, yi = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)
    zs, zi = np.unique(np.asarray(units), return_inverse=True)
    joint = np.zeros((len(ys), len(zs)))
    np.add.at(joint, (yi, zi), 1.0)
    p = joint / joint.sum()
    py, pz = p.sum(1), p.sum(0)
    nz = p > 0
    mi = float((p[nz] * np.log(p[nz] / (py[:, None] * pz[None, :])[nz])).sum())
    hy = float(-(py[py > 0] * np.log(py[py > 0])).sum())
    return {"phone_purity": float(p.max(0).sum()), "cluster_purity": float(p.max(1).sum()),
            "pnmi": mi / hy if hy > 0 else 1.0, "frames": int(joint.sum())}


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def cross_voice_edit_rate(strings: dict[str, dict[str, Sequence]]) -> dict:
    """How much the units of one sentence change with the voice reading it.

    `strings[text][voice]` is a deduplicated unit string. For every sentence read by two or more
    voices and every pair of those voices, the edit distance is divided by the length of the
    reference string, taken both ways round ((d / len a + d / len b) / 2), and averaged over all
    pairs. Also returned: the mean per voice pair (min and max over voice pairs).
    """
    rates, per_pair = [], defaultdict(list)
    for by_voice in strings.values():
        for (va, a), (vb, b) in itertools.combinations(sorted(by_voice.items()), 2):
            d = edit_distance(a, b)
            r = 0.5 * (d / max(len(a), 1) + d / max(len(b), 1))
            rates.append(r)
            per_pair[(va, vb)].append(r)
    if not rates:
        raise ValueError("no sentence is read by two voices; cross-voice edit rate needs pairs.")
    pair_means = [float(np.mean(v)) for v in per_pair.values()]
    return {"edit_rate": float(np.mean(rates)), "pairs": len(rates), "pair_min": min(pair_means),
            "pair_max": max(pair_means)}


def score_units(frame_units: Sequence[Sequence[int]], frame_labels: Sequence[Sequence[str]],
                durations: Sequence[float], texts: Sequence[str], voices: Sequence[str], rate_hz: float) -> dict:
    """All unit metrics from frame-level units and phone labels per utterance (see evaluate_units)."""
    flat_units = [u for us in frame_units for u in us]
    flat_labels = [y for ys in frame_labels for y in ys]
    out = cluster_metrics(flat_labels, flat_units)
    total = float(sum(durations))
    dd = [dedup(us)[0] for us in frame_units]
    out["units_per_s"] = len(flat_units) / total
    out["units_per_s_dedup"] = sum(len(d) for d in dd) / total
    out["utterances"] = len(frame_units)
    out["audio_seconds"] = total
    strings: dict[str, dict[str, list[int]]] = defaultdict(dict)
    for d, text, voice in zip(dd, texts, voices):
        strings[text][voice] = d
    if any(len(v) > 1 for v in strings.values()):
        cv = cross_voice_edit_rate(strings)
        out.update({"cross_voice_edit_rate": cv["edit_rate"], "cross_voice_pairs": cv["pairs"],
                    "cross_voice_pair_min": cv["pair_min"], "cross_voice_pair_max": cv["pair_max"]})
    out["rate_hz"] = rate_hz
    return out


def evaluate_units(tokenizer: UnitTokenizer | None, corpus: Any, *, rate_hz: float | None = None,
                   progress: bool = False) -> dict:
    """Score a unit tokenizer on a corpus with phoneme timings (use held-out voices).

    Frame level, at the unit rate: every unit frame's reference is the (stress-stripped) phone
    under its centre, or "sil" (`frame_phones`). Returns phone_purity, cluster_purity, pnmi,
    units_per_s (before dedup), units_per_s_dedup, cross_voice_edit_rate (with its number of
    pairs and the per-voice-pair min/max; present when some sentence is read by several voices),
    frames, utterances, audio_seconds. `tokenizer=None` scores the oracle: espeak's own labels
    as units (at `rate_hz`, 25 by default), the floor every unit type is compared with.
    """
    from tqdm.auto import tqdm

    rate = tokenizer.rate_hz if tokenizer is not None else (rate_hz or 25)
    units, labels, durations, texts, voices = [], [], [], [], []
    oracle_ids: dict[str, int] = {}
    total = len(corpus) if hasattr(corpus, "__len__") else None
    for row in tqdm(_rows(corpus), total=total, desc="evaluating", unit="utt", disable=not progress):
        if len(row.get("phoneme_start") or []) != len(row.get("phonemes") or []):
            raise ValueError(f"row {row.get('id')!r} has no phoneme timings; evaluate on a synthetic corpus.")
        wav = _wav(row)
        if tokenizer is not None:
            us = tokenizer.encode_frames(wav).tolist()
        else:
            n = -(-FeatureConfig().num_frames(len(wav)) // int(round(100 / rate)))
            names = frame_phones(row["phonemes"], row["phoneme_start"], row["phoneme_end"], n, rate)
            us = [oracle_ids.setdefault(x, len(oracle_ids)) for x in names]
        labels.append(frame_phones(row["phonemes"], row["phoneme_start"], row["phoneme_end"], len(us), rate))
        units.append(us)
        durations.append(len(wav) / SAMPLE_RATE)
        texts.append(row.get("text", ""))
        voices.append(row.get("voice", ""))
    return score_units(units, labels, durations, texts, voices, rate)


__all__ = [
    "KINDS", "SILENCE", "UNITS_VERSION", "PhoneticEncoder", "UnitArtefactMismatch", "UnitConfig", "UnitSequence",
    "UnitTokenizer", "cluster_metrics", "corpus_fingerprint", "cross_voice_edit_rate", "dedup", "edit_distance",
    "evaluate_units", "expand", "frame_phones", "kmeans", "score_units", "stretch_time", "train_units",
    "warp_frequency",
]
