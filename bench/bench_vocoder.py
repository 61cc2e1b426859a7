"""Unit vocoder: train it, then measure what the ASR judge hears and how fast it speaks.

Resynthesis from ground-truth units, judged by minimost's ASR judge (WER, `minimost.wer`):

    original            the espeak audio itself (the judge's own floor on these clips)
    griffin-lim of mel  the clip's true log-mel inverted by Griffin-Lim: the ceiling of any
                        mel predictor followed by Griffin-Lim
    true durations      units + true run lengths → vocoder → Griffin-Lim
    predicted durations units only → duration predictor → vocoder → Griffin-Lim

on two held-out sets, both made of sentences that neither the judge nor the vocoder trained on:

    eval-seen   held-out sentences read by TRAIN_VOICES; resynthesised in the clip's own voice,
                so mel L1/L2 against the clip and duration errors are measured here too
    eval-test   held-out sentences read by TEST_VOICES (voices the vocoder never heard: the units
                come from an unheard voice), resynthesised in the training voices in turn

plus the real-time factor of synthesis (network and Griffin-Lim separately). By default every
input is built and cached exactly as the other benches build theirs, so runs share the work:

    training corpus + unit tokenizer   bench/bench_units.py's (mini-world train sentences, one of
                                       24 voices each; UnitConfig() defaults), under --units-cache
    eval sets + ASR judge              bench/bench_judge.py's (template sentences, its split and
                                       JudgeConfig() defaults), under --judge-cache

Any of them can be given ready-made instead (--train-corpus, --units, --judge, --eval-seen,
--eval-test: saved corpora / artefact folders). Vocoder training sentences that are also
evaluation sentences are dropped before training.

    python bench/bench_vocoder.py                                  # the table in docs/vocoder.md
    python bench/bench_vocoder.py --budget 60 --train-utterances 500 --eval-sentences 40 --out /tmp/v.jsonl

Writes JSON lines (a meta line first, bench/_meta.py) to --out, bench/results/vocoder_cpu.jsonl
by default. Every WER here is through Griffin-Lim, a phase estimate: label it so when quoting.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))   # _meta.py, when run from elsewhere
from _meta import write_results  # noqa: E402

from minimost.speech.audio import SAMPLE_RATE, audio_from_hf, save_audio  # noqa: E402
from minimost.speech.corpus import build_corpus, load_corpus  # noqa: E402
from minimost.speech.synth import TEST_VOICES, TRAIN_VOICES  # noqa: E402
from minimost.speech.units import UnitConfig, UnitTokenizer, train_units  # noqa: E402
from minimost.speech.vocoder import (  # noqa: E402
    UnitVocoder,
    VocoderConfig,
    evaluate_vocoder,
    griffin_lim,
    train_vocoder,
    vocoder_mel,
)
from minimost.wer import cer, normalize_text, wer_report  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------
# Inputs (the same recipes as bench_units.py and bench_judge.py, so their caches are shared)
# --------------------------------------------------------------------------------------------

def train_corpus(args):
    """bench_units.py's training corpus: the tiny mini-world's train sentences, sentence i by TRAIN_VOICES[i % 24]."""
    if args.train_corpus:
        return load_corpus(args.train_corpus)
    from minimost.data.world import generate_world, world_config

    world = generate_world(world_config("tiny"))
    sentences = list(dict.fromkeys(r["text"] for r in world.corpus["train"]))[:args.train_sentences]
    rows = [(f"tr{i:05d}", s, TRAIN_VOICES[i % len(TRAIN_VOICES)].name) for i, s in enumerate(sentences)]
    return build_corpus(rows, Path(args.units_cache) / "corpus-train", num_workers=args.workers, progress=False)


def unit_tokenizer(args, corpus) -> UnitTokenizer:
    """bench_units.py's default phonetic tokenizer (UnitConfig() defaults, cached), or a saved one."""
    if args.units:
        return UnitTokenizer.load(args.units)
    return train_units(corpus, UnitConfig(threads=args.threads), cache_dir=Path(args.units_cache) / "units",
                       progress=not args.no_progress)


def judge_split(args) -> tuple[list[str], list[str], list[str]]:
    """bench_judge.py's sentence split: (eval-test, eval-seen, judge training sentences)."""
    from minimost.speech.judge import template_sentences

    n = args.judge_eval_sentences
    pool = template_sentences(args.judge_train_sentences + 2 * n, seed=0)
    return pool[:n], pool[n:2 * n], pool[2 * n:]


