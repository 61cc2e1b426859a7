"""bench/: the MoST-style dispatch and the Hugging Face peer compute minimost's function; the scripts' smoke
runs emit valid JSON lines; docs/performance.md matches the committed results. CPU, tiny shapes, seconds."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

from minimost.config import AUDIO, SPECIAL, TEXT, preset
from minimost.moe import MoE

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import bench_memory  # noqa: E402
import bench_moe  # noqa: E402
import bench_train  # noqa: E402
import make_table  # noqa: E402
from hf_deepseek import hf_available, hf_moe_from_minimost  # noqa: E402
from most_dispatch import most_experts_from_minimost, most_mask_loop_forward  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_threads():
    """The bench mains call torch.set_num_threads; keep the rest of the test session unaffected."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _inputs(cfg, B=2, T=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, cfg.d_model, generator=g)
    marks = torch.full((B, T), TEXT, dtype=torch.long)
    marks[:, T // 2:] = AUDIO
    marks[:, 0] = SPECIAL
    return x, marks


def _grads(module_params, x):
    return [p.grad.clone() for p in module_params] + [x.grad.clone()]


def test_most_mask_loop_equals_dense_reference():
    torch.manual_seed(0)
    cfg = dataclasses.replace(preset("micro"), dispatch="dense", init_std=0.1)
    moe = MoE(cfg)
    experts = most_experts_from_minimost(moe)
    x, marks = _inputs(cfg)

    x_ref = x.clone().requires_grad_()
    y_ref, stats = moe(x_ref, marks)
    (y_ref.square().sum() + stats.balance_loss).backward()  # the aux loss's gradient, added explicitly
    ref_router_grad = moe.router.gate.weight.grad.clone()
    ref_wg = moe.experts.w_gate.grad.clone()
    moe.zero_grad(set_to_none=True)

    x_most = x.clone().requires_grad_()
    y_most, _ = most_mask_loop_forward(moe, experts, x_most, marks)  # aux loss attached MoST's way
    y_most.square().sum().backward()
    torch.testing.assert_close(y_most, y_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x_most.grad, x_ref.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(moe.router.gate.weight.grad, ref_router_grad, rtol=1e-5, atol=1e-6)
    most_wg = torch.stack([e.gate.weight.grad for e in experts])
    torch.testing.assert_close(most_wg, ref_wg, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not hf_available(), reason="transformers (DeepSeek-V2) not installed")
@pytest.mark.parametrize("implementation", ["grouped_mm", "eager"])
def test_hf_deepseek_block_equals_minimost(implementation):
    """Same weights, same routing rule (plain top-k: modality routing off): same output and gradients."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(preset("micro"), modality_routing=False, balance_loss="none", init_std=0.1)
    moe = MoE(cfg)
    block = hf_moe_from_minimost(moe, implementation)
    x, _ = _inputs(cfg)
    marks = torch.zeros(x.shape[:2], dtype=torch.long)

    x_mm = x.clone().requires_grad_()
    y_mm, _ = moe(x_mm, marks)
    y_mm.square().sum().backward()
    x_hf = x.clone().requires_grad_()
    y_hf = block(x_hf)
    y_hf.square().sum().backward()

    torch.testing.assert_close(y_hf, y_mm, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x_hf.grad, x_mm.grad, rtol=1e-5, atol=1e-5)
    H = cfg.expert_hidden
    torch.testing.assert_close(block.experts.gate_up_proj.grad[:, :H], moe.experts.w_gate.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(block.experts.gate_up_proj.grad[:, H:], moe.experts.w_up.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(block.experts.down_proj.grad, moe.experts.w_down.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(block.gate.weight.grad, moe.router.gate.weight.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(block.shared_experts.down_proj.weight.grad, moe.shared.down.weight.grad,
                               rtol=1e-5, atol=1e-6)


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_bench_moe_smoke_writes_json(tmp_path, capsys):
    out = tmp_path / "moe.jsonl"
    impls = ["grouped", "loop", "most_mask_loop", "swiglu_roofline"] + (["hf_grouped_mm"] if hf_available() else [])
    assert bench_moe.main(["--smoke", "--threads", "1", "--impl", *impls, "--out", str(out)]) == 0
    rows = _json_lines(out.read_text())
    assert rows[0]["bench"] == "meta" and rows[0]["kind"] == "moe" and "loadavg_start" in rows[0]
    arms = {r["impl"]: r for r in rows[1:]}
    assert set(arms) == set(impls)
    for r in arms.values():
        assert r["ms"] > 0 and r["tflops"] > 0 and "error" not in r
    assert arms["grouped"]["ratio_vs_grouped"] == 1.0
    assert len(_json_lines(capsys.readouterr().out)) == len(impls)


def test_bench_moe_flop_formula():
    cfg = preset("most")
    # forward: router 2*N*D*E + 2*N*3*D*H*(K+S); fwd+bwd = 3x
    n = 16384
    expected = 3 * (2 * n * 2048 * 64 + 2 * n * 3 * 2048 * 1408 * (6 + 2))
    assert bench_moe.layer_flops(cfg, n) == expected


def test_bench_train_smoke_writes_json(tmp_path):
    out = tmp_path / "train.jsonl"
    assert bench_train.main(["--smoke", "--threads", "1", "--out", str(out)]) == 0
    rows = _json_lines(out.read_text())
    assert rows[0]["kind"] == "train"
    steps = [r for r in rows if r.get("bench") == "train_step"]
    assert {r["model"] for r in steps} == {"moe", "dense_equal_active"}
    assert all(r["tokens_per_s"] > 0 for r in steps)


def test_bench_memory_smoke_and_analytic(tmp_path):
    out = tmp_path / "memory.jsonl"
    assert bench_memory.main(["--smoke", "--out", str(out)]) == 0
    rows = _json_lines(out.read_text())
    measured = [r for r in rows if r.get("kind") == "measured"]
    assert measured and "error" not in measured[0] and measured[0]["rss_peak_mib"] > 0
    most = next(r for r in rows if r.get("kind") == "analytic" and r["preset"] == "most")
    assert most["params"] == preset("most").num_params()
    assert most["adamw_gib"] == pytest.approx(2 * most["weights_gib"], rel=1e-3)


def test_make_table_check_passes():
    assert make_table.main(["--check"]) == 0, "run `python bench/make_table.py` and commit docs/performance.md"


def test_bench_kit_micro_writes_every_measurement(tmp_path):
    """bench_kit on the micro kit: every artefact scored on its build's held-out sentences."""
    import bench_kit

    out = tmp_path / "kit.jsonl"
    assert bench_kit.main(["--preset", "micro", "--data-dir", str(tmp_path / "cache"), "--clips", "4",
                           "--voice-sentences", "2", "--examples", "0", "--repeats", "1", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["bench"] == "meta" and rows[0]["kind"] == "kit"
    kit = rows[1]
    assert kit["units"].startswith("units-phonetic-k100-25hz-") and kit["training"]["units"]["steps"] == 30
    units = [r for r in rows if r["bench"] == "kit_units"]
    assert len(units) == 6 and {r["utterances"] for r in units} == {4, 16}
    oracle = [r for r in units if r["units"].startswith("oracle")]
    assert all(r["pnmi"] == 1.0 for r in oracle)
    pairs = [r for r in units if "cross_voice_edit_rate" in r]
    assert len(pairs) == 2 and all(r["cross_voice_pairs"] == 2 * 28 for r in pairs)   # 2 sentences x C(8, 2)
    conditions = {(r["set"], r["condition"]) for r in rows if r["bench"] == "vocoder"}
    assert len(conditions) == 8 and all(r["wer_pct"] >= 0 for r in rows if r["bench"] == "vocoder")
    assert sum(r["bench"] == "vocoder_mel" for r in rows) == 2
    speed = [r for r in rows if r["bench"] == "kit_speed"]
    assert len(speed) == 3 and all(r["rtf"] > 0 and r["utterances"] == 4 for r in speed)
