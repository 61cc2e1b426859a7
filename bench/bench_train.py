"""Whole-model training throughput: tokens/s (and MFU on GPU) of one AdamW step, MoE vs dense.

For each preset it times forward + backward + AdamW on a fixed batch of synthetic mixed text/audio
tokens (`minimost.smoke`), for the MoE model and for a dense model with the same *active* parameters
(every layer a SwiGLU of width (top_k + n_shared) * expert_hidden), in the same run so the ratio is
meaningful on a noisy machine. Modes: eager; `--compile` adds torch.compile of the whole model;
`--cudagraphs` (CUDA only) adds torch.compile(mode="reduce-overhead"). A mode that fails (e.g. grouped_mm
under compile in fp32) is recorded as a row with an `error` field instead of stopping the run.
`--threads 1,2` measures every configuration at each CPU thread count. One JSON line per measurement;
`--out FILE` also writes them after a meta line (machine, date, command, load average).

    python bench/bench_train.py                                   # micro and tiny on this CPU, eager
    python bench/bench_train.py --threads 1,2 --compile --out bench/results/train_cpu.jsonl
    python bench/bench_train.py --smoke                           # seconds: micro, 2 steps
    python -m minimost bench train --presets small                # same script through the CLI
    # on a GPU (what to run when one is available: bf16 autocast, B16 x S1024, eager, compiled and
    # CUDA graphs, tiny and small, with a host-sync check of one step under sync-debug mode):
    python bench/bench_train.py --device cuda --presets tiny,small --seq 1024 --compile --cudagraphs \
        --out bench/results/train_<gpu>.jsonl

MFU follows torchtitan's convention: FLOPs/token = 6 * (active non-embedding params) + 12 * L * D * T
(attention scores); the peak is taken from --peak-tflops (default on CUDA: 989, H100 SXM dense bf16;
an H200 has the same tensor-core peak). On CPU only tokens/s is reported (no MFU).
On CUDA each configuration also runs one step under torch.cuda.set_sync_debug_mode("error"): the row's
`host_sync_free` says whether the whole training step (MoE path included) ran without a host sync.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _meta import error_summary, loadavg, write_results  # noqa: E402
from _meta import machine as describe_machine  # noqa: E402

from minimost.config import preset  # noqa: E402
from minimost.model import MAMoELM  # noqa: E402
from minimost.smoke import synthetic_batch, synthetic_modality_map  # noqa: E402


def dense_twin(cfg):
    """A dense model with the MoE model's active parameters: every layer one SwiGLU of (K + shared) * H."""
    return dataclasses.replace(cfg, first_k_dense=cfg.n_layers,
                               dense_hidden=(cfg.top_k + cfg.n_shared_experts) * cfg.expert_hidden)


def flops_per_token(cfg, seq: int) -> float:
    embedding = cfg.vocab_size * cfg.d_model
    return 6 * (cfg.num_active_params() - embedding) + 12 * cfg.n_layers * cfg.d_model * seq


def measure(cfg, batch: int, seq: int, device: str, dtype: str, mode: str, steps: int, warmup: int) -> dict:
    """Time `steps` training steps after `warmup`; -> dict(step_s, warmup_s, peak_mem_gib, host_sync_free)."""
    torch.manual_seed(0)
    model = MAMoELM(cfg).to(device)
    model.set_modality_map(synthetic_modality_map(cfg.vocab_size).to(device))
    ids = synthetic_batch(cfg, model.token_modality.cpu(), batch, seq, torch.Generator().manual_seed(0)).to(device)
    cuda = device.startswith("cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=cuda)
    if mode == "compile":
        fwd = torch.compile(model)
    elif mode == "cudagraphs":
        fwd = torch.compile(model, mode="reduce-overhead")
    else:
        fwd = model
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=dtype == "bf16")

    def step():
        with autocast:
            out = fwd(ids, labels_BT=ids, check_inputs=False)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
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
    result = dict(step_s=statistics.median(times), warmup_s=warmup_s,
                  peak_mem_gib=round(torch.cuda.max_memory_allocated() / 2**30, 3) if cuda else None)
    if cuda:  # one more step with every host synchronisation turned into an error
        torch.cuda.set_sync_debug_mode("error")
        try:
            step()
            result["host_sync_free"] = True
        except RuntimeError as err:
            result["host_sync_free"], result["sync_error"] = False, error_summary(err)
        finally:
            torch.cuda.set_sync_debug_mode("default")
            sync()
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default=None, help="comma-separated presets (default: micro,tiny; CUDA: tiny,small)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16"], help="default: bf16 on cuda, fp32 on cpu")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile (errors become rows)")
    p.add_argument("--cudagraphs", action="store_true", help="also measure compile mode=reduce-overhead (CUDA)")
    p.add_argument("--compile-threads", type=int, default=None,
                   help="CPU: try the compiled modes only at this thread count (default: the first of --threads)")
    p.add_argument("--threads", default=None, help="comma-separated torch CPU thread counts, e.g. 1,2")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default CUDA: 989)")
    p.add_argument("--smoke", action="store_true", help="seconds-long check: micro, batch 2 x 32, 1 step")
    p.add_argument("--out", help="also write the JSON lines (after a meta line) to this file")
    p.add_argument("--notes", default="", help="a sentence for the meta line (shown in docs/performance.md)")
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if args.smoke:
        args.presets, args.batch, args.seq, args.steps, args.warmup = "micro", 2, 32, 1, 1
    presets = (args.presets or ("tiny,small" if cuda else "micro,tiny")).split(",")
    thread_counts = [int(t) for t in args.threads.split(",")] if args.threads else [torch.get_num_threads()]
    if cuda:
        thread_counts = thread_counts[:1]
    dtype = args.dtype or ("bf16" if cuda else "fp32")
    peak = args.peak_tflops or (989.0 if cuda else None)
    modes = ["eager"] + (["compile"] if args.compile else []) + (["cudagraphs"] if args.cudagraphs and cuda else [])
    compile_threads = args.compile_threads or thread_counts[0]
    rows = []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        machine = describe_machine()
        for name in presets:
            moe_cfg = preset(name)
            seq = min(args.seq, moe_cfg.max_seq_len)
            tokens = args.batch * seq
            for kind, cfg in (("moe", moe_cfg), ("dense_equal_active", dense_twin(moe_cfg))):
                for mode in modes:
                    if mode != "eager" and not cuda and threads != compile_threads:
                        continue
                    row = {"bench": "train_step", "preset": name, "model": kind, "mode": mode,
                           "compiled": mode != "eager", "device": args.device, "machine": machine,
                           "threads": threads, "dtype": dtype, "batch": args.batch, "seq": seq,
                           "params": cfg.num_params(), "active_params": cfg.num_active_params(),
                           "loadavg": loadavg()}
                    try:
                        res = measure(cfg, args.batch, seq, args.device, dtype, mode, args.steps, args.warmup)
                    except Exception as err:  # noqa: BLE001 - a failing mode is a result, not a crash
                        row["error"] = error_summary(err)
                        torch._dynamo.reset()
                    else:
                        step_s = res.pop("step_s")
                        row.update(step_ms=round(step_s * 1e3, 2), tokens_per_s=round(tokens / step_s, 1),
                                   warmup_s=round(res.pop("warmup_s"), 2), **res)
                        if peak:
                            row["mfu"] = round(flops_per_token(cfg, seq) * tokens / step_s / (peak * 1e12), 4)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    if args.out:
        write_results(args.out, "train", rows, notes=args.notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