def eval_sets(args) -> dict:
    from minimost.speech.judge import judge_rows

    test, seen, _ = judge_split(args)
    cache = Path(args.judge_cache)
    sets = {
        "eval-seen": load_corpus(args.eval_seen) if args.eval_seen else build_corpus(
            judge_rows(seen, TRAIN_VOICES, prefix="eval-seen"), cache / "eval-seen", num_workers=args.workers,
            progress=False),
        "eval-test": load_corpus(args.eval_test) if args.eval_test else build_corpus(
            judge_rows(test, TEST_VOICES, prefix="eval-test"), cache / "eval-test", num_workers=args.workers,
            progress=False),
    }
    n = args.eval_sentences
    return {k: ds.select(range(min(n, len(ds)))) for k, ds in sets.items()}


def asr_judge(args):
    from minimost.speech.judge import AsrJudge, JudgeConfig, judge_rows, train_judge

    if args.judge:
        return AsrJudge.load(args.judge)
    test, seen, train = judge_split(args)
    return train_judge(judge_rows(train, TRAIN_VOICES), JudgeConfig(), args.judge_cache,
                       exclude_texts=test + seen, progress=not args.no_progress, num_workers=args.workers)


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------

def judged(judge, set_name: str, condition: str, refs: list[str], wavs: list[np.ndarray]) -> dict:
    hyps = judge.transcribe(wavs)
    rep = wer_report(refs, hyps)
    return {"bench": "vocoder", "set": set_name, "condition": condition, "utterances": len(refs),
            "ref_words": rep.ref_words, "wer_pct": round(100 * rep.wer, 2), "cer_pct": round(100 * cer(refs, hyps), 2),
            "audio_seconds": round(sum(len(w) for w in wavs) / SAMPLE_RATE, 1), "judge_id": judge.id}


