"""One trainer for every stage: stage 0 (text pretraining), stage 1 (ASR/TTS/text-LM), stage 2 (instructions).

Only the `TrainConfig` (and the batch source's mixture) differs between stages. What one optimizer
step does, in order:

1. draw `grad_accum` *global* micro-batches from the batch source (docs/INTERFACES.md: `next_batch()`
   dicts with input_ids, attention_mask, labels, task_ids); count their supervised target tokens N
   on the host (the batches are still CPU tensors, so this costs no device sync);
2. for each micro-batch: keep this rank's rows (`parallel.shard_batch`), run the model once (bf16
   autocast on CUDA, fp32 on CPU), compute the per-row cross-entropy sums from the logits (which also
   give the per-task losses, without a second forward), and backpropagate
       loss = world · Σ(CE of my rows) / N  +  router_loss / grad_accum
   FSDP averages gradients over the `world` ranks, so the CE part is exactly the token mean over the
   whole step's N targets, however they are split into micro-batches and ranks. The router losses are
   per-sequence means; averaging them over micro-batches and ranks gives the mean over all sequences
   because every micro-batch and every rank holds the same number of rows;
3. clip the global gradient norm, set the scheduled learning rate, AdamW step;
4. move the aux-loss-free expert biases with the step's token counts (`MoE.update_bias`) when
   `bias_balancing` is on (counts summed over ranks so every rank moves its biases identically).

Weight decay applies to the weight matrices (attention and dense projections, routed/shared experts,
router gate, LM head); not to norms, biases, the input embedding (nor the LM head in `new_tokens` mode).

Logging every `log_every` steps: a tqdm bar (loss, tokens/s, ETA), `runs/<name>/log.jsonl`, and
TensorBoard when it is installed. Checkpoints: `minimost/checkpoint.py`. Plots at the end.
CPU runs are deterministic: the same seed gives bit-identical parameters, and a run stopped and
resumed from a checkpoint equals the uninterrupted run (tests/test_train.py).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from minimost import checkpoint as ckpt
from minimost import parallel
from minimost.config import AUDIO, SPECIAL, TASKS, TEXT, ModelConfig, TrainConfig
from minimost.model import MAMoELM
from minimost.moe import MoE

# Dense bf16 peak FLOP/s by GPU name (vendor datasheets), for MFU; override with `peak_flops=`.
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "H800": 989e12, "A100": 312e12, "A800": 312e12,
                   "L40S": 362e12, "L4": 121e12, "A10": 125e12, "4090": 165e12, "B200": 2250e12}


# ------------------------------------------------------------------------------ schedule, parameters

def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup to cfg.lr, then decay to min_lr."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps - 1))
    floor = cfg.min_lr_ratio
    if cfg.schedule == "cosine":
        scale = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    elif cfg.schedule == "linear":
        scale = 1 - (1 - floor) * progress
    else:
        scale = 1.0
    return cfg.lr * scale


def set_trainable(model: MAMoELM, mode: str, new_tokens_from: int | None = None) -> list:
    """Freeze what `mode` does not train; returns gradient hooks (kept alive by the caller).

    all: everything (MoST). experts_and_router: only the MoE layers (router gate, routed and shared
    experts). new_tokens: only the embedding and LM-head rows >= new_tokens_from (gradient masking).
    """
    for p in model.parameters():
        p.requires_grad_(mode == "all")
    if mode == "experts_and_router":
        for m in model.modules():
            if isinstance(m, MoE):
                m.requires_grad_(True)
        return []
    if mode == "new_tokens":
        if new_tokens_from is None:
            raise ValueError("trainable='new_tokens' needs new_tokens_from (the first new token id).")
        if parallel.is_distributed():
            raise ValueError("trainable='new_tokens' masks gradient rows and is not supported under FSDP.")

        def keep_new_rows(grad: torch.Tensor) -> torch.Tensor:
            grad = grad.clone()
            grad[:new_tokens_from] = 0
            return grad

        hooks = []
        for p in {id(p): p for p in (model.embed.weight, model.lm_head.weight)}.values():
            p.requires_grad_(True)
            hooks.append(p.register_hook(keep_new_rows))
        return hooks
    return []


def param_groups(model: MAMoELM, cfg: TrainConfig) -> list[dict]:
    """Two AdamW groups: decay on matrices, none on norms, biases and the input embedding."""
    no_decay_names = {"embed.weight"} | ({"lm_head.weight"} if cfg.trainable == "new_tokens" else set())
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 and name not in no_decay_names else no_decay).append(p)
    return [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: "auto" = bf16 on CUDA, none (fp32) on CPU."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


# ------------------------------------------------------------------------------ losses and metrics

def count_targets(batch: dict) -> int:
    """Supervised next-token targets in a (CPU) batch: labels[:, 1:] that are not -100 nor padding."""
    return int(((batch["labels"][:, 1:] != -100) & batch["attention_mask"][:, 1:].bool()).sum())


def row_losses(logits_BTV, labels_BT, valid_BT) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row sum of next-token cross-entropy (fp32) and per-row number of targets, both (B,)."""
    targets = labels_BT[:, 1:].masked_fill(~valid_BT[:, 1:], -100)                 # (B, T-1)
    ce = F.cross_entropy(logits_BTV[:, :-1].float().transpose(1, 2), targets, ignore_index=-100,
                         reduction="none")                                         # (B, T-1), 0 where ignored
    return ce.sum(1), (targets != -100).sum(1).float()


