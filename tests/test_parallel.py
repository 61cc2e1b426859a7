"""Tests for minimost/parallel.py: FSDP2 on 2 gloo ranks equals one process, batch split, no wrap at 1 rank.

The 2-rank test spawns two CPU processes (gloo on 127.0.0.1, a free port), shards a `micro` MAMoE model
with `fully_shard` per block + root, and trains it for 3 steps (2 micro-batches each) on half batches.
Rank 0's rows are text-only: it sees no audio token at all, so its audio experts get empty groups;
the dispatch has no data-dependent branch, so both ranks still take part in every collective.
The result must equal a single-process run on the full batches (parameters within 1e-5).
"""

from __future__ import annotations

import dataclasses
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from minimost import checkpoint as ckpt
from minimost import parallel
from minimost.config import AUDIO, TrainConfig, preset
from minimost.model import MAMoELM
from minimost.smoke import synthetic_modality_map
from minimost.train import SyntheticSource, Trainer

ROW_TASKS = ["text_lm", "text_lm", "asr", "tts"]  # rank 0: rows 0-1 (text only); rank 1: rows 2-3


@pytest.fixture(autouse=True)
def one_thread():
    """One thread per process: the two ranks share the 2-core CI machine; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_model() -> MAMoELM:
    cfg = dataclasses.replace(preset("micro"), bias_balancing=True)
    torch.manual_seed(0)
    model = MAMoELM(cfg)
    model.set_modality_map(synthetic_modality_map(cfg.vocab_size))
    return model


def make_cfg() -> TrainConfig:
    return TrainConfig(stage="posttrain", steps=3, batch_size=4, grad_accum=2, seq_len=32, lr=1e-3,
                       warmup_steps=1, log_every=1, eval_every=100, ckpt_every=100, seed=3)


def make_source(model) -> SyntheticSource:
    return SyntheticSource(model.token_modality, 4, 32, seed=1, row_tasks=ROW_TASKS)


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    parallel.init_distributed()  # the torchrun path: reads the environment, gloo on CPU
    try:
        model = make_model()
        source = make_source(model)
        mine = parallel.shard_batch(make_source(model).next_batch())
        saw_audio = bool((model.token_modality[mine["input_ids"]] == AUDIO).any())
        trainer = Trainer(model, make_cfg(), source, os.path.join(out_dir, "fsdp"), progress=False)
        assert type(trainer.model.blocks[0].attn.q_proj.weight).__name__ == "DTensor"
        trainer.train()  # saves a checkpoint at the last step (a collective)
        full = parallel.model_state_dict(trainer.model)
        torch.save({"saw_audio": saw_audio}, os.path.join(out_dir, f"rank{rank}.pt"))
        if rank == 0:
            torch.save(full, os.path.join(out_dir, "fsdp_params.pt"))
    finally:
        parallel.cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fsdp_two_ranks_match_single_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    assert torch.load(tmp_path / "rank0.pt")["saw_audio"] is False            # rank 0: no audio tokens
    assert torch.load(tmp_path / "rank1.pt")["saw_audio"] is True
    fsdp = torch.load(tmp_path / "fsdp_params.pt", weights_only=True)

    model = make_model()
    single = Trainer(model, make_cfg(), make_source(model), tmp_path / "single", progress=False)
    single.train()
    reference = parallel.model_state_dict(single.model)
    assert fsdp.keys() == reference.keys()
    for k in reference:
        torch.testing.assert_close(fsdp[k], reference[k], atol=1e-5, rtol=0, msg=k)
    assert any("expert_bias" in k and reference[k].abs().sum() > 0 for k in reference)

    # The FSDP checkpoint holds full tensors: a single process resumes from it.
    model = make_model()
    resumed = Trainer(model, make_cfg(), make_source(model), tmp_path / "resumed", progress=False,
                      resume=tmp_path / "fsdp")
    assert resumed.step == 3
    for k, v in ckpt.load_checkpoint(tmp_path / "fsdp")[0].items():
        assert torch.equal(resumed.model.state_dict()[k], v), k


def test_never_wrap_at_world_size_one():
    model = make_model()
    assert not parallel.is_distributed() and parallel.world_size() == 1
    assert parallel.shard_model(model) is model
    assert all(type(p) is torch.nn.Parameter for p in model.parameters())


def test_shard_batch_takes_contiguous_slices():
    batch = {"input_ids": torch.arange(12).view(4, 3), "task_ids": torch.arange(4)}
    halves = [parallel.shard_batch(batch, r, 2) for r in (0, 1)]
    assert halves[0]["task_ids"].tolist() == [0, 1] and halves[1]["task_ids"].tolist() == [2, 3]
    assert torch.equal(torch.cat([h["input_ids"] for h in halves]), batch["input_ids"])
    assert parallel.shard_batch(batch) is batch                               # one process: unchanged
    try:
        parallel.shard_batch(batch, 0, 3)
        raise AssertionError("expected a ValueError")
    except ValueError as err:
        assert "multiple of 3" in str(err)


def test_activation_checkpointing_changes_nothing_but_memory(tmp_path):
    runs = []
    for ac in (False, True):
        model = make_model()
        cfg = dataclasses.replace(make_cfg(), activation_checkpointing=ac, grad_accum=1)
        trainer = Trainer(model, cfg, make_source(model), tmp_path / f"ac{ac}", progress=False)
        trainer.train()
        runs.append(trainer.model.state_dict())
    names = set(runs[0])
    assert names == set(runs[1])                                              # parameter names unchanged
    for k in names:
        torch.testing.assert_close(runs[0][k], runs[1][k], atol=1e-6, rtol=0, msg=k)
