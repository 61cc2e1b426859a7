"""Glue between the data build, the trainer and the CLI: what each stage trains on and how it is checked.

    data = prepare_data("tiny")                         # mini-world text + tokenizer (cached)
    source, tok = stage_source(data, model_cfg, train_cfg)   # the stage's mixture sampler
    eval_fn = text_eval_fn(data, tok)                   # validation loss / perplexity on text

Stage 0 (`pretrain`) trains on the text-LM task only; stages 1 and 2 need the speech tasks, which
exist once the speech kit's units have rendered them (`minimost synth`). Asking for a stage whose
data is missing is an error that says what to run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import platform
import time
from pathlib import Path

import torch

from minimost.check_env import describe_machine
from minimost.checkpoint import latest_checkpoint, write_text_atomic
from minimost.config import ModelConfig, TrainConfig, apply_overrides, train_preset
from minimost.config import preset as model_preset
from minimost.data.batching import eval_batches
from minimost.data.build import build_text_data
from minimost.train import run_training


def stage_model_config(model_cfg: ModelConfig, stage: str) -> ModelConfig:
    """The model a stage starts from. Presets describe the MoST model (MAMoE on); stage 0 is the plain
    text MoE that stands in for DeepSeek-V2-Lite, so it routes top-k over *all* experts. The MoST
    transformation (`minimost.convert.most_transform`) switches modality routing on afterwards.
    `--set modality_routing=true` after this still wins, for experiments.
    """
    if stage == "pretrain":
        return dataclasses.replace(model_cfg, modality_routing=False, text_experts=None, audio_experts=None)
    return model_cfg


class StageDataError(RuntimeError):
    """The data a stage needs has not been built yet; the message says how to build it."""


def prepare_data(preset: str, data_dir: str = "data/cache", verbose: bool = False):
    """The preset's text data and tokenizer (built on first use, then loaded from the cache)."""
    return build_text_data(preset, data_dir, verbose=verbose)


def stage_tokenizer(data, train_cfg: TrainConfig):
    """Stage 0 uses the text-only tokenizer; later stages the one extended with unit tokens."""
    if train_cfg.stage == "pretrain":
        return data.tokenizer
    if not (data.path / "tokenizer_units").exists():
        raise StageDataError(f"stage {train_cfg.stage!r} trains on speech tasks, but this build has no unit "
                             f"tokens yet ({data.path}); render the speech data first with "
                             "`python -m minimost synth --preset ...` once the speech units exist.")
    return data.unit_tokenizer()


def stage_source(data, model_cfg: ModelConfig, train_cfg: TrainConfig, split: str = "train"):
    """(MixtureSampler, tokenizer) for one stage, checked against the model's vocabulary."""
    tok = stage_tokenizer(data, train_cfg)
    if tok.vocab_size > model_cfg.vocab_size:
        raise StageDataError(f"the tokenizer has {tok.vocab_size} ids but the model's vocab_size is "
                             f"{model_cfg.vocab_size}; raise vocab_size (--set vocab_size=...) or shrink the "
                             "tokenizer.")
    if train_cfg.audio_input == "continuous" and train_cfg.stage != "pretrain":  # MoST-C (docs/continuous.md)
        from minimost.continuous import continuous_source
        return continuous_source(data, tok, model_cfg, train_cfg, split), tok
    pools = data.token_pools(split)
    missing = sorted(t for t, w in train_cfg.mixture.items() if w > 0 and t not in pools)
    if missing:
        raise StageDataError(f"the {train_cfg.stage} mixture {train_cfg.mixture} needs task(s) {missing}, "
                             f"which are not rendered in {data.path} (rendered: {sorted(pools)}). Speech "
                             "tasks appear once `python -m minimost synth` has rendered speech units.")
    # Packing with document-aware attention: short mini-world documents would otherwise waste most of
    # each row on padding (docs/data.md measures 4 % padding bucketed, 0.3 % packed).
    sampler = data.sampler(train_cfg.mixture, train_cfg.batch_size, min(train_cfg.seq_len, model_cfg.max_seq_len),
                           seed=train_cfg.seed, split=split, packing=True)
    return sampler, tok


