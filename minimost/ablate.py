"""The MAMoE ablations (issue #12): arms that differ in one design choice, at equal parameters, data and steps.

    from minimost.ablate import run_ablation
    result = run_ablation("tiny", ["mamoe", "vanilla", "no_shared"], seeds=[0, 1, 2], data=data,
                          metrics_fn=my_metrics)          # -> ablation.json, ablation.md, plots/

Protocol (docs/ablations.md). The ablations are about what happens *after* the MoST transformation, so
per seed one stage 0 is trained and shared by every arm that starts from it; then, per arm x seed:
transform (`transform.most_transform`) -> the arm's change -> stage 1 (-> stage 2 with `stage2=True`)
-> `metrics_fn(model, tokenizer, data)`. Every stage reuses `pipeline.train_stage`, the one trainer.
A seed fixes the initialisation and the data order of every stage, so at one seed all arms see the
same batches. Finished arm x seed cells are skipped: each cell's folder is named by a hash of
everything that decides its training, and its metrics are cached per metrics function.

Arms (`ARMS`; any routing variant registered with `moe.register_routing` is an arm by its name):

    mamoe                MoST's rule: mask after the softmax, raw weights, shared experts (the preset)
    vanilla              top-k over all experts (modality_routing=False, MoST's "w/o MAMoE")
    no_shared            shared experts off; their hidden units are dealt out to the routed experts
    mask_before_softmax  softmax within the token's group (mask_mode="before_softmax")
    renormalise          the K weights renormalised to sum to 1
    dense_init           stage 0 is a *dense* model with the MoE's active FFN width, sparse-upcycled
    continuous           MoST-C: speech prompts as frozen-encoder states through a linear projector
                         (audio_input=continuous) instead of unit tokens; mamoe otherwise

Parameter matching is exact except where noted (`arm_param_table`): no_shared widens every routed
expert by the shared width / E rounded down to a multiple of 8 (exact for micro, -2 % for tiny), and
dense_init's stage 0 has the MoE's active parameters less the router; after upcycling it is the
mamoe model, parameter for parameter. continuous adds the projector (C·D + D parameters, C the unit
encoder's width, read from the cached speech features, which are built once before any cell trains).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from minimost.checkpoint import WEIGHTS, latest_checkpoint, load_weights, save_checkpoint
from minimost.config import AUDIO, TEXT, ConfigError, ModelConfig, TrainConfig, apply_overrides, train_preset
from minimost.config import preset as model_preset
from minimost.data.batching import eval_batches
from minimost.evaluate import SLM_SETS
from minimost.model import MAMoELM
from minimost.moe import ROUTING_VARIANTS
from minimost.pipeline import StageDataError, stage_model_config, stage_source, text_eval_fn, train_stage

MetricsFn = Callable[[MAMoELM, Any, Any], dict]   # (model, tokenizer, data) -> {metric: float}
STAGE_KEYS = {"stage0": "pretrain", "stage1": "posttrain", "stage2": "instruct"}
FAMILIES = ("asr", "tts", "slm", "sqa", "text")   # the task families of issue #12, by metric-name prefix


# --------------------------------------------------------------------------------------------
# Arms
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Arm:
    """One ablation arm: what it changes relative to MoST's model after the transformation.

    changes: ModelConfig fields set for stages 1-2. init: "moe" (the shared stage-0 MoE) or "dense" (a
    dense stage 0, sparse-upcycled). shared: "keep", or "into_experts" (shared experts off, their
    parameters dealt out to the routed experts). train_changes: TrainConfig fields set for stages 1-2
    (audio_input="continuous" also gives the model a projector as wide as the speech features).
    """

    name: str
    about: str
    changes: tuple[tuple[str, Any], ...] = ()
    init: str = "moe"
    shared: str = "keep"
    train_changes: tuple[tuple[str, Any], ...] = ()

    @property
    def continuous(self) -> bool:
        """Speech prompts as encoder states (MoST-C) rather than unit tokens."""
        return dict(self.train_changes).get("audio_input") == "continuous"

    def spec(self) -> dict:
        spec = {"name": self.name, "changes": dict(self.changes), "init": self.init, "shared": self.shared}
        if self.train_changes:   # only then: the cell hashes of the other arms stay what they were
            spec["train_changes"] = dict(self.train_changes)
        return spec


ARMS: dict[str, Arm] = {a.name: a for a in (
    Arm("mamoe", "MoST's rule: modality groups, mask after the softmax, raw weights, shared experts"),
    Arm("vanilla", "top-k over all experts (no modality routing)", (("modality_routing", False),)),
    Arm("no_shared", "no shared experts; their hidden units widen the routed experts", shared="into_experts"),
    Arm("mask_before_softmax", "softmax within the token's group", (("mask_mode", "before_softmax"),)),
    Arm("renormalise", "the K routing weights renormalised to sum to 1", (("renormalize", True),)),
    Arm("dense_init", "stage 0 is a dense model of equal active width, sparse-upcycled", init="dense"),
    Arm("continuous", "speech prompts as frozen-encoder states through a linear projector (MoST-C), not units",
        train_changes=(("audio_input", "continuous"),)),
)}


def resolve_arm(name: str) -> Arm:
    """A built-in arm, or the routing variant registered under `name`; a ConfigError listing both otherwise."""
    if name in ARMS:
        return ARMS[name]
    if name in ROUTING_VARIANTS:
        return Arm(name, f"routing variant {name!r} (moe.register_routing)", (("routing", name),))
    raise ConfigError(f"unknown ablation arm {name!r}; built-in arms: {', '.join(ARMS)}; registered routing "
                      f"variants: {', '.join(sorted(ROUTING_VARIANTS))}. Register a new routing rule with "
                      "@minimost.moe.register_routing(name) (docs/ablations.md).")


def shared_widening(cfg: ModelConfig) -> int:
    """Hidden units added to every routed expert when the shared experts are removed (no_shared).

    The shared SwiGLU has n_shared*H hidden units; E routed experts each take an equal slice, rounded
    down to a multiple of 8 (grouped GEMM alignment, config.py). Exact when n_shared*H/E is a multiple of 8.
    """
    return (cfg.n_shared_experts * cfg.expert_hidden // cfg.n_experts) // 8 * 8


def arm_model_config(base: ModelConfig, arm: Arm, feature_dim: int | None = None) -> ModelConfig:
    """The stage-1/2 model config of an arm: MoST's transformed config with the arm's change.

    feature_dim: the speech encoder's width C, for a continuous arm whose base has no projector yet
    (`audio_feature_dim` set with --set wins).
    """
    cfg = dataclasses.replace(base, **dict(arm.changes))
    if arm.continuous and cfg.audio_feature_dim <= 0:
        if not feature_dim:
            raise ConfigError(f"arm {arm.name!r} feeds encoder states through a projector and needs their width: "
                              "pass feature_dim (minimost.continuous.feature_width) or --set audio_feature_dim=C.")
        cfg = dataclasses.replace(cfg, audio_feature_dim=feature_dim)
    if arm.shared == "into_experts":
        cfg = dataclasses.replace(cfg, n_shared_experts=0, expert_hidden=cfg.expert_hidden + shared_widening(cfg))
    return cfg


def dense_stage0_config(stage0: ModelConfig) -> ModelConfig:
    """A dense model with the MoE's active FFN width: every layer one SwiGLU of (top_k + n_shared)·H units."""
    width = (stage0.top_k + stage0.n_shared_experts) * stage0.expert_hidden
    if stage0.first_k_dense and stage0.dense_hidden != width:
        raise ConfigError(f"dense_init needs first_k_dense=0 or dense_hidden={width} (the MoE's active FFN "
                          f"width), since all dense layers share dense_hidden; got first_k_dense="
                          f"{stage0.first_k_dense}, dense_hidden={stage0.dense_hidden}.")
    return dataclasses.replace(stage0, first_k_dense=stage0.n_layers, dense_hidden=width)


