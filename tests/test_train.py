"""Tests for minimost/train.py: schedule, parameter groups, loss normalisation, logging, plots, resume.

Everything runs the `micro` MAMoE model on CPU with `SyntheticSource` batches (the batch-source
contract of docs/INTERFACES.md), a few steps each.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import pytest
import torch

from minimost import checkpoint as ckpt
from minimost.config import AUDIO, TASKS, TrainConfig, preset
from minimost.model import MAMoELM
from minimost.moe import MoE
from minimost.smoke import synthetic_modality_map
from minimost.train import (
    SyntheticSource,
    Trainer,
    count_targets,
    lr_at,
    param_groups,
    resolve_precision,
    row_losses,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny shapes run faster on one thread (and the 2-core CI machine is shared); restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_model(seed: int = 0, **overrides) -> MAMoELM:
    cfg = dataclasses.replace(preset("micro"), **overrides)
    torch.manual_seed(seed)
    model = MAMoELM(cfg)
    model.set_modality_map(synthetic_modality_map(cfg.vocab_size))
    return model


def make_cfg(**overrides) -> TrainConfig:
    base = dict(stage="posttrain", steps=6, batch_size=4, seq_len=32, lr=1e-3, warmup_steps=1, log_every=2,
                eval_every=100, ckpt_every=100, keep_last=2, seed=7)
    return TrainConfig(**(base | overrides))


def make_source(model, cfg: TrainConfig, seed: int = 0, **kw) -> SyntheticSource:
    return SyntheticSource(model.token_modality, cfg.batch_size, cfg.seq_len, cfg.mixture, seed=seed, **kw)


def run(tmp_path, name="run", model=None, cfg=None, **trainer_kw) -> Trainer:
    cfg = cfg or make_cfg()
    model = model or make_model()
    trainer = Trainer(model, cfg, make_source(model, cfg), tmp_path / name, progress=False, **trainer_kw)
    trainer.train()
    return trainer


def params_of(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class ListSource:
    """A batch source that replays a fixed list of batches (for exact comparisons)."""

    def __init__(self, batches):
        self.batches, self.i = batches, 0

    def next_batch(self):
        self.i += 1
        return self.batches[self.i - 1]

    def state_dict(self):
        return {"i": self.i}

    def load_state_dict(self, state):
        self.i = state["i"]


# ------------------------------------------------------------------ schedule and parameter groups

def test_lr_schedule_values():
    cfg = make_cfg(steps=11, warmup_steps=2, lr=1.0, min_lr_ratio=0.1, schedule="cosine")
    assert [lr_at(s, cfg) for s in (0, 1)] == [0.5, 1.0]                      # linear warmup
    assert lr_at(2, cfg) == pytest.approx(1.0)                                 # decay starts at the peak
    assert lr_at(10, cfg) == pytest.approx(0.1)                                # last step: lr * min_lr_ratio
    mid = 2 + (11 - 2 - 1) / 2
    assert lr_at(int(mid), cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    lin = dataclasses.replace(cfg, schedule="linear")
    assert lr_at(6, lin) == pytest.approx(1 - 0.9 * 0.5) and lr_at(10, lin) == pytest.approx(0.1)
    const = dataclasses.replace(cfg, schedule="constant")
    assert [lr_at(s, const) for s in (1, 5, 10)] == [1.0, 1.0, 1.0]
    values = [lr_at(s, cfg) for s in range(2, 11)]
    assert all(a >= b for a, b in zip(values, values[1:]))                     # monotone decay


def test_weight_decay_groups():
    model = make_model()
    decay, no_decay = param_groups(model, make_cfg(weight_decay=0.1))
    names = {id(p): n for n, p in model.named_parameters()}
    d = {names[id(p)] for p in decay["params"]}
    nd = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "embed.weight" in nd and "norm.weight" in nd and "blocks.0.attn_norm.weight" in nd
    assert {"lm_head.weight", "blocks.0.attn.q_proj.weight", "blocks.0.ffn.experts.w_gate",
            "blocks.0.ffn.router.gate.weight", "blocks.0.ffn.shared.down.weight"} <= d
    assert all(".norm" not in n and "_norm" not in n for n in d)
    assert d | nd == set(names.values()) and not d & nd
    tied = make_model(tie_embeddings=True)                                      # one tensor, no decay
    decay, no_decay = param_groups(tied, make_cfg())
    assert any(p is tied.embed.weight for p in no_decay["params"])
    assert not any(p is tied.embed.weight for p in decay["params"])


def test_precision_auto():
    assert resolve_precision("auto", torch.device("cpu")) is None
    assert resolve_precision("auto", torch.device("cuda")) is torch.bfloat16
    assert resolve_precision("fp32", torch.device("cuda")) is None


# ------------------------------------------------------------------ losses

def test_grad_accum_equivalence(tmp_path):
    """2 micro-batches of B == one batch of 2B: the loss is normalised by the step's target tokens."""
    model = make_model()
    big_cfg = make_cfg(steps=3, batch_size=8, grad_accum=1)
    src = make_source(model, big_cfg)
    bigs = [src.next_batch() for _ in range(3)]
    halves = [{k: v[sl] for k, v in b.items()} for b in bigs for sl in (slice(0, 4), slice(4, 8))]
    a = Trainer(copy.deepcopy(model), big_cfg, ListSource(bigs), tmp_path / "a", progress=False)
    b = Trainer(copy.deepcopy(model), make_cfg(steps=3, batch_size=4, grad_accum=2), ListSource(halves),
                tmp_path / "b", progress=False)
    a.train()
    b.train()
    pa, pb = params_of(a.model), params_of(b.model)
    assert count_targets(halves[0]) != count_targets(halves[1])                # unequal tokens per half
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], atol=1e-6, rtol=0, msg=k)


