"""Speech corpora as Hugging Face `datasets`: synthesised ones, and real ones in the same shape.

`build_corpus(rows, out_dir)` speaks a list of `(id, text, voice)` rows with espeak-ng
(`minimost.speech.synth`) and saves the result with `Dataset.save_to_disk`:

- parallel: worker processes, each with its own espeak engine, work through shards of rows;
- resumable: each finished shard is written atomically (temp file + `os.replace`), so after an
  interruption a re-run only makes the shards that are missing;
- safe to call from two processes at once: a builder holds a lock on `out_dir` (`_build_lock`), so a
  second one waits and then loads what the first built, instead of both writing the same files;
- cached: the result is keyed by a SHA-256 fingerprint of everything that affects it (rows,
  voices, sample rate, espeak version, code versions). Same inputs → the saved dataset is
  loaded at once; change anything → it is rebuilt;
- with a progress bar (`tqdm.auto`: a widget in notebooks, text in a terminal).

`load_asr_dataset(source)` turns real speech with transcripts into the same columns: a local
`audiofolder` (audio files + `metadata.csv`), parquet files, a `save_to_disk` folder, or a Hub
dataset such as LibriSpeech (`openslr/librispeech_asr`, streamed). Real rows have phonemes
from espeak's G2P of the transcript but no timings (CTC needs only the sequence).

Columns (`corpus_features()`), one row per utterance:

    id, text, voice       strings; voice is a `Voice.name` ("en-us+m3:p50:r175"), or the speaker
                          of a real corpus ("librispeech:1272")
    audio                 FLAC bytes, 16 kHz mono 16-bit, as `Audio(decode=False)`: no FFmpeg or
                          torchcodec needed; decode with `minimost.speech.audio.audio_from_hf`
    duration              float32 seconds
    phonemes              list of IPA phonemes (pauses left out)
    phoneme_start/_end    float32 seconds per phoneme (empty for real corpora)
    words, word_start/_end the words of `text` and their times (times empty for real corpora)

Why not `datasets`' own Audio encoding: in datasets >= 4 encoding *any* audio value (even bytes)
imports torchcodec, which needs FFmpeg. Writing the Arrow tables ourselves with the same schema
keeps the whole pipeline on soundfile.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from minimost.speech.audio import SAMPLE_RATE, AudioError, audio_from_hf, encode_audio
from minimost.speech.synth import (
    ESPEAK_VOLUME,
    PEAK,
    SYNTH_VERSION,
    Synthesis,
    Voice,
    as_voice,
    espeak_version,
    phonemize,
    synthesize,
)

CORPUS_VERSION = 1              # bump when the columns or their meaning change (part of the cache key)
MANIFEST = "minimost_corpus.json"


def corpus_features(sample_rate: int = SAMPLE_RATE):
    """The `datasets.Features` of every minimost speech corpus."""
    from datasets import Audio, Features, List, Value

    seconds = List(Value("float32"))
    return Features({
        "id": Value("string"), "text": Value("string"), "voice": Value("string"),
        "audio": Audio(sampling_rate=sample_rate, decode=False),
        "duration": Value("float32"),
        "phonemes": List(Value("string")), "phoneme_start": seconds, "phoneme_end": seconds,
        "words": List(Value("string")), "word_start": seconds, "word_end": seconds,
    })


def _table(records: list[dict], sample_rate: int):
    """A pyarrow table with the corpus schema (the schema carries the HF feature metadata)."""
    import pyarrow as pa

    return pa.Table.from_pylist(records, schema=corpus_features(sample_rate).arrow_schema)


def _dataset(table):
    from datasets import Dataset

    return Dataset(table)       # wraps the Arrow table as is: no Audio encoding (see module doc)


# --------------------------------------------------------------------------------------------
# Rows and fingerprint
# --------------------------------------------------------------------------------------------

def _normalise_rows(rows: Iterable) -> list[tuple[str, str, Voice]]:
    """(id, text, Voice) tuples from tuples or dicts; ids unique, texts non-empty, voices valid."""
    out, seen, voices = [], set(), {}
    for i, row in enumerate(rows):
        if isinstance(row, dict):
            row = (row.get("id"), row.get("text"), row.get("voice"))
        try:
            rid, text, voice = row
        except (TypeError, ValueError):
            raise ValueError(f"row {i}: {row!r}; expected (id, text, voice) or a dict with those keys.") from None
        if not isinstance(rid, str) or not rid:
            raise ValueError(f"row {i}: id={rid!r}; expected a non-empty string.")
        if rid in seen:
            raise ValueError(f"row {i}: duplicate id {rid!r}; ids must be unique.")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"row {i} ({rid}): text={text!r}; expected non-empty text to speak.")
        key = voice.name if isinstance(voice, Voice) else voice
        if key not in voices:
            voices[key] = as_voice(voice)
        seen.add(rid)
        out.append((rid, text, voices[key]))
    if not out:
        raise ValueError("no rows: expected at least one (id, text, voice).")
    return out


def corpus_fingerprint(rows: Iterable, sample_rate: int = SAMPLE_RATE) -> str:
    """SHA-256 over everything that changes the corpus: rows, voices, rate, library and code versions."""
    import torchaudio

    rows = _normalise_rows(rows)
    h = hashlib.sha256()
    settings = {"corpus_version": CORPUS_VERSION, "synth_version": SYNTH_VERSION, "espeak": espeak_version(),
                "sample_rate": sample_rate, "peak": PEAK, "espeak_volume": ESPEAK_VOLUME,
                "torchaudio": torchaudio.__version__}      # its resampler shapes the samples
    h.update(json.dumps(settings, sort_keys=True).encode())
    for rid, text, voice in rows:
        h.update(json.dumps([rid, text, voice.name], ensure_ascii=False).encode() + b"\n")
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Synthesis of one shard (runs in worker processes)
# --------------------------------------------------------------------------------------------

def synthesis_record(rid: str, syn: Synthesis) -> dict:
    """One corpus row from a synthesised utterance."""
    return {
        "id": rid, "text": syn.text, "voice": syn.voice.name,
        "audio": {"bytes": encode_audio(syn.wav, syn.sample_rate, "FLAC"), "path": f"{rid}.flac"},
        "duration": syn.duration,
        "phonemes": [p.label for p in syn.phonemes],
        "phoneme_start": [p.start for p in syn.phonemes], "phoneme_end": [p.end for p in syn.phonemes],
        "words": [w.label for w in syn.words],
        "word_start": [w.start for w in syn.words], "word_end": [w.end for w in syn.words],
    }


def _write_table_atomic(path: Path, table) -> None:
    """Write an Arrow IPC stream (what `Dataset.from_file` memory-maps) via a temp file + rename."""
    import pyarrow as pa

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    os.replace(tmp, path)


def _synth_shard(task: tuple) -> tuple[int, int, float]:
    """Synthesise one shard and write it; returns (shard index, rows, seconds of audio)."""
    index, rows, sample_rate, path = task
    records = [synthesis_record(rid, synthesize(text, Voice.parse(voice), sample_rate))
               for rid, text, voice in rows]
    _write_table_atomic(Path(path), _table(records, sample_rate))
    return index, len(records), float(sum(r["duration"] for r in records))


def _worker_init() -> None:
    # One torch thread per worker: the workers are the parallelism, and on a busy 2-core machine
    # two threads per small resampling op stall each other (measured 1.8 ms vs 44 ms per clip).
    import torch

    torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------
# build_corpus
# --------------------------------------------------------------------------------------------

def read_manifest(out_dir: str | os.PathLike) -> dict | None:
    """The manifest of a built corpus (fingerprint, counts), or None if there is none."""
    path = Path(out_dir) / "dataset" / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def load_corpus(out_dir: str | os.PathLike):
    """The dataset a finished `build_corpus(..., out_dir)` saved (memory-mapped)."""
    from datasets import load_from_disk

    if read_manifest(out_dir) is None:
        raise FileNotFoundError(f"{out_dir}: no finished corpus here (expected {out_dir}/dataset/{MANIFEST}); "
                                f"run build_corpus(rows, {str(out_dir)!r}) first.")
    return load_from_disk(str(Path(out_dir) / "dataset"))


_default_workers: int | None = None      # set by `synthesis_workers`; None: the number of CPUs (at most 8)


@contextlib.contextmanager
def synthesis_workers(n: int | None):
    """Within the block, `build_corpus` calls that do not choose `num_workers` use `n` worker processes.

    For a process that owns one core of a shared machine (`pipeline.build_speech_data(jobs=2)`'s second
    process), where a pool of 2 workers makes 3 busy processes on 2 cores. On the tiny kit it made no
    wall-time difference beyond the machine's run-to-run spread (docs/speech.md); it keeps the second
    process to its core. The corpus is the same with any number of workers.
    """
    global _default_workers
    before, _default_workers = _default_workers, n
    try:
        yield
    finally:
        _default_workers = before


def build_corpus(rows: Iterable, out_dir: str | os.PathLike, *, num_workers: int | None = None,
                 shard_size: int = 64, sample_rate: int = SAMPLE_RATE, progress: bool = True,
                 start_method: str | None = None):
    """Synthesise `(id, text, voice)` rows into a `datasets.Dataset` saved under `out_dir`.

    Layout: `out_dir/dataset/` is the `save_to_disk` folder (with `minimost_corpus.json`, the
    manifest holding the fingerprint); `out_dir/shards-<fingerprint>/` holds finished shards
    while a build is under way and is removed when it completes. Returns the saved dataset,
    memory-mapped. `num_workers` defaults to the number of CPUs (at most 8; `synthesis_workers` changes
    that default for a block); 0 or 1 synthesises
    in this process. `start_method` is the multiprocessing start method ("fork" where available:
    workers start at once instead of re-importing torch).
    """
    rows = _normalise_rows(rows)
    out_dir = Path(out_dir)
    fingerprint = corpus_fingerprint(rows, sample_rate)
    manifest = read_manifest(out_dir)
    if manifest is not None and manifest.get("fingerprint") == fingerprint:
        return load_corpus(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _build_lock(out_dir, progress):
        manifest = read_manifest(out_dir)        # another process may have built it while we waited
        if manifest is not None and manifest.get("fingerprint") == fingerprint:
            return load_corpus(out_dir)
        _build_locked(rows, out_dir, fingerprint, num_workers, shard_size, sample_rate, progress, start_method)
    return load_corpus(out_dir)


@contextlib.contextmanager
def _build_lock(out_dir: Path, progress: bool):
    """An exclusive lock on `out_dir/.build.lock` for as long as one process builds the corpus there.

    Without it two processes building the same corpus (a notebook and `minimost synth` on one cache)
    share the shard folder and the temporary dataset folder, and one deletes what the other is
    writing. `fcntl.flock` is released by the kernel if the holder dies, so a crashed build never
    leaves the folder locked. Windows has no `fcntl`: there the lock is skipped.
    """
    try:
        import fcntl
    except ImportError:                          # Windows: no advisory locks here
        yield
        return
    with open(out_dir / ".build.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if progress:
                print(f"{out_dir}: another process is building this corpus; waiting for it to finish")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build_locked(rows: list, out_dir: Path, fingerprint: str, num_workers: int | None, shard_size: int,
                  sample_rate: int, progress: bool, start_method: str | None) -> None:
    """Synthesise the missing shards and assemble them (the caller holds the build lock)."""
    shard_dir = out_dir / f"shards-{fingerprint[:16]}-{shard_size}"
    for stale in out_dir.glob("shards-*"):           # partial builds of other inputs
        if stale != shard_dir:
            shutil.rmtree(stale, ignore_errors=True)
    shard_dir.mkdir(exist_ok=True)

    shards = [rows[i:i + shard_size] for i in range(0, len(rows), shard_size)]
    paths = [shard_dir / f"shard-{i:05d}-of-{len(shards):05d}.arrow" for i in range(len(shards))]
    todo = [(i, [(rid, text, v.name) for rid, text, v in shards[i]], sample_rate, str(paths[i]))
            for i in range(len(shards)) if not paths[i].exists()]
    _run_shards(todo, len(rows), len(rows) - sum(len(t[1]) for t in todo), num_workers, progress, start_method)
    _assemble(paths, out_dir, {"fingerprint": fingerprint, "num_rows": len(rows), "sample_rate": sample_rate,
                               "corpus_version": CORPUS_VERSION, "espeak": espeak_version(),
                               "voices": sorted({v.name for _, _, v in rows})}, sample_rate, progress)
    shutil.rmtree(shard_dir, ignore_errors=True)


def _run_shards(todo: list[tuple], total: int, done: int, num_workers: int | None, progress: bool,
                start_method: str | None) -> None:
    from tqdm.auto import tqdm

    if num_workers is None:
        num_workers = _default_workers if _default_workers is not None else min(os.cpu_count() or 1, 8)
    num_workers = max(1, min(num_workers, len(todo)))
    t0, seconds = time.perf_counter(), 0.0
    with tqdm(total=total, initial=done, unit="utt", desc="synthesising", disable=not progress) as bar:
        def tick(n: int, sec: float) -> None:
            nonlocal seconds
            seconds += sec
            bar.update(n)
            bar.set_postfix(audio=f"{seconds / 60:.1f} min", rtf=f"{seconds / max(time.perf_counter() - t0, 1e-9):.0f}x")

        if num_workers == 1:
            for task in todo:
                _, n, sec = _synth_shard(task)
                tick(n, sec)
            return
        if start_method is None:
            start_method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        ctx = multiprocessing.get_context(start_method)
        with ctx.Pool(num_workers, initializer=_worker_init) as pool:
            for _, n, sec in pool.imap_unordered(_synth_shard, todo):
                tick(n, sec)


@contextlib.contextmanager
def _datasets_progress(enabled: bool):
    """Silence `datasets`' own progress bars while `progress=False` (they are global switches)."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    if was_enabled and not enabled:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled and not enabled:
            datasets.enable_progress_bars()


