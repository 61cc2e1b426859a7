"""Build a preset's text data: the world, the tokenizer, task examples, test sets, as Arrow datasets.

    from minimost.data.build import build_text_data
    data = build_text_data("tiny", "data/cache")       # cached: the second call loads in ~0.1 s
    data.tokenizer, data.stats["tokens"]["text_lm"]
    pools = data.token_pools("train")                    # task -> datasets.Dataset(input_ids, labels, length)

    python -m minimost.data.build --preset tiny          # same, prints the statistics

Everything derived is a Hugging Face `datasets` folder (Arrow on disk, memory-mapped), so the
mini-world and real corpora flow through the same code. Layout of one build:

    <out_dir>/<preset>-text-<key>/
        stats.json  world.json       statistics; the world config
        tokenizer/                   text-only tokenizer (tokenizer.json + minimost_tokenizer.json)
        corpus/                      DatasetDict train/valid/test: id, text, kind, topic (text-LM documents)
        facts/ qa/ instructions/     the facts, QA pairs (per split), text instructions (per split)
        eval/<name>/                 swuggy, sblimp, sstorycloze, tstorycloze, spoken_qa (text side)
        speech_plan/                 id, text, voice, split, purpose: every utterance the speech kit must speak
        tasks/                       DatasetDict train/valid/test of task examples (tasks.ROW_COLUMNS)
        tokens/<task>/               DatasetDict train/valid of rendered text tasks: id, input_ids, labels, length

Cache: `<key>` is a SHA-256 of the world config, the vocabulary budget, the voices, DATA_VERSION and
the source of the data modules, so any change rebuilds. A build is written to a temporary folder
and renamed into place, so a folder that exists is complete (a crashed build leaves only a
`.tmp-*` folder, removed by the next build).

The seam for audio: `speech_plan` lists what to speak, with which voice (train voices for
training material, held-out voices for every test item, both members of a test pair in the same
voice). `render_speech` is where synthesis + units will plug in once `minimost.speech.units` exists;
then `render_rows(tok.with_units(n), rows, units)` renders the speech tasks like the text ones.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minimost.config import TASKS, train_preset
from minimost.config import preset as model_preset
from minimost.data import lexicon
from minimost.data.tasks import ROW_COLUMNS, make_row, render
from minimost.data.world import (
    ASR_INSTRUCTION,
    SENTENCE_KINDS,
    SPLITS,
    TTS_INSTRUCTION,
    World,
    WorldConfig,
    generate_world,
    rng_for,
    world_config,
)
from minimost.tokenizer import Tokenizer

DATA_VERSION = 1
# Ids left free for speech units when the text tokenizer is trained (most-reference.md §4.1: MoST
# has 500 units; minimost.speech.units defaults to 100). The speech kit decides the real codebook
# size; it must not exceed this budget (micro: 256 ids = 16 special + 140 text + 100 units).
UNIT_BUDGET = {"micro": 100, "tiny": 256, "small": 500, "most": 500}
TEXT_TASKS = ("text_lm", "text_instruct")
SPEECH_TASKS = ("asr", "tts", "speech_instruct", "speech_lm")
EVAL_SETS = ("swuggy", "sblimp", "sstorycloze", "tstorycloze", "spoken_qa")
_CODE_FILES = ("lexicon.py", "world.py", "stories.py", "instructions.py", "spoken_lm.py", "tasks.py", "build.py")


# --------------------------------------------------------------------------------------------
# Speech plan and task rows
# --------------------------------------------------------------------------------------------

def default_voices() -> tuple[list[str], list[str]]:
    """(train voice names, held-out voice names) from the speech kit."""
    from minimost.speech.synth import TEST_VOICES, TRAIN_VOICES

    return [v.name for v in TRAIN_VOICES], [v.name for v in TEST_VOICES]


def speech_plan(world: World, train_voices: Sequence[str], test_voices: Sequence[str],
                answer_voice: str | None = None) -> list[dict]:
    """Every utterance the speech kit must render: rows {id, text, voice, split, purpose}.

    - asr_tts: single sentences of the corpus (no facts: knowledge stays text-only, so spoken QA
      measures transfer from text); train/valid with training voices, test with held-out voices.
    - instruct_prompt / instruct_answer: spoken instructions (train voices) and, for half of them,
      the spoken answer in one fixed `answer_voice` (TTS-like targets need one consistent voice).
    - speech_story: whole train stories (training voices), for the speech-only LM task alone.
    - spoken_qa / spoken_qa_answer: held-out questions (held-out voices) and their spoken answers.
    - swuggy, sblimp, storycloze: both members of each pair in the same held-out voice.
    """
    if not train_voices or not test_voices:
        raise ValueError("speech_plan needs at least one train voice and one held-out voice.")
    if set(train_voices) & set(test_voices):
        raise ValueError(f"train and held-out voices overlap: {sorted(set(train_voices) & set(test_voices))}.")
    cfg = world.config
    rng = rng_for(cfg.seed, "speech_plan")
    answer_voice = answer_voice or train_voices[0]
    rows: list[dict] = []

    def add(id_, text, voice, split, purpose):
        rows.append({"id": id_, "text": text, "voice": voice, "split": split, "purpose": purpose})

    sizes = {"train": cfg.n_speech_train, "valid": cfg.n_speech_valid, "test": cfg.n_speech_test}
    for split in SPLITS:
        sentences = [d for d in world.corpus[split] if d["kind"] in SENTENCE_KINDS]
        picked = rng.sample(sentences, min(sizes[split], len(sentences)))
        voices = train_voices if split != "test" else test_voices
        for i, d in enumerate(picked):
            add(f"asr_tts-{split}-{i:06d}", d["text"], rng.choice(voices), split, "asr_tts")
    for split, n in (("train", cfg.n_speech_instruct), ("valid", cfg.n_speech_valid)):
        inst = world.instructions[split]
        for i, x in enumerate(rng.sample(inst, min(n, len(inst)))):
            add(f"instruct_prompt-{split}-{i:06d}", x["prompt"], rng.choice(train_voices), split, "instruct_prompt")
            if i % 2:   # every other one is answered in speech
                add(f"instruct_answer-{split}-{i:06d}", x["answer"], answer_voice, split, "instruct_answer")
    # Whole spoken stories, for speech_lm only: the story sets score a five-sentence spoken context,
    # which no single-sentence utterance teaches. Their own random stream, so the rows above are
    # the same with or without them.
    story_rng = rng_for(cfg.seed, "speech_plan_stories")
    stories = [d for d in world.corpus["train"] if d["kind"] == "story"]
    for i, d in enumerate(story_rng.sample(stories, min(cfg.n_speech_stories, len(stories)))):
        add(f"speech_story-train-{i:06d}", d["text"], story_rng.choice(train_voices), "train", "speech_story")
    for i, q in enumerate(world.spoken_qa):
        add(f"spoken_qa-{i:05d}", q["question"], test_voices[i % len(test_voices)], "test", "spoken_qa")
        add(f"spoken_qa_answer-{i:05d}", q["answer"], answer_voice, "test", "spoken_qa_answer")
    for i, r in enumerate(world.swuggy):
        v = test_voices[i % len(test_voices)]
        add(f"{r['id']}-word", r["word"], v, "test", "swuggy")
        add(f"{r['id']}-nonword", r["nonword"], v, "test", "swuggy")
    for i, r in enumerate(world.sblimp):
        v = test_voices[i % len(test_voices)]
        add(f"{r['id']}-good", r["good"], v, "test", "sblimp")
        add(f"{r['id']}-bad", r["bad"], v, "test", "sblimp")
    for i, (s, t) in enumerate(zip(world.sstorycloze, world.tstorycloze)):
        v = test_voices[i % len(test_voices)]
        add(f"storycloze-{i:05d}-good", f"{s['context']} {s['good_ending']}", v, "test", "storycloze")
        add(f"storycloze-{i:05d}-bad", f"{s['context']} {s['bad_ending']}", v, "test", "storycloze")
        add(f"storycloze-{i:05d}-foreign", f"{t['context']} {t['bad_ending']}", v, "test", "storycloze")
    return rows


def task_rows(world: World, plan: Sequence[Mapping]) -> dict[str, list[dict]]:
    """Task examples per split (tasks.ROW_COLUMNS); speech fields point into the speech plan."""
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for split in SPLITS:
        for d in world.corpus[split]:
            out[split].append(make_row("text_lm", f"text_lm-{d['id']}", kind=d["kind"], answer_text=d["text"]))
        for x in world.instructions[split]:
            out[split].append(make_row("text_instruct", f"text_instruct-{x['id']}", kind=x["kind"],
                                       instruction=x["prompt"], answer_text=x["answer"]))
        if split != "train":   # held-out QA is text-instruction test data too (train QA is in instructions)
            for q in world.qa[split]:
                out[split].append(make_row("text_instruct", f"text_instruct-{q['id']}", kind="answer",
                                           instruction=q["question"], answer_text=q["answer"]))
    by_id = {r["id"]: r for r in plan}
    for r in plan:
        split, purpose = r["split"], r["purpose"]
        if purpose == "asr_tts":
            out[split].append(make_row("asr", f"asr-{r['id']}", prompt_speech=r["id"], answer_text=r["text"]))
            out[split].append(make_row("tts", f"tts-{r['id']}", prompt_text=r["text"], answer_speech=r["id"]))
            out[split].append(make_row("speech_lm", f"speech_lm-{r['id']}", answer_speech=r["id"]))
        elif purpose == "speech_story":
            out[split].append(make_row("speech_lm", f"speech_lm-{r['id']}", answer_speech=r["id"]))
        elif purpose in ("instruct_prompt", "spoken_qa"):
            answer_id = r["id"].replace("instruct_prompt", "instruct_answer").replace("spoken_qa", "spoken_qa_answer")
            answer = by_id.get(answer_id)
            text_answer = _answer_of(world, r) if answer is None else answer["text"]
            kind = "spoken_qa" if purpose == "spoken_qa" else "instruction"
            out[split].append(make_row("speech_instruct", f"s2t-{r['id']}", kind=kind, prompt_speech=r["id"],
                                       answer_text=text_answer))
            if answer is not None:
                out[split].append(make_row("speech_instruct", f"s2s-{r['id']}", kind=kind, prompt_speech=r["id"],
                                           answer_text=answer["text"], answer_speech=answer_id))
    return out


def _answer_of(world: World, plan_row: Mapping) -> str:
    split = plan_row["split"]
    for x in world.instructions.get(split, []):
        if x["prompt"] == plan_row["text"]:
            return x["answer"]
    raise KeyError(f"no instruction with prompt {plan_row['text']!r} in split {split}.")


def tokenizer_texts(world: World) -> list[str]:
    """The text the BPE is trained on: what training shows the model, plus every word of the world once.

    Train corpus and instructions, the ASR/TTS instructions as often as the spoken training
    sentences (every ASR and TTS example repeats one), and the vocabulary (so held-out words
    still get whole-word pieces when frequent enough elsewhere, and always encode).
    """
    texts = [d["text"] for d in world.corpus["train"]]
    texts += [x for r in world.instructions["train"] for x in (r["prompt"], r["answer"])]
    texts += [ASR_INSTRUCTION, TTS_INSTRUCTION] * max(2, world.config.n_speech_train)
    return texts + world.vocabulary


def render_rows(tok: Tokenizer, rows: Sequence[Mapping], units: Mapping[str, Sequence[int]] | None = None
                ) -> list[dict]:
    """Render task rows to {id, task, input_ids, labels, length} (speech tasks need `units`)."""
    out = []
    for row in rows:
        r = render(tok, row, units)
        out.append({"id": row["id"], "task": row["task"], "input_ids": r.input_ids, "labels": r.labels,
                    "length": len(r)})
    return out


# --------------------------------------------------------------------------------------------
# The build
# --------------------------------------------------------------------------------------------

@dataclass
class TextData:
    """A finished build: its folder, tokenizer and statistics; datasets load lazily (memory-mapped)."""

    path: Path
    tokenizer: Tokenizer
    stats: dict[str, Any]
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def dataset(self, name: str):
        """A saved dataset by folder name: 'corpus', 'qa', 'tasks', 'speech_plan', 'eval/sblimp', 'tokens/text_lm'."""
        from datasets import load_from_disk

        if name not in self._cache:
            p = self.path / name
            if not p.exists():
                raise FileNotFoundError(f"{p}: no dataset {name!r} in this build.")
            self._cache[name] = load_from_disk(str(p))
        return self._cache[name]

    def token_pools(self, split: str = "train") -> dict[str, Any]:
        """task -> rendered examples (input_ids, labels, length) for the tasks rendered so far."""
        return {t: self.dataset(f"tokens/{t}")[split] for t in TASKS if (self.path / "tokens" / t).exists()}

    def unit_tokenizer(self) -> Tokenizer:
        """The tokenizer with unit tokens written by `render_speech_tasks` (ids of text unchanged)."""
        p = self.path / "tokenizer_units"
        if not p.exists():
            raise FileNotFoundError(f"{p}: no unit tokenizer yet; speech tasks are rendered by "
                                    "render_speech_tasks() once the speech kit provides units.")
        return Tokenizer.load(p)

    def sampler(self, mixture: Mapping[str, float], batch_size: int, max_len: int, seed: int = 0,
                split: str = "train", **kwargs):
        """A `MixtureSampler` over this build's rendered pools (the trainer's batch source)."""
        from minimost.data.batching import MixtureSampler

        return MixtureSampler(self.token_pools(split), mixture, batch_size, max_len, seed=seed,
                              pad_id=self.tokenizer.pad_id, **kwargs)


def render_speech_tasks(data: TextData, units: Mapping[str, Sequence[int]], n_units: int,
                        unit_artefact: str = "") -> dict[str, Any]:
    """Render ASR, TTS and speech instructions with real units into `tokens/<task>` (train, valid).

    `units` maps every speech-plan id of the train and valid splits to its deduplicated unit ids
    (ints < n_units). The text tokenizer is extended with `with_units(n_units)` (the MoST
    transformation: text ids unchanged; `unit_artefact` records which unit encoder made the
    units) and saved as `tokenizer_units/`. Each task folder is
    written to a temporary name and renamed, so a half-written task never appears.
    """
    from datasets import Dataset, DatasetDict

    tok = data.tokenizer.with_units(n_units, artefact=unit_artefact)
    tasks = data.dataset("tasks")
    stats = {}
    for task in SPEECH_TASKS:
        rendered = {split: render_rows(tok, [r for r in tasks[split] if r["task"] == task], units)
                    for split in ("train", "valid")}
        final = data.path / "tokens" / task
        tmp = data.path / "tokens" / f".tmp-{task}-{uuid.uuid4().hex[:8]}"
        DatasetDict({s: Dataset.from_list(v) for s, v in rendered.items()}).save_to_disk(str(tmp))
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        data._cache.pop(f"tokens/{task}", None)
        stats[task] = {s: _token_stats(v) for s, v in rendered.items()}
    tok.save(data.path / "tokenizer_units")
    return stats


def cache_key(world: WorldConfig, vocab_size: int, unit_budget: int, voices: tuple[list[str], list[str]]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"world": world.to_dict(), "vocab_size": vocab_size, "unit_budget": unit_budget,
                         "voices": voices, "data_version": DATA_VERSION}, sort_keys=True).encode())
    here = Path(__file__).resolve().parent
    for name in _CODE_FILES:
        h.update((here / name).read_bytes())
    h.update((here.parent / "tokenizer.py").read_bytes())
    return h.hexdigest()


def build_text_data(preset: str = "tiny", out_dir: str | os.PathLike = "data/cache", *,
                    world: WorldConfig | None = None, unit_budget: int | None = None,
                    voices: tuple[list[str], list[str]] | None = None, force: bool = False,
                    verbose: bool = False) -> TextData:
    """Build (or load from cache) the text side of a preset's dataset plus its tokenizer.

    `world` overrides the preset's `WorldConfig`; `voices` = (train names, held-out names) defaults
    to the speech kit's split. Returns a `TextData`; `stats` says whether the cache was hit.
    The speech side is rendered afterwards by `minimost.speech.kit.render_speech`.
    """
    t0 = time.perf_counter()
    preset_name = preset
    vocab_size = model_preset(preset_name).vocab_size
    world_cfg = world or world_config(preset_name)
    unit_budget = UNIT_BUDGET.get(preset_name, 256) if unit_budget is None else unit_budget
    voices = voices or default_voices()
    key = cache_key(world_cfg, vocab_size, unit_budget, voices)
    out_dir = Path(out_dir)
    final = out_dir / f"{preset_name}-text-{key[:12]}"
    if final.is_dir() and not force:
        stats = json.loads((final / "stats.json").read_text())
        stats["cache"] = {"hit": True, "load_seconds": round(time.perf_counter() - t0, 3)}
        return TextData(final, Tokenizer.load(final / "tokenizer"), stats)

    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(f".tmp-{final.name}-*"):       # leftovers of crashed builds
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out_dir / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        stats = _build_into(tmp, preset_name, world_cfg, vocab_size, unit_budget, voices, verbose)
        stats["build_seconds"] = round(time.perf_counter() - t0, 2)
        stats["key"] = key
        (tmp / "stats.json").write_text(json.dumps(stats, indent=1))
        if force and final.exists():
            shutil.rmtree(final)
        try:
            os.rename(tmp, final)                  # atomic: the folder appears complete or not at all
        except OSError:                            # another process finished the same build first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    stats = json.loads((final / "stats.json").read_text())
    stats["cache"] = {"hit": False}
    return TextData(final, Tokenizer.load(final / "tokenizer"), stats)


def _build_into(tmp: Path, preset_name: str, world_cfg: WorldConfig, vocab_size: int, unit_budget: int,
                voices: tuple[list[str], list[str]], verbose: bool) -> dict[str, Any]:
    import datasets
    from datasets import Dataset, DatasetDict

    def log(msg):
        if verbose:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    timings = {}
    t = time.perf_counter()
    world = generate_world(world_cfg)
    timings["world"] = round(time.perf_counter() - t, 2)
    log(f"world: {len(world.vocabulary)} words, {sum(map(len, world.corpus.values()))} documents")

    t = time.perf_counter()
    tok = Tokenizer.train(tokenizer_texts(world), vocab_size, unit_budget=unit_budget, charset=lexicon.CHARSET)
    tok.save(tmp / "tokenizer")
    timings["tokenizer"] = round(time.perf_counter() - t, 2)
    log(f"tokenizer: {tok}")

    t = time.perf_counter()
    plan = speech_plan(world, *voices)
    rows = task_rows(world, plan)
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        DatasetDict({s: Dataset.from_list(world.corpus[s]) for s in SPLITS}).save_to_disk(str(tmp / "corpus"))
        Dataset.from_list(world.facts).save_to_disk(str(tmp / "facts"))
        DatasetDict({s: Dataset.from_list(world.qa[s]) for s in SPLITS}).save_to_disk(str(tmp / "qa"))
        DatasetDict({s: Dataset.from_list(world.instructions[s]) for s in SPLITS}).save_to_disk(
            str(tmp / "instructions"))
        for name in EVAL_SETS:
            Dataset.from_list(getattr(world, name)).save_to_disk(str(tmp / "eval" / name))
        Dataset.from_list(plan).save_to_disk(str(tmp / "speech_plan"))
        DatasetDict({s: Dataset.from_list(rows[s], features=_row_features()) for s in SPLITS}).save_to_disk(
            str(tmp / "tasks"))
        token_stats = {}
        for task in TEXT_TASKS:
            rendered = {s: render_rows(tok, [r for r in rows[s] if r["task"] == task]) for s in ("train", "valid")}
            DatasetDict({s: Dataset.from_list(v) for s, v in rendered.items()}).save_to_disk(str(tmp / "tokens" / task))
            token_stats[task] = {s: _token_stats(v) for s, v in rendered.items()}
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
    timings["datasets"] = round(time.perf_counter() - t, 2)
    for task in SPEECH_TASKS:
        token_stats[task] = {s: {"examples": sum(r["task"] == task for r in rows[s]),
                                 "text_tokens": sum(len(tok.encode_text(r[c])) for r in rows[s] if r["task"] == task
                                                    for c in ("instruction", "prompt_text", "answer_text")
                                                    if r[c])} for s in ("train", "valid")}
    (tmp / "world.json").write_text(json.dumps(world_cfg.to_dict(), indent=1))

    t = time.perf_counter()
    padding = _padding_stats(tmp, tok, preset_name)
    timings["padding"] = round(time.perf_counter() - t, 2)
    return {
        "preset": preset_name, "world": world.stats(), "world_config": world_cfg.to_dict(),
        "tokenizer": {"vocab_size": tok.vocab_size, "special_slots": tok.text_start, "text": tok.n_text,
                      "unit_budget": unit_budget, "max_vocab_size": vocab_size},
        "tokens": token_stats,
        "tasks": {s: {t: sum(r["task"] == t for r in rows[s]) for t in TASKS} for s in SPLITS},
        "speech_plan": {"utterances": len(plan), "by_purpose": _count(plan, "purpose"),
                        "words": sum(len(r["text"].split()) for r in plan)},
        "padding": padding, "timings": timings,
    }


def _row_features():
    from datasets import Features, Value

    return Features({c: Value("string") for c in ROW_COLUMNS})


def _token_stats(rendered: list[dict]) -> dict[str, Any]:
    lengths = sorted(r["length"] for r in rendered)
    return {"examples": len(rendered), "tokens": sum(lengths),
            "loss_tokens": sum(sum(x != -100 for x in r["labels"]) for r in rendered),
            "mean_len": round(sum(lengths) / max(1, len(lengths)), 2),
            "max_len": lengths[-1] if lengths else 0}


def _count(rows: Sequence[Mapping], key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r[key]] = out.get(r[key], 0) + 1
    return out


def _padding_stats(tmp: Path, tok: Tokenizer, preset_name: str) -> dict[str, Any]:
    """Padding fraction of the text tasks at the preset's batch size and length, 100 batches each way."""
    from datasets import load_from_disk

    from minimost.data.batching import MixtureSampler

    cfg = train_preset(preset_name, "pretrain")
    pools = {t: load_from_disk(str(tmp / "tokens" / t))["train"] for t in TEXT_TASKS}
    out = {"batch_size": cfg.batch_size, "max_len": cfg.seq_len}
    for name, mixture, packing in (("text_lm_bucketed", {"text_lm": 1.0}, False),
                                   ("text_lm_packed", {"text_lm": 1.0}, True),
                                   ("text_mix_bucketed", {"text_lm": 0.5, "text_instruct": 0.5}, False)):
        s = MixtureSampler({t: pools[t] for t in mixture}, mixture, cfg.batch_size, cfg.seq_len, seed=0,
                           pad_id=tok.pad_id, packing=packing)
        for _ in range(100):
            s.next_batch()
        out[name] = round(s.padding_fraction, 4)
    return out


