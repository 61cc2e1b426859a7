"""Continuous speech input (MoST-C): encoder frame states -> projector -> spliced into the token sequence.

MoST's paper hears speech *input* as continuous vectors: frozen HuBERT states (25 Hz, 768-d) -> one
`Linear(768 -> d_model)` -> spliced in place of a begin/end-audio span and marked audio, so those
positions route to the audio experts (most-reference.md §0 fact 6, §3.1-§3.3). Speech *output*
stays discrete units. minimost builds the same path beside the discrete one:

    enc = SpeechEncoder(kit.units)                       # frozen, eval, no grad (trainable=True: trained)
    states = enc([wav])[0]                               # (U, C) frame states at the unit rate (25 Hz)
    ex = {"input_ids": ids, "labels": labels, "audio": [states]}   # ids hold <boa> UNITS <eoa> spans
    batch = collate_continuous([ex], tok)                # spans -> F placeholder positions + `audio`
    out = model(batch["input_ids"], attention_mask_BT=batch["attention_mask"], labels_BT=batch["labels"],
                audio_BTC=batch["audio"], audio_mask_BT=batch["audio_mask"])

How a span becomes frames (the collator does it, so lengths, padding, bucketing and the trainer's
token counts are right before the model runs):
- an *input* span (every label -100: the prompt of ASR or of a spoken instruction) is replaced,
  markers included (as MoST, §3.3), by F positions whose id is the <boa> placeholder (declared
  AUDIO by the tokenizer), label -100, attention 1, and the span's F frame vectors in `audio`;
- an *output* span (supervised: a TTS or spoken answer) stays discrete units, as in MoST;
- rows are padded after splicing, so attention mask, labels and positions are realigned by
  construction; the model (model.py) replaces the placeholder embeddings by `projector(audio)` and
  forces their marks to AUDIO.

The six bugs of the authors' path (§3.4) and where each is avoided (tests in tests/test_continuous.py):
projector under no_grad (the projector lives in the model and trains: test_projector_gets_gradient),
encoder in train mode (`SpeechEncoder.train` keeps a frozen encoder in eval: test_frozen_encoder...),
inverted padding-mask polarity (one convention, True = real, and a padded batch encodes exactly as
clips alone: test_encoder_batch_equals_single), labels not realigned (test_splice_realigns_by_hand),
misaligned generation with audio (test_generation_with_audio_matches_full_forward), bare model crash
(marks come from ids + audio_mask inside MAMoELM.forward; no second class needed).

Evaluation (minimost/evaluate.py) takes the same path: `spliced_prompt` turns an ASR or spoken-QA
prompt plus its clip into a spliced prompt, `pad_spliced` left-pads a batch of them, and the cached
states come from `load_speech_features`. `continuous_eval_batches` gives teacher-forced validation
batches (the ablation's losses), and `feature_width` gives the width a continuous ablation arm needs.

Shape legend: B batch, T sequence after splicing, U encoder frames of one clip, F projected frames of
one clip (ceil(U / k)), k downsampling factor, C encoder width, D d_model, N clips.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from minimost.config import TASKS

IGNORE_INDEX = -100
SAMPLE_RATE = 16_000   # minimost.speech.audio.SAMPLE_RATE, repeated to keep this import light


class ContinuousInputError(ValueError):
    """Continuous speech input that cannot be spliced; the message says what was expected and how to fix it."""


# --------------------------------------------------------------------------------------------
# Encoder: the unit encoder's frame states, before its class head
# --------------------------------------------------------------------------------------------

class SpeechEncoder(nn.Module):
    """Waveforms (16 kHz) -> frame states (U, C) at the unit rate: the speech kit's phonetic unit encoder
    without its classification head, so the discrete and the continuous path hear the same encoder.

    Frozen (default, as MoST §3.1): parameters need no grad, states are computed under no_grad, and the
    module stays in eval mode even inside a model put in train mode (MoST's HuBERT kept its dropouts on,
    §3.4 bug 3). trainable=True: the states carry gradient and dropout follows train()/eval().
    """

    def __init__(self, units, trainable: bool = False):
        super().__init__()
        if units.cfg.kind != "phonetic":
            raise ContinuousInputError(f"the unit tokenizer is {units.cfg.kind!r}; continuous input needs a "
                                       "'phonetic' unit encoder (k-means units have no encoder states).")
        self.net = copy.deepcopy(units.model)
        self.net.head = nn.Identity()  # (B, U, C) states after the final LayerNorm instead of class scores
        self.feature_cfg, self.rate_hz, self.trainable = units.cfg.feature, units.rate_hz, trainable
        self.dim = self.net.norm.normalized_shape[0]                  # C
        self.artefact_id = units.artefact_id
        self.requires_grad_(trainable)
        self.train(False)

    def train(self, mode: bool = True) -> SpeechEncoder:
        return super().train(mode and self.trainable)  # a frozen encoder never switches dropout on

    def forward(self, wavs: Sequence, sample_rate: int = SAMPLE_RATE) -> list[torch.Tensor]:
        """One (U_i, C) tensor per waveform; U_i = ceil((samples // 160 + 1) / 4) at 25 Hz."""
        from minimost.speech.features import features

        if sample_rate != SAMPLE_RATE:
            raise ContinuousInputError(f"audio at {sample_rate} Hz; the speech encoder expects {SAMPLE_RATE} Hz. "
                                       "Resample first: minimost.speech.audio.resample(wav, sr, 16000).")
        if len(wavs) == 0:
            return []
        feats = [features(np.asarray(w, dtype=np.float32), self.feature_cfg) for w in wavs]   # (T_i, 80)
        lengths = torch.tensor([len(f) for f in feats])
        dev = next(self.parameters()).device
        batch = nn.utils.rnn.pad_sequence(feats, batch_first=True).to(dev)                    # (N, T, 80)
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            # True = real frame, the same polarity as every other mask here (MoST flipped it, §3.4 bug 4).
            states = self.net(batch, lengths.to(dev))                                          # (N, U, C)
        return [s[:n] for s, n in zip(states, self.net.out_lengths(lengths).tolist())]


# --------------------------------------------------------------------------------------------
# Projector: encoder width -> d_model (built by MAMoELM when cfg.audio_feature_dim > 0)
# --------------------------------------------------------------------------------------------

class Projector(nn.Module):
    """(..., k*C) stacked frame states -> (..., D). "linear" is MoST's single Linear with bias (§3.2);
    "mlp" is Linear-GELU-Linear (LLaVA-1.5's choice). Downsampling by k happens before, in
    `stack_frames`, so the sequence is k times shorter and the first layer is k times wider."""

    def __init__(self, feature_dim: int, d_model: int, kind: str = "linear", downsample: int = 1):
        super().__init__()
        if kind not in ("linear", "mlp"):
            raise ContinuousInputError(f"audio_projector={kind!r}; expected 'linear' (MoST) or 'mlp'.")
        if feature_dim <= 0 or downsample < 1:
            raise ContinuousInputError(f"audio_feature_dim={feature_dim} and audio_downsample={downsample} "
                                       "must be positive.")
        self.in_dim = feature_dim * downsample
        self.fc = nn.Linear(self.in_dim, d_model)
        self.out = nn.Sequential(nn.GELU(), nn.Linear(d_model, d_model)) if kind == "mlp" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_dim:
            raise ContinuousInputError(
                f"audio features are {x.shape[-1]} wide, the projector expects {self.in_dim} (audio_feature_dim "
                f"x audio_downsample). Set audio_feature_dim to the encoder width (SpeechEncoder.dim) and "
                "stack frames with the model's audio_downsample.")
        y = self.fc(x)
        return self.out(y) if self.out is not None else y


def stack_frames(states_UC: torch.Tensor, k: int) -> torch.Tensor:
    """Concatenate every k consecutive frames: (U, C) -> (ceil(U / k), k*C); the tail is zero-padded,
    so a clip gives the same vectors alone or in any batch. k = 1 returns the states unchanged."""
    if k == 1:
        return states_UC
    U, C = states_UC.shape
    pad = (-U) % k
    return F.pad(states_UC, (0, 0, 0, pad)).reshape((U + pad) // k, k * C)


def projected_frames(n_states: int, k: int) -> int:
    """F: sequence positions one clip of n_states encoder frames takes after downsampling by k."""
    return math.ceil(n_states / k)


# --------------------------------------------------------------------------------------------
# Splicing: <boa> UNITS <eoa> input spans -> F placeholder positions
# --------------------------------------------------------------------------------------------

def audio_spans(ids: Sequence[int], labels: Sequence[int], boa: int, eoa: int) -> list[tuple[int, int, bool]]:
    """(start, end inclusive, is_input) of every <boa> ... <eoa> span; is_input = no label supervised."""
    spans, start = [], None
    for t, i in enumerate(ids):
        if i == boa:
            if start is not None:
                raise ContinuousInputError(f"<boa> at position {t} opens a span while the one opened at {start} "
                                           "is still open; every <boa> must be closed by <eoa> first.")
            start = t
        elif i == eoa:
            if start is None:
                raise ContinuousInputError(f"<eoa> at position {t} closes no span (no <boa> before it); "
                                           "render audio as <boa> UNITS <eoa> (Tokenizer.encode_audio).")
            spans.append((start, t, all(int(x) == IGNORE_INDEX for x in labels[start:t + 1])))
            start = None
    if start is not None:
        raise ContinuousInputError(f"<boa> at position {start} is never closed by <eoa>; the sequence may have "
                                   "been truncated inside an audio span.")
    return spans


def splice(ids: Sequence[int], labels: Sequence[int], n_frames: Sequence[int], boa: int, eoa: int
           ) -> tuple[list[int], list[int], list[bool]]:
    """Replace the i-th *input* span by n_frames[i] placeholder positions (id <boa>, label -100).

    Returns (ids, labels, is_frame), all of the spliced length. Output spans stay discrete units.
    """
    spans = [(s, e) for s, e, is_input in audio_spans(ids, labels, boa, eoa) if is_input]
    if len(spans) != len(n_frames):
        raise ContinuousInputError(f"the sequence has {len(spans)} input audio span(s) but {len(n_frames)} "
                                   "audio clip(s) were given for it; pass exactly one clip per <boa> ... <eoa> "
                                   "span of the prompt, in order.")
    out_ids, out_labels, is_frame, t = [], [], [], 0
    for (s, e), n in zip(spans, n_frames):
        if n <= 0:
            raise ContinuousInputError(f"an audio clip has {n} frames; every clip needs at least one frame.")
        out_ids += list(ids[t:s]) + [boa] * n
        out_labels += list(labels[t:s]) + [IGNORE_INDEX] * n
        is_frame += [False] * (s - t) + [True] * n
        t = e + 1
    out_ids += list(ids[t:])
    out_labels += list(labels[t:])
    is_frame += [False] * (len(ids) - t)
    return [int(i) for i in out_ids], [int(x) for x in out_labels], is_frame


def collate_continuous(examples: Sequence[Mapping], tok=None, *, boa: int | None = None, eoa: int | None = None,
                       pad_id: int | None = None, downsample: int = 1, padding_side: str = "right"
                       ) -> dict[str, torch.Tensor]:
    """Splice and pad a batch. Each example: input_ids, labels (optional for prompts), audio = list of
    (U_i, C) frame-state tensors, one per input span, and optionally task.

    Returns input_ids, attention_mask, labels, task_ids (as `batching.collate`) plus
    audio (B, T, k*C) float (zeros off the frames) and audio_mask (B, T) bool. Right padding trains;
    left padding is for generation. Spliced frames keep their autograd graph (a trainable encoder).
    """
    boa = tok.special("boa") if boa is None else boa
    eoa = tok.special("eoa") if eoa is None else eoa
    pad_id = tok.pad_id if pad_id is None else pad_id
    if not examples:
        raise ContinuousInputError("collate_continuous got an empty list of examples.")
    rows = []
    for e in examples:
        frames = [stack_frames(torch.as_tensor(a), downsample) for a in e.get("audio", [])]
        labels = e.get("labels")
        labels = [IGNORE_INDEX] * len(e["input_ids"]) if labels is None else [int(x) for x in labels]
        ids, labels, is_frame = splice([int(i) for i in e["input_ids"]], labels, [len(a) for a in frames], boa, eoa)
        rows.append({"input_ids": ids, "labels": labels, "audio_mask": is_frame, "frames": frames,
                     "task": e.get("task")})
    return pad_spliced(rows, pad_id, padding_side)


def pad_spliced(rows: Sequence[Mapping], pad_id: int, padding_side: str = "right", width: int | None = None
                ) -> dict[str, torch.Tensor]:
    """Pad already spliced rows into a batch (the second half of `collate_continuous`).

    A row: input_ids and audio_mask (one bool per position, True on a frame) of the spliced length,
    optionally labels (default all -100) and task, and frames = the (F_i, k*C) tensors whose rows fill
    its frame positions in order. Returns what `collate_continuous` returns. width: the frames' width
    k*C, for a batch that may hold no frame at all (otherwise read from the frames).
    """
    if not rows:
        raise ContinuousInputError("pad_spliced got an empty list of rows.")
    widths = {a.shape[-1] for row in rows for a in row["frames"]}
    if len(widths) > 1:
        raise ContinuousInputError(f"audio clips of different widths {sorted(widths)} in one batch; every clip "
                                   "must come from the same encoder.")
    if width is not None and widths and widths != {width}:
        raise ContinuousInputError(f"audio clips are {widths.pop()} wide; expected {width}.")
    width = widths.pop() if widths else (width or 1)
    ref = next((a for row in rows for a in row["frames"]), torch.zeros(()))
    B, T = len(rows), max(len(r["input_ids"]) for r in rows)
    out = {"input_ids": torch.full((B, T), pad_id, dtype=torch.long),
           "attention_mask": torch.zeros(B, T, dtype=torch.bool),
           "labels": torch.full((B, T), IGNORE_INDEX, dtype=torch.long),
           "audio_mask": torch.zeros(B, T, dtype=torch.bool)}
    audio_rows = []
    for b, r in enumerate(rows):
        n = len(r["input_ids"])
        cols = slice(0, n) if padding_side == "right" else slice(T - n, T)
        out["input_ids"][b, cols] = torch.tensor(r["input_ids"], dtype=torch.long)
        if r.get("labels") is not None:
            out["labels"][b, cols] = torch.tensor(r["labels"], dtype=torch.long)
        out["attention_mask"][b, cols] = True
        out["audio_mask"][b, cols] = torch.tensor(r["audio_mask"], dtype=torch.bool)
        row = ref.new_zeros(T, width, dtype=torch.float32)
        if r["frames"]:  # index_put keeps the graph, so a trainable encoder gets its gradient
            frames = torch.cat(list(r["frames"])).float()
            where = out["audio_mask"][b].nonzero().flatten()
            if len(where) != len(frames):
                raise ContinuousInputError(f"row {b} has {len(where)} frame positions but {len(frames)} frames.")
            row = row.index_put((where,), frames)
        audio_rows.append(row)
    out["audio"] = torch.stack(audio_rows)                                              # (B, T, k*C)
    out["task_ids"] = torch.tensor([TASKS.index(r["task"]) if r.get("task") in TASKS else -1 for r in rows])
    return out


def spliced_prompt(tok, ids: Sequence[int], clips: Sequence[torch.Tensor], downsample: int = 1) -> dict:
    """A generation prompt with its input spans replaced by the clips' frames, ready for `pad_spliced`
    (left padding): {input_ids, audio_mask, frames}. The spans may hold units or be empty (<boa><eoa>):
    either way the markers and what is between them become the clip's F placeholder positions."""
    frames = [stack_frames(torch.as_tensor(c).float(), downsample) for c in clips]
    spliced, _, is_frame = splice([int(i) for i in ids], [IGNORE_INDEX] * len(ids), [len(f) for f in frames],
                                  tok.special("boa"), tok.special("eoa"))
    return {"input_ids": spliced, "audio_mask": is_frame, "frames": frames}


# --------------------------------------------------------------------------------------------
# Data: features per speech id (cached), a batch source for the trainer
# --------------------------------------------------------------------------------------------

def speech_features(data, kit, cache_dir, splits=("train", "valid", "test"), progress: bool = True
                    ) -> dict[str, torch.Tensor]:
    """{speech id: (U, C) float16 frame states} of every speech-plan utterance, from the kit's frozen encoder.

    Cached next to the data as `speech_features-<unit artefact id>.safetensors`, written atomically
    (like `kit.speech_units`), so another unit encoder gets its own file.
    """
    from safetensors.torch import load_file, save_file

    from minimost.speech.audio import audio_from_hf
    from minimost.speech.kit import speech_corpus

    path = data.path / f"speech_features-{kit.units.artefact_id}.safetensors"
    if path.exists():
        return load_file(str(path))
    enc = SpeechEncoder(kit.units)
    out: dict[str, torch.Tensor] = {}
    for split in splits:
        for row in speech_corpus(data, cache_dir, split, progress):
            wav, sr = audio_from_hf(row["audio"])
            out[row["id"]] = enc([wav], sr)[0].to(torch.float16).contiguous()
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    save_file(out, str(tmp))
    os.replace(tmp, path)
    return out


def continuous_pools(tok, task_rows: Sequence[Mapping], units: Mapping[str, Sequence[int]],
                     features: Mapping[str, torch.Tensor], downsample: int = 1) -> dict[str, list[dict]]:
    """task -> pre-spliced examples {input_ids, labels, clips}: the input span of every ASR / spoken
    instruction becomes F placeholder positions, so the sampler sees the true lengths. Output units (TTS,
    spoken answers) stay discrete. `clips` names the speech ids whose features fill the placeholders."""
    from minimost.data.tasks import render

    boa, eoa = tok.special("boa"), tok.special("eoa")
    pools: dict[str, list[dict]] = {}
    for row in task_rows:
        r = render(tok, row, units)
        clips = [row["prompt_speech"]] if row.get("prompt_speech") else []
        missing = [c for c in clips if c not in features]
        if missing:
            raise ContinuousInputError(f"no encoder features for speech id {missing[0]!r}; compute them with "
                                       "speech_features(data, kit, cache_dir) for every split you train on.")
        n = [projected_frames(len(features[c]), downsample) for c in clips]
        ids, labels, _ = splice(r.input_ids, r.labels, n, boa, eoa)
        pools.setdefault(row["task"], []).append({"input_ids": ids, "labels": labels, "clips": clips})
    return pools


class ContinuousSource:
    """The trainer's batch source for continuous input: a `MixtureSampler` over pre-spliced pools, plus
    `audio` (B, T, k*C) and `audio_mask` (B, T) filled from the cached features. Resumes exactly (its
    state is the sampler's). Packed rows work: a row's placeholders take its documents' clips in order."""

    def __init__(self, pools: Mapping[str, Any], features: Mapping[str, torch.Tensor], mixture, batch_size: int,
                 max_len: int, pad_id: int, placeholder_id: int, downsample: int = 1, seed: int = 0, **kwargs):
        from minimost.data.batching import MixtureSampler

        self.sampler = MixtureSampler(pools, mixture, batch_size, max_len, seed=seed, pad_id=pad_id, **kwargs)
        self.features, self.placeholder, self.k = features, placeholder_id, downsample
        self.width = next(iter(features.values())).shape[-1] * downsample if features else 0

    def next_batch(self) -> dict[str, torch.Tensor]:
        s = self.sampler
        if not s.buffer:
            s._refill()
        rows = s.buffer[0]                               # the rows next_batch is about to emit
        docs = iter(s._fetch([pair for row in rows for pair in row]))
        clips = [[c for _ in row for c in next(docs).get("clips", [])] for row in rows]
        batch = s.next_batch()
        mask = (batch["input_ids"] == self.placeholder) & (batch["labels"] == IGNORE_INDEX) & batch["attention_mask"]
        audio = torch.zeros(*mask.shape, self.width)
        for b, row_clips in enumerate(clips):
            if row_clips:
                frames = torch.cat([stack_frames(self.features[c].float(), self.k) for c in row_clips])
                if len(frames) != int(mask[b].sum()):
                    raise ContinuousInputError(f"row {b} has {int(mask[b].sum())} placeholder positions but its "
                                               f"clips give {len(frames)} frames; the pools were spliced with "
                                               "other features or another audio_downsample.")
                audio[b, mask[b]] = frames
        return batch | {"audio": audio, "audio_mask": mask}

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: Mapping) -> None:
        self.sampler.load_state_dict(state)


# --------------------------------------------------------------------------------------------
# Generation from a spoken prompt
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def generate_from_audio(model, tok, prompts: Sequence[Mapping], **generate_kwargs) -> list[list[int]]:
    """Continue prompts ({input_ids, audio: [(U, C), ...]}) whose input spans are spliced and left-padded;
    returns the new ids of each row. The audio enters only the prefill (the KV cache holds it after that),
    and every generated token is routed by its own id (generate.py)."""
    from minimost.generate import generate

    batch = collate_continuous(prompts, tok, downsample=model.cfg.audio_downsample, padding_side="left")
    dev = next(model.parameters()).device
    out = generate(model, batch["input_ids"].to(dev), batch["attention_mask"].to(dev), pad_id=tok.pad_id,
                   audio_BTC=batch["audio"].to(dev), audio_mask_BT=batch["audio_mask"].to(dev), **generate_kwargs)
    return out[:, batch["input_ids"].shape[1]:].tolist()


def features_path(data, artefact: str):
    """Where `speech_features` caches the encoder states of a unit artefact: next to the data build."""
    return data.path / f"speech_features-{artefact}.safetensors"


def load_speech_features(data, tok=None, kit=None, cache_dir="data/cache", progress: bool = False
                         ) -> dict[str, torch.Tensor]:
    """{speech id: (U, C) float16 states}: the cached file of the tokenizer's unit artefact, or, given the
    kit, computed (and cached) with `speech_features`. A clear error when neither is there."""
    if kit is not None:
        return speech_features(data, kit, cache_dir, progress=progress)
    from safetensors.torch import load_file

    art = tok.unit_artefact if tok is not None else ""
    path = features_path(data, art)
    if not path.exists():
        found = sorted(data.path.glob("speech_features-*.safetensors"))
        if art or len(found) != 1:
            raise ContinuousInputError(f"no speech features {path.name} in {data.path}; compute them once with "
                                       "minimost.continuous.speech_features(data, kit, cache_dir) (`minimost run` "
                                       "with --set train.audio_input=continuous does it).")
        path = found[0]
    return load_file(str(path))


def feature_width(data, tok=None, kit=None, cache_dir="data/cache", progress: bool = False) -> int:
    """C, the width of the cached encoder states (what audio_feature_dim must be); builds them if needed."""
    if kit is not None:
        features = speech_features(data, kit, cache_dir, progress=progress)
        return next(iter(features.values())).shape[-1]
    from safetensors import safe_open

    path = features_path(data, tok.unit_artefact if tok is not None else "")
    if not path.exists():
        raise ContinuousInputError(f"no speech features {path.name} in {data.path}; compute them once with "
                                   "minimost.continuous.speech_features(data, kit, cache_dir).")
    with safe_open(str(path), "pt") as f:
        return f.get_slice(next(iter(f.keys()))).get_shape()[-1]


def continuous_eval_batches(data, tok, model_cfg, tasks: Sequence[str], split: str = "valid", batch_size: int = 32,
                            features: Mapping[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """task -> iterator over length-sorted validation batches (as `batching.eval_batches`) on the continuous
    path: input spans spliced into frames, `audio` and `audio_mask` filled from the cached features. Teacher-
    forced losses of a continuous-input model (ablate.task_loss_metrics) read these instead of unit prompts."""
    import json

    from minimost.data.batching import LengthBucketSampler

    features = load_speech_features(data, tok) if features is None else features
    units = json.loads((data.path / f"speech_units-{tok.unit_artefact}.json").read_text())
    rows = [r for r in data.dataset("tasks")[split] if r["task"] in tasks]
    pools = continuous_pools(tok, rows, units, features, model_cfg.audio_downsample)
    boa, k = tok.special("boa"), model_cfg.audio_downsample
    width = model_cfg.audio_feature_dim * k     # text-only batches still need (B, T, k*C) zeros

    def batches(examples):
        lengths = [len(e["input_ids"]) for e in examples]
        for idx in LengthBucketSampler(lengths, batch_size, shuffle=False, bucket_batches=max(1, len(lengths))):
            rows_ = []
            for i in idx:
                e = examples[i]
                ids, labels = list(e["input_ids"]), list(e["labels"])
                rows_.append({"input_ids": ids, "labels": labels,
                              "audio_mask": [t == boa and y == IGNORE_INDEX for t, y in zip(ids, labels)],
                              "frames": [stack_frames(features[c].float(), k) for c in e.get("clips", [])]})
            yield pad_spliced(rows_, tok.pad_id, width=width)

    return {task: batches(pools[task]) for task in tasks if task in pools}


def continuous_source(data, tok, model_cfg, train_cfg, split: str = "train") -> ContinuousSource:
    """The stage's `ContinuousSource` from a build whose speech units and features are cached
    (`kit.speech_units`, `speech_features`): what `pipeline.stage_source` returns for audio_input="continuous"."""
    import json

    from safetensors.torch import load_file

    art = tok.unit_artefact
    units_path, feats_path = data.path / f"speech_units-{art}.json", data.path / f"speech_features-{art}.safetensors"
    if not units_path.exists() or not feats_path.exists():
        raise ContinuousInputError(f"audio_input='continuous' needs {units_path.name} and {feats_path.name} in "
                                   f"{data.path}; build them with kit.speech_units(...) and "
                                   "minimost.continuous.speech_features(data, kit, cache_dir).")
    features = load_file(str(feats_path))
    width = next(iter(features.values())).shape[-1]
    if model_cfg.audio_feature_dim != width:
        raise ContinuousInputError(f"the cached features are {width} wide but audio_feature_dim="
                                   f"{model_cfg.audio_feature_dim}; set --set audio_feature_dim={width}.")
    rows = [r for r in data.dataset("tasks")[split] if train_cfg.mixture.get(r["task"], 0) > 0]
    pools = continuous_pools(tok, rows, json.loads(units_path.read_text()), features, model_cfg.audio_downsample)
    return ContinuousSource(pools, features, train_cfg.mixture, train_cfg.batch_size,
                            min(train_cfg.seq_len, model_cfg.max_seq_len), pad_id=tok.pad_id,
                            placeholder_id=tok.special("boa"), downsample=model_cfg.audio_downsample,
                            seed=train_cfg.seed, packing=True)