def arm_param_table(base: ModelConfig, arms: Sequence[Arm], feature_dim: int | None = None
                    ) -> dict[str, dict[str, int]]:
    """Total and active parameters of each arm in stages 1-2, and of its stage-0 model."""
    stage0 = stage_model_config(base, "pretrain")
    table = {}
    for arm in arms:
        cfg = arm_model_config(base, arm, feature_dim)
        s0 = dense_stage0_config(stage0) if arm.init == "dense" else stage0
        table[arm.name] = {"params": cfg.num_params(), "active_params": cfg.num_active_params(),
                           "stage0_params": s0.num_params(), "stage0_active_params": s0.num_active_params()}
    return table


# --------------------------------------------------------------------------------------------
# Weight surgery: sparse upcycling and carrying weights into an arm's model
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def upcycle_dense(dense: MAMoELM, moe_cfg: ModelConfig, seed: int = 0) -> MAMoELM:
    """Sparse upcycling (Komatsuzaki et al. 2022, with Qwen-MoE-style fine-grained slices) of a dense model.

    Each dense SwiGLU of (K + S)·H hidden units is cut along its hidden axis: the first S·H units
    become the shared expert, the remaining K slices of H units become the routed experts, expert e
    taking slice e mod K (so every slice appears E/K times, in both modality groups). Attention, norms,
    embeddings and head are copied; the router gate is fresh N(0, init_std) (seeded). The function is
    not preserved exactly (routing weights are probabilities), as in sparse upcycling.
    """
    K, S, H = moe_cfg.top_k, moe_cfg.n_shared_experts, moe_cfg.expert_hidden
    if dense.cfg.dense_hidden != (K + S) * H:
        raise ConfigError(f"the dense model's FFN has {dense.cfg.dense_hidden} hidden units; upcycling into "
                          f"top-{K} experts of {H} plus {S} shared needs {(K + S) * H}.")
    torch.manual_seed(seed)
    moe = MAMoELM(moe_cfg).to(dense.embed.weight.dtype)
    state = dense.state_dict()
    for name, target in moe.state_dict().items():
        if name in state and state[name].shape == target.shape:
            target.copy_(state[name])
    for block, dense_block in zip(moe.blocks, dense.blocks):
        if not block.is_moe:
            continue
        src, ffn = dense_block.ffn, block.ffn
        if ffn.shared is not None:
            ffn.shared.gate.weight.copy_(src.gate.weight[: S * H])
            ffn.shared.up.weight.copy_(src.up.weight[: S * H])
            ffn.shared.down.weight.copy_(src.down.weight[:, : S * H])
        for e in range(moe_cfg.n_experts):
            lo = S * H + (e % K) * H
            ffn.experts.w_gate[e].copy_(src.gate.weight[lo:lo + H])
            ffn.experts.w_up[e].copy_(src.up.weight[lo:lo + H])
            ffn.experts.w_down[e].copy_(src.down.weight[:, lo:lo + H])
    return moe