def expert_load_metrics(load_LME: torch.Tensor, allowed_ME: torch.Tensor) -> dict[str, Any]:
    """Per modality: fraction of its tokens sent to each expert (layer x expert), and summaries over its
    group: normalised entropy (1 = perfectly even), max and min load relative to an even share."""
    out: dict[str, Any] = {}
    for mark, name in ((TEXT, "text"), (AUDIO, "audio")):
        counts_LE = load_LME[:, mark]
        if counts_LE.sum() == 0:
            continue
        frac_LE = counts_LE / counts_LE.sum(-1, keepdim=True).clamp(min=1)
        group = frac_LE[:, allowed_ME[mark]]                                       # (L, G)
        G = group.shape[1]
        entropy = -(group * group.clamp(min=1e-12).log()).sum(-1) / max(math.log(G), 1e-12)
        out |= {f"load/{name}/entropy": entropy.mean().item(), f"load/{name}/max": (group.max(-1).values * G
                ).mean().item(), f"load/{name}/min": (group.min(-1).values * G).mean().item(),
                f"load/{name}/frac": [[round(v, 5) for v in row] for row in frac_LE.tolist()]}
    return out


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """torchtitan's convention: 6 x active non-embedding parameters + 12 x L x D x T (attention)."""
    return 6 * (cfg.num_active_params() - cfg.vocab_size * cfg.d_model) + 12 * cfg.n_layers * cfg.d_model * seq_len


# ------------------------------------------------------------------------------ a stand-in batch source

