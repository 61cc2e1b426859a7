"""Whole-model training throughput: tokens/s (and MFU on GPU) of one AdamW step, MoE vs dense.

For each preset it times forward + backward + AdamW on a fixed batch of synthetic mixed text/audio
tokens (`minimost.smoke`), for the MoE model and for a dense model with the same *active* parameters
(every layer a SwiGLU of width (top_k + n_shared) * expert_hidden), in the same run so the ratio is
meaningful on a noisy machine. One JSON line per measurement; `--out FILE` also writes them.

    python bench/bench_train.py                           # micro and tiny on this CPU
    python bench/bench_train.py --presets tiny --batch 16 --seq 256 --compile
    python -m minimost bench train --presets small        # same script through the CLI

MFU follows torchtitan's convention: FLOPs/token = 6 * (active non-embedding params) + 12 * L * D * T
(attention scores); the peak is taken from --peak-tflops (default: 989 for H100/H200 bf16 dense,
none on CPU, where only tokens/s is reported).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import statistics
import sys
import time

import torch
from _meta import machine as describe_machine
from _meta import write_results

from minimost.config import preset
from minimost.model import MAMoELM
from minimost.smoke import synthetic_batch, synthetic_modality_map


def dense_twin(cfg):
    """A dense model with the MoE model's active parameters: every layer one SwiGLU of (K + shared) * H."""
    return dataclasses.replace(cfg, first_k_dense=cfg.n_layers,
                               dense_hidden=(cfg.top_k + cfg.n_shared_experts) * cfg.expert_hidden)


def flops_per_token(cfg, seq: int) -> float:
    embedding = cfg.vocab_size * cfg.d_model
    return 6 * (cfg.num_active_params() - embedding) + 12 * cfg.n_layers * cfg.d_model * seq


def measure(cfg, batch: int, seq: int, device: str, dtype: str, compile_model: bool, steps: int, warmup: int):
    torch.manual_seed(0)
    model = MAMoELM(cfg).to(device)
    model.set_modality_map(synthetic_modality_map(cfg.vocab_size).to(device))
    ids = synthetic_batch(cfg, model.token_modality.cpu(), batch, seq, torch.Generator().manual_seed(0)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=device == "cuda")
    fwd = torch.compile(model) if compile_model else model
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bf16")

    def step():
        with autocast:
            out = fwd(ids, labels_BT=ids, check_inputs=False)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    sync()
    warmup_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    step_s = statistics.median(times)
    peak_mem = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    return step_s, warmup_s, peak_mem


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default="micro,tiny", help="comma-separated presets (default: micro,tiny)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16"], help="default: bf16 on cuda, fp32 on cpu")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (H100/H200 bf16: 989)")
    p.add_argument("--out", help="also write the JSON lines (after a meta line) to this file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    peak = args.peak_tflops or (989.0 if args.device == "cuda" else None)
    machine = describe_machine()
    rows = []
    for name in args.presets.split(","):
        moe_cfg = preset(name)
        seq = min(args.seq, moe_cfg.max_seq_len)
        for kind, cfg in (("moe", moe_cfg), ("dense_equal_active", dense_twin(moe_cfg))):
            for compiled in ([False, True] if args.compile else [False]):
                step_s, warm_s, mem = measure(cfg, args.batch, seq, args.device, dtype, compiled, args.steps, args.warmup)
                tokens = args.batch * seq
                row = {
                    "bench": "train_step", "preset": name, "model": kind, "compiled": compiled,
                    "device": args.device, "machine": machine, "dtype": dtype, "batch": args.batch, "seq": seq,
                    "params": cfg.num_params(), "active_params": cfg.num_active_params(),
                    "step_ms": round(step_s * 1e3, 2), "tokens_per_s": round(tokens / step_s, 1),
                    "warmup_s": round(warm_s, 2), "peak_mem_gib": mem,
                    "torch": torch.__version__, "date": datetime.date.today().isoformat(),
                }
                if peak:
                    row["mfu"] = round(flops_per_token(cfg, seq) * tokens / step_s / (peak * 1e12), 4)
                rows.append(row)
                print(json.dumps(row), flush=True)
        moe_rate = next(r["tokens_per_s"] for r in rows if r["preset"] == name and r["model"] == "moe")
        dense_rate = next(r["tokens_per_s"] for r in rows if r["preset"] == name and r["model"] != "moe")
        print(json.dumps({"bench": "train_step_ratio", "preset": name,
                          "moe_over_dense_time": round(dense_rate / moe_rate, 3)}), flush=True)
    if args.out:
        write_results(args.out, "train", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