@torch.no_grad()
def carry_over(model: MAMoELM, cfg: ModelConfig) -> MAMoELM:
    """The transformed model's weights in an arm's config (same tensors; routing options change no shape).

    When the arm drops the shared experts and widens the routed ones (no_shared), routed expert e gets
    the shared hidden units [e·w, (e+1)·w) as its extra w units, so nothing learnt in stage 0 is thrown
    away except the n_shared·H - E·w units that the rounding leaves over.
    """
    if cfg == model.cfg:
        return model
    new = MAMoELM(cfg).to(model.embed.weight.dtype)
    state = model.state_dict()
    for name, target in new.state_dict().items():
        if name not in state:
            continue  # e.g. a fresh expert_bias buffer
        source = state[name]
        if source.shape == target.shape:
            target.copy_(source)
        elif name.endswith(("experts.w_gate", "experts.w_up")) and source.shape[::2] == target.shape[::2]:
            target[:, : source.shape[1]].copy_(source)
        elif name.endswith("experts.w_down") and source.shape[:2] == target.shape[:2]:
            target[:, :, : source.shape[2]].copy_(source)
        else:
            raise ConfigError(f"cannot carry {name} into the arm's model: shape {tuple(source.shape)} -> "
                              f"{tuple(target.shape)}.")
    H = model.cfg.expert_hidden
    w = cfg.expert_hidden - H
    for block, old in zip(new.blocks, model.blocks):
        if not block.is_moe or w <= 0 or old.ffn.shared is None or block.ffn.shared is not None:
            continue
        shared, experts = old.ffn.shared, block.ffn.experts
        for e in range(cfg.n_experts):
            rows = slice(e * w, (e + 1) * w)
            experts.w_gate[e, H:].copy_(shared.gate.weight[rows])
            experts.w_up[e, H:].copy_(shared.up.weight[rows])
            experts.w_down[e, :, H:].copy_(shared.down.weight[:, rows])
    return new


# --------------------------------------------------------------------------------------------
# Measurements: a small metrics function, expert load by modality, the default evaluation
# --------------------------------------------------------------------------------------------

def _valid_pools(data, tasks: Sequence[str]) -> dict:
    pools = data.token_pools("valid")
    return {t: pools[t] for t in tasks if t in pools}