def test_per_task_loss_matches_separate_forwards(tmp_path):
    model = make_model()
    cfg = make_cfg(steps=1, log_every=1, batch_size=8)
    before = copy.deepcopy(model)
    trainer = Trainer(model, cfg, make_source(model, cfg), tmp_path / "r", progress=False)
    batch = make_source(before, cfg).next_batch()                               # the same first batch
    record = trainer.train()
    with torch.no_grad():
        full = before(batch["input_ids"], attention_mask_BT=batch["attention_mask"], labels_BT=batch["labels"])
        assert record["lm_loss"] == pytest.approx(full.lm_loss.item(), rel=1e-5)
        assert record["loss"] == pytest.approx(full.loss.item(), rel=1e-5)
        ce_B, n_B = row_losses(full.logits, batch["labels"], batch["attention_mask"])
        assert ce_B.sum() / n_B.sum() == pytest.approx(full.lm_loss.item(), rel=1e-6)
        seen = set()
        for t in batch["task_ids"].unique().tolist():
            rows = batch["task_ids"] == t
            sub = before(batch["input_ids"][rows], attention_mask_BT=batch["attention_mask"][rows],
                         labels_BT=batch["labels"][rows])
            assert record[f"loss/{TASKS[t]}"] == pytest.approx(sub.lm_loss.item(), rel=1e-5)
            seen.add(TASKS[t])
    assert seen == {k.split("/")[1] for k in record if k.startswith("loss/")}


def test_unknown_task_rows_count_in_total_only(tmp_path):
    model = make_model()
    cfg = make_cfg(steps=1, log_every=1)
    batch = make_source(model, cfg).next_batch()
    batch["task_ids"] = torch.tensor([-1, TASKS.index("asr"), -1, -1])      # collate's "unknown task"
    record = Trainer(model, cfg, ListSource([batch]), tmp_path / "r", progress=False).train()
    assert [k for k in record if k.startswith("loss/")] == ["loss/asr"] and record["lm_loss"] > 0


