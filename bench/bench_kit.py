"""The speech kit as `minimost synth` builds it, measured on its own build's held-out sentences.

Loads (or builds, cached) the preset's data build and speech kit, then scores the three artefacts
on ASR/TTS sentences of the speech plan that no kit artefact and no LM stage trains on:

    units    phone purity, cluster purity, PNMI and units/s before and after deduplication
             (`evaluate_units`) on the test split (held-out voices) and the valid split (training
             voices); the cross-voice unit edit rate on the first --voice-sentences test sentences,
             each read by all 8 TEST_VOICES (synthesised here, cached next to the build), against
             espeak's own phone labels as units (the oracle's floor)
    vocoder  the judge's WER and CER on the original espeak audio, on Griffin-Lim of the true mel,
             and on the vocoder's speech from ground-truth units with true and with predicted
             durations (`bench_vocoder.measure`): on --clips test sentences (held-out voices, spoken
             again in the training voices in turn) and --clips valid sentences (training voices,
             spoken again in the clip's own voice, where mel and duration errors are measured too)
    judge    the "original espeak" rows: greedy decoding, as every headline TTS figure uses
             (its lexicon-constrained view is bench_judge_decoding.py's)
    speed    real-time factors on the test clips, fastest of --repeats passes: feature + unit
             extraction one clip at a time (`encode`) and in batches (`encode_batch`, checked to give
             the same units), and the judge's greedy transcription; the vocoder's are in its rows

`--steps-scale F` builds a kit whose unit, vocoder and judge step budgets are F times the preset's
(what a cheaper or a dearer kit buys), with `minimost synth`'s two processes, and records how long
the build took. Give it a --data-dir of its own: its units re-render that build's speech tasks.

Every WER here is through Griffin-Lim (a phase estimate): label it so when quoting. The artefacts'
ids and training facts (steps, seconds, corpus size) are in the first result row.

    python bench/bench_kit.py --preset tiny --data-dir data/cache       # docs/speech.md's kit table
    python -m minimost bench kit --preset micro --clips 8 --voice-sentences 2 --out /tmp/kit.jsonl
    python bench/bench_kit.py --preset tiny --data-dir /tmp/half/cache --steps-scale 0.5 --out /tmp/half.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))   # _meta.py and bench_vocoder.py, from anywhere
from _meta import write_results  # noqa: E402
from bench_vocoder import measure  # noqa: E402

from minimost.pipeline import build_speech_data, default_jobs, prepare_data  # noqa: E402
from minimost.speech.corpus import build_corpus  # noqa: E402
from minimost.speech.kit import KitConfig, build_speech_kit, kit_config, kit_summary, speech_corpus  # noqa: E402
from minimost.speech.synth import TEST_VOICES  # noqa: E402
from minimost.speech.units import evaluate_units  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def asr_tts_clips(data, data_dir: str, split: str, limit: int | None = None):
    """The build's spoken ASR/TTS sentences of one split (the first `limit`): test is read by held-out
    voices, valid by training voices; no kit artefact and no LM stage trains on either."""
    purpose = {r["id"]: r["purpose"] for r in data.dataset("speech_plan")}
    ds = speech_corpus(data, data_dir, split, progress=False)
    keep = [i for i, rid in enumerate(ds["id"]) if purpose[rid] == "asr_tts"][:limit]
    if not keep:
        raise SystemExit(f"the {split} split of {data.path.name} has no asr_tts utterances to score.")
    return ds.select(keep)


def held_out_sets(data, data_dir: str, clips: int) -> dict:
    """The test split's ASR/TTS clips (held-out voices) and the valid split's (training voices)."""
    return {name: asr_tts_clips(data, data_dir, split, clips)
            for split, name in (("test", "test (held-out voices)"), ("valid", "valid (training voices)"))}


def voice_pairs_set(data, data_dir: str, test_set, sentences: int):
    """The first `sentences` test sentences, each read by every held-out voice: the edit rate's pairs."""
    texts = list(dict.fromkeys(test_set["text"]))[:sentences]
    rows = [(f"kv{i:04d}-{j}", t, v.name) for i, t in enumerate(texts) for j, v in enumerate(TEST_VOICES)]
    return build_corpus(rows, Path(data_dir) / "bench_kit" / f"voices-{data.path.name}-{sentences}", progress=False)


def speed_rows(kit, ds, repeats: int, log) -> list[dict]:
    """Real-time factors of unit extraction (one by one, batched) and of the judge, on one set's clips."""
    from minimost.speech.audio import SAMPLE_RATE, audio_from_hf

    wavs = [audio_from_hf(cell)[0] for cell in ds["audio"]]
    audio_s = sum(len(w) for w in wavs) / SAMPLE_RATE
    arms = {"units: features + encoder, one clip at a time (encode)": lambda: [kit.units.encode(w) for w in wavs],
            "units: features + encoder, batched (encode_batch)": lambda: kit.units.encode_batch(wavs),
            "judge: greedy transcription": lambda: kit.judge.transcribe(wavs)}
    outputs, rows = {}, []
    for _ in range(repeats):                       # interleaved, so a busy moment hits every arm alike
        for what, run in arms.items():
            t0 = time.perf_counter()
            outputs[what] = run()
            rows.append((what, time.perf_counter() - t0))
    one, batched = (outputs[w] for w in list(arms)[:2])
    if [s.frames() for s in one] != [s.frames() for s in batched]:
        raise SystemExit("encode_batch gave other units than encode on these clips; see UnitTokenizer.encode_batch.")
    out = []
    for what in arms:
        best = min(t for w, t in rows if w == what)
        out.append({"bench": "kit_speed", "what": what, "utterances": len(wavs), "audio_s": round(audio_s, 1),
                    "rtf": round(best / audio_s, 5), "x_realtime": round(audio_s / best, 1),
                    "ms_per_utt": round(1e3 * best / len(wavs), 2)})
        log(json.dumps(out[-1]))
    return out