class SyntheticSource:
    """Synthetic mixed-modality batches with the batch-source contract (docs/INTERFACES.md).

    Text rows are runs of consecutive text ids, speech rows alternate runs of text and "unit" ids,
    so the loss can fall. `row_tasks` fixes each row's task (e.g. text-only rows for one FSDP rank);
    otherwise tasks are drawn from `mixture`. For tests and for running the trainer before data exists.
    """

    def __init__(self, token_modality: torch.Tensor, batch_size: int, seq_len: int,
                 mixture: dict[str, float] | None = None, seed: int = 0, row_tasks: list[str] | None = None):
        self.pools = {m: (token_modality == m).nonzero().flatten() for m in (TEXT, AUDIO, SPECIAL)}
        self.batch_size, self.seq_len, self.row_tasks = batch_size, seq_len, row_tasks
        mixture = mixture or {"text_lm": 1.0}
        self.tasks = list(mixture)
        self.weights = torch.tensor([mixture[t] for t in self.tasks], dtype=torch.float64)
        self.g = torch.Generator().manual_seed(seed)
        self.batches = 0

    def _randint(self, lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi, (1,), generator=self.g))

    def _row(self, task: str) -> tuple[list[int], int]:
        order = {"asr": (AUDIO, TEXT), "tts": (TEXT, AUDIO), "speech_instruct": (AUDIO, TEXT),
                 "speech_lm": (AUDIO,)}.get(task, (TEXT,))
        length, row, i = self._randint(self.seq_len // 2, self.seq_len + 1), [], 0
        while len(row) < length:
            pool = self.pools[order[i % len(order)]]
            span = self._randint(4, 12)
            start = self._randint(0, len(pool) - span)
            row += [int(self.pools[SPECIAL][0])] + pool[start:start + span].tolist()
            i += 1
        prompt = 0 if task == "text_lm" else length // 2  # the first half is an unsupervised prompt
        return row[:length], prompt

    def next_batch(self) -> dict[str, torch.Tensor]:
        tasks = self.row_tasks or [self.tasks[int(torch.multinomial(self.weights, 1, generator=self.g))]
                                   for _ in range(self.batch_size)]
        rows = [self._row(t) for t in tasks]
        T = max(len(r) for r, _ in rows)
        ids = torch.full((len(rows), T), int(self.pools[SPECIAL][-1]), dtype=torch.long)
        mask = torch.zeros(len(rows), T, dtype=torch.bool)
        labels = torch.full((len(rows), T), -100, dtype=torch.long)
        for b, (row, prompt) in enumerate(rows):
            ids[b, :len(row)] = torch.tensor(row)
            mask[b, :len(row)] = True
            labels[b, prompt:len(row)] = ids[b, prompt:len(row)]
        self.batches += 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels,
                "task_ids": torch.tensor([TASKS.index(t) for t in tasks])}

    def state_dict(self) -> dict:
        return {"generator": self.g.get_state(), "batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        self.g.set_state(state["generator"])
        self.batches = state["batches"]


# ------------------------------------------------------------------------------ the trainer

class Trainer:
    """Trains `model` for `cfg.steps` optimizer steps on batches from `source`, writing into `run_dir`.

    eval_fn(model, step) -> dict of metrics, called every `eval_every` steps and at the end.
    tokenizer: saved beside each checkpoint when given (an object with `save(dir)`).
    resume: a checkpoint, checkpoints or run folder; restores weights, optimizer, schedule, batch
    source and RNG states, so the run continues exactly. new_tokens_from: first trainable row in
    `trainable="new_tokens"` mode. peak_flops: the GPU's peak FLOP/s for MFU (default: by name).
    """

    def __init__(self, model: MAMoELM, cfg: TrainConfig, source, run_dir: str | Path,
                 eval_fn: Callable | None = None, tokenizer=None, resume: str | Path | None = None,
                 new_tokens_from: int | None = None, peak_flops: float | None = None,
                 progress: bool = True, extra_config: dict | None = None):
        self.cfg, self.source, self.eval_fn, self.tokenizer = cfg, source, eval_fn, tokenizer
        self.model_cfg: ModelConfig = model.cfg
        self.run_dir, self.progress = Path(run_dir), progress
        self.device = next(model.parameters()).device
        self.amp_dtype = resolve_precision(cfg.precision, self.device)
        self.rank, self.world = parallel.rank(), parallel.world_size()
        self.main = self.rank == 0
        self.config = {"model": self.model_cfg.to_dict(), "train": cfg.to_dict()} | (extra_config or {})
        if resume is None:
            torch.manual_seed(cfg.seed)
            random.seed(cfg.seed)

        self._hooks = set_trainable(model, cfg.trainable, new_tokens_from)
        if cfg.activation_checkpointing:
            parallel.apply_activation_checkpointing(model)
        if cfg.compile and self.amp_dtype is None and self.model_cfg.dispatch == "grouped":
            raise ValueError("compile=True in fp32 with dispatch='grouped' fails in torch 2.11 (the compiled "
                             "grouped_mm accepts bf16 only): use precision='bf16', model dispatch='loop', "
                             "or compile=False (the CPU default).")
        if cfg.compile:  # per block, as torchtitan; off by default: on CPU compiling takes minutes for little gain
            for block in model.blocks:
                block.compile()
        cuda_bf16 = self.device.type == "cuda" and self.amp_dtype == torch.bfloat16
        self.model = parallel.shard_model(model, bf16=cuda_bf16)  # no-op at world size 1
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(param_groups(self.model, cfg), lr=cfg.lr,
                                           betas=(cfg.beta1, cfg.beta2))
        self.moe_layers = [m for m in self.model.modules() if isinstance(m, MoE)]
        self.step, self.tokens_seen, self._checked = 0, 0, False
        self.flops_per_token = flops_per_token(self.model_cfg, cfg.seq_len)
        if peak_flops is None and self.device.type == "cuda" and self.amp_dtype is not None:
            name = torch.cuda.get_device_name(self.device)
            peak_flops = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
        self.peak_flops = peak_flops
        self.ckpt_root = self.run_dir / "checkpoints"
        self.log_path = self.run_dir / "log.jsonl"
        if resume is not None:
            self._resume(resume)
        elif self.main and ckpt.latest_checkpoint(self.ckpt_root) is not None:
            # A fresh run here would interleave its log and checkpoints with the earlier run's.
            raise ckpt.CheckpointError(
                f"{self.run_dir} already holds a run (checkpoints in {self.ckpt_root}). Resume it with "
                f"--resume {self.run_dir}, pick another name (--set train.run_name=...), or delete the folder.")
        elif self.main and self.log_path.exists():
            self.log_path.unlink()   # a run that died before its first checkpoint: start its log afresh
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(json.dumps(self.config, indent=2, sort_keys=True))
        self._tb = self._tensorboard() if self.main else None
        self._boundary = self._snapshot()
        self._updating = False
        self._reset_meters()

    # ---------------------------------------------------------------- the loop
    def train(self, stop_at: int | None = None) -> dict:
        """Run until cfg.steps (or `stop_at`); returns the last log record. Ctrl-C saves a checkpoint."""
        cfg, end = self.cfg, min(self.cfg.steps, stop_at or self.cfg.steps)
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not (self.main and self.progress),
                   desc=f"{cfg.stage}", dynamic_ncols=True)
        self.model.train()
        self.last_record: dict = {"step": self.step}
        try:
            while self.step < end:
                self._train_step()
                bar.update(1)
                last = self.step == cfg.steps
                if self.step % cfg.log_every == 0 or last:
                    self._log(bar)
                paused = time.perf_counter()  # evaluation and checkpoints do not count in tokens/s
                if self.eval_fn is not None and (self.step % cfg.eval_every == 0 or last):
                    self._evaluate()
                if self.step % cfg.ckpt_every == 0 or last:
                    self.save_checkpoint()
                self.meters["t0"] += time.perf_counter() - paused
        except KeyboardInterrupt:
            if not self._updating and not parallel.is_distributed():
                path = self.save_checkpoint()
                print(f"\ninterrupted: saved step {self.step} to {path}; resume with --resume {self.run_dir}")
            raise
        finally:
            bar.close()
        if self.step == cfg.steps and self.main:
            save_plots(self.run_dir)
        return self.last_record

    def _train_step(self) -> None:
        cfg = self.cfg
        batches = [self.source.next_batch() for _ in range(cfg.grad_accum)]  # global, on CPU
        n_targets = max(1, sum(count_targets(b) for b in batches))
        n_tokens = sum(int(b["attention_mask"].sum()) for b in batches)  # real input tokens, all ranks
        lr = lr_at(self.step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        load_LME = None
        for batch in batches:
            b = {k: v.to(self.device, non_blocking=True) for k, v in parallel.shard_batch(batch).items()}
            valid = b["attention_mask"].bool()
            autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype
                        else contextlib.nullcontext())
            with autocast:
                out = self.model(b["input_ids"], attention_mask_BT=valid, doc_ids_BT=b.get("doc_ids"),
                                 check_inputs=not self._checked,  # validate the first batch only
                                 audio_BTC=b.get("audio"), audio_mask_BT=b.get("audio_mask"))  # MoST-C input
            self._checked = True
            ce_B, count_B = row_losses(out.logits, b["labels"], valid)
            loss = ce_B.sum() * (self.world / n_targets) + out.router_loss / cfg.grad_accum
            loss.backward()
            self._accumulate(ce_B.detach(), count_B, b.get("task_ids"), out.router_stats)
            if out.router_stats:  # (MoE layers, marks, experts) token-slot counts, for the bias update
                micro_load = torch.stack([s.tokens_per_expert_ME for s in out.router_stats])
                load_LME = micro_load if load_LME is None else load_LME + micro_load
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        self.meters["grad_norm"] += parallel.clip_grad_norm(self.params, max_norm).detach()
        self._updating = True  # an interrupt from here to the end of the step must not save a checkpoint
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.model_cfg.bias_balancing and load_LME is not None:
            load_LME = parallel.all_reduce_sum(load_LME.clone())
            for moe, load in zip(self.moe_layers, load_LME):
                moe.update_bias(load)
        self.step += 1
        self.tokens_seen += n_tokens
        self.meters["steps"] += 1
        self.meters["tokens"] += n_tokens
        self._boundary = self._snapshot()
        self._updating = False

    def _snapshot(self) -> dict:
        """Batch-source and RNG state at the current step boundary (what a checkpoint must hold)."""
        return {"sampler": copy.deepcopy(self.source.state_dict()), "rng": ckpt.capture_rng()}

    # ---------------------------------------------------------------- logging
    def _reset_meters(self) -> None:
        n_moe, E = len(self.moe_layers), self.model_cfg.n_experts
        zeros = lambda *s: torch.zeros(*s, device=self.device)
        self.meters = {"task_ce": zeros(len(TASKS)), "task_n": zeros(len(TASKS)), "ce": zeros(()),
                       "n": zeros(()), "router": zeros(2), "load": zeros(n_moe, 3, E),
                       "grad_norm": zeros(()), "steps": 0, "tokens": 0, "t0": time.perf_counter()}

    def _accumulate(self, ce_B, count_B, task_ids, stats) -> None:
        m = self.meters
        m["ce"] += ce_B.sum()
        m["n"] += count_B.sum()
        if task_ids is not None:  # -1 = unknown task: counted in the total only
            known = (task_ids >= 0).float()
            m["task_ce"].index_add_(0, task_ids.clamp(min=0), ce_B * known)
            m["task_n"].index_add_(0, task_ids.clamp(min=0), count_B * known)
        if stats:
            m["router"] += torch.stack([sum(s.balance_loss.detach() for s in stats),
                                        sum(s.z_loss.detach() for s in stats)]) / self.cfg.grad_accum
            m["load"] += torch.stack([s.tokens_per_expert_ME for s in stats])

    def _log(self, bar) -> None:
        m, steps = self.meters, max(1, self.meters["steps"])
        sums = parallel.all_reduce_sum(torch.cat([m["task_ce"], m["task_n"], m["ce"][None], m["n"][None],
                                                  m["router"] / self.world]))
        load = parallel.all_reduce_sum(m["load"].clone()).cpu()
        values = sums.tolist()  # the one host sync per log interval
        nt = len(TASKS)
        task_ce, task_n, ce, n, (balance, z) = values[:nt], values[nt:2 * nt], values[2 * nt], values[2 * nt + 1], values[-2:]
        seconds = time.perf_counter() - m["t0"]
        lm_loss = ce / max(n, 1)
        rec: dict[str, Any] = {
            "step": self.step, "lr": lr_at(self.step - 1, self.cfg), "loss": lm_loss + (balance + z) / steps,
            "lm_loss": lm_loss, "balance_loss": balance / steps, "z_loss": z / steps,
            "grad_norm": m["grad_norm"].item() / steps, "tokens_per_s": m["tokens"] / seconds,
            "tokens_seen": self.tokens_seen, "time_s": seconds}
        rec |= {f"loss/{t}": c / k for t, c, k in zip(TASKS, task_ce, task_n) if k > 0}
        if self.peak_flops:
            rec["mfu"] = rec["tokens_per_s"] * self.flops_per_token / (self.peak_flops * self.world)
        if self.moe_layers:
            rec |= expert_load_metrics(load, self.moe_layers[0].router.allowed_ME.cpu())
        self.last_record = rec
        if self.main:
            with open(self.log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            bar.set_postfix(loss=f"{rec['loss']:.3f}", tok_s=f"{rec['tokens_per_s']:.0f}", lr=f"{rec['lr']:.2e}")
            if self._tb is not None:
                for k, v in rec.items():
                    if isinstance(v, (int, float)) and k != "step":
                        self._tb.add_scalar(k, v, self.step)
        self._reset_meters()

    def _evaluate(self) -> None:
        rng = ckpt.capture_rng()  # evaluation must not change the training's random stream
        self.model.eval()
        with torch.no_grad():
            metrics = self.eval_fn(self.model, self.step) or {}
        self.model.train()
        ckpt.restore_rng(rng)
        if self.main:
            with open(self.log_path, "a") as f:
                f.write(json.dumps({"step": self.step} | {f"eval/{k}": v for k, v in metrics.items()}) + "\n")

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # optional: TensorBoard is never required
            return None
        return SummaryWriter(str(self.run_dir / "tensorboard"))

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path | None:
        """Collective under FSDP (every rank gathers); rank 0 writes. Returns the folder on rank 0."""
        weights = parallel.model_state_dict(self.model)
        optim = parallel.optim_state_dict(self.model, self.optimizer)
        if not self.main:
            return None
        state = {"step": self.step, "tokens_seen": self.tokens_seen, "optimizer": optim,
                 "scheduler": {"schedule": self.cfg.schedule, "step": self.step},
                 "sampler": self._boundary["sampler"], "rng": self._boundary["rng"], "world_size": self.world}
        return ckpt.save_checkpoint(self.ckpt_root, self.step, weights, state, self.config,
                                    tokenizer=self.tokenizer, keep_last=self.cfg.keep_last)

    def _resume(self, path) -> None:
        weights, state, saved = ckpt.load_checkpoint(path)
        ckpt.check_config_match(saved.get("model", {}), self.config["model"], "model")
        ckpt.check_config_match(saved.get("train", {}), self.config["train"], "train",
                                allowed=ckpt.RESUMABLE_CHANGES)
        parallel.load_model_state_dict(self.model, weights)
        parallel.load_optim_state_dict(self.model, self.optimizer, state["optimizer"])
        self.source.load_state_dict(state["sampler"])
        ckpt.restore_rng(state["rng"])
        self.step, self.tokens_seen = state["step"], state["tokens_seen"]
        if self.main and self.log_path.exists():  # drop records of steps after the checkpoint
            keep = [line for line in self.log_path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= self.step]
            self.log_path.write_text("".join(line + "\n" for line in keep))


# ------------------------------------------------------------------------------ plots

def save_plots(run_dir: str | Path) -> list[Path]:
    """Loss curves (total and per task) and expert-load heatmaps per modality, from log.jsonl.

    Uses matplotlib's object API with the Agg canvas: no pyplot, no global figure state.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    run_dir = Path(run_dir)
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    records = [r for r in records if "loss" in r]
    if not records:
        return []
    out_dir = run_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    fig = Figure(figsize=(11, 4))
    FigureCanvasAgg(fig)
    ax_total, ax_task = fig.subplots(1, 2)
    steps = [r["step"] for r in records]
    for key in ("loss", "lm_loss"):
        ax_total.plot(steps, [r[key] for r in records], label=key)
    for task in TASKS:
        pts = [(r["step"], r[f"loss/{task}"]) for r in records if f"loss/{task}" in r]
        if pts:
            ax_task.plot(*zip(*pts), label=task)
    for ax, title in ((ax_total, "training loss"), (ax_task, "LM loss per task")):
        ax.set(xlabel="step", ylabel="loss", title=title)
        ax.legend()
    fig.tight_layout()
    paths = [out_dir / "loss.png"]
    fig.savefig(paths[0], dpi=100)

    last = records[-1]
    mods = [m for m in ("text", "audio") if f"load/{m}/frac" in last]
    if mods:
        fig = Figure(figsize=(5.5 * len(mods), 3.5))
        FigureCanvasAgg(fig)
        for ax, mod in zip(fig.subplots(1, len(mods), squeeze=False)[0], mods):
            frac = last[f"load/{mod}/frac"]                                        # (MoE layers, experts)
            im = ax.imshow(frac, aspect="auto", cmap="viridis", vmin=0)
            ax.set_yticks(range(len(frac)))
            ax.set_xticks(range(len(frac[0])))
            ax.set(xlabel="expert", ylabel="MoE layer", title=f"{mod} tokens: share per expert (step {last['step']})")
            fig.colorbar(im, ax=ax)
        fig.tight_layout()
        paths.append(out_dir / "expert_load.png")
        fig.savefig(paths[-1], dpi=100)
    return paths


# ------------------------------------------------------------------------------ entry point for the CLI

def run_training(model_cfg: ModelConfig, train_cfg: TrainConfig, preset: str = "custom",
                 resume: str | Path | None = None, source=None, tokenizer=None, eval_fn: Callable | None = None,
                 init_from: str | Path | None = None, new_tokens_from: int | None = None,
                 peak_flops: float | None = None, progress: bool = True) -> dict:
    """Build the model and train one stage into `<out_dir>/<run_name or preset-stage>/`.

    Works alone and under torchrun (FSDP2 when WORLD_SIZE > 1). source: a batch source (default: a
    `SyntheticSource`, until the data pipeline is wired in). init_from: a checkpoint (or run) folder
    whose weights start this stage (e.g. the transformed stage-0 model). Returns the last log record.
    """
    started_here = not parallel.is_distributed()
    rank, world, device = parallel.init_distributed()
    run_dir = Path(train_cfg.out_dir) / (train_cfg.run_name or f"{preset}-{train_cfg.stage}")
    torch.manual_seed(train_cfg.seed)
    model = MAMoELM(model_cfg)
    if tokenizer is not None:
        marks = torch.full((model_cfg.vocab_size,), SPECIAL, dtype=torch.long)
        token_map = tokenizer.modality_map()
        marks[:len(token_map)] = token_map
        model.set_modality_map(marks)
    else:
        from minimost.smoke import synthetic_modality_map
        model.set_modality_map(synthetic_modality_map(model_cfg.vocab_size))
    if init_from is not None:
        missing, unexpected = model.load_state_dict(
            ckpt.load_weights(ckpt.resolve_checkpoint(init_from) / ckpt.WEIGHTS), strict=False)
        new = [k for k in missing if not k.startswith("audio_projector.")]  # a new projector starts fresh
        if new or unexpected:
            raise RuntimeError(f"init_from {init_from} does not fit the model: missing {new}, unexpected {unexpected}.")
    model.to(device)
    if source is None:
        if rank == 0:
            print("note: no batch source given; training on synthetic mixed batches (SyntheticSource)")
        source = SyntheticSource(model.token_modality.cpu(), train_cfg.batch_size,
                                 min(train_cfg.seq_len, model_cfg.max_seq_len), train_cfg.mixture, train_cfg.seed)
    try:
        trainer = Trainer(model, train_cfg, source, run_dir, eval_fn=eval_fn, tokenizer=tokenizer, resume=resume,
                          new_tokens_from=new_tokens_from, peak_flops=peak_flops, progress=progress,
                          extra_config={"preset": preset, "world_size": world})
        record = trainer.train()
        return record | {"run_dir": str(run_dir)}
    finally:
        if started_here:
            parallel.cleanup()