def test_jsonl_log_contents(tmp_path):
    trainer = run(tmp_path, cfg=make_cfg(steps=4, log_every=2))
    records = [json.loads(line) for line in (trainer.run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    r = records[-1]
    for key in ("loss", "lm_loss", "balance_loss", "z_loss", "lr", "grad_norm", "tokens_per_s", "tokens_seen",
                "load/text/entropy", "load/text/max", "load/text/min", "load/audio/entropy"):
        assert isinstance(r[key], float | int), key
    assert any(k.startswith("loss/") for k in r)
    assert r["balance_loss"] > 0 and r["z_loss"] == 0 and r["grad_norm"] > 0
    assert "mfu" not in r                                                       # GPU only
    frac = torch.tensor(r["load/audio/frac"])                                   # (MoE layers, E)
    n_experts = trainer.model_cfg.n_experts
    assert frac.shape == (2, n_experts)
    torch.testing.assert_close(frac.sum(-1), torch.ones(2), atol=1e-3, rtol=0)
    text, audio = trainer.model_cfg.expert_groups()
    assert frac[:, list(text)].sum() == 0                                       # MAMoE: audio -> audio group
    assert 0 < r["load/audio/min"] <= 1 <= r["load/audio/max"]
    saved = json.loads((trainer.run_dir / "config.json").read_text())
    assert saved["train"]["steps"] == 4 and saved["model"]["n_experts"] == n_experts


def test_plots_written_without_pyplot_state(tmp_path):
    import matplotlib.pyplot as plt
    figures_before = plt.get_fignums()
    trainer = run(tmp_path, cfg=make_cfg(steps=4))
    for name in ("loss.png", "expert_load.png"):
        path = trainer.run_dir / "plots" / name
        assert path.exists() and path.stat().st_size > 1000
    assert plt.get_fignums() == figures_before


def test_eval_fn_called_and_logged(tmp_path):
    calls = []

    def eval_fn(model, step):
        calls.append((step, model.training))
        torch.rand(3)                                                           # must not disturb training RNG
        return {"ppl": 1.5}

    trainer = run(tmp_path, cfg=make_cfg(steps=4, eval_every=2), eval_fn=eval_fn)
    assert calls == [(2, False), (4, False)] and trainer.model.training
    records = [json.loads(line) for line in (trainer.run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["eval/ppl"] for r in records if "eval/ppl" in r] == [1.5, 1.5]


# ------------------------------------------------------------------ checkpoints and resume

def test_checkpoint_round_trip_weights_only(tmp_path):
    trainer = run(tmp_path, cfg=make_cfg(steps=2, ckpt_every=1, keep_last=5))
    folder = ckpt.latest_checkpoint(trainer.run_dir / "checkpoints")
    assert folder.name == "step_00000002"
    state = torch.load(folder / ckpt.STATE, weights_only=True)                  # no pickled code
    assert state["step"] == 2 and set(state) >= {"optimizer", "scheduler", "sampler", "rng"}
    weights = ckpt.load_weights(folder / ckpt.WEIGHTS)
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(weights[k], v), k
    config = json.loads((folder / ckpt.CONFIG).read_text())
    assert config["model"] == json.loads(json.dumps(trainer.model_cfg.to_dict()))


@pytest.mark.parametrize("interrupt", ["stop_at", "keyboard"])
def test_resume_equals_uninterrupted_run(tmp_path, interrupt):
    """6 steps straight == 3 steps, stop, resume from the checkpoint (new model, new source), 3 steps."""
    cfg = make_cfg(steps=6, log_every=1, ckpt_every=3 if interrupt == "stop_at" else 100)
    straight = run(tmp_path, "straight", model=make_model(bias_balancing=True), cfg=cfg)

    model = make_model(bias_balancing=True)
    first = Trainer(model, cfg, make_source(model, cfg), tmp_path / "split", progress=False)
    if interrupt == "stop_at":
        first.train(stop_at=3)
    else:  # Ctrl-C while the 4th step fetches its batch: the trainer saves step 3 and re-raises
        source, original = first.source, first.source.next_batch

        def next_batch():
            if source.batches == 3:
                raise KeyboardInterrupt
            return original()

        source.next_batch = next_batch
        with pytest.raises(KeyboardInterrupt):
            first.train()
    assert ckpt.latest_checkpoint(tmp_path / "split" / "checkpoints").name == "step_00000003"

    model2 = make_model(seed=99, bias_balancing=True)                          # different init: all restored
    torch.manual_seed(12345)                                                    # RNG restored too
    second = Trainer(model2, cfg, make_source(model2, cfg, seed=5), tmp_path / "split", progress=False,
                     resume=tmp_path / "split")
    assert second.step == 3
    second.train()
    a, b = params_of(straight.model), params_of(second.model)
    assert a.keys() == b.keys() and any("expert_bias" in k for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    logs = [[json.loads(x)["loss"] for x in (tmp_path / d / "log.jsonl").read_text().splitlines()]
            for d in ("straight", "split")]
    assert logs[0] == logs[1]                                                   # no duplicated steps


def test_resume_config_mismatch_names_the_field(tmp_path):
    cfg = make_cfg(steps=2, ckpt_every=2)
    run(tmp_path, "r", cfg=cfg)
    model = make_model()
    other = dataclasses.replace(cfg, lr=5e-4, log_every=1)                     # log_every may change
    with pytest.raises(ckpt.CheckpointError, match=r"train\.lr") as err:
        Trainer(model, other, make_source(model, other), tmp_path / "r2", resume=tmp_path / "r")
    assert "log_every" not in str(err.value)
    wide = make_model(n_experts=16)
    with pytest.raises(ckpt.CheckpointError, match=r"model\.n_experts"):
        Trainer(wide, cfg, make_source(wide, cfg), tmp_path / "r3", resume=tmp_path / "r")


def test_deterministic_cpu_runs(tmp_path):
    a = params_of(run(tmp_path, "a").model)
    b = params_of(run(tmp_path, "b").model)
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------ what trains

def test_trainable_experts_and_router(tmp_path):
    model = make_model()
    before = params_of(model)
    run(tmp_path, model=model, cfg=make_cfg(steps=2, trainable="experts_and_router", weight_decay=0.1))
    after = params_of(model)
    for k in before:
        changed = not torch.equal(before[k], after[k])
        in_moe = ".ffn." in k and "token_modality" not in k
        assert changed == in_moe, k


def test_trainable_new_tokens(tmp_path):
    model = make_model()
    start = 3 * model.cfg.vocab_size // 4 - 4                                   # the synthetic "unit" ids
    before = params_of(model)
    run(tmp_path, model=model, cfg=make_cfg(steps=2, trainable="new_tokens", weight_decay=0.1),
        new_tokens_from=start)
    after = params_of(model)
    for k in before:
        if k in ("embed.weight", "lm_head.weight"):
            assert torch.equal(before[k][:start], after[k][:start]), k         # old rows frozen
            assert not torch.equal(before[k][start:], after[k][start:]), k     # new rows learn
        else:
            assert torch.equal(before[k], after[k]), k


def test_bias_update_called_with_step_counts(tmp_path, monkeypatch):
    calls = []
    original = MoE.update_bias

    def spy(self, load):
        calls.append(load.clone())
        original(self, load)

    monkeypatch.setattr(MoE, "update_bias", spy)
    model = make_model(bias_balancing=True)
    cfg = make_cfg(steps=3, grad_accum=2)
    trainer = run(tmp_path, model=model, cfg=cfg)
    n_moe = len(trainer.moe_layers)
    assert len(calls) == 3 * n_moe
    assert calls[0].shape == (3, model.cfg.n_experts)                           # (marks, experts)
    # each call carries the step's valid tokens x top_k (both micro-batches)
    src = make_source(model, cfg)
    tokens = sum(int(src.next_batch()["attention_mask"].sum()) for _ in range(2))
    assert calls[0].sum().item() == tokens * model.cfg.top_k
    assert calls[0][AUDIO].sum() > 0
    assert any(m.router.expert_bias.abs().sum() > 0 for m in trainer.moe_layers)


def test_no_bias_update_when_off(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(MoE, "update_bias", lambda self, load: calls.append(load))
    run(tmp_path, cfg=make_cfg(steps=2))
    assert calls == []


def test_a_fresh_run_refuses_a_folder_that_holds_a_run(tmp_path):
    """Training again into a finished run's folder without --resume would interleave two runs' logs."""
    from minimost.checkpoint import CheckpointError
    from minimost.config import TrainConfig, preset
    from minimost.train import run_training

    cfg = TrainConfig(steps=2, batch_size=2, seq_len=16, log_every=1, eval_every=2, ckpt_every=2, warmup_steps=1,
                      out_dir=str(tmp_path), run_name="r")
    run_training(preset("micro"), cfg, preset="micro", progress=False)
    lines = (tmp_path / "r" / "log.jsonl").read_text().splitlines()
    with pytest.raises(CheckpointError, match="--resume"):
        run_training(preset("micro"), cfg, preset="micro", progress=False)
    assert (tmp_path / "r" / "log.jsonl").read_text().splitlines() == lines
