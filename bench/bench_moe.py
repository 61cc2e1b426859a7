"""Benchmark one MAMoE layer, forward + backward, against its peers in the same run.

    python bench/bench_moe.py                                    # tiny/small/most shapes on this CPU, eager
    python bench/bench_moe.py --shape tiny --dtype bfloat16 --compile --out moe_compile.jsonl
    python bench/bench_moe.py --smoke                            # seconds: the tiny shape, 64 tokens
    # on a GPU (what to run when one is available; bf16, 4 k and 16 k tokens, eager and compiled,
    # plus a host-sync check of every arm under torch.cuda.set_sync_debug_mode("error")):
    python bench/bench_moe.py --device cuda --shape tiny small most --tokens 4096 16384 --compile \
        --out bench/results/moe_<gpu>.jsonl

Shapes (d_model, expert hidden H, experts E, top-k K, shared S), taken from minimost's presets:
tiny (128, 192, 16, 2, 1), small (512, 512, 32, 4, 2) and most = MoST's full MoE layer
(2048, 1408, 64, 6, 2: DeepSeek-V2-Lite's block). Inputs: half text, half audio tokens per sequence.
On CPU the default token counts are reduced (most: 256 and 1024 instead of 16 384) to keep a run within
minutes; the GPU defaults are 4096 and 16 384.

Arms, all on the same weights (one `minimost.moe.MoE`, seed 0):
    grouped          minimost's default dispatch: sort by expert + grouped_mm, no host sync (the ratio base)
    grouped+compile  the same under torch.compile(fullgraph=True) (--compile); grouped_mm compiles in bf16
                     only, so an fp32 attempt is recorded as a row with an `error` field
    loop             minimost's readable per-expert loop (the test oracle); it slices the stacked weights per
                     expert (`w[e]`), whose backward costs E full-size gradient buffers: very slow at E = 64
                     on CPU (see bench/most_dispatch.py and docs/performance.md)
    most_mask_loop   MoST's training dispatch (bench/most_dispatch.py): repeat each token K times, a
                     boolean mask per expert over all E experts, write into an empty buffer, weight, sum;
                     E separate expert modules as in MoST (copies of the same weights)
    hf_grouped_mm    transformers' DeepseekV2Moe with experts_implementation="grouped_mm" (bench/hf_deepseek.py;
                     its own plain top-k router, no modality mask: same FLOPs, different expert choice)
    hf_eager         the same block with its "eager" experts (a loop over the experts that got tokens)
    dense            minimost's dense reference, every expert on every token (E/K x the work; opt-in)
    swiglu_roofline  a dense SwiGLU of hidden (K + S)*H, the same active parameters without a router or
                     permutation: what the layer would cost with free dispatch (+compile with --compile)

Timing: each arm is warmed up (compile time is recorded as `compile_s`), then the arms are timed in
interleaved rounds (one step of each arm per round) so a load change on a shared machine hits all arms
alike; `ms` is the median over rounds, `ms_min` the fastest. An eager arm (other than the grouped base)
whose first step exceeds --max-step-s (CPU default 20 s) is not repeated: its row has `single_step: true`
and that one first-step time, which includes one-time costs (first allocation of the gradients). A step = forward, backward with a fixed
random output gradient (and the balance loss's gradient), parameter gradients dropped (set to None).
On CUDA every measurement is bracketed by torch.cuda.synchronize().

FLOPs (counted explicitly, not profiled): the useful work of the layer, the same for every MoE arm:
    forward  = 2*N*D*E  (router logits)  +  2*N*3*D*H*(K + S)  (gate, up, down of K routed + S shared experts)
    fwd+bwd  = 3 * forward  (backward = grad wrt inputs + grad wrt weights = 2 x forward)
and for the roofline 3 * 2*N*3*D*(K + S)*H. Softmax, top-k, permutations, SiLU and the weighted sum are
not counted. TFLOP/s = FLOPs / median time. `ratio_vs_grouped` = ms / (grouped eager ms), > 1 = slower.

Host syncs: on CUDA each arm also runs one step under torch.cuda.set_sync_debug_mode("error"); the row's
`host_sync_free` is True when no synchronising call happened (minimost's grouped path should be).
On CPU, grouped_mm is itself a per-group matmul loop and there are no kernel launches, so grouped ≈ loop:
the dispatch matters on a GPU. On a shared 2-core box prefer --threads 1 (OpenMP threads spinning
against other processes inflate the many-small-ops arms most).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _meta, most_dispatch, hf_deepseek
from _meta import error_summary, write_results  # noqa: E402
from hf_deepseek import hf_available, hf_moe_from_minimost  # noqa: E402
from most_dispatch import most_experts_from_minimost, most_mask_loop_forward  # noqa: E402

from minimost.config import AUDIO, TEXT, preset  # noqa: E402
from minimost.moe import MoE, SwiGLU  # noqa: E402

SHAPES = ("tiny", "small", "most")
IMPLS = ("grouped", "loop", "most_mask_loop", "hf_grouped_mm", "hf_eager", "dense", "swiglu_roofline")
DEFAULT_IMPLS = tuple(i for i in IMPLS if i != "dense")
COMPILABLE = ("grouped", "hf_grouped_mm", "swiglu_roofline")
CPU_TOKENS = {"tiny": (512, 2048), "small": (512, 2048), "most": (256, 1024)}
GPU_TOKENS = (4096, 16384)


def shape_config(shape: str):
    """The MoE part of a preset: d_model, expert hidden, E, K, shared experts, MoST's routing rule."""
    return preset(shape)


