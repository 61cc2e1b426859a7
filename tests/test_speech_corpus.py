"""Corpus building (parallel, cached, resumable) and the real-corpus loaders, on tiny local data."""

import csv
import multiprocessing
import os
import time

import datasets
import numpy as np
import pytest

try:
    import fcntl
except ImportError:             # Windows
    fcntl = None

from minimost.speech import corpus
from minimost.speech.audio import audio_from_hf, encode_audio, resample
from minimost.speech.corpus import (
    build_corpus,
    corpus_fingerprint,
    load_asr_dataset,
    load_corpus,
    read_manifest,
)
from minimost.speech.synth import TEST_VOICES, TRAIN_VOICES, VoiceError, phonemize, synthesize

TEXTS = ["The cat sat.", "A dog ran home.", "Is it raining?", "Seven green apples.", "We left at noon.",
         "Hello there!"]
ROWS = [(f"u{i}", t, (TRAIN_VOICES + TEST_VOICES)[5 * i]) for i, t in enumerate(TEXTS)]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The six rows built with two worker processes, three shards of two."""
    out = tmp_path_factory.mktemp("corpus")
    return out, build_corpus(ROWS, out, num_workers=2, shard_size=2, progress=False)


def test_build_columns_and_audio(built):
    out, ds = built
    assert ds.num_rows == len(ROWS) and ds["id"] == [r[0] for r in ROWS]           # input order kept
    assert ds.features == corpus.corpus_features()
    assert isinstance(ds.features["audio"], datasets.Audio) and not ds.features["audio"].decode
    row = ds[2]
    assert row["text"] == TEXTS[2] and row["voice"] == ROWS[2][2].name
    wav, sr = audio_from_hf(row["audio"])                                        # FLAC, no torchcodec
    assert sr == 16000 and len(wav) / sr == pytest.approx(row["duration"], abs=1e-4)
    ref = synthesize(TEXTS[2], ROWS[2][2]).wav                                   # same as in-process
    np.testing.assert_allclose(wav, ref, atol=1 / 32768)
    assert row["phonemes"] == phonemize(TEXTS[2], ROWS[2][2].accent)
    assert len(row["phoneme_start"]) == len(row["phoneme_end"]) == len(row["phonemes"])
    assert row["words"] == ["Is", "it", "raining"] and len(row["word_start"]) == 3
    manifest = read_manifest(out)
    assert manifest["num_rows"] == 6 and manifest["total_seconds"] == pytest.approx(sum(ds["duration"]), rel=1e-5)
    assert sorted(p.name for p in out.iterdir()) == [".build.lock", "dataset"]   # shards cleaned up


def test_second_call_is_cached(built, monkeypatch):
    out, ds = built
    monkeypatch.setattr(corpus, "_synth_shard", lambda task: pytest.fail("rebuilt a cached corpus"))
    t0 = time.perf_counter()
    again = build_corpus(ROWS, out, num_workers=2, shard_size=2, progress=False)
    assert time.perf_counter() - t0 < 2.0
    assert again["audio"] == ds["audio"]
    assert read_manifest(out)["fingerprint"] == corpus_fingerprint(ROWS)
    assert load_corpus(out)["id"] == ds["id"]


def test_resume_after_interruption(built, tmp_path, monkeypatch):
    _, full = built
    real = corpus._synth_shard
    calls = []

    def crash_on_second(task):
        if len(calls) == 1:
            raise KeyboardInterrupt("simulated interruption")
        calls.append(task[0])
        return real(task)

    monkeypatch.setattr(corpus, "_synth_shard", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        build_corpus(ROWS, tmp_path, num_workers=1, shard_size=2, progress=False)
    shard_dirs = list(tmp_path.glob("shards-*"))
    assert len(shard_dirs) == 1 and len(list(shard_dirs[0].glob("*.arrow"))) == 1   # one finished shard
    assert read_manifest(tmp_path) is None

    def count(task):
        calls.append(task[0])
        return real(task)

    calls.clear()
    monkeypatch.setattr(corpus, "_synth_shard", count)
    ds = build_corpus(ROWS, tmp_path, num_workers=1, shard_size=2, progress=False)
    assert calls == [1, 2]                                   # shard 0 was not made again
    assert ds["audio"] == full["audio"] and ds["phoneme_start"] == full["phoneme_start"]


def _build_without_synthesising(out_dir, result):
    """In a forked process: build ROWS in `out_dir`, failing if this process has to synthesise any of it."""
    def refuse(task):
        raise AssertionError("synthesised a corpus that another process was building")

    corpus._synth_shard = refuse
    try:
        result.put(build_corpus(ROWS, out_dir, num_workers=1, shard_size=2, progress=False)["id"])
    except BaseException as exc:
        result.put(repr(exc))


@pytest.mark.skipif(not hasattr(os, "fork") or fcntl is None, reason="fork and fcntl.flock are POSIX-only")
def test_a_second_builder_waits_for_the_first(built, tmp_path):
    """Two processes building one corpus: the second waits on the build lock, then loads the first's."""
    _, full = built
    ctx = multiprocessing.get_context("fork")
    result = ctx.Queue()
    with corpus._build_lock(tmp_path, progress=False):            # "the first builder" holds the lock
        child = ctx.Process(target=_build_without_synthesising, args=(tmp_path, result))
        child.start()
        time.sleep(1.0)
        assert child.is_alive() and read_manifest(tmp_path) is None   # waiting, not building
        corpus._build_locked(corpus._normalise_rows(ROWS), tmp_path, corpus_fingerprint(ROWS), 1, 2, 16000,
                             False, None)
    child.join(timeout=60)
    assert result.get(timeout=5) == [r[0] for r in ROWS]              # loaded, did not synthesise
    assert load_corpus(tmp_path)["audio"] == full["audio"]


