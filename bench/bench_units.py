"""Speech units on held-out voices: every unit type trained, scored and timed on this machine.

Builds (cached) three espeak corpora from the tiny mini-world's sentences (`minimost.data.world`):

    train      N training sentences, sentence i read by TRAIN_VOICES[i % 24]
    held_out   M test sentences, each read by all 8 TEST_VOICES (voices never seen in training)
    seen       the same M test sentences read by 4 training voices (the gap to held-out voices)

then trains every unit type with `train_units` (cached under --cache) and scores it with
`evaluate_units`: phone purity, cluster purity, PNMI, units per second before and after
deduplication, and the cross-voice unit edit rate (pairs of voices reading the same sentence).
An "oracle" row scores espeak's own phone labels as units (the floor of the edit rate).

    python bench/bench_units.py                       # the table in docs/units.md
    python bench/bench_units.py --budget 60 --train-sentences 1000 --out /tmp/u.jsonl   # quick look

Writes JSON lines (a meta line first, bench/_meta.py) to --out, bench/results/units_cpu.jsonl by
default. Each phonetic training stops at --budget seconds of wall time or its step limit.
Corpora and unit artefacts are cached under --cache: a second run only evaluates, and the
`train_seconds` and `steps` it reports are those of the original training (the artefact's info).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))   # _meta.py, when run from elsewhere
from _meta import write_results  # noqa: E402

from minimost.speech.corpus import build_corpus  # noqa: E402
from minimost.speech.synth import TEST_VOICES, TRAIN_VOICES  # noqa: E402
from minimost.speech.units import UnitConfig, UnitTokenizer, evaluate_units, train_units  # noqa: E402

SEEN_VOICES = (TRAIN_VOICES[0], TRAIN_VOICES[7], TRAIN_VOICES[14], TRAIN_VOICES[21])   # one per accent

# name -> UnitConfig overrides. The first three are the table of docs/units.md.
UNIT_TYPES = {
    "phonetic": {},
    "kmeans_mel": {"kind": "kmeans_mel"},
    "kmeans_mfcc": {"kind": "kmeans_mfcc"},
    # what the extra codebook ids could be used for (docs/units.md, "The extra ids")
    "phonetic_pos": {"classes": "phone_pos"},
    "phonetic_stress": {"classes": "phone_stress"},
    # CTC on phoneme sequences only (what a real corpus without timings allows)
    "phonetic_ctc": {"objective": "ctc"},
    "phonetic_50hz": {"rate_hz": 50},
}


def sentences(n_train: int, n_test: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Distinct training and test sentences of the tiny mini-world, from its own train/test split.

    Stories are split into their sentences (a whole story is ~15 s of speech); a test sentence
    that also occurs in training is dropped. Both lists are shuffled with a fixed seed.
    """
    import random

    from minimost.data.world import generate_world, split_sentences, world_config

    world = generate_world(world_config("tiny"))
    def distinct(rows, exclude=()):
        out = list(dict.fromkeys(s for r in rows for s in split_sentences(r["text"]) if s not in exclude))
        random.Random(seed).shuffle(out)
        return out
    train = distinct(world.corpus["train"])
    test = distinct(world.corpus["test"], set(train))
    if len(train) < n_train or len(test) < n_test:
        raise SystemExit(f"the world has {len(train)} training and {len(test)} test sentences; "
                         f"asked for {n_train} and {n_test}.")
    return train[:n_train], test[:n_test]


def corpora(n_train: int, n_test: int, cache: Path, workers: int) -> dict:
    train, test = sentences(n_train, n_test)
    rows = {
        "train": [(f"tr{i:05d}", s, TRAIN_VOICES[i % len(TRAIN_VOICES)].name) for i, s in enumerate(train)],
        "held_out": [(f"ho{i:04d}-{j}", s, v.name) for i, s in enumerate(test) for j, v in enumerate(TEST_VOICES)],
        "seen": [(f"se{i:04d}-{j}", s, v.name) for i, s in enumerate(test) for j, v in enumerate(SEEN_VOICES)],
    }
    out = {}
    for name, r in rows.items():
        t0 = time.perf_counter()
        out[name] = build_corpus(r, cache / f"corpus-{name}", num_workers=workers, progress=False)
        print(f"corpus {name}: {len(r)} utterances, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--types", default="phonetic,kmeans_mel,kmeans_mfcc",
                    help=f"comma-separated, from {', '.join(UNIT_TYPES)}")
    ap.add_argument("--train-sentences", type=int, default=6000)
    ap.add_argument("--test-sentences", type=int, default=120)
    ap.add_argument("--budget", type=float, default=540.0, help="seconds of training per phonetic encoder")
    ap.add_argument("--steps", type=int, default=3000, help="step limit per phonetic encoder")
    ap.add_argument("--codebook", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 was 4x faster than 2 on the shared 2-core machine)")
    ap.add_argument("--workers", type=int, default=2, help="synthesis processes")
    ap.add_argument("--cache", default="data/cache/bench_units")
    ap.add_argument("--no-seen", action="store_true", help="skip scoring on seen voices")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "units_cpu.jsonl"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    data = corpora(args.train_sentences, args.test_sentences, cache, args.workers)
    train = data["train"]
    train_hours = float(sum(train["duration"])) / 3600
    results = []

    def record(unit_type: str, tok, cfg: dict) -> None:
        info = tok.info if tok is not None else {}
        for split in ("held_out", "seen") if not args.no_seen else ("held_out",):
            t0 = time.perf_counter()
            m = evaluate_units(tok, data[split])
            row = {"bench": "units", "unit_type": unit_type, "split": split, "artefact_id":
                   tok.artefact_id if tok is not None else "oracle", "config": cfg,
                   "codebook_size": args.codebook, "classes_used": len(tok.labels) if tok and tok.labels else None,
                   **{k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()},
                   "train_utterances": len(train), "train_hours": round(train_hours, 2),
                   "train_voices": len(TRAIN_VOICES), "train_seconds": info.get("train_seconds"),
                   "steps": info.get("steps"), "epochs": info.get("epochs"), "parameters": info.get("parameters"),
                   "eval_seconds": round(time.perf_counter() - t0, 1), "threads": args.threads}
            results.append(row)
            print(json.dumps(row), flush=True)

    notes = (f"{args.train_sentences} training sentences x 1 of 24 voices; {args.test_sentences} test "
             f"sentences x 8 held-out (and 4 seen) voices; K={args.codebook}")
    record("oracle", None, {})
    for name in args.types.split(","):
        overrides = {"codebook_size": args.codebook, "time_budget_s": args.budget, "max_steps": args.steps,
                     "threads": args.threads, **UNIT_TYPES[name]}
        tok = train_units(train, UnitConfig(**overrides), cache_dir=cache / "units", progress=False)
        record(name, tok, UNIT_TYPES[name])
        if name == "phonetic":
            # The same weights decoded by plain argmax: what the switch penalty buys.
            plain = UnitTokenizer(replace(tok.cfg, switch_penalty=0.0), tok.labels, tok.tensors, tok.info)
            record("phonetic_argmax", plain, {"switch_penalty": 0.0})
        write_results(args.out, "units", results, notes=notes)      # after every type: a crash keeps the rest


if __name__ == "__main__":
    main()
