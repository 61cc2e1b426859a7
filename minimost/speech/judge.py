"""The ASR judge: a small character-level CTC model that scores minimost's speech output.

MoST scores its TTS output (and spoken answers) by transcribing them with HuBERT-Large fine-tuned
with CTC on LibriSpeech and computing WER (most-reference.md §8.1). That checkpoint cannot be
downloaded here, so minimost trains its own judge on espeak-ng speech, in minutes on a CPU:

    wav (samples,) ─► log-mel (frames, 80) at 100 Hz ─► conv subsampling ×3 (33 Hz)
        ─► Conformer blocks ─► linear ─► log-probs (frames/3, 29) ─► greedy CTC ─► text

- **Characters**, not words or phonemes: the 26 letters, the apostrophe and the space, plus
  the CTC blank (`ALPHABET`). Text goes through `minimost.wer.normalize_text` first, the same
  normaliser WER uses, so the judge writes exactly what WER compares.
- **Greedy CTC decoding**: the best symbol per frame, repeats collapsed, blanks dropped. No
  lexicon and no language model by default, on purpose: a judge that snaps its output to known
  words hides some of the errors it is meant to count. `transcribe(..., lexicon=...)` is the other
  view, reported beside greedy, never instead of it: a beam search that writes only known words
  (`ctc_lexicon_decode`), closer to MoST's judges, which have a language model of their own. On
  the tiny kit's judge it takes held-out-voice WER from 15.1 % to 2.6 % (docs/judge.md).
- **Why ×3 subsampling**: espeak's fast voices say up to 24 characters a second (measured on
  the training voices at 205 words per minute) and CTC needs a blank between doubled letters,
  so 25 Hz (×4) is too tight; 33 Hz leaves room even after a 10 % speed-up.
- **Voice robustness** comes from augmentation of the log-mel frames during training: a
  random tempo change (time axis stretched by ±10 %), a random warp of the mel axis (±8 %, a
  vocal-tract-length change: formants and pitch move together), and SpecAugment masks.
- **An auxiliary phone loss** while training: where the corpus has espeak's phoneme timings, a
  frame classifier after an early block learns phonemes alongside the CTC loss, which speeds
  training up (the classifier is not part of the saved judge).
- **Sizes were chosen by measurement** under a fixed wall-clock budget on 2 shared CPU cores
  (docs/judge.md): a 0.64 M-parameter model that takes many steps beat larger ones.

**Keep the judge's data apart from the LM's evaluation** (the rule, enforced where it can be):

1. the judge trains on its *own sentences*, none of which may be an LM evaluation sentence:
   pass those as `exclude_texts` to `train_judge`, which refuses any overlap (after
   normalisation). `judge_rows` builds the usual training rows from a sentence list;
2. it trains on `TRAIN_VOICES` only; `TEST_VOICES` are refused (`allow_test_voices=False`)
   because they measure how well the judge generalises to voices it never heard;
3. its quality is reported on held-out sentences spoken by `TEST_VOICES` (`bench/bench_judge.py`).

`template_sentences` makes sentences from the mini-world's word lists
(`minimost.data.lexicon`) so the judge knows every word the world can say; a pipeline with the
world generator passes the world's own judge split instead.

Artefact: `save(dir)` writes `judge.safetensors` + `judge.json` (config, alphabet, version,
id, training facts) atomically; `load(dir)` checks the version and alphabet and refuses a
mismatch. `train_judge` caches the artefact under `cache_dir/judge-<id>/`, where the id is a
hash of the training data's fingerprint, the config and `JUDGE_VERSION`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from minimost.speech.artefact import hash_tensors, write_artefact
from minimost.speech.audio import SAMPLE_RATE, audio_from_hf, resample, to_float32
from minimost.speech.features import FeatureConfig, log_mel, normalize_utterance
from minimost.wer import normalize_text

JUDGE_VERSION = 1            # bump when the model, features or alphabet change meaning
WEIGHTS, META = "judge.safetensors", "judge.json"

# --------------------------------------------------------------------------------------------
# Characters
# --------------------------------------------------------------------------------------------
BLANK = 0
ALPHABET = "_ abcdefghijklmnopqrstuvwxyz'"          # id 0 is the CTC blank, shown as "_"
_CHAR_ID = {c: i for i, c in enumerate(ALPHABET) if i != BLANK}


class JudgeError(ValueError):
    """Input the judge cannot use, or an artefact that does not match this code."""


def text_to_ids(text: str) -> list[int]:
    """Normalise `text` (as WER does) and spell it as character ids (1..28; 0 is the blank).

    Raises JudgeError for characters the judge cannot write (digits, letters outside a-z):
    the mini-world writes numbers as words, and a judge that cannot output "42" must not be
    trained to.
    """
    norm = normalize_text(text)
    bad = sorted({c for c in norm if c not in _CHAR_ID})
    if bad:
        raise JudgeError(f"text {text!r} normalises to {norm!r}, which has characters the judge cannot "
                         f"write: {bad}. It spells a-z, apostrophe and space; write numbers as words.")
    return [_CHAR_ID[c] for c in norm]


def ids_to_text(ids: Iterable[int]) -> str:
    """Character ids back to text (blanks dropped; no collapsing: see `ctc_greedy_decode`)."""
    return "".join(ALPHABET[i] for i in ids if i != BLANK)


def ctc_greedy_decode(logits: torch.Tensor, lengths: torch.Tensor | None = None) -> list[list[int]]:
    """Best path of CTC: argmax per frame, collapse repeats, drop blanks.

    logits: (batch, frames, vocab) scores or log-probs; lengths: (batch,) valid frames (default:
    all). Returns one list of character ids per utterance. "aa_a" → "aa" (the blank separates
    the two a's), "aaa" → "a".
    """
    best = logits.argmax(dim=-1)                                   # (batch, frames)
    out = []
    for b in range(best.shape[0]):
        seq = best[b, : int(lengths[b])] if lengths is not None else best[b]
        keep = torch.ones_like(seq, dtype=torch.bool)
        keep[1:] = seq[1:] != seq[:-1]                             # first of each run
        out.append([int(i) for i in seq[keep & (seq != BLANK)]])
    return out


# --------------------------------------------------------------------------------------------
# Lexicon-constrained decoding: an option beside greedy, never instead of it
# --------------------------------------------------------------------------------------------
_WORD_END = -1      # trie key that marks "a word may end here"
_SPACE = _CHAR_ID[" "]


def _log_add(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


def _add_path(beams: dict, prefix: tuple[int, ...], ends_in_blank: bool, score: float) -> None:
    """Add one path's probability to a prefix's blank-ending or character-ending score."""
    slot = beams.setdefault(prefix, [-math.inf, -math.inf])
    k = 0 if ends_in_blank else 1
    slot[k] = _log_add(slot[k], score)


class Lexicon:
    """The words a lexicon-constrained decode may write, as a trie of character ids.

    Built from any texts (sentences or single words): each is normalised as WER normalises and
    split into words. `len(lexicon)` words; `"fox" in lexicon`.
    """

    def __init__(self, texts: Iterable[str]):
        self._known = {w for text in texts for w in normalize_text(text).split()}
        self.words = sorted(self._known)
        if not self.words:
            raise JudgeError("an empty lexicon: pass the sentences (or words) the speech may contain, "
                             "e.g. the text corpus of the build.")
        self.trie: dict = {}
        for word in self.words:
            node = self.trie
            for c in text_to_ids(word):          # raises for a word the judge cannot spell
                node = node.setdefault(c, {})
            node[_WORD_END] = True

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self._known

    def oov(self, texts: Iterable[str]) -> int:
        """Words of `texts` (normalised) that this lexicon cannot write: they always count as errors."""
        return sum(w not in self._known for t in texts for w in normalize_text(t).split())


def ctc_lexicon_decode(logp: torch.Tensor, lexicon: Lexicon, beam: int = 32,
                       prune: float = -8.0) -> list[int] | None:
    """CTC prefix beam search whose prefixes may only spell words of `lexicon`, separated by spaces
    (Hannun et al. 2014, "First-pass large vocabulary continuous speech recognition using
    bi-directional recurrent DNNs", §3, with the lexicon as the only constraint: no language model
    and no word bonus).

    logp: (frames, vocab) log-probs of one clip. Each prefix keeps two scores, ending in a blank or
    in its last character, so that "aa" needs a blank between the two a's exactly as in greedy
    decoding. A space is allowed only after a whole word; a space where no word is open (at the
    edges, or a second one) is read as a blank. Characters below `prune` (log-prob) in a frame are
    not tried. Returns the character ids of the best prefix that ends at a word boundary, or None
    when no surviving prefix does (the caller falls back to greedy).
    """
    rows = logp.tolist()
    root = lexicon.trie
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, -math.inf)}   # prefix -> (blank, char)
    nodes: dict[tuple[int, ...], dict] = {(): root}
    for row in rows:
        chars = [c for c in range(1, len(row)) if row[c] > prune]   # the characters worth trying here
        nxt: dict[tuple[int, ...], list[float]] = {}
        add = functools.partial(_add_path, nxt)
        for prefix, (p_blank, p_char) in beams.items():
            total, node = _log_add(p_blank, p_char), nodes[prefix]
            last = prefix[-1] if prefix else None
            add(prefix, True, total + row[BLANK])
            for c in chars:
                if c == _SPACE and node is root:          # no word open: a space is just a pause
                    add(prefix, True, total + row[c])
                    continue
                if c == _SPACE:
                    child = root if _WORD_END in node else None   # a space closes a whole word only
                else:
                    child = node.get(c)
                if c == last:
                    add(prefix, False, p_char + row[c])   # the same character again: collapsed
                    if child is not None:                 # a doubled letter, after a blank
                        nodes[prefix + (c,)] = child
                        add(prefix + (c,), False, p_blank + row[c])
                elif child is not None:
                    nodes[prefix + (c,)] = child
                    add(prefix + (c,), False, total + row[c])
        ranked = sorted(nxt.items(), key=lambda kv: _log_add(*kv[1]), reverse=True)[:beam]
        beams = {prefix: (b, ch) for prefix, (b, ch) in ranked}
    finished = [(_log_add(*scores), prefix) for prefix, scores in beams.items()
                if nodes[prefix] is root or _WORD_END in nodes[prefix]]
    return list(max(finished)[1]) if finished else None


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

@dataclass
class JudgeConfig:
    """Model, augmentation and training budget. All of it goes into the cache key."""

    # model
    n_mels: int = 80
    subsample: int = 3              # 100 Hz frames -> 33 Hz (see the module docstring)
    d_model: int = 96
    n_layers: int = 4
    n_heads: int = 4
    ffn_mult: int = 2
    conv_kernel: int = 15           # depthwise conv of each Conformer block, in subsampled frames
    dropout: float = 0.0            # augmentation regularises enough for minutes of training
    # augmentation (training only)
    tempo: float = 0.10             # time axis stretched by a factor in [1 - tempo, 1 + tempo]
    mel_warp: float = 0.08          # mel axis warped by a factor in [1 - mel_warp, 1 + mel_warp]
    freq_masks: int = 2             # SpecAugment: masks of up to `freq_mask_width` mel bins
    freq_mask_width: int = 10
    time_mask_every: float = 3.0    # one time mask per this many seconds, up to `time_mask_width` frames
    time_mask_width: int = 5
    # auxiliary frame loss (training only): where the data has espeak's phoneme timings, a
    # linear head after block `phone_layer` classifies each frame's phoneme (stress removed).
    phone_loss_weight: float = 1.0  # 0 turns it off; ignored when the data has no timings
    phone_layer: int = 1            # 0-based block index; the CTC head reads the last block
    # training
    max_steps: int = 100_000
    max_minutes: float = 10.0       # wall-clock budget: training stops at whichever comes first
    batch_seconds: float = 24.0     # audio per batch, padding included (length-bucketed batches)
    lr: float = 3e-3
    warmup_steps: int = 60
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.d_model % self.n_heads:
            raise JudgeError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}.")
        if self.subsample < 1 or self.n_layers < 1:
            raise JudgeError(f"subsample={self.subsample}, n_layers={self.n_layers}: both must be at least 1.")
        if self.phone_loss_weight > 0 and not 0 <= self.phone_layer < self.n_layers:
            raise JudgeError(f"phone_layer={self.phone_layer} is not a block of the {self.n_layers}-block "
                             f"model; pick 0..{self.n_layers - 1} or set phone_loss_weight=0.")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> JudgeConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise JudgeError(f"unknown JudgeConfig fields {unknown}; this code knows {sorted(known)}.")
        return cls(**d)

    @property
    def features(self) -> FeatureConfig:
        """The frames the judge reads: log-mel, 25 ms / 10 ms, normalised per utterance after
        augmentation (so `FeatureConfig.normalize` is False here)."""
        return FeatureConfig(kind="log_mel", n_mels=self.n_mels, normalize=False)


# --------------------------------------------------------------------------------------------
# Model: conv subsampling + Conformer blocks + linear CTC head
# --------------------------------------------------------------------------------------------

class ConformerBlock(nn.Module):
    """Half FFN → self-attention → convolution → half FFN (Gulati et al. 2020), with padding masks.

    Written out instead of `torchaudio.models.Conformer` for one reason: torchaudio's
    convolution module sees padded frames and uses BatchNorm, so an utterance's transcript
    would depend on what else is in its batch. Here padded frames are zeroed before the
    depthwise convolution and LayerNorm replaces BatchNorm: batching never changes the output.
    There is no positional encoding: the convolution gives every frame its neighbourhood.
    """

    def __init__(self, d: int, heads: int, ffn_mult: int, kernel: int, dropout: float):
        super().__init__()
        def ffn():
            return nn.Sequential(nn.LayerNorm(d), nn.Linear(d, ffn_mult * d), nn.SiLU(), nn.Dropout(dropout),
                                 nn.Linear(ffn_mult * d, d), nn.Dropout(dropout))
        self.ffn1, self.ffn2 = ffn(), ffn()
        self.heads = heads
        self.attn_norm = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.attn_out = nn.Linear(d, d)
        self.conv_norm = nn.LayerNorm(d)
        self.pointwise_in = nn.Linear(d, 2 * d)          # followed by GLU
        self.depthwise = nn.Conv1d(d, d, kernel, padding=kernel // 2, groups=d)
        self.depth_norm = nn.LayerNorm(d)
        self.pointwise_out = nn.Linear(d, d)
        self.final_norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """x: (batch, frames, d); pad: (batch, frames) True on padding. Returns (batch, frames, d)."""
        B, T, D = x.shape
        x = x + 0.5 * self.ffn1(x)
        # self-attention; padded keys are masked out
        q, k, v = self.qkv(self.attn_norm(x)).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        mask = ~pad[:, None, None, :]                                     # (B, 1, 1, T): True = attend
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.drop.p if self.training else 0.0)
        x = x + self.drop(self.attn_out(a.transpose(1, 2).reshape(B, T, D)))
        # convolution module; zero the padding so it cannot leak into the last real frames
        h = F.glu(self.pointwise_in(self.conv_norm(x)), dim=-1).masked_fill(pad[..., None], 0.0)
        h = self.depthwise(h.transpose(1, 2)).transpose(1, 2)
        h = self.pointwise_out(F.silu(self.depth_norm(h)))
        x = x + self.drop(h)
        x = x + 0.5 * self.ffn2(x)
        return self.final_norm(x)


class JudgeNet(nn.Module):
    """log-mel (batch, frames, n_mels) → CTC log-probs (batch, frames / subsample, len(ALPHABET))."""

    def __init__(self, cfg: JudgeConfig):
        super().__init__()
        d, s = cfg.d_model, cfg.subsample
        self.subsample = s
        # A conv over 5 frames at 100 Hz, then one that merges each `s` frames into one.
        self.conv_in = nn.Conv1d(cfg.n_mels, d, kernel_size=5, padding=2)
        self.conv_sub = nn.Conv1d(d, d, kernel_size=s, stride=s)
        self.blocks = nn.ModuleList(ConformerBlock(d, cfg.n_heads, cfg.ffn_mult, cfg.conv_kernel, cfg.dropout)
                                    for _ in range(cfg.n_layers))
        self.head = nn.Linear(d, len(ALPHABET))

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Subsampled frames for `lengths` input frames: ceil(frames / subsample)."""
        return (lengths + self.subsample - 1) // self.subsample

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor,
                hidden_layer: int | None = None) -> tuple[torch.Tensor, ...]:
        """feats: (batch, frames, n_mels), zero beyond `lengths`. Returns (log-probs, output lengths),
        plus the output of block `hidden_layer` (batch, frames / subsample, d) when asked for."""
        B, T, _ = feats.shape
        s = self.subsample
        x = F.pad(feats, (0, 0, 0, (-T) % s))                             # frames to a multiple of s
        x = F.gelu(self.conv_in(x.transpose(1, 2)))                       # (B, d, T')
        frame_pad = torch.arange(x.shape[-1])[None, :] >= lengths[:, None]
        x = x.masked_fill(frame_pad[:, None, :], 0.0)                     # padding stays silent
        x = F.gelu(self.conv_sub(x)).transpose(1, 2)                      # (B, T'/s, d)
        out_len = self.output_lengths(lengths)
        pad = torch.arange(x.shape[1])[None, :] >= out_len[:, None]
        hidden = None
        for i, block in enumerate(self.blocks):
            x = block(x, pad)
            if i == hidden_layer:
                hidden = x
        logp = self.head(x).log_softmax(dim=-1)
        return (logp, out_len) if hidden_layer is None else (logp, out_len, hidden)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------