def _valid_batches(data, tokenizer, model: MAMoELM, tasks: Sequence[str], batch_size: int) -> dict:
    """task -> validation batches. A model with a projector (the continuous arm) hears its speech prompts
    as encoder states, the way it was trained (`continuous.continuous_eval_batches`); the rest as units."""
    if model.cfg.audio_feature_dim > 0:
        from minimost.continuous import continuous_eval_batches
        return continuous_eval_batches(data, tokenizer, model.cfg, tasks, "valid", batch_size)
    return {t: eval_batches(ex, batch_size, tokenizer.pad_id) for t, ex in _valid_pools(data, tasks).items()}


def _audio_kwargs(batch: dict, device) -> dict:
    return ({"audio_BTC": batch["audio"].to(device), "audio_mask_BT": batch["audio_mask"].to(device)}
            if "audio" in batch else {})


@torch.no_grad()
def task_loss_metrics(data, tokenizer, model: MAMoELM, tasks: Sequence[str] = ("text_lm", "asr", "tts"),
                      batch_size: int = 32, max_batches: int = 8) -> dict[str, float]:
    """Teacher-forced validation loss per task: {"text_loss", "text_ppl", "asr_loss", "tts_loss", ...}.

    A cheap stand-in for `minimost.evaluate` (no generation, no vocoder): lower is better everywhere.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out_metrics = {}
    for task, batches in _valid_batches(data, tokenizer, model, tasks, batch_size).items():
        total, count = 0.0, 0
        for i, batch in enumerate(batches):
            if i >= max_batches:
                break
            out = model(batch["input_ids"].to(device), attention_mask_BT=batch["attention_mask"].to(device),
                        labels_BT=batch["labels"].to(device), check_inputs=False, **_audio_kwargs(batch, device))
            n = int((batch["labels"][:, 1:] != -100).sum())
            total, count = total + float(out.lm_loss) * n, count + n
        loss = total / max(count, 1)
        family = "text" if task == "text_lm" else task
        out_metrics[f"{family}_loss"] = loss
        if task == "text_lm":
            out_metrics["text_ppl"] = math.exp(min(loss, 50.0))
    model.train(was_training)
    return out_metrics


def loss_metrics(model, tokenizer, data) -> dict[str, float]:
    """The default small `metrics_fn`: teacher-forced validation losses of text-LM, ASR and TTS."""
    return task_loss_metrics(data, tokenizer, model)


def evaluate_metrics(kit, tasks: Sequence[str] = ("asr", "tts", "slm", "sqa"), cfg=None) -> MetricsFn:
    """A `metrics_fn` backed by `minimost.evaluate` (imported when first called): its flat headline numbers."""

    def metrics(model, tokenizer, data) -> dict[str, float]:
        from minimost.evaluate import evaluate_model, headline
        return headline(evaluate_model(model, tokenizer, data, kit, tasks=tuple(tasks), cfg=cfg))

    metrics.__name__ = "evaluate-" + "-".join(tasks)
    return metrics


@torch.no_grad()
def expert_loads(model: MAMoELM, data, tokenizer, tasks: Sequence[str] = ("text_lm", "asr", "tts"),
                 batch_size: int = 32, max_batches: int = 4) -> torch.Tensor:
    """(L, M, E) token-slot assignments per MoE layer, mark and expert, over validation batches of `tasks`."""
    from minimost.viz import expert_load
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total = None
    for batches in _valid_batches(data, tokenizer, model, tasks, batch_size).values():
        for i, batch in enumerate(batches):
            if i >= max_batches:
                break
            out = model(batch["input_ids"].to(device), attention_mask_BT=batch["attention_mask"].to(device),
                        check_inputs=False, **_audio_kwargs(batch, device))
            load = expert_load(out.router_stats)
            total = load if total is None else total + load
    model.train(was_training)
    return total if total is not None else torch.zeros(0)


# --------------------------------------------------------------------------------------------
# Aggregation and the report
# --------------------------------------------------------------------------------------------

def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator; 0 for a single seed)."""
    values = [float(v) for v in values]
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def lower_is_better(metric: str) -> bool:
    """WER, edit rates, losses and perplexities go down; accuracies go up."""
    return any(part in metric for part in ("wer", "cer", "edit", "loss", "ppl", "error"))


def family_of(metric: str) -> str:
    """The task family of a metric by its first name part (asr_wer -> asr, swuggy -> slm); 'other' when unknown."""
    head = metric.split("_")[0]
    if head in SLM_SETS:   # headline names of the spoken-LM sets do not start with their family
        return "slm"
    return head if head in FAMILIES else "other"


