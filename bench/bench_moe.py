"""Benchmark one MAMoE layer, forward + backward, across dispatch implementations.

    python bench/bench_moe.py                          # tiny shape, CPU fp32 (or CUDA bf16 if present)
    python bench/bench_moe.py --shape small --tokens 16384 --out moe.jsonl
    python bench/bench_moe.py --shape most --device cuda --compile

Implementations (all the same layer: fp32 router, top-k within the token's modality group, routed +
shared experts):
    grouped          minimost's default: sort by expert + grouped_mm, no host sync
    loop             minimost's readable per-expert loop (the test oracle)
    dense            minimost's reference: every expert on every token (E/K times the work)
    most_mask_loop   MoST's training dispatch re-expressed from most-reference.md §2.6: repeat each token
                     K times, a boolean mask per expert in a Python loop over *all* experts, write into
                     an empty buffer, reshape to (N, K, D), weight, sum
    swiglu_roofline  a dense SwiGLU with the same active hidden width (K + n_shared)·H: what the layer
                     would cost with perfect dispatch (no router, no permutation)

One JSON line per measurement: impl, shape, tokens, device, dtype, threads, ms (median), TFLOP/s (useful
fwd+bwd FLOPs, the same count for every impl), ratio_vs_grouped (ms / grouped ms; > 1 is slower).

On CPU, grouped_mm is itself a per-group matmul loop (performance-anchors §1.3) and there is no kernel
launch cost, so grouped ≈ loop there; the dispatch matters on a GPU, where every per-expert host sync
and small kernel counts. On a shared 2-core box, use --threads 1: OpenMP spinning against other
processes otherwise inflates the many-small-ops implementations most.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import torch
import torch.nn.functional as F
from _meta import write_results

from minimost.config import AUDIO, TEXT, ModelConfig
from minimost.moe import MoE, SwiGLU

# (d_model, expert_hidden, n_experts, top_k, n_shared): the presets' MoE shapes (config.py).
SHAPES = {
    "tiny": (128, 192, 16, 2, 1),
    "small": (512, 512, 32, 4, 2),
    "most": (2048, 1408, 64, 6, 2),
}
IMPLS = ("grouped", "loop", "dense", "most_mask_loop", "swiglu_roofline")


def most_mask_loop_forward(moe: MoE, x_BTD, marks_BT, valid_BT):
    """MoST's training-time dispatch (most-reference.md §2.6), on minimost's router and weights."""
    B, T, D = x_BTD.shape
    K = moe.cfg.top_k
    weights_NK, indices_NK, stats = moe.router(x_BTD, marks_BT, valid_BT)
    x_ND = x_BTD.reshape(B * T, D)
    x_AD = x_ND.repeat_interleave(K, dim=0)                    # (N*K, D): each token K times
    expert_A = indices_NK.reshape(-1)                          # (N*K,)
    y_AD = torch.empty_like(x_AD)
    ex = moe.experts
    for e in range(moe.cfg.n_experts):                         # every expert, even when it has no token
        mask_A = expert_A == e                                 # boolean mask -> a host sync per expert
        h = x_AD[mask_A]
        y_AD[mask_A] = (F.silu(h @ ex.w_gate[e].T) * (h @ ex.w_up[e].T)) @ ex.w_down[e].T
    y_ND = (y_AD.view(B * T, K, D).float() * weights_NK[:, :, None]).sum(dim=1).to(x_BTD.dtype)
    if moe.shared is not None:
        y_ND = y_ND + moe.shared(x_ND)
    return y_ND.view(B, T, D), stats


def useful_flops(cfg: ModelConfig, n_tokens: int) -> float:
    """fwd+bwd FLOPs of the useful work (3 × forward): router + K routed experts + shared experts."""
    d, h = cfg.d_model, cfg.expert_hidden
    fwd = 2 * n_tokens * (d * cfg.n_experts + 3 * d * h * (cfg.top_k + cfg.n_shared_experts))
    return 3.0 * fwd


def time_it(fn, device: str, warmup: int, repeats: int) -> float:
    """Median wall time of fn() in milliseconds, after warm-up."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def make_inputs(cfg: ModelConfig, n_tokens: int, device: str, dtype: torch.dtype, seq_len: int = 512):
    """Half text, half audio tokens in every sequence (a post-training ASR/TTS-like mix), no padding."""
    B = max(1, n_tokens // seq_len)
    T = n_tokens // B
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, T, cfg.d_model, generator=g).to(device, dtype)
    marks = torch.full((B, T), TEXT, dtype=torch.long)
    marks[:, T // 2:] = AUDIO
    return x, marks.to(device), torch.ones(B, T, dtype=torch.bool, device=device)


def bench_shape(shape: str, n_tokens: int, device: str, dtype: torch.dtype, impls, warmup: int,
                repeats: int, compile_: bool):
    d, h, e, k, n_shared = SHAPES[shape]
    cfg = ModelConfig(d_model=d, expert_hidden=h, n_experts=e, top_k=k, n_shared_experts=n_shared,
                      init_std=0.02)
    torch.manual_seed(0)
    moe = MoE(cfg).to(device, dtype)
    roofline = SwiGLU(d, (k + n_shared) * h).to(device, dtype)
    x, marks, valid = make_inputs(cfg, n_tokens, device, dtype)
    n_tokens = x.shape[0] * x.shape[1]
    grad_y = torch.randn_like(x)

    def step_for(impl):
        if impl == "swiglu_roofline":
            fwd = torch.compile(roofline) if compile_ else roofline

            def step():
                xx = x.detach().requires_grad_()
                fwd(xx).backward(grad_y)
            return step
        if impl == "most_mask_loop":
            forward = lambda xx: most_mask_loop_forward(moe, xx, marks, valid)
        else:
            layer = MoE(dataclasses.replace(cfg, dispatch=impl)).to(device, dtype)
            layer.load_state_dict(moe.state_dict())
            # only the grouped path compiles as one graph; the loops would graph-break per expert
            layer_fn = torch.compile(layer, fullgraph=True) if compile_ and impl == "grouped" else layer
            forward = lambda xx: layer_fn(xx, marks, valid, check_inputs=False)

        def step():
            xx = x.detach().requires_grad_()
            y, stats = forward(xx)
            torch.autograd.backward([y, stats.balance_loss], [grad_y, torch.ones_like(stats.balance_loss)])
        return step

    rows = []
    for impl in impls:
        ms = time_it(step_for(impl), device, warmup, repeats)
        rows.append(dict(impl=impl, shape=shape, tokens=n_tokens, device=device,
                         dtype=str(dtype).removeprefix("torch."), threads=torch.get_num_threads(), compiled=compile_ and impl in
                         ("grouped", "swiglu_roofline"), ms=round(ms, 3),
                         tflops=round(useful_flops(cfg, n_tokens) / (ms * 1e-3) / 1e12, 4)))
    grouped_ms = next((r["ms"] for r in rows if r["impl"] == "grouped"), None)
    for r in rows:
        r["ratio_vs_grouped"] = round(r["ms"] / grouped_ms, 3) if grouped_ms else None
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", nargs="+", default=["tiny"], choices=list(SHAPES))
    parser.add_argument("--tokens", type=int, default=None, help="tokens per step (default: 2048 CPU, 16384 CUDA)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                        help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--impl", nargs="+", default=list(IMPLS), choices=IMPLS)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="torch.compile grouped and the roofline (bf16)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", default=None, help="also append the JSON lines to this file")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device == "cuda" else "float32"))
    if args.compile and dtype != torch.bfloat16:
        parser.error("--compile needs --dtype bfloat16: grouped_mm's compiled kernel is bf16 only.")
    tokens = args.tokens or (16384 if args.device == "cuda" else 2048)
    impls = ["grouped"] + [i for i in args.impl if i != "grouped"]  # grouped first: it is the ratio base
    rows = []
    for shape in args.shape:
        for row in bench_shape(shape, tokens, args.device, dtype, impls, args.warmup, args.repeats, args.compile):
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.out:
        write_results(args.out, "moe", rows)


if __name__ == "__main__":
    main()