# Audio in, frames out (inference and training share this)
# --------------------------------------------------------------------------------------------

def _check_wav(wav: Any, sample_rate: int, expected_rate: int, index: int) -> torch.Tensor:
    """One clip as a float32 (samples,) tensor, or a JudgeError/AudioError saying what is wrong."""
    what = f"audio #{index}"
    if sample_rate != expected_rate:
        raise JudgeError(f"{what}: sample_rate={sample_rate}, but the judge hears {expected_rate} Hz. Fix: "
                         f"resample first, e.g. minimost.speech.audio.resample(wav, {sample_rate}, "
                         f"{expected_rate}).")
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().cpu().numpy()
    a = to_float32(wav, what)                    # clear errors for NaN/Inf, unscaled PCM, bad dtypes
    if a.ndim != 1:
        raise JudgeError(f"{what}: array of shape {a.shape}; expected mono audio (samples,). Fix: average "
                         f"the channels or load with minimost.speech.audio.load_audio.")
    if a.size < FeatureConfig().n_fft:
        raise JudgeError(f"{what}: {a.size} samples ({a.size / expected_rate * 1000:.0f} ms); expected at least "
                         f"one 25 ms window (400 samples). Empty or near-empty audio cannot be transcribed.")
    return torch.from_numpy(a)


