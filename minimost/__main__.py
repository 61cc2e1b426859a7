"""The one command-line entry point: `python -m minimost <command>` (also installed as `minimost`).

    run        the whole pipeline for a preset (synth -> speech kit -> stage 0 -> transform ->
               stage 1 -> stage 2 -> evaluation); runs the stages that exist and says which do not
    train      one training stage (pretrain | posttrain | instruct)
    eval       evaluate a run
    synth      build a preset's dataset (text, audio, units, tasks, test sets)
    bench      run a benchmark script from bench/
    check-env  is this machine ready?

Every command takes `--help`. Configs are printed before anything runs, and `--set key=value`
overrides any `ModelConfig` or `TrainConfig` field with type checking (`model.`/`train.` prefixes
disambiguate).
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
from pathlib import Path

from minimost.config import PRESETS, STAGES, ConfigError, apply_overrides, preset, train_preset

REPO_ROOT = Path(__file__).resolve().parent.parent

def _add_config_args(p: argparse.ArgumentParser, stage: bool = True) -> None:
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="model/training size (default: tiny)")
    if stage:
        p.add_argument("--stage", default="pretrain", choices=STAGES, help="training stage (default: pretrain)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set d_model=256 --set train.lr=1e-3 (repeatable)")
    p.add_argument("--print-config", action="store_true", help="print the resolved configs as JSON and exit")


def _resolve(args: argparse.Namespace):
    from minimost.pipeline import stage_model_config
    stage = getattr(args, "stage", None)
    model_cfg = preset(args.preset)
    if stage is not None:  # stage 0 is the plain MoE stand-in for DeepSeek-V2-Lite (pipeline.py)
        model_cfg = stage_model_config(model_cfg, stage)
    train_cfg = train_preset(args.preset, stage or "pretrain")
    return apply_overrides(model_cfg, train_cfg, args.overrides)


def _print_configs(model_cfg, train_cfg) -> None:
    print(json.dumps({"model": model_cfg.to_dict(), "train": train_cfg.to_dict()}, indent=2))


def _not_built(what: str, issue: str) -> int:
    print(f"minimost {what}: not built yet. It arrives with {issue}.", file=sys.stderr)
    return 2


# ------------------------------------------------------------------------------------ commands

def cmd_check_env(args: argparse.Namespace) -> int:
    from minimost.check_env import main
    return main()


def cmd_run(args: argparse.Namespace) -> int:
    model_cfg, train_cfg = _resolve(args)
    if args.print_config:
        _print_configs(model_cfg, train_cfg)
        return 0
    from minimost.pipeline import StageDataError, run_pipeline
    print(f"minimost run --preset {args.preset}")
    print(f"  model: {model_cfg.num_params() / 1e6:.2f} M parameters, "
          f"{model_cfg.num_active_params() / 1e6:.2f} M active per token")
    try:
        report = run_pipeline(args.preset, args.overrides, data_dir=args.data_dir, out_dir=args.out_dir,
                              until=args.until)
    except StageDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for stage, seconds in report["timings_s"].items():
        print(f"  [ran]       {stage}: {seconds} s")
    for stage in report["not_built"]:
        print(f"  [not run]   {stage}")
    if report["not_built"]:
        print("Stages marked [not run] are not built yet (or were left out with --until); "
              "everything else ran above.")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import os

    from minimost.checkpoint import CheckpointError
    from minimost.pipeline import StageDataError, prepare_data, stage_source, text_eval_fn
    from minimost.train import run_training

    model_cfg, train_cfg = _resolve(args)
    if args.print_config:
        _print_configs(model_cfg, train_cfg)
        return 0
    main_rank = int(os.environ.get("RANK", "0")) == 0
    if main_rank:
        _print_configs(model_cfg, train_cfg)
    source = tokenizer = eval_fn = None
    try:
        if not args.synthetic_data:
            data = prepare_data(args.preset, args.data_dir, verbose=main_rank)
            source, tokenizer = stage_source(data, model_cfg, train_cfg)
            eval_fn = text_eval_fn(data, tokenizer)
        record = run_training(model_cfg, train_cfg, preset=args.preset, resume=args.resume, source=source,
                              tokenizer=tokenizer, eval_fn=eval_fn, init_from=args.init_from)
    except (CheckpointError, StageDataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if main_rank:
        print(f"done: step {record['step']}, outputs in {record['run_dir']}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    return _not_built("eval", "the evaluation-and-ablations issue")


def cmd_synth(args: argparse.Namespace) -> int:
    model_cfg, train_cfg = _resolve(args)
    if args.print_config:
        _print_configs(model_cfg, train_cfg)
        return 0
    from minimost.data.build import build_text_data, summary
    data = build_text_data(args.preset, args.data_dir, force=args.force, verbose=True)
    print(summary(data.stats))
    print(f"text data and tokenizer: {data.path}")
    if args.text_only:
        return 0
    from minimost.speech.kit import build_speech_kit, kit_summary, render_speech
    kit = build_speech_kit(args.preset, args.data_dir, data=data)
    print(f"speech kit: {kit_summary(kit)}")
    for task, splits in render_speech(data, kit, args.data_dir).items():
        print(f"  {task:16s} " + ", ".join(f"{s} {v['examples']} examples, {v['tokens']} tokens"
                                           for s, v in splits.items()))
    print(f"speech tasks rendered with unit tokens: {data.path / 'tokens'}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    bench_dir = REPO_ROOT / "bench"
    scripts = sorted(p.stem for p in bench_dir.glob("bench_*.py")) if bench_dir.is_dir() else []
    if not scripts:
        print("no bench/ folder next to the package: benchmarks run from a source checkout "
              "(git clone, then `pip install -e .`).", file=sys.stderr)
        return 2
    names = [s.removeprefix("bench_") for s in scripts]
    if args.name is None:
        print("available benchmarks: " + ", ".join(names))
        print("run one with: python -m minimost bench NAME [its options]  (NAME --help for its options)")
        return 0
    if args.name not in names:
        print(f"unknown benchmark {args.name!r}; available: {', '.join(names)}", file=sys.stderr)
        return 2
    sys.argv = [f"bench_{args.name}.py", *args.bench_args]
    sys.path.insert(0, str(bench_dir))  # the scripts share bench/_meta.py, as when run directly
    runpy.run_path(str(bench_dir / f"bench_{args.name}.py"), run_name="__main__")
    return 0


# ------------------------------------------------------------------------------------ parser

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minimost", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Run `minimost COMMAND --help` for the options of one command.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", help="run the whole pipeline for a preset and write a report",
                       description="Run every built stage of the pipeline for a preset, reusing cached outputs, "
                                   "and say which stages are not built yet.")
    _add_config_args(p, stage=False)
    p.add_argument("--data-dir", default="data/cache", help="data cache folder (default: data/cache)")
    p.add_argument("--out-dir", default="runs", help="where run folders go (default: runs)")
    p.add_argument("--until", default="stage2", choices=["stage0", "stage1", "stage2"],
                   help="stop after this stage (default: stage2, the whole pipeline)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("train", help="train one stage",
                       description="Train one stage with the one trainer: pretrain (stage 0, text MoE), "
                                   "posttrain (stage 1, ASR/TTS/text-LM), instruct (stage 2).")
    _add_config_args(p)
    p.add_argument("--resume", metavar="PATH", help="checkpoint, checkpoints/ or run folder to resume from")
    p.add_argument("--init-from", metavar="PATH", help="checkpoint or run folder whose weights start this stage")
    p.add_argument("--data-dir", default="data/cache", help="data cache folder (default: data/cache)")
    p.add_argument("--synthetic-data", action="store_true",
                   help="train on synthetic mixed token batches instead of the mini-world (a quick check)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a run (ASR, TTS, spoken LM, spoken QA)",
                       description="Evaluate a trained run: ASR WER, TTS WER, spoken-LM accuracy, spoken QA.")
    p.add_argument("--run", metavar="DIR", help="the run folder, runs/<name>")
    p.add_argument("--tasks", default="asr,tts,slm,sqa", help="comma-separated subset of asr,tts,slm,sqa")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("synth", help="build a preset's dataset (text, audio, units, tasks)",
                       description="Generate the mini-world and render its speech for a preset, cached "
                                   "by a hash of everything that affects the output.")
    _add_config_args(p, stage=False)
    p.add_argument("--data-dir", default="data/cache", help="cache folder (default: data/cache)")
    p.add_argument("--force", action="store_true", help="rebuild even if a cached build exists")
    p.add_argument("--text-only", action="store_true", help="stop after the text data and tokenizer")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("bench", help="run a benchmark from bench/ (JSON lines out)",
                       description="Run one benchmark script from bench/; with no NAME, list them.")
    p.add_argument("name", nargs="?", help="benchmark name, e.g. moe")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="options passed to the benchmark")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("check-env", help="check dependencies, device and espeak-ng",
                       description="Print one line per dependency, the torch device, and whether espeak-ng loads; "
                                   "exit 1 if something required is missing.")
    p.set_defaults(func=cmd_check_env)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
