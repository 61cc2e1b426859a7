"""ASR judge: train it on espeak speech, then measure WER, CER and speed on held-out sentences.

The split follows the judge's rule (minimost/speech/judge.py): one pool of template sentences
is cut into three disjoint parts,

    train      spoken by TRAIN_VOICES (each sentence by `--voices-per-sentence` voices)
    eval-test  held-out sentences spoken by TEST_VOICES: unheard sentences and unheard voices
    eval-seen  held-out sentences spoken by TRAIN_VOICES: unheard sentences, known voices

and `train_judge` gets both evaluation sets as `exclude_texts`, so it checks the split itself.
Reported (one JSON line each): WER and CER on both sets, WER per test voice, the training facts
(steps, minutes, parameters, utterances, hours of audio) and the transcription real-time factor
(wall time / audio time, batched, fastest of `--repeats` passes). Corpora and the judge are
cached under `--cache`, so a second run only re-measures.

    python bench/bench_judge.py                         # ~10 min of training on 2 cores
    python bench/bench_judge.py --minutes 1 --train-sentences 1000 --out /tmp/judge.jsonl
    python bench/bench_judge.py --config '{"d_model": 128}'     # any JudgeConfig field
    python -m minimost bench judge
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))   # _meta.py, when run from elsewhere
from _meta import write_results  # noqa: E402

from minimost.speech.audio import audio_from_hf  # noqa: E402
from minimost.speech.corpus import build_corpus  # noqa: E402
from minimost.speech.judge import (  # noqa: E402
    JudgeConfig,
    judge_rows,
    template_sentences,
    train_judge,
)
from minimost.speech.synth import TEST_VOICES, TRAIN_VOICES  # noqa: E402
from minimost.wer import cer, wer_report  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def evaluate(judge, ds, repeats: int) -> tuple[list[str], float, float]:
    """(transcripts, fastest wall seconds, audio seconds) for a corpus."""
    wavs = [audio_from_hf(cell)[0] for cell in ds["audio"]]
    audio = sum(len(w) for w in wavs) / 16000
    best, hyps = float("inf"), []
    for _ in range(repeats):
        t0 = time.perf_counter()
        hyps = judge.transcribe(wavs)
        best = min(best, time.perf_counter() - t0)
    return hyps, best, audio


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-sentences", type=int, default=6000)
    p.add_argument("--voices-per-sentence", type=int, default=1)
    p.add_argument("--eval-sentences", type=int, default=240, help="per evaluation set")
    p.add_argument("--minutes", type=float, default=10.0, help="training budget (wall clock)")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=0, help="sentence pool seed")
    p.add_argument("--config", default="{}", help='JudgeConfig overrides as JSON, e.g. \'{"n_layers": 6}\'')
    p.add_argument("--repeats", type=int, default=2, help="transcription passes; the fastest is reported")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads; 1 by default: on a shared 2-core machine two threads per op "
                        "made training steps 5-15x slower (measured), 0 = torch's choice")
    p.add_argument("--workers", type=int, default=2, help="synthesis worker processes")
    p.add_argument("--cache", default=str(ROOT / "data" / "cache" / "judge"))
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "judge_cpu.jsonl"))
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)     # training and transcription
    progress = not args.no_progress

    n_eval = args.eval_sentences
    pool = template_sentences(args.train_sentences + 2 * n_eval, seed=args.seed)
    eval_test, eval_seen, train = pool[:n_eval], pool[n_eval:2 * n_eval], pool[2 * n_eval:]
    cfg = JudgeConfig(**{"max_minutes": args.minutes, **json.loads(args.config)})
    if args.max_steps:
        cfg.max_steps = args.max_steps

    cache = Path(args.cache)
    sets = {
        "held-out sentences, test voices": build_corpus(
            judge_rows(eval_test, TEST_VOICES, prefix="eval-test"), cache / "eval-test",
            num_workers=args.workers, progress=progress),
        "held-out sentences, training voices": build_corpus(
            judge_rows(eval_seen, TRAIN_VOICES, prefix="eval-seen"), cache / "eval-seen",
            num_workers=args.workers, progress=progress),
    }
    rows = judge_rows(train, TRAIN_VOICES, voices_per_sentence=args.voices_per_sentence)
    judge = train_judge(rows, cfg, cache, exclude_texts=eval_test + eval_seen, progress=progress,
                        num_workers=args.workers)
    info = judge.info
    results = [{"bench": "judge_train", "judge_id": judge.id, "params": info["params"], "steps": info["steps"],
                "train_minutes": round(info["train_seconds"] / 60, 2), "train_utterances": info["utterances"],
                "train_hours": info["audio_hours"], "first_loss": info["first_loss"],
                "final_loss": info["final_loss"],
                "model": f"d{cfg.d_model} x{cfg.n_layers} blocks, ffn x{cfg.ffn_mult}, {100 / cfg.subsample:.0f} Hz"}]
    print(json.dumps(results[0]))
    for name, ds in sets.items():
        hyps, wall, audio = evaluate(judge, ds, args.repeats)
        refs = list(ds["text"])
        rep = wer_report(refs, hyps)
        row = {"bench": "judge", "set": name, "utterances": len(refs), "ref_words": rep.ref_words,
               "wer_pct": round(100 * rep.wer, 2), "cer_pct": round(100 * cer(refs, hyps), 2),
               "rtf": round(wall / audio, 4), "x_realtime": round(audio / wall, 1)}
        results.append(row)
        print(json.dumps(row))
        if name.endswith("test voices"):
            by_voice = defaultdict(lambda: ([], []))
            for v, r, h in zip(ds["voice"], refs, hyps):
                by_voice[v][0].append(r)
                by_voice[v][1].append(h)
            for v, (r, h) in by_voice.items():
                vrow = {"bench": "judge", "set": f"test voice {v}", "utterances": len(r),
                        "ref_words": wer_report(r, h).ref_words, "wer_pct": round(100 * wer_report(r, h).wer, 2),
                        "cer_pct": round(100 * cer(r, h), 2)}
                results.append(vrow)
                print(json.dumps(vrow))
            worst = sorted((u for u in rep.utterances if u.errors), key=lambda u: -u.errors)[:5]
            for u in worst:
                print(f"  ref: {u.ref}\n  hyp: {u.hyp}")
    if args.out:
        write_results(args.out, "judge", results,
                      notes=f"ASR judge {judge.id}: {info['params'] / 1e6:.2f} M parameters, {info['steps']} steps "
                            f"in {info['train_seconds'] / 60:.1f} min on {info['utterances']} utterances "
                            f"({info['audio_hours']:.2f} h) of TRAIN_VOICES; WER/CER on held-out sentences.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