def text_eval_fn(data, tok, batch_size: int = 32, max_batches: int = 20):
    """An `eval_fn(model, step)` giving the validation loss and perplexity of the text-LM task."""
    examples = data.token_pools("valid")["text_lm"]

    @torch.no_grad()
    def evaluate(model, step: int) -> dict:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        total, count = 0.0, 0
        for i, batch in enumerate(eval_batches(examples, batch_size, tok.pad_id)):
            if i >= max_batches:
                break
            out = model(batch["input_ids"].to(device), attention_mask_BT=batch["attention_mask"].to(device),
                        labels_BT=batch["labels"].to(device), check_inputs=False)
            n = int((batch["labels"][:, 1:] != -100).sum())
            total, count = total + float(out.lm_loss) * n, count + n
        model.train(was_training)
        loss = total / max(count, 1)
        return {"valid_text_loss": round(loss, 4), "valid_text_ppl": round(math.exp(min(loss, 50.0)), 2)}

    return evaluate


# --------------------------------------------------------------------------------------------
# `minimost run`: every stage in order, skipping finished ones and resuming interrupted ones
# --------------------------------------------------------------------------------------------

def run_fingerprint(model_cfg: ModelConfig, train_cfgs: dict, data_key: str) -> str:
    """A short hash of everything that decides a run's outputs (configs of every stage and the data).

    Only fields that differ from their defaults are hashed, so adding a config field (whose default
    keeps the old behaviour) does not rename existing runs.
    """
    blob = json.dumps({"model": _non_default(model_cfg),
                       "train": {k: _non_default(v) for k, v in train_cfgs.items()}, "data": data_key},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def _non_default(cfg) -> dict:
    default = type(cfg)().to_dict() if type(cfg) is TrainConfig else None
    values = cfg.to_dict()
    if default is None:   # ModelConfig has no all-default instance worth comparing to: use field defaults
        default = {f.name: f.default for f in dataclasses.fields(cfg) if f.default is not dataclasses.MISSING}
        default = json.loads(json.dumps(default))
    return {k: v for k, v in values.items() if k not in default or default[k] != v}


def stage_status(run_dir, steps: int) -> tuple[str, object]:
    """("done" | "partial" | "new", latest checkpoint or None) for one stage's run folder."""

    latest = latest_checkpoint(Path(run_dir) / "checkpoints")
    if latest is None:
        return "new", None
    step = int(latest.name.split("_")[-1])
    return ("done" if step >= steps else "partial"), latest


def train_stage(model_cfg: ModelConfig, train_cfg: TrainConfig, preset: str, run_dir, source, tokenizer,
                eval_fn=None, init_from=None, progress: bool = True) -> dict:
    """Train one stage into `run_dir` unless it is finished; resume it when it was interrupted."""

    status, latest = stage_status(run_dir, train_cfg.steps)
    if status == "done":
        print(f"  {train_cfg.stage}: finished earlier ({latest}); skipped")
        return {"step": train_cfg.steps, "run_dir": str(run_dir), "skipped": True}
    run_dir = Path(run_dir)
    cfg = dataclasses.replace(train_cfg, out_dir=str(run_dir.parent), run_name=run_dir.name)
    if status == "partial":
        print(f"  {train_cfg.stage}: resuming from {latest}")
    return run_training(model_cfg, cfg, preset=preset, resume=latest, source=source, tokenizer=tokenizer,
                        eval_fn=eval_fn, init_from=None if status == "partial" else init_from, progress=progress)


def build_speech_data(preset: str, data_dir, data, kit_cfg=None, continuous: bool = False, progress: bool = True,
                      on_lm_data=None, jobs: int = 1):
    """The speech kit (units, vocoder, judge), the speech tasks rendered with its units and, for MoST-C,
    the encoder states: everything stages 1-2 need besides the text build. Cached at every step.

    `jobs=1`: one process, in this order: the unit encoder, the speech tasks (the LM's speech data
    needs only the units; `on_lm_data()` is called once they are on disk, which is how the second
    process of `run_pipeline` lets stage 1 start), then the vocoder and the judge.
    `jobs=2` (what `minimost synth` uses on a machine with 2 cores): two chains of about equal length.
    This process synthesises the kit's corpus (2 workers: everything else waits for it), then trains
    the unit encoder and the vocoder. A second process then synthesises the valid/test speech and the
    judge's corpus, trains the judge and, once the units are on disk, renders the speech tasks (the
    dataset is complete then; `on_lm_data()` is called here once both processes are done). Every part
    trains on a step budget and on one torch thread, so the artefacts are those of `jobs=1` on one
    thread; only the wall time differs.
    """
    from minimost.speech.kit import build_speech_kit, build_unit_kit, kit_config
    if jobs not in (1, 2):
        raise ValueError(f"jobs={jobs}; expected 1 (one process) or 2 (the judge and the speech tasks in a second).")
    if jobs == 1:
        unit_kit = build_unit_kit(preset, data_dir, data=data, cfg=kit_cfg, progress=progress)
        _render_lm_speech_data(data, unit_kit, data_dir, continuous, progress)
        if on_lm_data is not None:
            on_lm_data()
        return build_speech_kit(preset, data_dir, data=data, cfg=kit_cfg, progress=progress)

    from minimost.background import BackgroundJob
    from minimost.speech.kit import build_kit_vocoder, speech_corpus
    kit_cfg = kit_cfg or kit_config(preset)
    log = Path(data_dir) / "speech_kit" / f"background-{data.path.name}.log"
    job = BackgroundJob(_judge_and_lm_speech_data, (preset, str(data_dir), kit_cfg, continuous, data.path.name),
                        log, what="building the judge and the speech tasks", events=2,
                        hint="Run `python -m minimost synth --preset ... --jobs 1` to build them in the foreground.")
    kit_corpus_ready, units_ready = job.events
    if progress:
        print(f"  speech kit: the judge and the speech tasks build in a second process (log: {log})")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # Both cores synthesise the kit's corpus first (the unit encoder waits for it); only then does
        # the second process start synthesising (measured: 46-62 s instead of 75 s, docs/speech.md).
        speech_corpus(data, data_dir, "train", progress)        # built (or loaded); the view is not needed
        kit_corpus_ready.set()
        unit_kit = build_unit_kit(preset, data_dir, data=data, cfg=kit_cfg, progress=progress)
        units_ready.set()                   # the units are on disk: the second process may render with them
        build_kit_vocoder(data, data_dir, kit_cfg, unit_kit, progress)
        job.wait()
        # The second process rendered the speech tasks: give this process's `data` their statistics too.
        data.stats["speech"] = json.loads((data.path / "speech_stats.json").read_text())
    except BaseException:
        job.stop()
        raise
    finally:
        torch.set_num_threads(threads)
    if on_lm_data is not None:
        on_lm_data()
    return build_speech_kit(preset, data_dir, data=data, cfg=kit_cfg, progress=progress)   # all cached: loads


def _render_lm_speech_data(data, unit_kit, data_dir, continuous: bool, progress: bool) -> None:
    """The speech tasks rendered with the kit's units and, for MoST-C, the encoder states."""
    from minimost.speech.kit import render_speech
    render_speech(data, unit_kit, data_dir, progress=progress)
    if continuous:
        from minimost.continuous import speech_features
        speech_features(data, unit_kit, data_dir, progress=progress)


def _judge_and_lm_speech_data(preset: str, data_dir: str, kit_cfg, continuous: bool, build_name: str,
                              kit_corpus_ready, units_ready):
    """The second process of `build_speech_data(jobs=2)`: once the parent has synthesised the kit's corpus,
    the valid/test speech, the judge and, once the parent has trained the unit encoder, the speech tasks."""
    from minimost.speech.corpus import synthesis_workers
    from minimost.speech.kit import build_kit_judge, build_unit_kit, speech_corpus
    data = prepare_data(preset, data_dir)
    if data.path.name != build_name:
        raise StageDataError(f"the second process found the build {data.path.name}, not the parent's {build_name}; "
                             "was the data cache changed meanwhile?")
    kit_corpus_ready.wait()
    # This process has one core of two: it synthesises in itself, not with a pool of 2 workers beside the
    # parent's training (`synthesis_workers`).
    with synthesis_workers(1):
        for split in ("valid", "test"):
            speech_corpus(data, data_dir, split, progress=True)
        build_kit_judge(data, data_dir, kit_cfg, progress=True)
        units_ready.wait()
        unit_kit = build_unit_kit(preset, data_dir, data=data, cfg=kit_cfg, progress=True)   # cached: loads
        _render_lm_speech_data(data, unit_kit, data_dir, continuous, progress=True)


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_jobs() -> int:
    """Processes `build_speech_data` uses when nothing else trains: 2 on a machine with 2+ cores."""
    return 2 if _cpus() >= 2 else 1


def _spare_cores() -> int:
    """Cores left once one training process has one: the second process needs at least one of them."""
    return _cpus() - 1


@contextlib.contextmanager
def _cores_beside(kit_job):
    """While the kit's process is alive, train on one core fewer: leave it the one it uses."""
    threads = torch.get_num_threads()
    if kit_job is not None and kit_job.alive():
        torch.set_num_threads(max(1, min(threads, _cpus() - 1)))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _kit_job_main(preset: str, data_dir: str, kit_cfg, continuous: bool, lm_data_ready) -> None:
    """Body of `run`'s speech-kit process (one torch thread, output to its log): data from the cache."""
    data = prepare_data(preset, data_dir)
    build_speech_data(preset, data_dir, data, kit_cfg, continuous, progress=True, on_lm_data=lm_data_ready.set)


def start_kit_job(preset: str, data_dir, kit_cfg, continuous: bool, log: Path):
    """`build_speech_data` in a second process beside the training (a `minimost.background.BackgroundJob`):
    `job.wait_for_event()` returns as soon as the speech tasks are rendered (stages 1-2 can start),
    `job.wait()` when the vocoder and the judge are trained too."""
    from minimost.background import BackgroundJob
    return BackgroundJob(_kit_job_main, (preset, str(data_dir), kit_cfg, continuous), log,
                         what="building the speech kit",
                         hint="Run `python -m minimost synth --preset ...` to build it in the foreground.")


def run_pipeline(preset: str, overrides: list[str] | None = None, data_dir: str = "data/cache",
                 out_dir: str = "runs", progress: bool = True, kit_cfg=None, until: str = "stage2",
                 evaluate: bool = True, eval_cfg=None, overlap_kit: bool = True) -> dict:
    """synth -> stage 0 -> (speech kit -> transform -> stage 1 -> stage 2 -> evaluation) for a preset.

    Returns the report dict (also written as report.json / report.md in the run folder). Stages whose
    code does not exist yet are listed as such; stages whose outputs exist for the same configuration
    are skipped. `kit_cfg` (a `minimost.speech.kit.KitConfig`) overrides the preset's speech-kit budgets.
    `until` ("stage0" | "stage1" | "stage2") stops after that stage; the last stage trained is then
    evaluated (`minimost.evaluate`, `eval_cfg` an `EvalConfig`) unless `evaluate=False`.
    `overlap_kit` builds the speech kit in a second process while stage 0 trains, when the machine has
    a core to spare (the outputs are identical; `overlap_kit=False` builds it after stage 0).
    """
    if until not in ("stage0", "stage1", "stage2"):
        raise StageDataError(f"until={until!r}; expected stage0, stage1 or stage2.")

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    base_cfg = model_preset(preset)
    train_cfgs = {}
    model_cfgs = {}
    for stage in ("pretrain", "posttrain", "instruct"):
        m, t = apply_overrides(stage_model_config(base_cfg, stage), train_preset(preset, stage), overrides or [])
        model_cfgs[stage], train_cfgs[stage] = m, t

    t0 = time.perf_counter()
    data = prepare_data(preset, data_dir, verbose=progress)
    timings["synth (text)"] = round(time.perf_counter() - t0, 1)
    name = f"{preset}-{run_fingerprint(model_cfgs['posttrain'], train_cfgs, data.path.name)}"
    run_root = Path(out_dir) / name
    run_root.mkdir(parents=True, exist_ok=True)
    print(f"run folder: {run_root}")

    report: dict = {"preset": preset, "run": str(run_root), "data_dir": str(data_dir), "overrides": list(overrides or []), "machine": describe_machine(), "python": platform.python_version(),
                    "model": model_cfgs["posttrain"].to_dict(),
                    "train": {k: v.to_dict() for k, v in train_cfgs.items()}, "stages": {}, "metrics": {}}

    # The speech kit does not depend on stage 0: with a spare core it is built beside the training, in
    # a second process. The unit encoder and the speech tasks come first (stage 1 needs them); the
    # vocoder and the judge, needed only to evaluate, train on while stages 1-2 do. Everything trains
    # on step budgets, so the results are the same either way; only the time differs.
    continuous = any(t.audio_input == "continuous" for t in train_cfgs.values())
    kit_job = None
    if until != "stage0" and overlap_kit and _spare_cores() >= 1:
        kit_job = start_kit_job(preset, data_dir, kit_cfg, continuous, run_root / "speech_kit.log")
        print(f"  speech kit: building beside the training in a second process (log: {kit_job.log})")

    try:
        # Stage 0: the text MoE (vanilla routing), the stand-in for DeepSeek-V2-Lite.
        t0 = time.perf_counter()
        source, tok = stage_source(data, model_cfgs["pretrain"], train_cfgs["pretrain"])
        with _cores_beside(kit_job):
            record = train_stage(model_cfgs["pretrain"], train_cfgs["pretrain"], preset, run_root / "stage0",
                                 source, tok, eval_fn=text_eval_fn(data, tok), progress=progress)
        timings["stage 0: text MoE pretraining"] = round(time.perf_counter() - t0, 1)
        report["stages"]["stage0"] = {k: v for k, v in record.items() if isinstance(v, (int, float, str, bool))}
        report["metrics"]["stage0"] = _last_eval(run_root / "stage0")

        if until == "stage0":
            return _finish(report, timings, t_start, run_root, ["speech kit, transform, stages 1-2 (stopped by until)"])

        # The speech tasks rendered with the kit's units (and the kit itself when there is no second process).
        t0 = time.perf_counter()
        if kit_job is not None:
            kit_job.wait_for_event()
            timings["waiting for the speech data after stage 0"] = round(time.perf_counter() - t0, 1)
        else:
            kit = build_speech_data(preset, data_dir, data, kit_cfg, continuous, progress)
            timings["speech kit and speech data"] = round(time.perf_counter() - t0, 1)

        # The MoST transformation: stage-0 weights, unit tokens, expert groups, MAMoE routing on.
        t0 = time.perf_counter()
        unit_tok = data.unit_tokenizer()
        transformed = run_root / "transformed"
        if latest_checkpoint(transformed / "checkpoints") is None:
            from minimost.checkpoint import WEIGHTS, load_weights, save_checkpoint
            from minimost.model import MAMoELM
            from minimost.transform import most_transform
            stage0 = MAMoELM(model_cfgs["pretrain"])
            stage0.load_state_dict(load_weights(latest_checkpoint(run_root / "stage0" / "checkpoints") / WEIGHTS))
            model = most_transform(stage0, unit_tok)
            if model.cfg != model_cfgs["posttrain"]:
                raise StageDataError(f"the transformed model's config differs from stage 1's: {model.cfg} vs "
                                     f"{model_cfgs['posttrain']}; raise vocab_size so the unit tokens fit.")
            save_checkpoint(transformed / "checkpoints", 0, model.state_dict(), {}, {"model": model.cfg.to_dict()},
                            tokenizer=unit_tok)
        timings["transform: MoST conversion"] = round(time.perf_counter() - t0, 1)

        # Stages 1 and 2 start from the previous stage's weights; text perplexity tracks forgetting.
        previous = transformed
        for key, stage, title in (("stage1", "posttrain", "stage 1: ASR/TTS post-training"),
                                  ("stage2", "instruct", "stage 2: instruction tuning")):
            t0 = time.perf_counter()
            source, tok = stage_source(data, model_cfgs[stage], train_cfgs[stage])
            with _cores_beside(kit_job):
                record = train_stage(model_cfgs[stage], train_cfgs[stage], preset, run_root / key, source, tok,
                                     eval_fn=text_eval_fn(data, tok), init_from=previous, progress=progress)
            timings[title] = round(time.perf_counter() - t0, 1)
            report["stages"][key] = {k: v for k, v in record.items() if isinstance(v, (int, float, str, bool))}
            report["metrics"][key] = _last_eval(run_root / key)
            previous = run_root / key
            if key == until:
                break

        # The vocoder and the judge: the second process has built them by now, or is finishing them.
        if kit_job is not None:
            t0 = time.perf_counter()
            timings["speech kit and speech data (second process)"] = kit_job.wait()
            kit = build_speech_data(preset, data_dir, data, kit_cfg, continuous, progress)  # loads what it built
            timings["waiting for the vocoder and judge after training"] = round(time.perf_counter() - t0, 1)
    except BaseException:
        if kit_job is not None:
            kit_job.stop()
        raise
    from minimost.speech.kit import kit_summary
    report["speech_kit"] = kit_summary(kit)

    # Evaluation of the last stage (every family of minimost.evaluate) and text retention per stage.
    if evaluate:
        from minimost.evaluate import evaluate_run
        t0 = time.perf_counter()
        result = evaluate_run(run_root, cfg=eval_cfg, data_dir=data_dir, stage=until, progress=progress, preset=preset,
                              data=data, kit=kit)
        timings["evaluation"] = round(time.perf_counter() - t0, 1)
        report["headline"] = result["headline"]
    return _finish(report, timings, t_start, run_root, [])


def _finish(report: dict, timings: dict, t_start: float, run_root: Path, not_built: list[str]) -> dict:
    report["not_built"] = not_built
    report["timings_s"] = timings | {"total": round(time.perf_counter() - t_start, 1)}
    # Times on a shared machine depend on what else ran: the 1/5/15-minute load averages say how busy it was.
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    write_text_atomic(run_root / "report.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(run_root / "report.md", render_report(report, run_root))
    print(f"report: {run_root / 'report.md'}")
    return report


def refresh_report(run_root) -> Path:
    """Re-render report.md from report.json and eval.json (after `minimost eval` on the run)."""
    run_root = Path(run_root)
    report = json.loads((run_root / "report.json").read_text())
    eval_path = run_root / "eval.json"
    if eval_path.exists():
        report["headline"] = json.loads(eval_path.read_text())["headline"]
        write_text_atomic(run_root / "report.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(run_root / "report.md", render_report(report, run_root))
    return run_root / "report.md"


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _last_eval(run_dir) -> dict:
    path = Path(run_dir) / "log.jsonl"
    if not path.exists():
        return {}
    evals = [json.loads(line) for line in path.read_text().splitlines() if '"eval/' in line]
    return {k.removeprefix("eval/"): v for k, v in evals[-1].items() if k != "step"} if evals else {}


def render_report(report: dict, run_root: Path | None = None) -> str:
    """report.md: configuration, time per stage, machine, the evaluation table, examples and plots."""
    lines = [f"# minimost run: preset `{report['preset']}`", "",
             f"Machine: {report['machine']} (Python {report['python']}; load average at the end "
             f"{report.get('load_average_at_end', '?')}). Run folder: `{report['run']}`.", "",
             "## Time per stage", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in report["timings_s"].items()]
    eval_path = Path(run_root) / "eval.json" if run_root is not None else None
    if eval_path is not None and eval_path.exists():
        lines += _render_evaluation(json.loads(eval_path.read_text()), Path(run_root))
    lines += ["", "## Training-time validation", "", "| stage | metric | value |", "|---|---|---|"]
    for stage, metrics in report["metrics"].items():
        lines += [f"| {stage} | {k} | {v} |" for k, v in metrics.items()]
    if report.get("not_built"):
        lines += ["", "## Not built yet", ""] + [f"- {s}" for s in report["not_built"]]
    model = report["model"]
    lines += ["", "## Configuration", "",
              f"Model: d {model['d_model']}, {model['n_layers']} layers, {model['n_experts']} experts top-"
              f"{model['top_k']}, {model['n_shared_experts']} shared, vocab {model['vocab_size']}, attention "
              f"{model['attention']}. Stage steps: " + ", ".join(f"{k} {v['steps']}" for k, v in report["train"].items()),
              "", "The full configuration is in report.json."]
    return "\n".join(lines) + "\n"


def _render_evaluation(result: dict, run_root: Path) -> list[str]:
    """The results table, a few examples of each family, and the plots of every stage."""
    from minimost.evaluate import render_eval

    lines = ["", "## Results", "", render_eval(result), "",
             "Held-out sentences throughout; `heldout_voices` are voices never heard in training. "
             "Definitions and conventions: docs/evaluation.md.", "", "## Examples", ""]
    m = result["metrics"]
    for e in m.get("asr", {}).get("heldout_voices", {}).get("examples", []):
        lines.append(f"- ASR ({e['voice']}): `{e['ref']}` → `{e['hyp']}`")
    for i, e in enumerate(m.get("tts", {}).get("examples", [])):
        wav = run_root / "examples" / f"tts_{i}.wav"
        link = f" ([audio](examples/{wav.name}))" if wav.exists() else ""
        lines.append(f"- TTS: `{e['ref']}` → judge heard `{e['hyp']}`{link}")
    for e in m.get("sqa", {}).get("examples", []):
        lines.append(f"- Spoken QA: \"{e['question']}\" (gold `{e['gold']}`) → S→T `{e['s2t']}`, "
                     f"T→T `{e['t2t']}`, S→S heard `{e['s2s_heard']}`")
    plots = sorted(run_root.glob("stage*/plots/*.png"))
    if plots:
        lines += ["", "## Plots", ""] + [f"- {p.parent.parent.name}: ![{p.stem}]({p.relative_to(run_root)})"
                                         for p in plots]
    return lines