def scaled_kit_config(preset: str, scale: float) -> KitConfig:
    """The preset's kit with every step budget times `scale` (at least 1 step each)."""
    cfg = kit_config(preset)
    steps = lambda n: max(1, round(n * scale))
    return replace(cfg, units=replace(cfg.units, max_steps=steps(cfg.units.max_steps)),
                   vocoder=replace(cfg.vocoder, max_steps=steps(cfg.vocoder.max_steps)),
                   judge=replace(cfg.judge, max_steps=steps(cfg.judge.max_steps)))


def round_floats(d: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--data-dir", default=str(ROOT / "data" / "cache"))
    p.add_argument("--clips", type=int, default=120, help="ASR/TTS clips per split for the vocoder's WERs")
    p.add_argument("--voice-sentences", type=int, default=40,
                   help="test sentences read by all 8 held-out voices for the cross-voice edit rate")
    p.add_argument("--examples", type=int, default=2, help="clips per condition saved as WAV under the cache")
    p.add_argument("--steps-scale", type=float, default=1.0,
                   help="multiply the preset's unit, vocoder and judge step budgets (use a --data-dir of its own)")
    p.add_argument("--repeats", type=int, default=3, help="passes per speed measurement; the fastest is reported")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="JSON lines (default: bench/results/kit_<preset>_cpu.jsonl)")
    args = p.parse_args(argv)
    if args.clips < 1 or args.voice_sentences < 1:
        p.error("--clips and --voice-sentences must be at least 1")
    if args.steps_scale <= 0:
        p.error(f"--steps-scale {args.steps_scale}: expected a positive factor, e.g. 0.5")
    torch.set_num_threads(args.threads)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    data = prepare_data(args.preset, args.data_dir)
    cfg = scaled_kit_config(args.preset, args.steps_scale)
    # Built as `minimost synth` builds it (two processes on 2+ cores); a kit already cached loads.
    jobs = default_jobs()
    build_speech_data(args.preset, args.data_dir, data, kit_cfg=cfg, jobs=jobs, progress=False)
    build_seconds = round(time.perf_counter() - t0, 1)
    kit = build_speech_kit(args.preset, args.data_dir, data=data, cfg=cfg, progress=False)
    sets = held_out_sets(data, args.data_dir, args.clips)
    test_set = next(iter(sets.values()))
    pairs = voice_pairs_set(data, args.data_dir, test_set, args.voice_sentences)
    training = {name: {k: info.get(k) for k in ("steps", "train_seconds", "utterances", "audio_hours", "voices")}
                for name, info in (("units", kit.units.info), ("vocoder", kit.vocoder.info), ("judge", kit.judge.info))}
    rows = [{"bench": "kit", "preset": args.preset, "build": data.path.name, **kit_summary(kit), "training": training,
             "steps_scale": args.steps_scale, "build_seconds": build_seconds, "build_jobs": jobs,
             "inputs_seconds": round(time.perf_counter() - t0, 1)}]
    log(json.dumps(rows[0]))

    for name, ds in [*sets.items(), (f"{args.voice_sentences} test sentences x 8 held-out voices", pairs)]:
        for units, tok in (("kit units", kit.units), ("oracle: espeak's phone labels", None)):
            m = evaluate_units(tok, ds, rate_hz=kit.units.rate_hz)
            m.pop("per_pair", None)
            rows.append({"bench": "kit_units", "set": name, "units": units, **round_floats(m)})
            log(json.dumps(rows[-1]))
    rows += speed_rows(kit, test_set, args.repeats, log)
    for name, ds in sets.items():
        examples = Path(args.data_dir) / "bench_kit" / "examples" / name.split(" ")[0]
        rows += measure(kit.vocoder, kit.units, kit.judge, name, ds, examples, args.examples, log)

    out = args.out or str(ROOT / "bench" / "results" / f"kit_{args.preset}_cpu.jsonl")
    write_results(out, "kit", rows,
                  notes=f"The {args.preset} speech kit (units {kit.units.artefact_id}, vocoder {kit.vocoder.hash[:12]}, "
                        f"judge {kit.judge.id}, weights {kit.judge.weights_hash}) on its build's held-out ASR/TTS sentences; Griffin-Lim waveforms; "
                        f"greedy judge; {args.threads} torch thread(s).")
    log(f"wrote {out} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