def _assemble(paths: list[Path], out_dir: Path, manifest: dict, sample_rate: int, progress: bool) -> None:
    """Concatenate the shards into one saved dataset and put it in place of the old one."""
    from datasets import DatasetInfo, concatenate_datasets

    info = DatasetInfo(features=corpus_features(sample_rate))
    parts = [_dataset_from_file(p, info) for p in paths]
    ds = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    tmp = out_dir / f".dataset-{manifest['fingerprint'][:16]}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with _datasets_progress(progress):
        ds.save_to_disk(str(tmp))
    manifest["total_seconds"] = float(np.sum(ds["duration"], dtype=np.float64))
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    del ds, parts
    final, old = out_dir / "dataset", out_dir / ".dataset-old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)          # dataset and manifest appear together
    shutil.rmtree(old, ignore_errors=True)


def _dataset_from_file(path: Path, info):
    from datasets import Dataset

    return Dataset.from_file(str(path), info=info)


# --------------------------------------------------------------------------------------------
# Real corpora
# --------------------------------------------------------------------------------------------

def _audiofolder_rows(folder: Path, split: str) -> Iterator[dict]:
    """Rows of an `audiofolder` layout: audio files plus metadata.csv / metadata.jsonl with `file_name`.

    Read here rather than with `load_dataset("audiofolder")`: that builder encodes the audio
    column, which imports torchcodec (datasets 5.2 raises even with `Audio(decode=False)`).
    """
    for base in (folder / split, folder):
        for name in ("metadata.csv", "metadata.jsonl"):
            meta = base / name
            if not meta.is_file():
                continue
            with open(meta, newline="", encoding="utf-8") as f:
                items = (csv.DictReader(f) if name.endswith(".csv")
                         else (json.loads(line) for line in f if line.strip()))
                for item in items:
                    if "file_name" not in item:
                        raise ValueError(f"{meta}: no 'file_name' column; the audiofolder layout needs one.")
                    path = (base / item["file_name"]).resolve()
                    yield {**item, "id": item.get("id") or Path(item["file_name"]).stem,
                           "audio": {"bytes": None, "path": str(path)}}
            return
    raise FileNotFoundError(f"{folder}: no metadata.csv or metadata.jsonl (in the folder or in {split}/).")