def measure(voc, tok, judge, set_name: str, ds, examples: Path, n_examples: int, log) -> list[dict]:
    """Judge every condition on one evaluation set; mel and duration errors; synthesis speed."""
    cfg = voc.cfg
    refs, voices = list(ds["text"]), list(ds["voice"])
    wavs = [audio_from_hf(cell)[0] for cell in ds["audio"]]
    seqs = [tok.encode(w) for w in wavs]
    # Own voice where the vocoder knows it (eval-seen); otherwise the training voices in turn.
    speakers = [v if v in voc.speakers else voc.speakers[i % len(voc.speakers)] for i, v in enumerate(voices)]
    units = [s.units_dedup for s in seqs]
    conditions = {"original espeak": wavs,
                  "griffin-lim of true mel": [griffin_lim(vocoder_mel(w, cfg), cfg, len(w)) for w in wavs]}
    timing = {}
    true_durations = [s.durations for s in seqs]
    for name, durs in (("units + true durations", true_durations), ("units + predicted durations", None)):
        ta = time.perf_counter()
        mels = []
        for i in range(0, len(units), 16):      # the network in batches of 16 clips
            sl = slice(i, i + 16)
            mels += voc.predict_batch(units[sl], speakers[sl], None if durs is None else durs[sl])[1]
        tb = time.perf_counter()
        out = [voc.mel_to_wave(m) for m in mels]
        tc = time.perf_counter()
        conditions[name] = out
        timing[name] = (tb - ta, tc - tb, sum(len(w) for w in out) / SAMPLE_RATE)
    rows = []
    for cond, out in conditions.items():
        row = judged(judge, set_name, cond, refs, out)
        if cond in timing:
            net_s, gl_s, audio_s = timing[cond]
            row.update(rtf_network=round(net_s / audio_s, 4), rtf_griffinlim=round(gl_s / audio_s, 4),
                       rtf=round((net_s + gl_s) / audio_s, 4), x_realtime=round(audio_s / (net_s + gl_s), 1))
        rows.append(row)
        log(json.dumps(row))
        for k, w in enumerate(out[:n_examples]):
            save_audio(examples / f"{k}-{cond.replace(' ', '_')}.wav", w, SAMPLE_RATE)
    if all(v in voc.speakers for v in voices):
        m = evaluate_vocoder(voc, tok, ds)
        rows.append({"bench": "vocoder_mel", "set": set_name,
                     **{k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}})
    else:
        # Unheard voices: only the total length can be compared (their tempo is not the vocoder voice's).
        true = sum(s.num_frames for s in seqs)
        pred = sum(int(voc.predict(s.units_dedup, spk)[0].sum()) for s, spk in zip(seqs, speakers))
        rows.append({"bench": "vocoder_mel", "set": set_name, "length_ratio": round(pred / true, 4),
                     "utterances": len(seqs)})
    log(json.dumps(rows[-1]))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=480.0, help="seconds of vocoder training (wall clock)")
    ap.add_argument("--steps", type=int, default=4000, help="step limit of vocoder training")
    ap.add_argument("--config", default="{}", help='VocoderConfig overrides as JSON, e.g. \'{"d_model": 256}\'')
    ap.add_argument("--train-sentences", type=int, default=6000, help="bench_units.py's training corpus size")
    ap.add_argument("--train-utterances", type=int, default=None, help="train the vocoder on the first N only")
    ap.add_argument("--eval-sentences", type=int, default=120, help="clips scored per evaluation set")
    ap.add_argument("--judge-train-sentences", type=int, default=6000, help="bench_judge.py's --train-sentences")
    ap.add_argument("--judge-eval-sentences", type=int, default=240, help="bench_judge.py's --eval-sentences")
    ap.add_argument("--train-corpus", help="a saved corpus to train on instead of bench_units.py's")
    ap.add_argument("--units", help="a saved unit artefact folder instead of training bench_units.py's")
    ap.add_argument("--judge", help="a saved judge folder instead of training bench_judge.py's")
    ap.add_argument("--vocoder", help="a saved vocoder folder: measure it instead of training one")
    ap.add_argument("--eval-seen", help="a saved corpus: held-out sentences, training voices")
    ap.add_argument("--eval-test", help="a saved corpus: held-out sentences, held-out voices")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on the shared 2-core machine two threads per op were slower)")
    ap.add_argument("--workers", type=int, default=2, help="synthesis processes")
    ap.add_argument("--units-cache", default=str(ROOT / "data" / "cache" / "bench_units"))
    ap.add_argument("--judge-cache", default=str(ROOT / "data" / "cache" / "judge"))
    ap.add_argument("--cache", default=str(ROOT / "data" / "cache" / "bench_vocoder"), help="vocoder artefacts")
    ap.add_argument("--examples", type=int, default=3, help="clips per condition saved as WAV under --cache")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "vocoder_cpu.jsonl"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    progress = not args.no_progress
    log = lambda msg: print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    corpus = train_corpus(args)
    tok = unit_tokenizer(args, corpus)
    sets = eval_sets(args)
    judge = asr_judge(args)
    log(f"inputs ready in {time.perf_counter() - t0:.0f} s: {len(corpus)} training clips, units {tok.artefact_id}, "
        f"judge {judge.id}")

    # No evaluation sentence in the vocoder's training data.
    banned = {normalize_text(t) for ds in sets.values() for t in ds["text"]}
    keep = [i for i, t in enumerate(corpus["text"]) if normalize_text(t) not in banned]
    dropped = len(corpus) - len(keep)
    if args.train_utterances:
        keep = keep[:args.train_utterances]
    train = corpus.select(keep)

    cfg = VocoderConfig(**{"time_budget_s": args.budget, "max_steps": args.steps, "threads": args.threads,
                           **json.loads(args.config)})
    t1 = time.perf_counter()
    if args.vocoder:
        voc = UnitVocoder.load(args.vocoder, tok)
        cfg = voc.cfg
    else:
        voc = train_vocoder(train, tok, cfg, cache_dir=args.cache, progress=progress)
    info = voc.info
    results = [{"bench": "vocoder_train", "unit_artefact_id": tok.artefact_id, "train_utterances": info["utterances"],
                "train_hours": info["audio_hours"], "voices": info["voices"], "steps": info["steps"],
                "epochs": info["epochs"], "train_seconds": info["train_seconds"], "parameters": info["parameters"],
                "first_loss": info["first_loss"], "final_loss": info["final_loss"], "dropped_eval_sentences": dropped,
                "config": cfg.identity(), "call_seconds": round(time.perf_counter() - t1, 1), "threads": args.threads}]
    log(json.dumps(results[0]))
    for set_name, ds in sets.items():
        results += measure(voc, tok, judge, set_name, ds, Path(args.cache) / "examples" / set_name, args.examples, log)

    write_results(args.out, "vocoder", results,
                  notes=f"unit vocoder {voc.hash[:12]} on units {tok.artefact_id}, judge {judge.id}: "
                        f"{info['steps']} steps in {info['train_seconds'] / 60:.1f} min on {info['utterances']} clips "
                        f"({info['audio_hours']:.2f} h, {info['voices']} voices); Griffin-Lim waveforms; "
                        f"{args.eval_sentences} clips per evaluation set.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