def aggregate(cells: Sequence[dict]) -> dict[str, dict[str, dict]]:
    """{arm: {metric: {"mean", "std", "n", "values"}}} over seeds, from the cells' metrics."""
    values: dict[str, dict[str, list[float]]] = {}
    for cell in cells:
        arm = values.setdefault(cell["arm"], {})
        for k, v in cell["metrics"].items():
            arm.setdefault(k, []).append(float(v))
    summary = {}
    for arm, metrics in values.items():
        summary[arm] = {}
        for k, vs in metrics.items():
            m, s = mean_std(vs)
            summary[arm][k] = {"mean": m, "std": s, "n": len(vs), "values": vs}
    return summary


def compare(summary: dict, metric: str, arm: str, baseline: str) -> str:
    """'better' | 'worse' | 'noise': is `arm` ahead of `baseline` by more than the larger of their two stds?"""
    a, b = summary[arm][metric], summary[baseline][metric]
    gap = (b["mean"] - a["mean"]) if lower_is_better(metric) else (a["mean"] - b["mean"])
    if abs(gap) <= max(a["std"], b["std"]):
        return "noise"
    return "better" if gap > 0 else "worse"


def verdicts(summary: dict, arm: str = "mamoe", baseline: str = "vanilla") -> list[str]:
    """One plain sentence per task family: does `arm` beat `baseline` beyond one standard deviation?"""
    if arm not in summary or baseline not in summary:
        return []
    by_family: dict[str, list[str]] = {}
    for metric in summary[arm]:
        if metric in summary[baseline]:
            by_family.setdefault(family_of(metric), []).append(metric)
    lines = []
    for family in [f for f in (*FAMILIES, "other") if f in by_family]:
        parts, results = [], []
        for metric in by_family[family]:
            a, b = summary[arm][metric], summary[baseline][metric]
            results.append(compare(summary, metric, arm, baseline))
            parts.append(f"{metric} {a['mean']:.4g} ± {a['std']:.2g} vs {b['mean']:.4g} ± {b['std']:.2g}")
        if all(r == "better" for r in results):
            verdict = f"{arm} beats {baseline} beyond one standard deviation"
        elif all(r == "worse" for r in results):
            verdict = f"{arm} is behind {baseline} beyond one standard deviation"
        elif all(r == "noise" for r in results):
            verdict = "the difference is inside the noise (within one standard deviation)"
        else:
            verdict = "mixed: " + ", ".join(f"{m} {r}" for m, r in zip(by_family[family], results))
        lines.append(f"**{family}**: {verdict} ({'; '.join(parts)}).")
    return lines


def render_markdown(result: dict) -> str:
    """ablation.md: protocol line, the table (mean ± std over seeds), parameters, plain verdicts, plots."""
    summary, arms = result["summary"], result["arms"]
    metrics = sorted({m for arm in summary.values() for m in arm},
                     key=lambda m: ((*FAMILIES, "other").index(family_of(m)), m))
    lines = [f"# MAMoE ablations: preset `{result['preset']}`", "",
             f"Seeds {result['seeds']}; steps {result['steps']}; stage 2 {'on' if result['stage2'] else 'off'}; "
             f"metrics `{result['metrics_name']}`. Mean ± sample standard deviation over seeds "
             "(↓ lower is better, ↑ higher is better). Protocol: docs/ablations.md.", "",
             "| arm | params | active | " + " | ".join(
                 f"{m} {'↓' if lower_is_better(m) else '↑'}" for m in metrics) + " |",
             "|---|---|---|" + "---|" * len(metrics)]
    for name in arms:
        p = result["params"][name]
        row = [f"{summary[name][m]['mean']:.4g} ± {summary[name][m]['std']:.2g}" if m in summary.get(name, {})
               else "–" for m in metrics]
        lines.append(f"| {name} | {p['params']:,} | {p['active_params']:,} | " + " | ".join(row) + " |")
    lines += ["", "## Does MAMoE beat vanilla top-k?", ""]
    lines += verdicts(summary) or ["(needs both the mamoe and the vanilla arm)"]
    if "continuous" in summary and "mamoe" in summary:
        lines += ["", "## Discrete vs continuous speech input (mamoe: units, continuous: encoder states)", ""]
        lines += verdicts(summary, arm="continuous", baseline="mamoe")
    others = [a for a in arms if a not in ("mamoe", "vanilla") and a in summary]
    if others and "mamoe" in summary:
        lines += ["", "## Each other arm against mamoe", ""]
        for other in others:
            res = {m: compare(summary, m, other, "mamoe") for m in summary[other] if m in summary["mamoe"]}
            beyond = [f"{m} {r}" for m, r in res.items() if r != "noise"]
            lines.append(f"- **{other}** ({ARMS[other].about if other in ARMS else 'routing variant'}): " + (
                "inside the noise on every metric." if not beyond else "beyond one std: " + ", ".join(beyond) + "."))
    lines += ["", "## Arms and parameters", "", "| arm | what changes | stage-0 params | stage-0 active |",
              "|---|---|---|---|"]
    for name in arms:
        p = result["params"][name]
        lines.append(f"| {name} | {result['arm_specs'][name]['about']} | {p['stage0_params']:,} | "
                     f"{p['stage0_active_params']:,} |")
    if result.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).relative_to(result['out_dir'])})"
                                         for p in result["plots"]]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------------------------