def _open_source(source: Any, split: str, config: str | None, streaming: bool | None,
                 audio_column: str, cache_dir: str | None) -> Iterable[dict]:
    """An iterable of raw rows from any supported source (see `load_asr_dataset`)."""
    import datasets

    if isinstance(source, (datasets.Dataset, datasets.IterableDataset)):
        ds = source
    elif isinstance(source, (str, os.PathLike)) and Path(source).exists():
        path = Path(source)
        if path.is_dir() and ((path / "metadata.csv").exists() or (path / "metadata.jsonl").exists()
                              or (path / split / "metadata.csv").exists()
                              or (path / split / "metadata.jsonl").exists()):
            return _audiofolder_rows(path, split)
        if path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                ds = ds[split]
        else:
            files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
            if not files or any(f.suffix != ".parquet" for f in files):
                raise ValueError(f"{source}: not an audiofolder (metadata.csv), save_to_disk folder "
                                 f"(state.json) or parquet file/folder.")
            ds = datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train",
                                       cache_dir=cache_dir)
    elif isinstance(source, str):                    # a Hub dataset id, e.g. "openslr/librispeech_asr"
        ds = datasets.load_dataset(source, config, split=split, cache_dir=cache_dir,
                                   streaming=True if streaming is None else streaming)
    else:
        raise ValueError(f"source={source!r}: expected a path, a Hub dataset id or a datasets.Dataset.")
    # Keep the file bytes: decoding through datasets would need torchcodec + FFmpeg.
    if isinstance(ds, datasets.IterableDataset):
        return ds.decode(False)                # works even when a stream's features are unknown
    if isinstance((ds.features or {}).get(audio_column), datasets.Audio):
        ds = ds.cast_column(audio_column, datasets.Audio(decode=False))
    return ds