def _raw_log_mel(wav: torch.Tensor, cfg: JudgeConfig) -> torch.Tensor:
    """(samples,) → (frames, n_mels) log-mel, not yet normalised."""
    return log_mel(wav, cfg.features, normalize=False)


def _pad_batch(feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise each (frames_i, n_mels) utterance and zero-pad: → (batch, max frames, n_mels), lengths."""
    lengths = torch.tensor([f.shape[0] for f in feats])
    out = torch.zeros(len(feats), int(lengths.max()), feats[0].shape[1])
    for i, f in enumerate(feats):
        out[i, : f.shape[0]] = normalize_utterance(f.float())
    return out, lengths


# --------------------------------------------------------------------------------------------
# The judge
# --------------------------------------------------------------------------------------------

@dataclass
class AsrJudge:
    """A trained judge: `transcribe(wavs)` gives normalised text; `save`/`load` keep it on disk."""

    model: JudgeNet
    cfg: JudgeConfig
    info: dict = field(default_factory=dict)      # id, data fingerprint, steps, seconds, loss, ...

    @property
    def id(self) -> str:
        """The cache key: a hash of what the judge was trained from (data, config, code version)."""
        return self.info.get("id", "untrained")

    @property
    def weights_hash(self) -> str:
        """A hash of the trained weights themselves (16 hex digits), for reports beside `id`.

        `id` names the inputs, and the same inputs need not give the same weights: torch's CPU kernels
        round differently per instruction set, so the tiny kit's judge 1fc9ad325bb3490e trained to other
        weights on an AVX2 machine than on an AVX-512 one (13.9 % vs 13.3 % WER on the same clips,
        docs/judge.md). Two scores are comparable only under the same `weights_hash`.
        """
        h = hashlib.sha256()
        hash_tensors(h, self.model.state_dict())
        return h.hexdigest()[:16]

    def transcribe(self, wavs: Sequence[np.ndarray | torch.Tensor], sample_rate: int = SAMPLE_RATE,
                   batch_seconds: float = 60.0, lexicon: Lexicon | Iterable[str] | None = None,
                   beam: int = 32) -> list[str]:
        """Transcripts of mono clips (each (samples,) float in [-1, 1] at 16 kHz), in input order.

        Clips are sorted by length and batched up to `batch_seconds` of padded audio; eval mode,
        no gradients. The output is normalised text (lower-case a-z, apostrophes, single spaces).
        Greedy CTC by default. With `lexicon` (a `Lexicon`, or texts to build one from), a beam
        search of width `beam` that writes only the lexicon's words (`ctc_lexicon_decode`; a clip
        whose every beam ends inside a word falls back to greedy).
        """
        if isinstance(wavs, (np.ndarray, torch.Tensor)) and np.ndim(wavs) == 1:
            raise JudgeError("transcribe takes a list of clips; got one array. Pass [wav].")
        if lexicon is not None and not isinstance(lexicon, Lexicon):
            if isinstance(lexicon, str):
                raise JudgeError("lexicon is one string; pass a Lexicon or a list of texts.")
            lexicon = Lexicon(lexicon)
        if beam < 1:
            raise JudgeError(f"beam={beam}; expected at least 1 (32 is the measured default).")
        clips = [_check_wav(w, sample_rate, self.cfg.features.sample_rate, i) for i, w in enumerate(wavs)]
        feats = [_raw_log_mel(c, self.cfg) for c in clips]
        order = sorted(range(len(feats)), key=lambda i: feats[i].shape[0])
        max_frames = batch_seconds * self.cfg.features.frame_rate
        out: list[str] = [""] * len(feats)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for batch in _length_batches(order, [f.shape[0] for f in feats], max_frames):
                    x, lengths = _pad_batch([feats[i] for i in batch])
                    logp, out_len = self.model(x, lengths)
                    for j, (i, ids) in enumerate(zip(batch, ctc_greedy_decode(logp, out_len))):
                        if lexicon is not None:
                            constrained = ctc_lexicon_decode(logp[j, : int(out_len[j])], lexicon, beam)
                            ids = ids if constrained is None else constrained
                        out[i] = " ".join(ids_to_text(ids).split())     # no stray spaces at the edges
        finally:
            self.model.train(was_training)
        return out

    # ---------------------------------------------------------------------------- save / load
    def save(self, directory: str | os.PathLike) -> Path:
        """Write `judge.safetensors` + `judge.json` into `directory`, atomically (temp dir + rename)."""
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        meta = {"judge_version": JUDGE_VERSION, "alphabet": ALPHABET, "config": self.cfg.to_dict(),
                "features": self.cfg.features.to_dict(), "info": self.info}
        return write_artefact(directory, WEIGHTS, state, META, json.dumps(meta, indent=1),
                              tensor_metadata={"judge_version": str(JUDGE_VERSION)})

    @classmethod
    def load(cls, directory: str | os.PathLike) -> AsrJudge:
        """A judge saved by `save`; JudgeError if it is missing or made by incompatible code."""
        from safetensors.torch import load_file

        directory = Path(directory)
        try:
            meta = json.loads((directory / META).read_text())
        except (OSError, ValueError) as e:
            raise JudgeError(f"{directory}: no readable {META} ({e}). Train one with train_judge(...) "
                             f"or point at the folder AsrJudge.save wrote.") from None
        version = meta.get("judge_version")
        if version != JUDGE_VERSION:
            raise JudgeError(f"{directory}: judge artefact version {version}, this code reads version "
                             f"{JUDGE_VERSION}. Retrain it (train_judge caches by version, so a fresh "
                             f"call does) or use the minimost release that wrote it.")
        if meta.get("alphabet") != ALPHABET:
            raise JudgeError(f"{directory}: the artefact spells with {meta.get('alphabet')!r}, this code "
                             f"with {ALPHABET!r}; retrain the judge.")
        cfg = JudgeConfig.from_dict(meta["config"])
        if meta.get("features") != cfg.features.to_dict():
            # the judge would hear different frames from those it was trained on
            raise JudgeError(f"{directory}: trained on features {meta.get('features')}, but this code "
                             f"computes {cfg.features.to_dict()}; retrain the judge.")
        model = JudgeNet(cfg)
        model.load_state_dict(load_file(str(directory / WEIGHTS)))
        model.eval()
        return cls(model, cfg, meta.get("info", {}))


# --------------------------------------------------------------------------------------------
# Training data: sentences, rows, the split rule
# --------------------------------------------------------------------------------------------

def template_sentences(n: int, seed: int = 0, exclude: Iterable[str] = ()) -> list[str]:
    """`n` distinct sentences (4-14 words) over the mini-world's words, none in `exclude`.

    Built from `minimost.data.lexicon` with a few dozen templates (statements, questions,
    answers, numbers, places, jobs), so every word list of the world is covered. Deterministic
    for a seed. Comparison with `exclude` is after `normalize_text`.
    """
    from minimost.data import lexicon as lx

    rng = random.Random(seed)
    banned = {normalize_text(t) for t in exclude}
    pick = rng.choice
    names = [nm for nm, _ in lx.NAMES]
    gender = dict(lx.NAMES)
    adjs = sorted({*lx.PERSON_ADJECTIVES, *lx.ANIMAL_ADJECTIVES, *lx.OBJECT_ADJECTIVES, *lx.FOOD_ADJECTIVES,
                   *(a for pair in lx.OPPOSITES for a in pair)})

    def pron(name, kind="subj"):
        f = gender[name] == "f"
        return {"subj": ("she" if f else "he"), "poss": ("her" if f else "his"),
                "refl": ("herself" if f else "himself")}[kind]

    def animal(plural=False):
        a = pick(lx.ANIMALS)
        return a[1] if plural else a[0]

    def obj(plural=False):
        o = pick(lx.OBJECTS)
        return o[1] if plural else o[0]

    def food(plural=True):
        f = pick(lx.FOODS)
        return (f[1] or f[0]) if plural else f[0]

    def place():
        p, prep = pick(lx.PLACES)
        return f"{prep} the {p}"

    def number():
        return lx.number_word(rng.choice([rng.randint(0, 12), rng.randint(13, 99)]))

    def tverb(form):   # form 1 = third person, 2 = past
        return pick(lx.TRANSITIVE_VERBS)[form]

    def iverb(form):
        return pick(lx.INTRANSITIVE_VERBS)[form]

    def job():
        return pick(lx.JOBS)

    third = {v[0]: v[1] for v in lx.TRANSITIVE_VERBS}

    templates = [
        lambda: f"{pick(names)} {tverb(1)} the {pick(adjs)} {obj()} {place()}",
        lambda: f"the {pick(lx.ANIMAL_ADJECTIVES)} {animal()} {iverb(2)} {pick(lx.ADVERBS)} {place()}",
        lambda: f"{pick(names)} has {number()} {obj(True)} and {number()} {animal(True)}",
        lambda: f"the home of {pick(names)} is {' '.join(pick(lx.HOMES))}",
        lambda: f"where is the home of {pick(names)}",
        lambda: f"{pick(names)} is a {(j := job())[0]}" + (f" and a {j[0]} {j[1]}" if j[1] else ""),
        lambda: f"what colour is the {obj()}? the {obj()} is {pick(lx.COLORS)}",
        lambda: f"does {(nm := pick(names))} like {food()}? yes, {pron(nm)} {tverb(1)} {food()} every day",
        lambda: f"does {(nm := pick(names))} like {food()}? no, {pron(nm)} does not",
        lambda: f"where is the {animal()}? it is {place()}",
        lambda: f"{pick(names)} and {pick(names)} {tverb(2)} the {pick(lx.OBJECT_ADJECTIVES)} {obj()} "
                f"{pick(lx.ADVERBS)}",
        lambda: f"which is bigger, the {animal()} or the {animal()}?",
        lambda: f"how many {obj(True)} does {pick(names)} have",
        lambda: f"{(nm := pick(names))} {third[pick(lx.REFLEXIVE_VERBS)]} {pron(nm, 'refl')} in the {obj()}",
        lambda: f"what is the opposite of {(p := pick(lx.OPPOSITES))[0]}? it is {p[1]}",
        lambda: f"{(nm := pick(names))} {tverb(2)} {pron(nm, 'poss')} {pick(lx.COLORS)} {obj()} yesterday",
        lambda: f"can a {animal()} {pick(('fly', 'swim', 'climb', 'jump', 'run', 'sing'))}?",
        lambda: f"the {animal(True)} {pick(('eat', 'like', 'want', 'find'))} {food()} {place()}",
        lambda: f"{pick(names)} drinks {pick(lx.DRINKS)} with {pick(names)} in the morning",
        lambda: f"the {pick(lx.FOOD_ADJECTIVES)} {food()} is on the table",
        lambda: f"{pick(names)} is {pick(lx.PERSON_ADJECTIVES)} because {pick(names)} {tverb(2)} a {obj()}",
        lambda: f"the {(a := pick(sorted(lx.COMPARATIVES)))} {animal()} is {lx.COMPARATIVES[a]} than the {animal()}",
        lambda: f"who {tverb(2)} the {obj()}? {pick(names)} did",
        lambda: f"{pick(names)} {iverb(1)} {pick(lx.ADVERBS)} and then {iverb(1)} {place()}",
        lambda: f"a {(j := pick([j for j in lx.JOBS if j[1]]))[0]} {j[1]}",
        lambda: f"the {pick(lx.CONTAINERS)} is {pick(('open', 'shut', 'empty', 'full'))} and the "
                f"{pick(lx.TOYS)} is inside",
        lambda: f"there are {number()} {animal(True)} {place()}",
        lambda: f"{pick(names)} will {tverb(0)} the {obj()} {pick(('today', 'tomorrow', 'soon', 'later'))}",
        lambda: f"how old is {pick(names)}? {pick(names)} is {number()} years old",
        lambda: f"{pick(names)} gave {pick(names)} a {pick(lx.OBJECT_ADJECTIVES)} {obj()} and a {food(False)}",
        lambda: f"{pick(names)} ate a {food(False)} and some {food()} {place()}",
        lambda: f"the {pick(lx.FOOD_ADJECTIVES)} {food(False)} is on the {obj()}",
        lambda: f"{pick(names)} wants to {iverb(0)} {place()}",
        lambda: f"can {pick(names)} {iverb(0)} {pick(lx.ADVERBS)}?",
        lambda: f"the {obj(True)} and the {obj(True)} are {pick(lx.COLORS)}",
        lambda: f"do {animal(True)} {iverb(0)}? yes, {animal(True)} {iverb(0)} {pick(lx.ADVERBS)}",
    ]
    out, seen, tries = [], set(banned), 0
    while len(out) < n:
        tries += 1
        if tries > 50 * n + 1000:
            raise ValueError(f"could only make {len(out)} distinct sentences of the {n} asked for.")
        s = " ".join(rng.choice(templates)().split())
        key = normalize_text(s)
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


def judge_rows(sentences: Sequence[str], voices: Sequence | None = None, voices_per_sentence: int = 1,
               seed: int = 0, prefix: str = "judge") -> list[tuple[str, str, str]]:
    """`(id, text, voice name)` rows for `build_corpus` / `train_judge`: each sentence by
    `voices_per_sentence` voices, the voices cycling in a shuffled order so each is used equally.
    `voices` defaults to `TRAIN_VOICES` (the judge's side of the split)."""
    from minimost.speech.synth import TRAIN_VOICES, as_voice

    voices = [as_voice(v).name for v in (voices if voices is not None else TRAIN_VOICES)]
    rng = random.Random(seed)
    order: list[str] = []
    rows = []
    for i, text in enumerate(sentences):
        for k in range(voices_per_sentence):
            if not order:
                order = voices[:]
                rng.shuffle(order)
            rows.append((f"{prefix}-{i:06d}-{k}", text, order.pop()))
    return rows


def check_split(texts: Iterable[str], voices: Iterable[str] = (), exclude_texts: Iterable[str] = (),
                allow_test_voices: bool = False) -> None:
    """Raise JudgeError if judge training data touches the LM's evaluation (see the module docstring)."""
    from minimost.speech.synth import TEST_VOICES

    banned = {normalize_text(t) for t in exclude_texts}
    clash = sorted({t for t in texts if normalize_text(t) in banned})
    if clash:
        raise JudgeError(f"{len(clash)} judge training sentence(s) are LM evaluation sentences, e.g. "
                         f"{clash[:3]}. The judge must not have heard what it scores: drop them "
                         f"(template_sentences(..., exclude=...) does).")
    if not allow_test_voices:
        test = {v.name for v in TEST_VOICES}
        used = sorted(set(voices) & test)
        if used:
            raise JudgeError(f"judge training data uses held-out test voices {used}. They are kept for "
                             f"measuring the judge on unheard voices; train on TRAIN_VOICES, or pass "
                             f"allow_test_voices=True if you really mean it.")


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

def _length_batches(order: Sequence[int], lengths: Sequence[int], max_frames: float) -> list[list[int]]:
    """Consecutive runs of `order` whose padded size (count × longest) stays under `max_frames`."""
    batches, cur, longest = [], [], 0
    for i in order:
        n = max(longest, lengths[i])
        if cur and n * (len(cur) + 1) > max_frames:
            batches.append(cur)
            cur, n = [], lengths[i]
        cur.append(i)
        longest = n
    if cur:
        batches.append(cur)
    return batches


def _bucketed_epoch(lengths: Sequence[int], max_frames: float, rng: random.Random) -> list[list[int]]:
    """One epoch of length-bucketed batches: sort by length (with a little noise so batches
    differ between epochs), cut into batches of similar length (little padding), shuffle them."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i] * (1 + 0.1 * rng.random()))
    batches = _length_batches(order, lengths, max_frames)
    rng.shuffle(batches)
    return batches


def _augment(raw: torch.Tensor, cfg: JudgeConfig, g: torch.Generator) -> torch.Tensor:
    """A randomly changed copy of one utterance's raw log-mel (frames, n_mels), same n_mels.

    1. tempo: resample the time axis by r in [1 - tempo, 1 + tempo] (speaking rate);
    2. mel warp: read bin f from bin f * a, a in [1 - mel_warp, 1 + mel_warp] (vocal tract
       length: formants and pitch harmonics move up or down together);
    3. SpecAugment: zero (the utterance mean, after normalisation) a few mel bands and short
       time spans, so no single cue can carry a decision.
    """
    T, M = raw.shape
    u = torch.rand(4, generator=g)
    r = 1 + cfg.tempo * (2 * u[0] - 1)
    new_t = max(2, round(T / float(r)))
    x = F.interpolate(raw.T[None].float(), size=new_t, mode="linear", align_corners=True)[0]   # (M, T')
    a = 1 + cfg.mel_warp * (2 * u[1] - 1)
    pos = (torch.arange(M, dtype=torch.float32) * a).clamp(max=M - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=M - 1)
    w = (pos - lo)[:, None]
    x = (x[lo] * (1 - w) + x[hi] * w).T.contiguous()                      # (T', M)
    x = normalize_utterance(x)
    for _ in range(cfg.freq_masks):
        width = int(torch.randint(0, cfg.freq_mask_width + 1, (1,), generator=g))
        start = int(torch.randint(0, M - width + 1, (1,), generator=g))
        x[:, start:start + width] = 0.0
    n_time = int(new_t / 100 / cfg.time_mask_every) if cfg.time_mask_every > 0 else 0
    for _ in range(n_time):
        width = int(torch.randint(0, cfg.time_mask_width + 1, (1,), generator=g))
        start = int(torch.randint(0, max(1, new_t - width), (1,), generator=g))
        x[start:start + width] = 0.0
    return x


@dataclass
class _Examples:
    """Training data in memory, one entry per utterance."""

    feats: list[torch.Tensor]                 # raw log-mel (frames, n_mels), float16
    chars: list[list[int]]                    # character ids (CTC targets)
    phones: list[torch.Tensor | None]         # phoneme id per 100 Hz frame (frames,), 0 = silence
    phone_set: list[str]                      # phoneme id i + 1 is phone_set[i]
    seconds: float


def _phone_frames(row: dict, n_frames: int, ids: dict[str, int]) -> torch.Tensor | None:
    """Phoneme id per 100 Hz frame from espeak's timings (frame j is centred at j / 100 s), or
    None where the row has none (real corpora). Unknown labels get new ids in `ids`."""
    from minimost.speech.synth import strip_stress

    starts, ends = row.get("phoneme_start") or [], row.get("phoneme_end") or []
    if not starts:
        return None
    out = torch.zeros(n_frames, dtype=torch.int16)
    for label, t0, t1 in zip(row["phonemes"], starts, ends):
        k = ids.setdefault(strip_stress(label), len(ids) + 1)
        out[max(0, math.ceil(t0 * 100)): max(0, math.ceil(t1 * 100))] = k
    return out


def _load_examples(ds, cfg: JudgeConfig, progress: bool) -> _Examples:
    """Decode, featurise and spell every row of a corpus."""
    from tqdm.auto import tqdm

    ex = _Examples([], [], [], [], 0.0)
    ids: dict[str, int] = {}
    for row in tqdm(ds, desc="judge features", unit="utt", disable=not progress, total=len(ds)):
        wav, sr = audio_from_hf(row["audio"])
        if sr != SAMPLE_RATE:
            wav = resample(wav, sr, SAMPLE_RATE)
        f = _raw_log_mel(torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)), cfg)
        ex.feats.append(f.half())                  # half the memory; the model sees float32
        ex.chars.append(text_to_ids(row["text"]))
        ex.phones.append(_phone_frames(row, f.shape[0], ids) if cfg.phone_loss_weight > 0 else None)
        ex.seconds += len(wav) / SAMPLE_RATE
    ex.phone_set = sorted(ids, key=ids.get)
    return ex


def _dataset_fingerprint(ds) -> str:
    """SHA-256 over every row's text and audio bytes (for corpora not built from rows here)."""
    h = hashlib.sha256()
    for row in ds:
        h.update(row["text"].encode() + b"\0")
        cell = row["audio"]
        data = cell.get("bytes") if isinstance(cell, dict) else None
        if data is None and isinstance(cell, dict) and cell.get("array") is not None:
            data = np.asarray(cell["array"], dtype=np.float32).tobytes()
        if data is None:
            wav, _ = audio_from_hf(cell)
            data = wav.tobytes()
        h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


def judge_id(data_fingerprint: str, cfg: JudgeConfig) -> str:
    """The cache key / artefact id: hash of the data, the config and the code version."""
    key = json.dumps({"version": JUDGE_VERSION, "data": data_fingerprint, "config": cfg.to_dict(),
                      "features": cfg.features.to_dict()}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _lr_factor(step: int, progress: float, cfg: JudgeConfig) -> float:
    """Linear warm-up over `warmup_steps`, then cosine decay to 5 % as `progress` goes 0 → 1
    (progress is the larger of steps/max_steps and time/max_minutes: the schedule follows
    whichever budget ends training)."""
    warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    return warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train_judge(data, cfg: JudgeConfig | None = None, cache_dir: str | os.PathLike = "data/cache/judge", *,
                exclude_texts: Iterable[str] = (), allow_test_voices: bool = False, progress: bool = True,
                num_workers: int | None = None, threads: int | None = None, force: bool = False) -> AsrJudge:
    """Train (or load from the cache) a judge on `data`.

    data: `(id, text, voice)` rows (synthesised into `cache_dir/corpus/` with `build_corpus`),
    or a corpus `datasets.Dataset` with `text` and `audio` columns (and `voice`, checked
    against the held-out voices when present). `exclude_texts`: the LM's evaluation sentences;
    any overlap raises (see `check_split`). Returns the judge; its artefact is at
    `cache_dir/judge-<id>/`, and a later call with the same data and config loads it (`force`
    retrains). `threads`: torch CPU threads while training (restored afterwards). On a shared
    2-core machine 1 was 5-15x faster per step than 2 (the threads of one op wait for each
    other while other processes hold the cores).

    With a time budget (`cfg.max_minutes`) the number of steps, and so the weights, depend on
    the machine's speed; the cache key does not. Set `max_steps` and a generous `max_minutes`
    for bit-reproducible training.
    """
    cfg = cfg or JudgeConfig()
    cache_dir = Path(cache_dir)
    if isinstance(data, (list, tuple)):
        from minimost.speech.corpus import build_corpus, corpus_fingerprint

        rows = list(data)
        texts = [r["text"] if isinstance(r, dict) else r[1] for r in rows]
        voices = [str(getattr(v, "name", v)) for v in (r["voice"] if isinstance(r, dict) else r[2] for r in rows)]
        check_split(texts, voices, exclude_texts, allow_test_voices)
        for t in texts:
            text_to_ids(t)                               # refuse unspellable text before synthesising
        fingerprint = corpus_fingerprint(rows)
        ds = None
    else:
        ds = data
        check_split(ds["text"], ds["voice"] if "voice" in ds.column_names else (), exclude_texts,
                    allow_test_voices)
        fingerprint = _dataset_fingerprint(ds)
    jid = judge_id(fingerprint, cfg)
    out_dir = cache_dir / f"judge-{jid}"
    if not force and (out_dir / META).exists():
        return AsrJudge.load(out_dir)
    if ds is None:
        ds = build_corpus(rows, cache_dir / "corpus", num_workers=num_workers, progress=progress)

    ex = _load_examples(ds, cfg, progress)
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        judge = _fit(ex, cfg, progress)
    finally:
        torch.set_num_threads(before)
    judge.info.update(id=jid, data_fingerprint=fingerprint, utterances=len(ex.feats),
                      audio_hours=round(ex.seconds / 3600, 3))
    judge.save(out_dir)
    return judge


def _phone_targets(phones: torch.Tensor, new_frames: int, out_frames: int, s: int) -> torch.Tensor:
    """100 Hz phone ids of the original clip → one id per output frame of its tempo-changed copy
    (`new_frames` input frames, `out_frames` = ceil(new_frames / s)): the label at each output
    frame's centre, mapped back through the stretch."""
    centre = (torch.arange(out_frames, dtype=torch.float32) * s + (s - 1) / 2) * (len(phones) / new_frames)
    return phones[centre.round().long().clamp(max=len(phones) - 1)].long()


def _fit(ex: _Examples, cfg: JudgeConfig, progress: bool) -> AsrJudge:
    """The training loop: AdamW on CTC loss (+ the auxiliary phone loss) over length-bucketed,
    augmented batches, until the step or time budget runs out."""
    from tqdm.auto import tqdm

    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    model = JudgeNet(cfg)
    use_phones = cfg.phone_loss_weight > 0 and bool(ex.phone_set)
    # The phone head is a training aid only: it is not part of the saved judge.
    phone_head = nn.Linear(cfg.d_model, len(ex.phone_set) + 1) if use_phones else None
    params = list(model.named_parameters()) + (list(phone_head.named_parameters()) if use_phones else [])
    opt = torch.optim.AdamW([{"params": [p for _, p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
                             {"params": [p for _, p in params if p.dim() < 2], "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.98))
    lengths = [f.shape[0] for f in ex.feats]
    # Longer tempo-augmented copies must still fit the batch budget: plan with the longest stretch.
    max_frames = cfg.batch_seconds * cfg.features.frame_rate / (1 + cfg.tempo)
    budget = cfg.max_minutes * 60
    t0 = time.perf_counter()
    step, losses, phone_losses, history = 0, [], [], []
    model.train()
    # The bar counts percent of the budget (steps or minutes, whichever binds), not steps.
    bar = tqdm(total=100, desc="judge training", unit="%", disable=not progress)
    done = False
    while not done:
        for batch in _bucketed_epoch(lengths, max_frames, rng):
            elapsed = time.perf_counter() - t0
            prog = max(step / cfg.max_steps, elapsed / budget)
            if prog >= 1.0:
                done = True
                break
            for grp in opt.param_groups:
                grp["lr"] = cfg.lr * _lr_factor(step, prog, cfg)
            x = [_augment(ex.feats[i].float(), cfg, g) for i in batch]
            x_len = torch.tensor([f.shape[0] for f in x])
            xb = torch.zeros(len(x), int(x_len.max()), cfg.n_mels)
            for j, f in enumerate(x):
                xb[j, : f.shape[0]] = f
            y = [torch.tensor(ex.chars[i]) for i in batch]
            y_len = torch.tensor([len(t) for t in y])
            logp, out_len, hidden = model(xb, x_len, hidden_layer=cfg.phone_layer)
            loss = F.ctc_loss(logp.transpose(0, 1), torch.cat(y), out_len, y_len, blank=BLANK,
                              reduction="mean", zero_infinity=True)
            ctc = float(loss.detach())
            have = [j for j, i in enumerate(batch) if ex.phones[i] is not None] if use_phones else []
            if have:
                # frame cross-entropy on the utterances that have timings; padding is ignored
                target = torch.full(hidden.shape[:2], -100, dtype=torch.long)
                for j in have:
                    n = int(out_len[j])
                    target[j, :n] = _phone_targets(ex.phones[batch[j]], int(x_len[j]), n, cfg.subsample)
                phone_loss = F.cross_entropy(phone_head(hidden).transpose(1, 2), target, ignore_index=-100)
                loss = loss + cfg.phone_loss_weight * phone_loss
                phone_losses.append(float(phone_loss.detach()))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_([p for _, p in params], cfg.grad_clip)
            opt.step()
            step += 1
            losses.append(ctc)
            if step % 25 == 0:
                history.append((step, round(time.perf_counter() - t0, 1), round(float(np.mean(losses[-25:])), 4)))
            bar.update(int(100 * prog) - bar.n)
            bar.set_postfix(step=step, ctc=f"{np.mean(losses[-20:]):.3f}", min=f"{elapsed / 60:.1f}",
                            **({"phone": f"{np.mean(phone_losses[-20:]):.3f}"} if phone_losses else {}))
    bar.close()
    model.eval()
    info = {"steps": step, "train_seconds": round(time.perf_counter() - t0, 1), "params": num_params(model),
            "threads": torch.get_num_threads(),
            "first_loss": round(float(np.mean(losses[:10])), 4) if losses else None,
            "final_loss": round(float(np.mean(losses[-25:])), 4) if losses else None,
            "final_phone_loss": round(float(np.mean(phone_losses[-25:])), 4) if phone_losses else None,
            "phones": len(ex.phone_set), "loss_history": history}
    return AsrJudge(model, cfg, info)
