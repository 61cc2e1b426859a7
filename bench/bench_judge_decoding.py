"""The speech kit's judge, greedy vs lexicon-constrained decoding, on its build's held-out sentences.

Loads (or builds) the preset's speech kit and data build, then transcribes the ASR/TTS sentences of
the speech plan that no kit artefact and no LM stage trains on:

    test   held-out sentences spoken by TEST_VOICES (the TTS evaluation's sentences)
    valid  held-out sentences spoken by TRAIN_VOICES

once greedily (the judge's default, and what every headline TTS figure uses) and once per `--beams`
width with `AsrJudge.transcribe(..., lexicon=...)`, the lexicon being every word of the build's text
corpus (`minimost.speech.judge.Lexicon`). One JSON line per (split, decoder): WER, its S/D/I, CER,
words the lexicon cannot write, and the decoding real-time factor (fastest of `--repeats` passes,
the judge's forward pass included).

    python bench/bench_judge_decoding.py --preset tiny --data-dir data/cache
    python -m minimost bench judge_decoding --preset micro
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))   # _meta.py, when run from elsewhere
from _meta import write_results  # noqa: E402
from bench_kit import asr_tts_clips  # noqa: E402

from minimost.pipeline import prepare_data  # noqa: E402
from minimost.speech.audio import audio_from_hf  # noqa: E402
from minimost.speech.judge import Lexicon  # noqa: E402
from minimost.speech.kit import build_kit_judge, kit_config  # noqa: E402
from minimost.wer import cer, wer_report  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--data-dir", default=str(ROOT / "data" / "cache"))
    p.add_argument("--beams", default="8,32", help="comma-separated beam widths for the lexicon decoder")
    p.add_argument("--repeats", type=int, default=2, help="passes per decoder; the fastest is reported")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="JSON lines (default: bench/results/judge_decoding_cpu.jsonl)")
    args = p.parse_args(argv)
    beams = [int(b) for b in args.beams.split(",") if b]
    if not beams or min(beams) < 1:
        p.error(f"--beams {args.beams!r}: expected positive integers, e.g. 8,32")
    torch.set_num_threads(args.threads)

    data = prepare_data(args.preset, args.data_dir)
    judge = build_kit_judge(data, args.data_dir, kit_config(args.preset))
    corpus = data.dataset("corpus")
    lexicon = Lexicon(t for split in corpus for t in corpus[split]["text"])
    rows = []
    for split, voices in (("test", "held-out voices"), ("valid", "training voices")):
        ds = asr_tts_clips(data, args.data_dir, split)
        wavs = [audio_from_hf(cell)[0] for cell in ds["audio"]]
        refs, audio_s = list(ds["text"]), sum(len(w) for w in wavs) / 16000
        for decoder in ["greedy", *[f"lexicon, beam {b}" for b in beams]]:
            beam = int(decoder.rsplit(" ", 1)[1]) if decoder != "greedy" else 0
            best, hyps = float("inf"), []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                hyps = judge.transcribe(wavs, lexicon=lexicon if beam else None, beam=max(beam, 1))
                best = min(best, time.perf_counter() - t0)
            report = wer_report(refs, hyps)
            row = {"bench": "judge_decoding", "preset": args.preset, "judge": judge.id, "split": split,
                   "voices": voices, "decoder": decoder, "utterances": len(refs), "words": report.ref_words,
                   "wer": round(report.wer, 4), "sub": report.substitutions, "del": report.deletions, "ins": report.insertions,
                   "cer": round(cer(refs, hyps), 4), "lexicon_words": len(lexicon),
                   "oov_words": lexicon.oov(refs), "rtf": round(best / audio_s, 5)}
            rows.append(row)
            print(row, flush=True)
    out = args.out or str(ROOT / "bench" / "results" / "judge_decoding_cpu.jsonl")
    write_results(out, "judge_decoding", rows,
                  notes=f"The {args.preset} kit's judge on its build's held-out ASR/TTS sentences; "
                        f"{args.threads} torch thread(s).")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
