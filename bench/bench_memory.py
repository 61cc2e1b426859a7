"""Peak memory of a training step per preset and token count, measured, next to the analytic arithmetic.

    python bench/bench_memory.py                                  # micro, tiny on CPU; analytic for all presets
    python bench/bench_memory.py --presets micro,tiny,small --tokens 2048,8192 --out bench/results/memory_cpu.jsonl
    python bench/bench_memory.py --smoke                          # seconds: micro, 64 tokens
    # on a GPU (what to run when one is available; bf16 autocast, fp32 master weights + AdamW):
    python bench/bench_memory.py --device cuda --presets tiny,small --tokens 4096,16384 \
        --out bench/results/memory_<gpu>.jsonl

Method (one fresh subprocess per configuration, so one run's allocations never hide another's):
- CUDA: `torch.cuda.max_memory_allocated()` over `--steps` AdamW training steps (reset after the model
  is built), plus `memory_allocated()` after the build; this is what the caching allocator handed to
  tensors, not what nvidia-smi shows (that adds the allocator's cache and the CUDA context).
- CPU: the child's peak resident set size, `resource.getrusage(RUSAGE_SELF).ru_maxrss` (KiB on Linux), read
  after importing torch and minimost (the baseline), after building the model, and after the training steps. It has
  no allocation hooks, so it costs nothing, but it is coarse: RSS counts pages the allocator still
  holds after freeing, and shared library pages. `train_growth_mib` = peak after training - baseline is
  the figure to compare with the analytic total. (`tracemalloc` does not see torch's C++ allocations.)

Analytic arithmetic (`kind: "analytic"` rows; for every preset, `most` included), fp32 training:
    weights 4 B/param, gradients 4 B/param, AdamW exp_avg + exp_avg_sq 8 B/param  -> 16 B/param
    (bf16 autocast keeps fp32 master weights: the same 16 B/param, plus transient bf16 copies)
    activations ~ tokens * bytes * [ L * (per-layer saved widths) + 3 * vocab ]   (an estimate)
        per layer: 4*D (norm inputs/outputs, residual) + attention widths (q, k, v, output; MLA adds the
        latent and kv_b output) + MoE: E (router probs) + K*(2*D + 3*H) (gathered input, gate/up/act,
        expert output) + 3*S*H (shared) ; a dense layer: 3 * dense_hidden
        logits: 3 * vocab per token (logits, log-softmax, their gradient) — dominant for `most`.
It counts the tensors autograd saves for the backward pass under eager execution, without activation
checkpointing; it is an order-of-magnitude guide, checked against the measured micro/tiny rows.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _meta import loadavg, write_results  # noqa: E402

from minimost.config import PRESETS, preset  # noqa: E402

GIB, MIB = 2**30, 2**20


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def attention_widths(cfg) -> int:
    """Per-token widths of the attention tensors autograd keeps (inputs to each projection and SDPA)."""
    d, h = cfg.d_model, cfg.n_heads
    if cfg.attention == "mha":
        hd, kv = cfg.attn_head_dim, cfg.kv_heads
        return d + h * hd + 2 * kv * hd + h * hd + h  # input, q, k, v, output, softmax stats
    qk = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim
    latent = cfg.kv_lora_rank + cfg.qk_rope_head_dim
    kv_b = h * (cfg.qk_nope_head_dim + cfg.v_head_dim)
    return d + h * qk + latent + kv_b + h * qk + h * cfg.v_head_dim + h * cfg.v_head_dim + h


def analytic(cfg, tokens: int, act_bytes: int = 4) -> dict:
    """Parameter / gradient / AdamW / activation bytes of one fp32 training step (module docstring)."""
    P = cfg.num_params()
    per_layer = []
    for layer in range(cfg.n_layers):
        w = 4 * cfg.d_model + attention_widths(cfg)
        if cfg.is_moe_layer(layer):
            K, H, S, D = cfg.top_k, cfg.expert_hidden, cfg.n_shared_experts, cfg.d_model
            w += cfg.n_experts + K * (2 * D + 3 * H) + 3 * S * H
        else:
            w += 3 * cfg.dense_hidden
        per_layer.append(w)
    act = tokens * act_bytes * (sum(per_layer) + 3 * cfg.vocab_size)
    out = dict(params=P, active_params=cfg.num_active_params(), weights_gib=4 * P / GIB, grads_gib=4 * P / GIB,
               adamw_gib=8 * P / GIB, activations_gib=act / GIB)
    out["total_gib"] = sum(v for k, v in out.items() if k.endswith("_gib"))
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def child(preset_name: str, batch: int, seq: int, device: str, dtype: str, steps: int) -> dict:
    """Runs inside the subprocess: build, train `steps` steps, report peaks."""
    from minimost.model import MAMoELM  # imported before the baseline: code pages are not the model's
    from minimost.smoke import synthetic_batch, synthetic_modality_map

    cfg = preset(preset_name)
    cuda = device.startswith("cuda")
    base = _rss_mib()
    torch.manual_seed(0)
    model = MAMoELM(cfg).to(device)
    model.set_modality_map(synthetic_modality_map(cfg.vocab_size).to(device))
    ids = synthetic_batch(cfg, model.token_modality.cpu(), batch, seq, torch.Generator().manual_seed(0)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
    built = _rss_mib()
    if cuda:
        torch.cuda.synchronize()
        after_build = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=dtype == "bf16")
    t0 = time.perf_counter()
    for _ in range(steps):
        with autocast:
            loss = model(ids, labels_BT=ids, check_inputs=False).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if cuda:
        torch.cuda.synchronize()
    row = dict(rss_baseline_mib=round(base, 1), rss_after_build_mib=round(built, 1),
               rss_peak_mib=round(_rss_mib(), 1), train_growth_mib=round(_rss_mib() - base, 1),
               seconds=round(time.perf_counter() - t0, 2))
    if cuda:
        row.update(cuda_after_build_gib=round(after_build / GIB, 4),
                   cuda_peak_allocated_gib=round(torch.cuda.max_memory_allocated() / GIB, 4))
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default=None, help="measured presets (default: micro,tiny; CUDA: tiny,small)")
    p.add_argument("--tokens", default=None, help="comma-separated tokens per step (default CPU: 2048,8192)")
    p.add_argument("--seq", type=int, default=256, help="sequence length; batch = tokens // seq")
    p.add_argument("--steps", type=int, default=2, help="training steps (AdamW state exists from step 1)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16"], help="default: bf16 on cuda, fp32 on cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads in each child")
    p.add_argument("--analytic-tokens", type=int, default=16384, help="tokens per step for the analytic rows")
    p.add_argument("--smoke", action="store_true", help="seconds-long check: micro, 64 tokens, 1 step")
    p.add_argument("--child", nargs=4, metavar=("PRESET", "BATCH", "SEQ", "STEPS"), help=argparse.SUPPRESS)
    p.add_argument("--out", help="also write the JSON lines (after a meta line) to this file")
    p.add_argument("--notes", default="")
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    dtype = args.dtype or ("bf16" if cuda else "fp32")
    torch.set_num_threads(args.threads)
    if args.child:
        name, batch, seq, steps = args.child
        print(json.dumps(child(name, int(batch), int(seq), args.device, dtype, int(steps))))
        return 0
    if args.smoke:
        args.presets, args.tokens, args.seq, args.steps = "micro", "64", 32, 1
    presets = (args.presets or ("tiny,small" if cuda else "micro,tiny")).split(",")
    token_counts = [int(t) for t in (args.tokens or ("4096,16384" if cuda else "2048,8192")).split(",")]

    rows = []
    for name in presets:
        for tokens in token_counts:
            seq = min(args.seq, preset(name).max_seq_len, tokens)
            batch = max(1, tokens // seq)
            cmd = [sys.executable, str(HERE / "bench_memory.py"), "--device", args.device, "--dtype", dtype,
                   "--threads", str(args.threads), "--child", name, str(batch), str(seq), str(args.steps)]
            row = {"bench": "memory", "kind": "measured", "preset": name, "tokens": batch * seq, "batch": batch,
                   "seq": seq, "device": args.device, "dtype": dtype, "steps": args.steps,
                   "method": "cuda max_memory_allocated" if cuda else "ru_maxrss of a fresh subprocess",
                   "loadavg": loadavg()}
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                row["error"] = (proc.stderr.strip().splitlines() or ["failed"])[-1][:300]
            else:
                row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
            est = analytic(preset(name), batch * seq)
            row["analytic_total_mib"] = round(est["total_gib"] * 1024, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    for name in PRESETS:
        est = analytic(preset(name), args.analytic_tokens)
        row = {"bench": "memory", "kind": "analytic", "preset": name, "tokens": args.analytic_tokens,
               "dtype": "fp32 weights + grads + AdamW", **est}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        write_results(args.out, "memory", rows, notes=args.notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