def iter_asr_rows(source: Any, *, split: str = "train", config: str | None = None,
                  streaming: bool | None = None, max_rows: int | None = None, text_column: str = "text",
                  audio_column: str = "audio", id_column: str = "id", speaker_column: str = "speaker_id",
                  sample_rate: int = SAMPLE_RATE, max_seconds: float | None = None,
                  g2p_accent: str | None = "en-us", on_error: str = "raise",
                  cache_dir: str | None = None) -> Iterator[dict]:
    """Corpus rows (the columns of `corpus_features`) from a real (audio, text) dataset, one at a time.

    Streams: nothing is held in memory beyond one row, so this is the way to walk a large corpus.
    `on_error="skip"` drops rows whose audio fails the checks of `load_audio` instead of raising.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error={on_error!r}; expected 'raise' or 'skip'.")
    name = Path(source).name if isinstance(source, (str, os.PathLike)) else "dataset"
    produced = 0
    for i, item in enumerate(_open_source(source, split, config, streaming, audio_column, cache_dir)):
        if max_rows is not None and produced >= max_rows:
            break
        missing = [c for c in (audio_column, text_column) if c not in item]
        if missing:
            raise KeyError(f"{source}: row {i} has no column(s) {missing}; it has {sorted(item)}. "
                           f"Pass text_column=/audio_column= to name them.")
        rid = str(item.get(id_column) or f"{name}-{i:07d}")
        try:
            wav, sr = audio_from_hf(item[audio_column], sample_rate, max_seconds=max_seconds)
        except AudioError as e:
            if on_error == "skip":
                continue
            raise AudioError(f"{source}, row {i} ({rid}): {e}") from e
        text = str(item[text_column]).strip()
        speaker = item.get(speaker_column)
        produced += 1
        yield {
            "id": rid, "text": text, "voice": f"{name}:{speaker}" if speaker is not None else name,
            "audio": {"bytes": encode_audio(wav, sr, "FLAC"), "path": f"{rid}.flac"},
            "duration": len(wav) / sr,
            "phonemes": phonemize(text, g2p_accent) if g2p_accent and text else [],
            "phoneme_start": [], "phoneme_end": [],
            "words": text.split(), "word_start": [], "word_end": [],
        }


def load_asr_dataset(source: Any, **kwargs):
    """A real (audio, text) dataset as an in-memory `datasets.Dataset` with the corpus columns.

    `source` may be:
    - a folder in the `audiofolder` layout: audio files + `metadata.csv` (`file_name,text,...`),
      at the top or in `<split>/`;
    - a folder written by `save_to_disk` (a Dataset, or a DatasetDict: `split` picks one);
    - a parquet file, or a folder of them (an `audio` column of `{bytes, path}`);
    - a Hub dataset id, streamed by default, e.g.
      `load_asr_dataset("openslr/librispeech_asr", config="clean", split="validation", max_rows=100)`
      (needs internet; LibriSpeech's `speaker_id` becomes the voice, "librispeech_asr:1272");
    - a `datasets.Dataset` / `IterableDataset` already loaded.
    Keyword arguments are those of `iter_asr_rows` (columns, `max_rows`, `sample_rate`,
    `max_seconds`, `g2p_accent`, `on_error`, `cache_dir`). Audio is resampled to 16 kHz mono
    and re-encoded as FLAC. For corpora too large for memory, iterate `iter_asr_rows` instead.
    """
    sample_rate = kwargs.get("sample_rate", SAMPLE_RATE)
    records = list(iter_asr_rows(source, **kwargs))
    if not records:
        raise ValueError(f"{source}: no usable rows.")
    return _dataset(_table(records, sample_rate))