def shape_dims(cfg) -> dict:
    return dict(d=cfg.d_model, h=cfg.expert_hidden, experts=cfg.n_experts, top_k=cfg.top_k,
                shared=cfg.n_shared_experts)


def layer_flops(cfg, n_tokens: int) -> float:
    """fwd+bwd FLOPs of the layer's useful work (see the module docstring)."""
    d, h, k, s = cfg.d_model, cfg.expert_hidden, cfg.top_k, cfg.n_shared_experts
    return 3.0 * (2 * n_tokens * d * cfg.n_experts + 2 * n_tokens * 3 * d * h * (k + s))


def roofline_flops(cfg, n_tokens: int) -> float:
    d, h, k, s = cfg.d_model, cfg.expert_hidden, cfg.top_k, cfg.n_shared_experts
    return 3.0 * 2 * n_tokens * 3 * d * (k + s) * h


def make_inputs(cfg, n_tokens: int, device: str, dtype: torch.dtype, seq_len: int = 512):
    """Half text, half audio tokens in every sequence (a post-training ASR/TTS-like mix), no padding."""
    T = min(seq_len, n_tokens)
    B = max(1, n_tokens // T)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, T, cfg.d_model, generator=g).to(device, dtype)
    marks = torch.full((B, T), TEXT, dtype=torch.long)
    marks[:, T // 2:] = AUDIO
    return x, marks.to(device), torch.ones(B, T, dtype=torch.bool, device=device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Arm:
    """One implementation at one shape: a zero-argument step() that runs forward + backward."""

    def __init__(self, impl: str, compiled: bool, step, params, flops: float):
        self.impl, self.compiled, self.step, self.params, self.flops = impl, compiled, step, params, flops
        self.times: list[float] = []
        self.error: str | None = None
        self.compile_s: float | None = None
        self.host_sync_free: bool | None = None
        self.sync_error: str | None = None
        self.single_step = False  # True: slower than --max-step-s, only one (first) step was timed

    def run(self) -> None:
        self.step()
        for p in self.params:
            p.grad = None


def build_arms(cfg, x, marks, valid, impls, compile_: bool, device: str, dtype: torch.dtype) -> list[Arm]:
    torch.manual_seed(0)
    moe = MoE(cfg).to(device, dtype)
    grad_y = torch.randn_like(x)
    n_tokens = x.shape[0] * x.shape[1]
    moe_params = list(moe.parameters())

    def moe_step(forward):
        def step():
            xx = x.detach().requires_grad_()
            y, stats = forward(xx)
            torch.autograd.backward([y, stats.balance_loss], [grad_y, torch.ones_like(stats.balance_loss)])
        return step

    def minimost_forward(dispatch: str, compiled: bool):
        # one set of weights: the dispatch is an attribute read at forward time
        def fwd(xx):
            moe.experts.dispatch = dispatch
            return moe(xx, marks, valid, check_inputs=False)
        if not compiled:
            return fwd
        compiled_moe = torch.compile(moe, fullgraph=True)

        def cfwd(xx):
            moe.experts.dispatch = dispatch
            return compiled_moe(xx, marks, valid, check_inputs=False)
        return cfwd

    arms: list[Arm] = []
    for impl in impls:
        for compiled in ([False, True] if compile_ and impl in COMPILABLE else [False]):
            flops = layer_flops(cfg, n_tokens)
            if impl in ("grouped", "loop", "dense"):
                arm = Arm(impl, compiled, moe_step(minimost_forward(impl, compiled)), moe_params, flops)
            elif impl == "most_mask_loop":
                most_experts = most_experts_from_minimost(moe)  # E separate expert modules, as MoST has

                def most_step(most_experts=most_experts):
                    xx = x.detach().requires_grad_()
                    # aux loss attached MoST's way (identity forward, gradient 1 in backward)
                    y, _ = most_mask_loop_forward(moe, most_experts, xx, marks, valid)
                    y.backward(grad_y)
                arm = Arm(impl, compiled, most_step, moe_params + list(most_experts.parameters()), flops)
            elif impl.startswith("hf_"):
                if not hf_available():
                    arm = Arm(impl, compiled, None, [], flops)
                    arm.error = "transformers (DeepSeek-V2) not installed"
                    arms.append(arm)
                    continue
                block = hf_moe_from_minimost(moe, "grouped_mm" if impl == "hf_grouped_mm" else "eager")
                fn = torch.compile(block, fullgraph=True) if compiled else block

                def hf_step(fn=fn):
                    xx = x.detach().requires_grad_()
                    fn(xx).backward(grad_y)
                arm = Arm(impl, compiled, hf_step, list(block.parameters()), flops)
            elif impl == "swiglu_roofline":
                torch.manual_seed(0)
                roof = SwiGLU(cfg.d_model, (cfg.top_k + cfg.n_shared_experts) * cfg.expert_hidden).to(device, dtype)
                fn = torch.compile(roof) if compiled else roof

                def roof_step(fn=fn):
                    xx = x.detach().requires_grad_()
                    fn(xx).backward(grad_y)
                arm = Arm(impl, compiled, roof_step, list(roof.parameters()), roofline_flops(cfg, n_tokens))
            else:
                raise ValueError(impl)
            arms.append(arm)
    return arms


def check_host_sync(arm: Arm, device: str) -> None:
    """CUDA only: one step under sync-debug mode "error"; record whether any host sync happened."""
    if not device.startswith("cuda") or arm.error:
        return
    _sync(device)
    torch.cuda.set_sync_debug_mode("error")
    try:
        arm.run()
        arm.host_sync_free = True
    except RuntimeError as err:
        arm.host_sync_free = False
        arm.sync_error = error_summary(err)
    finally:
        torch.cuda.set_sync_debug_mode("default")
        _sync(device)


def bench_shape(shape: str, n_tokens: int, device: str, dtype: torch.dtype, impls, warmup: int,
                repeats: int, compile_: bool, log=print, max_step_s: float | None = None) -> list[dict]:
    cfg = shape_config(shape)
    x, marks, valid = make_inputs(cfg, n_tokens, device, dtype)
    n_tokens = x.shape[0] * x.shape[1]
    arms = build_arms(cfg, x, marks, valid, impls, compile_, device, dtype)

    slow = set()
    for arm in arms:  # warm-up (and compilation); a failure becomes the row's error
        if arm.error:
            continue
        t0 = time.perf_counter()
        try:
            for _ in range(max(1, warmup)):
                _sync(device)
                t1 = time.perf_counter()
                arm.run()
                _sync(device)
                step_s = time.perf_counter() - t1
                is_base = arm.impl == "grouped" and not arm.compiled  # the ratio base is always repeated
                if max_step_s and step_s > max_step_s and not arm.compiled and not is_base:
                    # too slow to repeat in this run's budget: report this one (warm-up) step only
                    arm.times, arm.single_step = [step_s * 1e3], True
                    slow.add(id(arm))
                    break
        except Exception as err:  # noqa: BLE001 - any failure is a result to record, not a crash
            arm.error = error_summary(err)
            if arm.compiled:
                torch._dynamo.reset()
        if arm.compiled:
            arm.compile_s = round(time.perf_counter() - t0, 2)
        check_host_sync(arm, device)

    live = [a for a in arms if not a.error and id(a) not in slow]
    for _ in range(repeats):  # interleaved rounds: a load change hits every arm alike
        for arm in live:
            _sync(device)
            t0 = time.perf_counter()
            arm.run()
            _sync(device)
            arm.times.append((time.perf_counter() - t0) * 1e3)

    base = next((statistics.median(a.times) for a in arms if a.impl == "grouped" and not a.compiled and a.times),
                None)
    rows = []
    for arm in arms:
        row = dict(bench="moe_layer", impl=arm.impl, compiled=arm.compiled, shape=shape, **shape_dims(cfg),
                   tokens=n_tokens, device=device, dtype=str(dtype).removeprefix("torch."),
                   threads=torch.get_num_threads(), gflop=round(arm.flops / 1e9, 3))
        if arm.times:
            ms = statistics.median(arm.times)
            row.update(ms=round(ms, 3), ms_min=round(min(arm.times), 3), repeats=len(arm.times),
                       tflops=round(arm.flops / (ms * 1e-3) / 1e12, 4),
                       ratio_vs_grouped=round(ms / base, 3) if base else None)
            if arm.single_step:
                row["single_step"] = True
        if arm.compile_s is not None:
            row["compile_s"] = arm.compile_s
        if arm.host_sync_free is not None:
            row["host_sync_free"] = arm.host_sync_free
            if arm.sync_error:
                row["sync_error"] = arm.sync_error
        if arm.error:
            row["error"] = arm.error
        rows.append(row)
        log(json.dumps(row))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", nargs="+", default=list(SHAPES), choices=SHAPES)
    parser.add_argument("--tokens", type=int, nargs="+", default=None,
                        help="tokens per step (default: CPU tiny/small 512 2048, most 256 1024; CUDA 4096 16384)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                        help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--impl", nargs="+", default=list(DEFAULT_IMPLS), choices=IMPLS)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile'd grouped, hf_grouped_mm and roofline arms")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--max-step-s", type=float, default=None,
                        help="an eager arm whose first step takes longer is timed once, not repeated "
                             "(its row says single_step); default: 20 on CPU, none on CUDA")
    parser.add_argument("--smoke", action="store_true", help="seconds-long check: tiny shape, 64 tokens, 1 repeat")
    parser.add_argument("--out", default=None, help="also write the JSON lines (after a meta line) to this file")
    parser.add_argument("--notes", default="", help="a sentence for the meta line (shown in docs/performance.md)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.max_step_s is None and not args.device.startswith("cuda"):
        args.max_step_s = 20.0
    if args.smoke:
        args.shape, args.tokens, args.warmup, args.repeats = ["tiny"], [64], 1, 1
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
    impls = ["grouped"] + [i for i in args.impl if i != "grouped"]  # grouped first: it is the ratio base
    rows = []
    for shape in args.shape:
        if args.tokens:
            token_counts = args.tokens
        else:
            token_counts = GPU_TOKENS if args.device.startswith("cuda") else CPU_TOKENS[shape]
        for n in token_counts:
            rows += bench_shape(shape, n, args.device, dtype, impls, args.warmup, args.repeats, args.compile,
                                log=lambda s: print(s, flush=True), max_step_s=args.max_step_s)
    if args.out:
        write_results(args.out, "moe", rows, notes=args.notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