def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


@dataclass
class _Grid:
    """Everything the cells of one ablation share (configs, data, tokenizer, where things go)."""

    preset: str
    data: Any
    out: Path
    base: ModelConfig                     # the transformed (stage-1) model, MoST's choices
    stage0: ModelConfig                   # the stage-0 MoE (vanilla routing)
    train: dict[str, TrainConfig]         # per stage, before the seed is set
    stage2: bool
    progress: bool
    eval_batches: int = 4
    stage0_dirs: dict = field(default_factory=dict)
    feature_dim: int = 0                  # speech-encoder width C for continuous arms (0: none in the grid)

    def train_cfg(self, stage: str, seed: int, arm: Arm | None = None) -> TrainConfig:
        """A stage's TrainConfig at a seed; stages 1-2 get the arm's train_changes (stage 0 is shared)."""
        changes = dict(arm.train_changes) if arm is not None and stage != "pretrain" else {}
        return dataclasses.replace(self.train[stage], seed=seed, **changes)

    def arm_cfg(self, arm: Arm) -> ModelConfig:
        return arm_model_config(self.base, arm, self.feature_dim)

    def stage0_dir(self, seed: int, dense: bool) -> Path:
        """Train (or reuse) the stage 0 of one seed: the shared MoE, or the dense model for dense_init."""
        cfg = dense_stage0_config(self.stage0) if dense else self.stage0
        tcfg = self.train_cfg("pretrain", seed)
        run_dir = self.out / f"seed{seed}" / (f"stage0_{'dense' if dense else 'moe'}-"
                                              f"{_hash([cfg.to_dict(), tcfg.to_dict(), self.data.path.name])}")
        if run_dir not in self.stage0_dirs:
            source, tok = stage_source(self.data, cfg, tcfg)
            print(f"seed {seed}: stage 0 ({'dense' if dense else 'MoE'}) -> {run_dir}")
            train_stage(cfg, tcfg, self.preset, run_dir, source, tok,
                        eval_fn=text_eval_fn(self.data, tok, max_batches=self.eval_batches), progress=self.progress)
            self.stage0_dirs[run_dir] = True
        return run_dir

    def transformed(self, arm: Arm, seed: int, cell_dir: Path) -> Path:
        """The arm's model right after the MoST transformation, saved once as the start of stage 1."""
        from minimost.transform import most_transform
        target = cell_dir / "transformed"
        if latest_checkpoint(target / "checkpoints") is not None:
            return target
        dense = arm.init == "dense"
        s0_dir = self.stage0_dir(seed, dense)
        s0_cfg = dense_stage0_config(self.stage0) if dense else self.stage0
        stage0 = MAMoELM(s0_cfg)
        stage0.load_state_dict(load_weights(latest_checkpoint(s0_dir / "checkpoints") / WEIGHTS))
        if dense:
            stage0 = upcycle_dense(stage0, self.stage0, seed=seed)
        tok = self.data.unit_tokenizer()
        model = most_transform(stage0, tok)
        if model.cfg != self.base:
            raise StageDataError(f"the transformed model's config differs from stage 1's: {model.cfg} vs "
                                 f"{self.base}; raise vocab_size so the unit tokens fit.")
        with torch.random.fork_rng(devices=[]):   # parameters the arm adds (a projector) start seeded
            torch.manual_seed(seed)
            model = carry_over(model, self.arm_cfg(arm))
        save_checkpoint(target / "checkpoints", 0, model.state_dict(), {}, {"model": model.cfg.to_dict()},
                        tokenizer=tok)
        return target

    def cell(self, arm: Arm, seed: int, metrics_fn: MetricsFn, metrics_name: str) -> dict:
        """Train and measure one arm x seed, or read it back when it finished earlier."""
        cfg = self.arm_cfg(arm)
        stages = ["stage1", "stage2"] if self.stage2 else ["stage1"]
        key = _hash({"arm": arm.spec(), "model": cfg.to_dict(), "stage0": self.stage0.to_dict(), "seed": seed,
                     "train": {s: self.train_cfg(STAGE_KEYS[s], seed, arm).to_dict() for s in ["stage0", *stages]},
                     "data": self.data.path.name})
        cell_dir = self.out / "cells" / f"{arm.name}-seed{seed}-{key}"
        result_path = cell_dir / f"metrics-{metrics_name}.json"
        if result_path.exists():
            print(f"{arm.name} seed {seed}: finished earlier ({cell_dir.name}); skipped")
            return json.loads(result_path.read_text()) | {"skipped": True}
        previous = self.transformed(arm, seed, cell_dir)
        for key_ in stages:
            tcfg = self.train_cfg(STAGE_KEYS[key_], seed, arm)
            source, tok = stage_source(self.data, cfg, tcfg)
            print(f"{arm.name} seed {seed}: {key_}")
            train_stage(cfg, tcfg, self.preset, cell_dir / key_, source, tok, init_from=previous,
                        eval_fn=text_eval_fn(self.data, tok, max_batches=self.eval_batches), progress=self.progress)
            previous = cell_dir / key_
        tok = self.data.unit_tokenizer()
        model = MAMoELM(cfg)
        model.load_state_dict(load_weights(latest_checkpoint(previous / "checkpoints") / WEIGHTS))
        # a metric the evaluation could not compute comes back as None: left out, not averaged as 0
        metrics = {k: float(v) for k, v in metrics_fn(model, tok, self.data).items() if v is not None}
        loads = expert_loads(model, self.data, tok)
        record = {"arm": arm.name, "seed": seed, "cell": cell_dir.name, "metrics": metrics,
                  "params": model.num_params(), "loads_LME": loads.tolist()}
        result_path.write_text(json.dumps(record, indent=1) + "\n")
        return record


