"""The speech kit in one call: synthesis, units, unit vocoder and ASR judge for a preset, cached.

    kit = build_speech_kit("tiny")                       # builds once, then loads from data/cache
    units = kit.tokenize(kit.synthesize("the red fox sleeps", "en-us+m3:p50:r165"))
    wav = kit.resynthesize(units, "en-us+m3:p50:r165"); print(kit.transcribe(wav))

What trains on what (DESIGN.md §3, most-reference.md §4 and §8.1):
- the **units** and the **vocoder** train on the preset's speech plan, train split only (mini-world
  sentences spoken by the training voices), the same audio the LM's ASR/TTS tasks use, less the
  whole spoken stories that only the LM's speech-only task reads (`KIT_SKIPS_PURPOSES`);
- the **judge** trains on *other* mini-world training sentences, also spoken by training voices, and
  never on a sentence of the LM's valid/test sets (`judge.check_split` refuses any overlap), so it can
  score TTS output and spoken answers on held-out sentences and voices.
`build_unit_kit` builds the first part alone (the unit encoder, a `UnitKit`): all that rendering the
LM's speech tasks needs, so training can start before the vocoder and the judge exist.
`build_kit_judge` builds the judge alone: it needs no units, so it can train beside them.
Every artefact is cached by a hash of its inputs; the vocoder records the unit artefact it was
trained with and refuses any other (`UnitVocoder.check_units`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minimost.checkpoint import write_text_atomic
from minimost.speech.judge import AsrJudge, JudgeConfig, judge_rows, train_judge
from minimost.speech.synth import TRAIN_VOICES, synthesize
from minimost.speech.units import UnitConfig, UnitSequence, UnitTokenizer, train_units
from minimost.speech.vocoder import UnitVocoder, VocoderConfig, train_vocoder


@dataclass
class KitConfig:
    """Sizes and budgets of one preset's speech kit (the three artefacts' own configs inside)."""

    judge_sentences: int = 3000           # mini-world training sentences the judge hears
    judge_voices_per_sentence: int = 2
    units: UnitConfig = field(default_factory=UnitConfig)
    vocoder: VocoderConfig = field(default_factory=VocoderConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)


def kit_config(preset: str) -> KitConfig:
    """Per-preset budgets: micro trains for seconds (tests), tiny for minutes (the CPU course)."""
    if preset == "micro":
        return KitConfig(judge_sentences=60, judge_voices_per_sentence=1,
                         units=UnitConfig(max_steps=30, time_budget_s=30.0),
                         vocoder=VocoderConfig(max_steps=30, time_budget_s=30.0),
                         judge=JudgeConfig(max_steps=30, max_minutes=0.5))
    if preset == "tiny":
        # Step budgets, not wall-clock ones, so the artefacts do not depend on how busy the machine is;
        # each is about what the measured wall-clock budgets reached on 2 cores (docs/units.md: 1 093
        # steps reach PNMI 0.909; docs/vocoder.md: 903 steps in 8 min; docs/judge.md: 3 102 steps in
        # 10 min, 15 % WER). The time limits only stop a run on a far slower machine.
        return KitConfig(units=UnitConfig(max_steps=1500, time_budget_s=1800.0),
                         vocoder=VocoderConfig(max_steps=900, time_budget_s=2400.0),
                         judge=JudgeConfig(max_steps=3000, max_minutes=60.0))
    return KitConfig()  # small and most: the artefacts' full defaults


class UnitKit:
    """The speech kit's first part, the unit encoder: all the LM's speech data needs.

    Stages 1-2 train on its units, so `minimost run` starts them from a `UnitKit` while the vocoder and
    the judge (needed only to evaluate) still train in the second process (`pipeline.run_pipeline`).
    """

    def __init__(self, units: UnitTokenizer, path: Path):
        self.units, self.path = units, Path(path)

    def synthesize(self, text: str, voice=TRAIN_VOICES[0]) -> np.ndarray:
        """espeak-ng speech, 16 kHz mono float32."""
        return synthesize(text, voice).wav

    def tokenize(self, wav: np.ndarray) -> UnitSequence:
        """Deduplicated units (and their run lengths) of a 16 kHz waveform."""
        return self.units.encode(wav)


class SpeechKit(UnitKit):
    """Synthesise, tokenise, resynthesise and transcribe: the speech side of minimost in four methods."""

    def __init__(self, units: UnitTokenizer, vocoder: UnitVocoder, judge: AsrJudge, path: Path):
        vocoder.check_units(units)
        super().__init__(units, path)
        self.vocoder, self.judge = vocoder, judge

    def resynthesize(self, units, voice=TRAIN_VOICES[0], durations=None) -> np.ndarray:
        """Units -> speech in a training voice (the vocoder's durations unless given), 16 kHz float32."""
        if isinstance(units, UnitSequence):
            units, durations = units.units_dedup, durations
        return self.vocoder.synthesize(units, voice, durations=durations)

    def transcribe(self, wavs, lexicon=None):
        """The judge's transcript of one waveform (str) or of a list of them (list of str); greedy, or
        with `lexicon` (a `judge.Lexicon` or texts) written in the lexicon's words only."""
        if isinstance(wavs, np.ndarray) and wavs.ndim == 1:
            return self.judge.transcribe([wavs], lexicon=lexicon)[0]
        return self.judge.transcribe(list(wavs), lexicon=lexicon)


# The spoken stories of the plan exist for the LM's speech_lm task only (docs/data.md): the kit's own
# artefacts train, and the judge chooses its sentences, as if they were not there, so adding them to
# the plan leaves the units, the vocoder and the judge unchanged.
KIT_SKIPS_PURPOSES = ("speech_story",)


def speech_corpus(data, cache_dir, split: str = "train", progress: bool = True, skip_purposes=()):
    """The speech plan's utterances of one split, synthesised (cached by `build_corpus`).

    `skip_purposes` leaves the plan rows of those purposes out of the returned view (they are still
    synthesised: the corpus on disk is always the whole split).
    """
    from minimost.speech.corpus import build_corpus
    plan = data.dataset("speech_plan")
    rows = [(r["id"], r["text"], r["voice"]) for r in plan if r["split"] == split]
    corpus = build_corpus(rows, Path(cache_dir) / f"speech-{data.path.name}-{split}", progress=progress)
    if not skip_purposes:
        return corpus
    purpose = {r["id"]: r["purpose"] for r in plan if r["split"] == split}
    keep = [i for i, rid in enumerate(corpus["id"]) if purpose[rid] not in skip_purposes]
    return corpus if len(keep) == len(corpus) else corpus.select(keep, keep_in_memory=True)


def build_unit_kit(preset: str = "tiny", cache_dir: str = "data/cache", data=None,
                   cfg: KitConfig | None = None, progress: bool = True) -> UnitKit:
    """Build (or load from the cache) the preset's unit encoder: the first part of `build_speech_kit`."""
    from minimost.pipeline import prepare_data
    data = data if data is not None else prepare_data(preset, cache_dir)
    cfg = cfg or kit_config(preset)
    corpus = speech_corpus(data, cache_dir, "train", progress, skip_purposes=KIT_SKIPS_PURPOSES)
    root = Path(cache_dir) / "speech_kit"
    return UnitKit(train_units(corpus, cfg.units, cache_dir=root / "units", progress=progress), root)


def build_speech_kit(preset: str = "tiny", cache_dir: str = "data/cache", data=None,
                     cfg: KitConfig | None = None, progress: bool = True) -> SpeechKit:
    """Build (or load from the cache) the preset's units, vocoder and judge; see the module docstring."""
    from minimost.pipeline import prepare_data
    data = data if data is not None else prepare_data(preset, cache_dir)
    cfg = cfg or kit_config(preset)
    unit_kit = build_unit_kit(preset, cache_dir, data, cfg, progress)
    vocoder = build_kit_vocoder(data, cache_dir, cfg, unit_kit, progress)
    judge = build_kit_judge(data, cache_dir, cfg, progress)
    return SpeechKit(unit_kit.units, vocoder, judge, unit_kit.path)


def build_kit_vocoder(data, cache_dir: str, cfg: KitConfig, unit_kit: UnitKit, progress: bool = True) -> UnitVocoder:
    """Build (or load) the kit's vocoder alone, on the units' training corpus (the spoken stories left out)."""
    corpus = speech_corpus(data, cache_dir, "train", progress, skip_purposes=KIT_SKIPS_PURPOSES)
    return train_vocoder(corpus, unit_kit.units, cfg.vocoder, cache_dir=unit_kit.path / "vocoder", progress=progress)


def build_kit_judge(data, cache_dir: str, cfg: KitConfig, progress: bool = True) -> AsrJudge:
    """Build (or load) the kit's judge alone: it needs the text build only, not the units, so it can
    train in a second process while the unit encoder and the vocoder do (`pipeline.build_speech_data`).

    Its sentences are mini-world training sentences that the speech plan does not speak and that no
    valid/test set holds (`judge.check_split` refuses any overlap). Single sentences only, no stories:
    the judge scores sentences. With stories among them (until 2026-12-07: 4.6 h of audio for the
    same 6 000 utterances instead of 2.8 h) the tiny kit's 3 000 steps gave 4.5 % lexicon-decoded WER
    on held-out voices instead of 2.6 % (docs/judge.md).
    """
    held_out = {r["text"] for r in data.dataset("speech_plan") if r["split"] != "train"}
    held_out |= {t for split in ("valid", "test") for t in data.dataset("corpus")[split]["text"]}
    plan_train = {r["text"] for r in data.dataset("speech_plan")
                  if r["split"] == "train" and r["purpose"] not in KIT_SKIPS_PURPOSES}
    train = data.dataset("corpus")["train"]
    sentences = {t for t, kind in zip(train["text"], train["kind"]) if kind != "story"}
    candidates = sorted(sentences - held_out - plan_train)
    random.Random(0).shuffle(candidates)
    rows = judge_rows(candidates[:cfg.judge_sentences], voices_per_sentence=cfg.judge_voices_per_sentence)
    return train_judge(rows, cfg.judge, cache_dir=Path(cache_dir) / "speech_kit" / "judge",
                       exclude_texts=held_out, progress=progress)


def kit_summary(kit: SpeechKit) -> dict:
    """Identities of the three artefacts (what a checkpoint or report should record)."""
    return {"units": kit.units.artefact_id, "vocoder": kit.vocoder.hash, "judge": kit.judge.id,
            "judge_weights": kit.judge.weights_hash,
            "codebook_size": kit.units.num_units, "unit_rate_hz": kit.units.rate_hz}



def speech_units(data, kit: UnitKit, cache_dir, splits=("train", "valid", "test"),
                 progress: bool = True) -> dict[str, list[int]]:
    """Every speech-plan utterance of `splits`, synthesised and encoded: {speech id: deduplicated units}.

    Cached next to the data as `speech_units-<unit artefact id>.json` (written atomically), so a new
    unit encoder gets its own file and never mixes with another codebook's ids.
    """
    import json

    from minimost.speech.audio import audio_from_hf

    path = data.path / f"speech_units-{kit.units.artefact_id}.json"
    if path.exists():
        return json.loads(path.read_text())
    units: dict[str, list[int]] = {}
    for split in splits:
        corpus = speech_corpus(data, cache_dir, split, progress)
        for start in range(0, len(corpus), 512):                   # batched: `UnitTokenizer.encode_batch`
            part = corpus[start:start + 512]
            seqs = kit.units.encode_batch([audio_from_hf(cell)[0] for cell in part["audio"]])
            units.update((rid, seq.units_dedup) for rid, seq in zip(part["id"], seqs))
    write_text_atomic(path, json.dumps(units))
    return units


def render_speech(data, kit: UnitKit, cache_dir, progress: bool = True) -> dict:
    """Render the ASR, TTS and speech-instruction tasks of a text build with the kit's units.

    The tokenizer is extended with one token per unit (`Tokenizer.with_units`, text ids unchanged) and
    records the unit artefact id; returns the per-task token statistics.
    """
    from minimost.data.build import SPEECH_TASKS, render_speech_tasks
    units = speech_units(data, kit, cache_dir, progress=progress)
    done = data.path / "tokenizer_units"
    if (done.exists() and data.unit_tokenizer().unit_artefact == kit.units.artefact_id
            and all((data.path / "tokens" / t).exists() for t in SPEECH_TASKS)
            and (data.path / "speech_stats.json").exists()):
        # Rendered already with these units: leave the files alone (another process may be reading them).
        import json
        data.stats["speech"] = json.loads((data.path / "speech_stats.json").read_text())
        return speech_task_stats(data)
    stats = render_speech_tasks(data, units, kit.units.num_units, unit_artefact=kit.units.artefact_id)
    speech_stats(data, units, cache_dir)
    return stats


def speech_task_stats(data) -> dict:
    """Examples and tokens per rendered speech task and split, read from the build's `tokens/` folder."""
    from minimost.data.build import SPEECH_TASKS
    pools = {t: data.dataset(f"tokens/{t}") for t in SPEECH_TASKS}
    return {t: {s: {"examples": len(ds[s]), "tokens": int(sum(ds[s]["length"]))} for s in ("train", "valid")}
            for t, ds in pools.items()}


def speech_stats(data, units: dict[str, list[int]], cache_dir) -> dict:
    """Audio hours, utterances and deduplicated units per second, per split and purpose.

    Saved as `speech_stats.json` in the build (atomically) and merged into `stats.json` under
    "speech", next to the text statistics `minimost synth` prints.
    """
    import json

    plan = {r["id"]: r for r in data.dataset("speech_plan")}
    out: dict = {}
    for split in ("train", "valid", "test"):
        corpus = speech_corpus(data, cache_dir, split, progress=False)
        for rid, seconds in zip(corpus["id"], corpus["duration"]):
            key = f"{split}/{plan[rid]['purpose']}" if rid in plan else f"{split}/other"
            row = out.setdefault(key, {"utterances": 0, "seconds": 0.0, "units": 0})
            row["utterances"] += 1
            row["seconds"] += float(seconds)
            row["units"] += len(units.get(rid, ()))
    for row in out.values():
        row["hours"] = round(row.pop("seconds") / 3600, 3)
        row["units_per_s_dedup"] = round(row["units"] / max(row["hours"] * 3600, 1e-9), 2)
    total_h = sum(r["hours"] for r in out.values())
    summary = {"audio_hours": round(total_h, 3), "utterances": sum(r["utterances"] for r in out.values()),
               "units_per_s_dedup": round(sum(r["units"] for r in out.values()) / max(total_h * 3600, 1e-9), 2),
               "by_split_and_purpose": out}
    for name, blob in (("speech_stats.json", summary),
                       ("stats.json", {**json.loads((data.path / "stats.json").read_text()), "speech": summary})):
        write_text_atomic(data.path / name, json.dumps(blob, indent=2))
    data.stats["speech"] = summary
    return summary