def summary(stats: Mapping[str, Any]) -> str:
    """A few readable lines of a build's statistics (the full set is in stats.json)."""
    w, tk, tok = stats["world"], stats["tokenizer"], stats["tokens"]
    lines = [
        f"preset {stats['preset']}: built in {stats.get('build_seconds', '?')} s {stats.get('timings', '')}",
        f"world: {w['vocabulary']} words, {w['people']} people, {w['facts']} facts; corpus docs {w['corpus_docs']}; "
        f"QA {w['qa']}; instructions {w['instructions']}",
        f"test sets: sWUGGY {w['swuggy']}, sBLIMP {w['sblimp']}, sStoryCloze {w['sstorycloze']}, "
        f"tStoryCloze {w['tstorycloze']}, spoken QA {w['spoken_qa']} (pairs/questions)",
        f"tokenizer: {tk['vocab_size']} ids = {tk['special_slots']} special + {tk['text']} text; "
        f"{tk['unit_budget']} left for units (budget {tk['max_vocab_size']})",
    ]
    for task, per in tok.items():
        tr = per["train"]
        if "tokens" in tr:
            lines.append(f"  {task:16s} train {tr['examples']:6d} examples {tr['tokens']:8d} tokens "
                         f"({tr['loss_tokens']} with loss, mean {tr['mean_len']}, max {tr['max_len']})")
        else:
            lines.append(f"  {task:16s} train {tr['examples']:6d} examples {tr['text_tokens']:8d} text tokens "
                         "(+ units, not rendered yet)")
    sp = stats["speech_plan"]
    lines.append(f"speech plan: {sp['utterances']} utterances, {sp['words']} words {sp['by_purpose']}")
    lines.append(f"padding fraction: {stats['padding']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m minimost.data.build", description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="tiny", choices=["micro", "tiny", "small", "most"])
    p.add_argument("--out", default="data/cache", help="cache folder (default: data/cache)")
    p.add_argument("--force", action="store_true", help="rebuild even if the cache has this build")
    args = p.parse_args(argv)
    data = build_text_data(args.preset, args.out, force=args.force, verbose=True)
    print(summary(data.stats))
    print(f"{'loaded from cache' if data.stats['cache']['hit'] else 'built'}: {data.path} (stats.json has everything)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