def ablation_configs(preset: str, overrides: Sequence[str] = (), steps: dict[str, int] | None = None
                     ) -> tuple[ModelConfig, ModelConfig, dict[str, TrainConfig]]:
    """(stage-1 model, stage-0 model, {stage: TrainConfig}) from a preset, `--set` overrides and step counts.

    steps: {"stage0"|"stage1"|"stage2": n} replaces a stage's step count (warm-up clipped to it).
    """
    base = model_preset(preset)
    models, trains = {}, {}
    for key, stage in STAGE_KEYS.items():
        m, t = apply_overrides(stage_model_config(base, stage), train_preset(preset, stage), list(overrides))
        n = (steps or {}).get(key)
        if n is not None:
            t = dataclasses.replace(t, steps=n, warmup_steps=min(t.warmup_steps, n))
        models[stage], trains[stage] = m, t
    return models["posttrain"], models["pretrain"], trains


def run_ablation(preset: str, arms: Sequence[str], seeds: Sequence[int], *, data, out_dir: str | Path,
                 overrides: Sequence[str] = (), steps: dict[str, int] | None = None, stage2: bool = False,
                 metrics_fn: MetricsFn | None = None, metrics_name: str | None = None, kit=None,
                 plots: bool = True, progress: bool = True, cache_dir: str | Path = "data/cache") -> dict:
    """Run the arms x seeds grid and write `ablation.json`, `ablation.md` and `plots/` into `out_dir`.

    data: a `TextData` whose speech tasks are rendered (`minimost synth`, or `render_speech_tasks`).
    metrics_fn(model, tokenizer, data) -> {metric: float}; default: `minimost.evaluate` through
    `evaluate_metrics(kit)` (needs `kit`). Cells already measured with the same metrics are skipped.
    A continuous arm needs the speech encoder's states: with `kit` they are computed once here (cached
    next to the data; `cache_dir` holds the synthesised audio), without it they must be cached already.
    Returns the result dict that ablation.json holds.
    """
    arm_objs = [resolve_arm(a) for a in arms]  # unknown names fail before anything trains
    if not arm_objs or not seeds:
        raise ConfigError("an ablation needs at least one arm and one seed.")
    if len({a.name for a in arm_objs}) != len(arm_objs) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"arms {list(arms)} and seeds {list(seeds)} must not repeat.")
    if metrics_fn is None:
        if kit is None:
            raise ConfigError("the default metrics (minimost.evaluate) need the speech kit: pass kit=..., or "
                              "pass metrics_fn (e.g. minimost.ablate.loss_metrics).")
        from minimost.evaluate import EvalConfig
        # Every arm is measured on the same sets; the TTS ceilings do not depend on the arm, so they
        # are left to `minimost eval` on a run (they cost as much as the rest of the TTS evaluation).
        metrics_fn = evaluate_metrics(kit, ("asr", "tts", "slm", "sqa", "text"),
                                      EvalConfig(max_asr=100, max_tts=50, ceilings=False))
    metrics_name = metrics_name or getattr(metrics_fn, "__name__", "metrics")
    base, stage0, trains = ablation_configs(preset, overrides, steps)
    try:
        unit_tok = data.unit_tokenizer()
    except FileNotFoundError:
        raise StageDataError("the ablation trains stage 1 on speech tasks, which are not rendered in "
                             f"{data.path}; run `python -m minimost synth --preset {preset}` first.") from None
    feature_dim = 0
    if any(arm.continuous for arm in arm_objs):   # the encoder states: built (or found) once, before any cell
        from minimost.continuous import feature_width
        feature_dim = feature_width(data, unit_tok, kit, cache_dir, progress=progress)
        if base.audio_feature_dim not in (0, feature_dim):
            raise ConfigError(f"audio_feature_dim={base.audio_feature_dim} but the speech features are "
                              f"{feature_dim} wide; drop the override or set audio_feature_dim={feature_dim}.")
    for arm in arm_objs:
        arm_model_config(base, arm, feature_dim)  # validates the arm's config up front
        if arm.init == "dense":
            dense_stage0_config(stage0)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    grid = _Grid(preset, data, out, base, stage0, trains, stage2, progress, feature_dim=feature_dim)
    cells = [grid.cell(arm, seed, metrics_fn, metrics_name) for seed in seeds for arm in arm_objs]

    result = {"preset": preset, "arms": [a.name for a in arm_objs], "seeds": list(seeds),
              "steps": {k: trains[s].steps for k, s in STAGE_KEYS.items() if k != "stage2" or stage2},
              "stage2": stage2, "metrics_name": metrics_name, "overrides": list(overrides),
              "out_dir": str(out), "model": base.to_dict(),
              "arm_specs": {a.name: a.spec() | {"about": a.about} for a in arm_objs},
              "params": arm_param_table(base, arm_objs, feature_dim), "summary": aggregate(cells),
              "cells": [{k: v for k, v in c.items() if k != "loads_LME"} for c in cells]}
    result["verdicts"] = verdicts(result["summary"])
    if feature_dim:
        result["feature_dim"] = feature_dim
        result["verdicts_continuous"] = verdicts(result["summary"], arm="continuous", baseline="mamoe")
    result["plots"] = [str(p) for p in write_plots(result, cells, base, out / "plots")] if plots else []
    (out / "ablation.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "ablation.md").write_text(render_markdown(result))
    print(f"ablation: {out / 'ablation.md'}")
    return result


def write_plots(result: dict, cells: Sequence[dict], base: ModelConfig, plot_dir: Path) -> list[Path]:
    """metrics.png (bars ± std per arm) and expert_load.png (mamoe vs vanilla, text vs audio tokens)."""
    from minimost.viz import plot_ablation_bars, plot_expert_load_by_arm
    plot_dir.mkdir(parents=True, exist_ok=True)
    paths = [plot_dir / "metrics.png"]
    plot_ablation_bars(result["summary"], result["arms"], lower_is_better=lower_is_better, savefig=paths[0])
    shown = [a for a in ("mamoe", "vanilla") if a in result["arms"]] or result["arms"][:2]
    loads, cfgs = {}, {}
    for arm in shown:
        per_seed = [torch.tensor(c["loads_LME"]) for c in cells if c["arm"] == arm and c.get("loads_LME")]
        if per_seed:
            loads[arm] = torch.stack(per_seed).sum(0)
            cfgs[arm] = arm_model_config(base, resolve_arm(arm), result.get("feature_dim"))
    if loads:
        paths.append(plot_dir / "expert_load.png")
        plot_expert_load_by_arm(loads, cfgs, marks=(TEXT, AUDIO), savefig=paths[-1])
    return paths
