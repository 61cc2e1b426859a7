"""The one command-line entry point: `python -m minimost <command>` (also installed as `minimost`).

    run        the whole pipeline for a preset (synth -> speech kit -> stage 0 -> transform ->
               stage 1 -> stage 2 -> evaluation); runs the stages that exist and says which do not
    train      one training stage (pretrain | posttrain | instruct)
    eval       evaluate a run
    ablate     the MAMoE ablation grid: arms x seeds at equal parameters, data and steps
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
import time
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


# ------------------------------------------------------------------------------------ commands

def cmd_check_env(args: argparse.Namespace) -> int:
    from minimost.check_env import main
    return main()


def cmd_run(args: argparse.Namespace) -> int:
    model_cfg, train_cfg = _resolve(args)
    if args.print_config:
        _print_configs(model_cfg, train_cfg)
        return 0
    from minimost.background import JobError
    from minimost.pipeline import StageDataError, run_pipeline
    print(f"minimost run --preset {args.preset}")
    print(f"  model: {model_cfg.num_params() / 1e6:.2f} M parameters, "
          f"{model_cfg.num_active_params() / 1e6:.2f} M active per token")
    try:
        report = run_pipeline(args.preset, args.overrides, data_dir=args.data_dir, out_dir=args.out_dir,
                              until=args.until, evaluate=not args.no_eval, overlap_kit=not args.no_overlap_kit)
    except (StageDataError, JobError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for stage, seconds in report["timings_s"].items():
        print(f"  [ran]       {stage}: {seconds} s")
    for key, value in report.get("headline", {}).items():
        print(f"  {key:18s} {value}")
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
    from minimost.evaluate import EVAL_TASKS, EvalConfig, EvalError, evaluate_run, render_eval

    if args.across:
        from minimost.evaluate import render_summary, summarise_runs
        try:
            print(render_summary(summarise_runs(args.across)))
        except EvalError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in EVAL_TASKS]
    if unknown or not tasks:
        print(f"error: unknown task(s) {unknown or tasks}; choose from {','.join(EVAL_TASKS)}", file=sys.stderr)
        return 2
    if args.run is None or not Path(args.run).is_dir():
        print(f"error: --run {args.run!r} is not a folder; pass a run folder written by `minimost run` "
              "(runs/<preset>-<hash>).", file=sys.stderr)
        return 2
    limits = {k: getattr(args, k) for k in ("max_asr", "max_tts", "max_slm", "max_sqa") if getattr(args, k) is not None}
    try:
        result = evaluate_run(args.run, tasks, EvalConfig(**limits, audio_input=args.audio_input),
                              data_dir=args.data_dir, stage=args.stage)
    except EvalError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from minimost.pipeline import refresh_report
    print(render_eval(result))
    print(f"written: {Path(args.run) / 'eval.json'} and {refresh_report(args.run)}")
    if args.publish:
        from minimost.evaluate import publish
        print(f"published: {publish(args.run, REPO_ROOT, args.note)} and the README's results table")
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    import importlib

    from minimost.ablate import loss_metrics, resolve_arm, run_ablation
    from minimost.pipeline import StageDataError, _has_module, prepare_data

    for module in args.imports:  # modules that register routing variants (@register_routing)
        importlib.import_module(module)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    for arm in arms:  # unknown names fail before any data or training
        resolve_arm(arm)
    steps = {k: v for k, v in (("stage0", args.stage0_steps), ("stage1", args.stage1_steps),
                               ("stage2", args.stage2_steps)) if v is not None}
    if args.print_config:
        from minimost.ablate import ablation_configs
        base, stage0, trains = ablation_configs(args.preset, args.overrides, steps)
        print(json.dumps({"stage0_model": stage0.to_dict(), "model": base.to_dict(),
                          "train": {k: v.to_dict() for k, v in trains.items()}}, indent=2))
        return 0
    data = prepare_data(args.preset, args.data_dir, verbose=True)
    kit = None
    continuous = any(resolve_arm(a).continuous for a in arms)   # needs the kit's encoder states (features)
    if args.metrics == "eval" or continuous or not (data.path / "tokenizer_units").exists():
        from minimost.pipeline import build_speech_data, default_jobs
        kit = build_speech_data(args.preset, args.data_dir, data, continuous=continuous, jobs=default_jobs())
    metrics_fn = None
    if args.metrics == "loss" or not _has_module("minimost.evaluate"):
        if args.metrics == "eval":
            print("note: minimost.evaluate is not available; measuring teacher-forced losses instead "
                  "(--metrics loss)", file=sys.stderr)
        metrics_fn = loss_metrics
    out_dir = args.out_dir or f"runs/ablate-{args.preset}"
    try:
        result = run_ablation(args.preset, arms, seeds, data=data, out_dir=out_dir, overrides=args.overrides,
                              steps=steps, stage2=args.stage2, metrics_fn=metrics_fn, kit=kit,
                              cache_dir=args.data_dir)
    except StageDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for line in result["verdicts"]:
        print(line)
    for line in result.get("verdicts_continuous", []):
        print("continuous vs mamoe: " + line)
    return 0


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
    from minimost.background import JobError
    from minimost.pipeline import build_speech_data, default_jobs
    from minimost.speech.kit import kit_summary, speech_task_stats
    jobs = args.jobs or default_jobs()
    t0, wall0 = time.perf_counter(), time.time()

    def dataset_ready() -> None:
        # Called once the speech tasks are on disk (with 2 processes, once both are done): the time
        # printed is when the last file of the dataset was written, speech_stats.json.
        for task, splits in speech_task_stats(data).items():
            print(f"  {task:16s} " + ", ".join(f"{s} {v['examples']} examples, {v['tokens']} tokens"
                                               for s, v in splits.items()))
        stats_file = data.path / "speech_stats.json"      # written by whichever process rendered
        speech = json.loads(stats_file.read_text())
        print(f"speech: {speech['utterances']} utterances, {speech['audio_hours']} h of audio, "
              f"{speech['units_per_s_dedup']} units/s after deduplication (details: {stats_file})")
        done = stats_file.stat().st_mtime - wall0
        when = f"complete {done:.1f} s after the text build" if done >= 0 else "cached"
        print(f"dataset (text, audio, units, tasks, test sets): {data.path}, {when}")

    try:
        kit = build_speech_data(args.preset, args.data_dir, data, jobs=jobs, on_lm_data=dataset_ready)
    except JobError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"speech kit: {kit_summary(kit)} ({time.perf_counter() - t0:.1f} s with {jobs} process{'es' * (jobs > 1)})")
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
                                   "evaluate the last one and write a report.")
    _add_config_args(p, stage=False)
    p.add_argument("--data-dir", default="data/cache", help="data cache folder (default: data/cache)")
    p.add_argument("--out-dir", default="runs", help="where run folders go (default: runs)")
    p.add_argument("--until", default="stage2", choices=["stage0", "stage1", "stage2"],
                   help="stop after this stage (default: stage2, the whole pipeline)")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation of the last stage")
    p.add_argument("--no-overlap-kit", action="store_true",
                   help="build the speech kit after stage 0 instead of beside the training in a second process "
                        "(the default when a core is spare; the results are the same)")
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
    p.add_argument("--tasks", default="asr,tts,slm,sqa,text",
                   help="comma-separated subset of asr,tts,slm,sqa,text (default: all)")
    p.add_argument("--stage", choices=["stage0", "stage1", "stage2"], help="stage to evaluate (default: the last)")
    p.add_argument("--audio-input", default="auto", choices=["auto", "units", "continuous"],
                   help="how ASR and spoken-QA prompts reach the model: unit tokens, or encoder states through the "
                        "projector (MoST-C); auto (default): the path the stage was trained with")
    p.add_argument("--data-dir", help="data cache folder (default: the one the run used)")
    p.add_argument("--publish", action="store_true",
                   help="also write docs/results/<preset>.json and regenerate the README's results table")
    p.add_argument("--note", default="", help="with --publish: one sentence shown under the table")
    p.add_argument("--across", nargs="+", metavar="DIR",
                   help="evaluate nothing: summarise the eval.json of these run folders (e.g. the same command "
                        "with other train.seed values) as mean ± std per metric")
    for name, what in (("asr", "utterances per split"), ("tts", "sentences"), ("slm", "pairs per set"),
                       ("sqa", "questions")):
        p.add_argument(f"--max-{name}", type=int, help=f"evaluate at most this many {what}")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("ablate", help="the MAMoE ablation grid (arms x seeds), with a report and plots",
                       description="Train every arm x seed at equal parameters, data and steps after one shared "
                                   "stage 0 per seed, and write ablation.json, ablation.md and plots "
                                   "(docs/ablations.md). Finished cells are skipped on a rerun.")
    _add_config_args(p, stage=False)
    p.add_argument("--arms", default="mamoe,vanilla,no_shared,mask_before_softmax,renormalise,dense_init",
                   help="comma-separated arms: built-in ones or registered routing variants (default: all built-in)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    p.add_argument("--stage0-steps", type=int, help="steps of stage 0 (default: the preset's)")
    p.add_argument("--stage1-steps", type=int, help="steps of stage 1 (default: the preset's)")
    p.add_argument("--stage2-steps", type=int, help="steps of stage 2, with --stage2 (default: the preset's)")
    p.add_argument("--stage2", action="store_true", help="also run stage 2 (instruction tuning) in every cell")
    p.add_argument("--metrics", default="eval", choices=["eval", "loss"],
                   help="eval: minimost.evaluate headline metrics; loss: teacher-forced validation losses")
    p.add_argument("--data-dir", default="data/cache", help="data cache folder (default: data/cache)")
    p.add_argument("--out-dir", help="output folder (default: runs/ablate-<preset>)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import a module first, e.g. one that registers a routing variant (repeatable)")
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser("synth", help="build a preset's dataset (text, audio, units, tasks)",
                       description="Generate the mini-world and render its speech for a preset, cached "
                                   "by a hash of everything that affects the output.")
    _add_config_args(p, stage=False)
    p.add_argument("--data-dir", default="data/cache", help="cache folder (default: data/cache)")
    p.add_argument("--force", action="store_true", help="rebuild even if a cached build exists")
    p.add_argument("--text-only", action="store_true", help="stop after the text data and tokenizer")
    p.add_argument("--jobs", type=int, choices=[1, 2], default=None,
                   help="processes for the speech kit: 2 trains the judge and renders the speech tasks beside "
                        "the unit encoder and the vocoder (default: 2 on a machine with 2 or more cores)")
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