def test_synthesis_workers_sets_the_default_for_a_block(built, tmp_path, monkeypatch):
    _, full = built
    monkeypatch.setattr(corpus.multiprocessing, "get_context", lambda *a: pytest.fail("started a worker pool"))
    with corpus.synthesis_workers(1):
        ds = build_corpus(ROWS, tmp_path, shard_size=2, progress=False)      # in this process
    assert ds["audio"] == full["audio"]                                      # the same corpus as 2 workers
    assert corpus._default_workers is None                                   # restored


def test_changing_a_row_rebuilds(built, tmp_path):
    out, ds = built
    changed = [*ROWS[:-1], (ROWS[-1][0], "Goodbye there!", ROWS[-1][2])]
    assert corpus_fingerprint(changed) != corpus_fingerprint(ROWS)
    voice_changed = [*ROWS[:-1], (ROWS[-1][0], ROWS[-1][1], TRAIN_VOICES[0])]
    assert corpus_fingerprint(voice_changed) != corpus_fingerprint(ROWS)
    new = build_corpus(changed[-2:], tmp_path, num_workers=1, progress=False)
    again = build_corpus(changed[-3:], tmp_path, num_workers=1, progress=False)
    assert new["text"] == [TEXTS[-2], "Goodbye there!"] and again.num_rows == 3


def test_bad_rows_fail_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        build_corpus([("a", "x", "en-us"), ("a", "y", "en-us")], tmp_path)
    with pytest.raises(VoiceError, match="variant 'zz'"):
        build_corpus([("a", "x", "en-us+zz")], tmp_path)
    with pytest.raises(ValueError, match="non-empty text"):
        build_corpus([("a", " ", "en-us")], tmp_path)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ real corpora

@pytest.fixture(scope="module")
def clips():
    """Three (file name, text, wav) clips; the last at 22.05 kHz to exercise resampling."""
    out = []
    for i, (text, voice) in enumerate(zip(["One two three.", "Good morning.", "Blue sky."], TEST_VOICES)):
        out.append((f"c{i}.flac" if i < 2 else f"c{i}.wav", text, synthesize(text, voice).wav))
    return out


def _check_loaded(ds, clips):
    assert ds.features == corpus.corpus_features()
    assert ds["text"] == [t for _, t, _ in clips]
    for row, (_, text, wav) in zip(ds, clips):
        assert row["duration"] == pytest.approx(len(wav) / 16000, abs=2e-3)
        assert row["phonemes"] == phonemize(text) and row["phoneme_start"] == []
        got, sr = audio_from_hf(row["audio"])
        assert sr == 16000 and got.dtype == np.float32


def test_load_audiofolder(tmp_path, clips):
    with open(tmp_path / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "text", "speaker_id"])
        for name, text, wav in clips:
            rate = 22050 if name.endswith(".wav") else 16000
            (tmp_path / name).write_bytes(encode_audio(resample(wav, 16000, rate), rate, name[-4:].strip(".")))
            w.writerow([name, text, "spk1"])
    ds = load_asr_dataset(tmp_path)
    _check_loaded(ds, clips)
    assert ds["id"] == ["c0", "c1", "c2"] and ds[0]["voice"] == f"{tmp_path.name}:spk1"
    assert load_asr_dataset(tmp_path, max_rows=2).num_rows == 2


def _hf_dataset(clips):
    audio = [{"bytes": encode_audio(wav), "path": name} for name, _, wav in clips]
    ds = datasets.Dataset.from_dict({"audio": audio, "sentence": [t for _, t, _ in clips]})
    return ds.cast_column("audio", datasets.Audio(decode=False))     # no encoding: no torchcodec


def test_load_parquet(tmp_path, clips):
    path = tmp_path / "part.parquet"
    _hf_dataset(clips).to_parquet(str(path))
    ds = load_asr_dataset(path, text_column="sentence", cache_dir=str(tmp_path / "cache"))
    _check_loaded(ds, clips)
    assert ds["id"] == ["part.parquet-0000000", "part.parquet-0000001", "part.parquet-0000002"]


def test_load_save_to_disk_and_errors(tmp_path, clips):
    datasets.DatasetDict({"test": _hf_dataset(clips)}).save_to_disk(str(tmp_path / "dd"))
    _check_loaded(load_asr_dataset(tmp_path / "dd", split="test", text_column="sentence"), clips)
    with pytest.raises(KeyError, match="no column.*'text'.*text_column="):
        load_asr_dataset(tmp_path / "dd", split="test")
    bad = _hf_dataset(clips).map(lambda r: {"audio": {"bytes": b"junk" * 20, "path": "x.wav"}})
    with pytest.raises(Exception, match="row 0.*cannot be read"):
        load_asr_dataset(bad, text_column="sentence")
    mixed = datasets.concatenate_datasets([bad, _hf_dataset(clips)])
    assert load_asr_dataset(mixed, text_column="sentence", on_error="skip").num_rows == 3


def test_load_a_stream_whose_audio_feature_decodes(clips):
    # What the Hub gives when streaming: an IterableDataset with Audio(decode=True), which would
    # need torchcodec to decode. The loader switches decoding off and reads the bytes itself.
    stream = _hf_dataset(clips).cast_column("audio", datasets.Audio()).to_iterable_dataset()
    assert stream.features["audio"].decode
    _check_loaded(load_asr_dataset(stream, text_column="sentence"), clips)


@pytest.mark.network
def test_librispeech_from_the_hub():
    ds = load_asr_dataset("openslr/librispeech_asr", config="clean", split="validation", max_rows=2)
    assert ds.num_rows == 2 and ds[0]["voice"].startswith("librispeech_asr:")
    assert ds[0]["text"].isupper() and ds[0]["phonemes"]
