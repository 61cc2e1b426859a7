"""Stage wiring: stage-0 config, stage data errors, and a short stage-0 run from the CLI on the mini-world."""

import json

import pytest

from minimost.__main__ import main
from minimost.config import preset, train_preset
from minimost.pipeline import StageDataError, prepare_data, stage_model_config, stage_source


def test_stage0_is_a_plain_moe_and_later_stages_are_mamoe():
    cfg = preset("micro")
    assert cfg.modality_routing
    assert stage_model_config(cfg, "pretrain").modality_routing is False
    assert stage_model_config(cfg, "posttrain") == cfg


@pytest.fixture(scope="module")
def micro_data(tmp_path_factory):
    return prepare_data("micro", str(tmp_path_factory.mktemp("data")))


def test_speech_stage_without_units_says_what_to_run(micro_data):
    with pytest.raises(StageDataError, match="synth"):
        stage_source(micro_data, preset("micro"), train_preset("micro", "posttrain"))


def test_tokenizer_larger_than_model_vocab_is_refused(micro_data):
    import dataclasses
    small_vocab = dataclasses.replace(preset("micro"), vocab_size=64)
    with pytest.raises(StageDataError, match="vocab_size"):
        stage_source(micro_data, small_vocab, train_preset("micro", "pretrain"))


def test_cli_stage0_trains_on_text_over_all_experts(micro_data, tmp_path, capsys):
    data_dir = str(micro_data.path.parent)
    rc = main(["train", "--preset", "micro", "--data-dir", data_dir, "--set", "train.steps=6",
               "--set", "train.log_every=3", "--set", "train.eval_every=6", "--set", "train.ckpt_every=6",
               "--set", f"train.out_dir={tmp_path}", "--set", "train.run_name=s0"])
    assert rc == 0
    records = [json.loads(line) for line in (tmp_path / "s0" / "log.jsonl").read_text().splitlines()]
    train_rows = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval/valid_text_loss" in r]
    assert train_rows and evals and evals[-1]["eval/valid_text_ppl"] > 1
    # vanilla routing: text tokens reach experts of both halves (MAMoE would confine them to the first half)
    frac = train_rows[-1]["load/text/frac"]
    n = len(frac[0])
    assert any(sum(layer[n // 2:]) > 0 for layer in frac)
    assert (tmp_path / "s0" / "checkpoints").is_dir()


def test_run_pipeline_until_stage0_writes_a_report_and_skips_finished_stages(micro_data, tmp_path):
    from minimost.pipeline import run_pipeline
    data_dir, overrides = str(micro_data.path.parent), ["train.steps=4", "train.log_every=2",
                                                        "train.eval_every=4", "train.ckpt_every=2"]
    report = run_pipeline("micro", overrides, data_dir=data_dir, out_dir=str(tmp_path), progress=False,
                          until="stage0")
    run = tmp_path / report["run"].split("/")[-1]
    assert (run / "report.md").read_text().startswith("# minimost run")
    assert report["metrics"]["stage0"]["valid_text_ppl"] > 1
    again = run_pipeline("micro", overrides, data_dir=data_dir, out_dir=str(tmp_path), progress=False,
                         until="stage0")
    assert again["run"] == report["run"] and again["stages"]["stage0"].get("skipped") is True


@pytest.mark.slow  # minutes on 2 cores: synthesis of the whole micro speech plan and three artefacts
def test_run_pipeline_runs_every_stage_writes_a_report_and_skips_finished_stages(micro_data, tmp_path):
    from minimost.pipeline import run_pipeline
    from minimost.speech.judge import JudgeConfig
    from minimost.speech.kit import KitConfig
    from minimost.speech.units import UnitConfig
    from minimost.speech.vocoder import VocoderConfig
    kit_cfg = KitConfig(judge_sentences=12, judge_voices_per_sentence=1,
                        units=UnitConfig(max_steps=5, time_budget_s=60.0),
                        vocoder=VocoderConfig(max_steps=5, time_budget_s=60.0),
                        judge=JudgeConfig(max_steps=5, max_minutes=1.0))
    data_dir, overrides = str(micro_data.path.parent), ["train.steps=4", "train.log_every=2",
                                                        "train.eval_every=4", "train.ckpt_every=2"]
    report = run_pipeline("micro", overrides, data_dir=data_dir, out_dir=str(tmp_path), progress=False,
                          kit_cfg=kit_cfg)
    run = tmp_path / report["run"].split("/")[-1]
    assert (run / "report.md").read_text().startswith("# minimost run")
    for stage in ("stage0", "stage1", "stage2"):
        assert report["metrics"][stage]["valid_text_ppl"] > 1, stage
    assert (run / "transformed" / "checkpoints").is_dir()
    assert report["speech_kit"]["codebook_size"] == 100
    from minimost.pipeline import _spare_cores
    if _spare_cores() >= 1:   # the kit was built in a second process: stage 1 waited only for its units
        assert {"waiting for the speech data after stage 0", "speech kit and speech data (second process)",
                "waiting for the vocoder and judge after training"} <= set(report["timings_s"])
    # stage 1 trained on the speech tasks with the unit-extended tokenizer
    log = (run / "stage1" / "log.jsonl").read_text()
    assert '"loss/asr"' in log and '"loss/tts"' in log
    again = run_pipeline("micro", overrides, data_dir=data_dir, out_dir=str(tmp_path), progress=False,
                         kit_cfg=kit_cfg)
    assert again["run"] == report["run"]
    assert all(again["stages"][s].get("skipped") is True for s in ("stage0", "stage1", "stage2"))


@pytest.mark.parametrize("wait", ["wait_for_event", "wait"])
def test_a_failed_speech_kit_process_says_what_failed(tmp_path, wait):
    from minimost.background import JobError
    from minimost.pipeline import start_kit_job
    job = start_kit_job("no-such-preset", str(tmp_path), None, False, tmp_path / "speech_kit.log")
    with pytest.raises(JobError, match=r"(?s)speech kit failed.*exit code 1.*unknown preset 'no-such-preset'.*synth"):
        getattr(job, wait)()   # stage 1 waits for the speech data, the evaluation for the whole kit
    assert not job.event.is_set()
