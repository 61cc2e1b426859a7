"""Typed configuration for minimost: `ModelConfig`, `TrainConfig`, and the preset ladder.

Every behaviour of the model is a *named field* here (DESIGN.md §2, §6); presets change numbers,
never code paths. Both dataclasses validate themselves in `__post_init__` and explain what is wrong,
what was expected and how to fix it. They round-trip exactly through plain dicts / JSON
(`to_dict` / `from_dict`), and `apply_overrides` implements the CLI's `--set key=value`.

Presets (DESIGN.md §6):

    micro  unit tests, seconds        d 64, 2 layers, 4+4 experts top-2, 1 shared, vocab 256
    tiny   the CPU course, make demo  d 128, 4 layers, 8+8 experts top-2, 1 shared, ~5 M params
    small  one GPU                    d 512, 8 layers, 16+16 experts top-4, 2 shared, ~0.2 B params
    most   MoST's real shape          DeepSeek-V2-Lite: 27 layers, d 2048, MLA, layer 0 dense,
                                      32+32 experts of 1408 top-6, 2 shared, ~15.7 B / ~2.66 B active

`num_params()` and `num_active_params()` are computed from the config alone (no model is built);
a test checks them against built models and against DeepSeek-V2-Lite's published 15.7 B.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

# Modality marks: one small integer per position, produced by the tokenizer's declared id map
# (DESIGN.md §2). MoST uses 0 = text, 1 = audio and sends everything else (mark 2) to *no* routed
# expert (most-reference.md §2.7); minimost routes SPECIAL by `ModelConfig.special_token_route`.
TEXT, AUDIO, SPECIAL = 0, 1, 2
MARK_NAMES = {TEXT: "text", AUDIO: "audio", SPECIAL: "special"}


class ConfigError(ValueError):
    """A configuration value is invalid; the message says what was found and what is expected."""


def _choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not valid; expected one of {', '.join(map(repr, allowed))}.")


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{name} must be a positive number, got {value!r}.")


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------

@dataclass
class ModelConfig:
    """Shape and behaviour of a MAMoE decoder LM. Defaults describe MoST's choices where they apply."""

    # --- vocabulary and trunk ---
    vocab_size: int = 256                 # total ids: text + speech units + special tokens
    d_model: int = 64                     # residual width D
    n_layers: int = 2                     # decoder blocks
    n_heads: int = 4                      # attention heads
    max_seq_len: int = 256                # longest sequence (prompt + generation) the model accepts
    norm_eps: float = 1e-6                # RMSNorm epsilon (DeepSeek-V2: 1e-6)
    tie_embeddings: bool = False          # share the input embedding with the LM head (MoST: untied)
    init_std: float = 0.02                # std of the normal init of every linear / embedding
    dropout: float = 0.0                  # dropout on attention probs and residual branches

    # --- attention ---
    attention: Literal["mha", "mla"] = "mha"   # standard multi/grouped-query, or DeepSeek-V2 MLA
    attn_impl: Literal["sdpa", "manual"] = "sdpa"  # fused SDPA, or the readable masked softmax
    n_kv_heads: int | None = None         # MHA only: key/value heads for GQA (None = n_heads)
    head_dim: int | None = None           # MHA only: per-head width (None = d_model // n_heads)
    q_lora_rank: int | None = None        # MLA: low-rank query (None = plain q_proj, as V2-Lite)
    kv_lora_rank: int = 512               # MLA: width of the compressed KV latent
    qk_nope_head_dim: int = 128           # MLA: per-head query/key width without RoPE
    qk_rope_head_dim: int = 64            # MLA: per-head query/key width with RoPE (key shared)
    v_head_dim: int = 128                 # MLA: per-head value width

    # --- rotary position embedding ---
    rope_theta: float = 10000.0
    rope_interleaved: bool = False        # True: rotate adjacent pairs (x0,x1),(x2,x3).. as DeepSeek's weights expect
    rope_scaling: Literal["none", "yarn"] = "none"
    yarn_factor: float = 1.0              # context extension factor s
    yarn_original_max_seq_len: int = 4096 # pretraining context that YaRN extends
    yarn_beta_fast: float = 32.0
    yarn_beta_slow: float = 1.0
    yarn_mscale: float = 1.0              # DeepSeek: 0.707
    yarn_mscale_all_dim: float = 0.0      # DeepSeek: 0.707; softmax scale *= (0.1*m*ln(s)+1)^2 with m = this

    # --- feed-forward: dense layers ---
    first_k_dense: int = 0                # DeepSeek `first_k_dense_replace`: layers [0, k) use a dense SwiGLU
    dense_hidden: int = 256               # hidden width of those dense SwiGLUs (V2-Lite: 10944)

    # --- feed-forward: mixture of experts (DESIGN.md §2) ---
    n_experts: int = 8                    # routed experts E (text + audio groups together)
    top_k: int = 2                        # routed experts per token K
    expert_hidden: int = 64               # hidden width of one routed SwiGLU expert H
    n_shared_experts: int = 1             # shared experts, fused into one SwiGLU of width n_shared*H; 0 = off
    modality_routing: bool = True         # MAMoE on; False = vanilla top-k over all experts
    routing: str = "most"                 # registered routing variant (moe.register_routing); MoST: "most"
    text_experts: tuple[int, ...] | None = None   # None = first half by index (MoST)
    audio_experts: tuple[int, ...] | None = None  # None = second half by index (MoST)
    special_token_route: Literal["text", "audio", "all"] = "text"  # experts for SPECIAL marks (never "none")
    mask_mode: Literal["after_softmax", "before_softmax"] = "after_softmax"  # MoST: after
    renormalize: bool = False             # renormalise the K weights to sum to 1 (MoST: False)
    routed_scaling_factor: float = 1.0    # multiplies the routed output (MoST: 1.0)
    balance_loss: Literal["none", "global", "sequence"] = "sequence"  # MoST: per-sequence
    balance_alpha: float = 0.001          # weight of the balance loss (MoST: 0.001)
    z_loss_coef: float = 0.0              # router z-loss weight (ST-MoE); 0 = off
    bias_balancing: bool = False          # aux-loss-free balancing: bias added for selection only
    bias_update_rate: float = 1e-3        # step of the bias update (DeepSeek-V3's gamma)
    dispatch: Literal["grouped", "loop", "dense"] = "grouped"  # fast path, readable loop, dense reference

    # Continuous speech input (MoST-C, minimost/continuous.py): encoder states -> projector -> spliced frames.
    audio_feature_dim: int = 0            # encoder width C fed to the projector; 0 = no projector (units only)
    audio_projector: Literal["linear", "mlp"] = "linear"  # MoST: one Linear(768 -> d_model) with bias
    audio_downsample: int = 1             # stack k encoder frames per position (MoST: 1, i.e. 25 Hz)

    def __post_init__(self) -> None:
        # JSON gives lists; keep tuples so configs compare equal and stay hashable.
        for name in ("text_experts", "audio_experts"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, tuple(int(i) for i in value))
        self.validate()

    # ---------------------------------------------------------------- validation
    def validate(self) -> None:
        _positive(self, "vocab_size", "d_model", "n_layers", "n_heads", "max_seq_len", "norm_eps",
                  "init_std", "rope_theta", "dense_hidden", "n_experts", "top_k", "expert_hidden")
        _choice("attention", self.attention, ("mha", "mla"))
        _choice("attn_impl", self.attn_impl, ("sdpa", "manual"))
        _choice("rope_scaling", self.rope_scaling, ("none", "yarn"))
        _choice("special_token_route", self.special_token_route, ("text", "audio", "all"))
        _choice("mask_mode", self.mask_mode, ("after_softmax", "before_softmax"))
        _choice("balance_loss", self.balance_loss, ("none", "global", "sequence"))
        _choice("dispatch", self.dispatch, ("grouped", "loop", "dense"))
        # The name is checked against moe.py's registry when a Router is built (users register variants
        # after configs may already exist, and this module stays free of torch).
        if not isinstance(self.routing, str) or not self.routing.isidentifier():
            raise ConfigError(f"routing must name a registered routing variant (e.g. 'most'), got {self.routing!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}.")
        if not 0 <= self.first_k_dense <= self.n_layers:
            raise ConfigError(f"first_k_dense={self.first_k_dense} must be between 0 and n_layers={self.n_layers}.")
        if self.n_shared_experts < 0:
            raise ConfigError(f"n_shared_experts must be >= 0 (0 switches shared experts off), got {self.n_shared_experts}.")
        for name in ("balance_alpha", "z_loss_coef", "bias_update_rate", "routed_scaling_factor"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.top_k > self.n_experts:
            raise ConfigError(f"top_k={self.top_k} is larger than n_experts={self.n_experts}; "
                              f"choose top_k <= {self.n_experts}.")

        # Grouped GEMM needs 16-byte aligned strides: with bf16 the inner dims must be multiples of 8
        # (performance-anchors.md §1.3). The same is asked of every dispatch so presets never depend on it.
        for name in ("d_model", "expert_hidden"):
            if getattr(self, name) % 8:
                raise ConfigError(f"{name}={getattr(self, name)} must be a multiple of 8 (grouped GEMM needs "
                                  f"16-byte aligned rows in bf16); nearest valid: {getattr(self, name) // 8 * 8 or 8}.")

        if self.attention == "mha":
            if self.head_dim is None and self.d_model % self.n_heads:
                raise ConfigError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                                  "change one of them or set head_dim explicitly.")
            kv = self.kv_heads
            if self.n_heads % kv:
                raise ConfigError(f"n_heads={self.n_heads} must be a multiple of n_kv_heads={kv} (GQA).")
            rope_dim = self.attn_head_dim
        else:
            _positive(self, "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
            if self.q_lora_rank is not None and self.q_lora_rank <= 0:
                raise ConfigError(f"q_lora_rank must be positive or None, got {self.q_lora_rank}.")
            rope_dim = self.qk_rope_head_dim
        if rope_dim % 2:
            raise ConfigError(f"the rotary dimension must be even, got {rope_dim}.")
        if self.rope_scaling == "yarn" and self.yarn_factor < 1:
            raise ConfigError(f"yarn_factor must be >= 1, got {self.yarn_factor}.")

        if self.modality_routing:
            text, audio = self.expert_groups()
            if set(text) & set(audio):
                raise ConfigError(f"text_experts and audio_experts overlap on {sorted(set(text) & set(audio))}; "
                                  "the two groups must be disjoint.")
            everything = set(range(self.n_experts))
            bad = (set(text) | set(audio)) - everything
            if bad:
                raise ConfigError(f"expert indices {sorted(bad)} are outside 0..{self.n_experts - 1}.")
            missing = everything - set(text) - set(audio)
            if missing:
                raise ConfigError(f"experts {sorted(missing)} belong to neither group; text_experts and "
                                  "audio_experts must together cover every routed expert.")
            for gname, group in (("text", text), ("audio", audio)):
                if len(group) < self.top_k:
                    raise ConfigError(f"the {gname} group has {len(group)} experts but top_k={self.top_k}; "
                                      f"each modality group needs at least top_k experts (MoST's release would "
                                      f"silently pick out-of-group experts at weight 0, most-reference.md §2.7).")
        elif self.text_experts is not None or self.audio_experts is not None:
            raise ConfigError("text_experts/audio_experts are set but modality_routing=False; "
                              "set modality_routing=True or leave the groups as None.")

    # ---------------------------------------------------------------- derived values
    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    @property
    def attn_head_dim(self) -> int:
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads

    def expert_groups(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(text experts, audio experts). By index (MoST: first half text) unless given explicitly."""
        half = self.n_experts // 2
        text = self.text_experts if self.text_experts is not None else tuple(range(half))
        audio = self.audio_experts if self.audio_experts is not None else tuple(range(half, self.n_experts))
        return text, audio

    def is_moe_layer(self, layer: int) -> bool:
        return layer >= self.first_k_dense

    # ---------------------------------------------------------------- parameter arithmetic
    def _attention_params(self) -> int:
        d, h = self.d_model, self.n_heads
        if self.attention == "mha":
            hd, kv = self.attn_head_dim, self.kv_heads
            return d * h * hd + 2 * d * kv * hd + h * hd * d
        qk = self.qk_nope_head_dim + self.qk_rope_head_dim
        if self.q_lora_rank is None:
            q = d * h * qk
        else:
            q = d * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * h * qk
        kv_a = d * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank  # + latent RMSNorm
        kv_b = self.kv_lora_rank * h * (self.qk_nope_head_dim + self.v_head_dim)
        return q + kv_a + kv_b + h * self.v_head_dim * d

    def _param_breakdown(self) -> dict[str, int]:
        d = self.d_model
        swiglu = lambda hidden: 3 * d * hidden
        n_moe = sum(self.is_moe_layer(i) for i in range(self.n_layers))
        n_dense = self.n_layers - n_moe
        return {
            "embedding": self.vocab_size * d,
            "lm_head": 0 if self.tie_embeddings else self.vocab_size * d,
            "norms": self.n_layers * 2 * d + d,
            "attention": self.n_layers * self._attention_params(),
            "dense_ffn": n_dense * swiglu(self.dense_hidden),
            "router": n_moe * self.n_experts * d,
            "routed_experts": n_moe * self.n_experts * swiglu(self.expert_hidden),
            "shared_experts": n_moe * swiglu(self.n_shared_experts * self.expert_hidden),
            "audio_projector": (self.audio_feature_dim * self.audio_downsample * d + d
                                + (d * d + d if self.audio_projector == "mlp" else 0)) if self.audio_feature_dim else 0,
        }

    def num_params(self) -> int:
        """Total parameters, from the config alone (equals the built model's count; tested)."""
        return sum(self._param_breakdown().values())

    def num_active_params(self) -> int:
        """Parameters used per token: everything except the routed experts, plus K of the E routed experts.

        Embedding and LM head are counted (DeepSeek's 2.4 B for V2-Lite excludes the 0.21 B embedding,
        which is why `most` gives ~2.66 B here).
        """
        parts = self._param_breakdown()
        routed = parts.pop("routed_experts")
        return sum(parts.values()) + routed * self.top_k // self.n_experts

    # ---------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return _from_dict(cls, data)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

STAGES = ("pretrain", "posttrain", "instruct")
# New tasks go at the end: a task's index seeds its sampler permutation and names it in task_ids.
TASKS = ("text_lm", "asr", "tts", "text_instruct", "speech_instruct", "speech_lm")

# MoST's README (most-reference.md §6.5): stage 1 ASR 0.4 / TTS 0.4 / text-LM 0.2;
# stage 2 speech-instruction 0.4 / text-instruction 0.4 / ASR 0.1 / TTS 0.1.
DEFAULT_MIXTURES: dict[str, dict[str, float]] = {
    "pretrain": {"text_lm": 1.0},
    "posttrain": {"asr": 0.4, "tts": 0.4, "text_lm": 0.2},
    "instruct": {"speech_instruct": 0.4, "text_instruct": 0.4, "asr": 0.1, "tts": 0.1},
}


@dataclass
class TrainConfig:
    """One training stage. The same trainer runs every stage; only this config differs."""

    stage: Literal["pretrain", "posttrain", "instruct"] = "pretrain"
    steps: int = 200                      # optimizer steps
    batch_size: int = 16                  # sequences per micro-batch
    grad_accum: int = 1                   # micro-batches per optimizer step
    seq_len: int = 256                    # longest training sequence (dynamic padding below it)
    lr: float = 3e-3                      # peak learning rate
    min_lr_ratio: float = 0.1             # final lr = lr * min_lr_ratio
    warmup_steps: int = 20
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    weight_decay: float = 0.1             # not applied to norms, biases or embeddings
    beta1: float = 0.9
    beta2: float = 0.95                   # MoST: AdamW betas (0.9, 0.95)
    grad_clip: float = 1.0                # max global grad norm; 0 = off
    mixture: dict[str, float] = field(default_factory=dict)  # task -> weight; empty = the stage's default
    trainable: Literal["all", "experts_and_router", "new_tokens"] = "all"  # MoST trains everything
    audio_input: Literal["units", "continuous"] = "units"  # speech prompts as unit tokens, or encoder frames (MoST-C)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    compile: bool = False                 # torch.compile the model (worth it on GPU)
    activation_checkpointing: bool = False
    log_every: int = 10
    eval_every: int = 100
    ckpt_every: int = 100
    keep_last: int = 2                    # checkpoints kept on disk
    seed: int = 1234
    run_name: str = ""                    # runs/<run_name>/; empty = "<preset>-<stage>"
    out_dir: str = "runs"

    def __post_init__(self) -> None:
        if not self.mixture:
            self.mixture = dict(DEFAULT_MIXTURES.get(self.stage, {}))
        self.mixture = {str(k): float(v) for k, v in self.mixture.items()}
        self.validate()

    def validate(self) -> None:
        _choice("stage", self.stage, STAGES)
        _choice("schedule", self.schedule, ("cosine", "linear", "constant"))
        _choice("precision", self.precision, ("auto", "fp32", "bf16"))
        _choice("trainable", self.trainable, ("all", "experts_and_router", "new_tokens"))
        _positive(self, "steps", "batch_size", "grad_accum", "seq_len", "lr", "log_every", "eval_every",
                  "ckpt_every", "keep_last")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}.")
        if self.warmup_steps < 0 or self.warmup_steps > self.steps:
            raise ConfigError(f"warmup_steps={self.warmup_steps} must be between 0 and steps={self.steps}.")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}.")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("weight_decay and grad_clip must be >= 0.")
        unknown = sorted(set(self.mixture) - set(TASKS))
        if unknown:
            raise ConfigError(f"mixture names unknown task(s) {unknown}; known tasks: {', '.join(TASKS)}.")
        if any(w < 0 for w in self.mixture.values()):
            raise ConfigError(f"mixture weights must be >= 0, got {self.mixture}.")
        total = sum(self.mixture.values())
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(f"mixture weights must sum to 1, got {total:.6g} for {self.mixture}; "
                              "rescale them (e.g. asr=0.4,tts=0.4,text_lm=0.2).")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return _from_dict(cls, data)


# --------------------------------------------------------------------------------------------
# Presets (DESIGN.md §6): numbers only, never code paths
# --------------------------------------------------------------------------------------------

def _micro() -> ModelConfig:
    return ModelConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, max_seq_len=256,
                       n_experts=8, top_k=2, expert_hidden=64, n_shared_experts=1, dense_hidden=128)


def _tiny() -> ModelConfig:
    return ModelConfig(vocab_size=2048, d_model=128, n_layers=4, n_heads=4, max_seq_len=512,
                       n_experts=16, top_k=2, expert_hidden=192, n_shared_experts=1, dense_hidden=512)


def _small() -> ModelConfig:
    return ModelConfig(vocab_size=8192, d_model=512, n_layers=8, n_heads=8, max_seq_len=1024,
                       first_k_dense=1, dense_hidden=2048,
                       n_experts=32, top_k=4, expert_hidden=512, n_shared_experts=2)


def _most() -> ModelConfig:
    """DeepSeek-V2-Lite's shape with MoST's three MAMoE keys (most-reference.md §2.1)."""
    return ModelConfig(
        vocab_size=102400, d_model=2048, n_layers=27, n_heads=16, max_seq_len=163840, norm_eps=1e-6,
        tie_embeddings=False, attention="mla", q_lora_rank=None, kv_lora_rank=512,
        qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
        rope_theta=10000.0, rope_interleaved=True, rope_scaling="yarn", yarn_factor=40.0,
        yarn_original_max_seq_len=4096, yarn_beta_fast=32.0, yarn_beta_slow=1.0,
        yarn_mscale=0.707, yarn_mscale_all_dim=0.707,
        first_k_dense=1, dense_hidden=10944,
        n_experts=64, top_k=6, expert_hidden=1408, n_shared_experts=2,
        modality_routing=True, mask_mode="after_softmax", renormalize=False, routed_scaling_factor=1.0,
        balance_loss="sequence", balance_alpha=0.001,
    )


PRESETS = {"micro": _micro, "tiny": _tiny, "small": _small, "most": _most}

# Training defaults per preset; the stage picks the mixture (DEFAULT_MIXTURES).
_TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "micro": dict(steps=20, batch_size=8, seq_len=64, lr=3e-3, warmup_steps=2, log_every=5, eval_every=10,
                  ckpt_every=10),
    "tiny": dict(steps=600, batch_size=16, seq_len=256, lr=3e-3, warmup_steps=30),
    "small": dict(steps=5000, batch_size=32, seq_len=1024, lr=1e-3, warmup_steps=200, eval_every=500,
                  ckpt_every=500),
    "most": dict(steps=10000, batch_size=8, grad_accum=16, seq_len=2048, lr=1e-5, warmup_steps=100,
                 eval_every=500, ckpt_every=500, activation_checkpointing=True),
}


def preset(name: str) -> ModelConfig:
    """The `ModelConfig` of a named preset (`micro`, `tiny`, `small`, `most`)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; available presets: {', '.join(PRESETS)}.")
    return PRESETS[name]()


def train_preset(name: str, stage: str = "pretrain") -> TrainConfig:
    """The `TrainConfig` of a named preset for one stage."""
    if name not in _TRAIN_PRESETS:
        raise ConfigError(f"unknown preset {name!r}; available presets: {', '.join(_TRAIN_PRESETS)}.")
    _choice("stage", stage, STAGES)
    return TrainConfig(stage=stage, **_TRAIN_PRESETS[name])


# --------------------------------------------------------------------------------------------
# Dict/JSON round trip and `--set key=value` overrides
# --------------------------------------------------------------------------------------------

def _from_dict(cls: type, data: dict[str, Any]):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} key(s) {unknown}; valid keys: {', '.join(sorted(known))}.")
    return cls(**data)


def save_json(cfg: ModelConfig | TrainConfig, path) -> None:
    with open(path, "w") as f:
        json.dump(cfg.to_dict(), f, indent=2, sort_keys=True)


def _parse_value(text: str, annotation: Any, key: str) -> Any:
    """Parse one `--set` value against a field's type annotation, with a clear error."""
    hint = annotation
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        if len(non_none) == 1:
            return _parse_value(text, non_none[0], key)
    if origin is Literal:
        if text not in args:
            raise ConfigError(f"--set {key}={text}: expected one of {', '.join(map(str, args))}.")
        return text
    if hint is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"--set {key}={text}: expected a boolean (true/false).")
    if hint is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"--set {key}={text}: expected an integer.") from None
    if hint is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"--set {key}={text}: expected a number.") from None
    if hint is str:
        return text
    if origin in (tuple, dict, list):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            # convenience forms: 0,1,2 for tuples and asr=0.5,tts=0.5 for dicts
            if origin is dict:
                try:
                    value = {k: float(v) for k, v in (item.split("=", 1) for item in text.split(","))}
                except ValueError:
                    raise ConfigError(f"--set {key}={text}: expected JSON or k=v,k=v.") from None
            else:
                try:
                    value = [int(v) for v in text.split(",") if v.strip()]
                except ValueError:
                    raise ConfigError(f"--set {key}={text}: expected a JSON list or comma-separated integers.") from None
        if origin is dict and not isinstance(value, dict):
            raise ConfigError(f"--set {key}={text}: expected a mapping.")
        if origin in (tuple, list) and not isinstance(value, list):
            raise ConfigError(f"--set {key}={text}: expected a list.")
        return tuple(value) if origin is tuple else value
    raise ConfigError(f"--set {key}: fields of type {hint} cannot be set from the command line.")


def apply_overrides(model_cfg: ModelConfig, train_cfg: TrainConfig, overrides: list[str]
                    ) -> tuple[ModelConfig, TrainConfig]:
    """Apply `key=value` strings. Keys may be prefixed `model.` or `train.`; a bare key must be unique.

    A stage name in front (`posttrain.mixture=asr=0.5,tts=0.5`, `instruct.train.lr=3e-4`) limits the
    override to that stage: it applies when `train_cfg.stage` is that stage and is skipped otherwise,
    so `minimost run` can give each of its stages its own mixture or learning rate.
    Returns new (validated) configs; the inputs are not modified.
    """
    model_fields = {f.name: f for f in fields(ModelConfig)}
    train_fields = {f.name: f for f in fields(TrainConfig)}
    model_hints = typing.get_type_hints(ModelConfig)
    train_hints = typing.get_type_hints(TrainConfig)
    model_changes: dict[str, Any] = {}
    train_changes: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}.")
        key, text = item.split("=", 1)
        key = key.strip()
        stage, dot, rest = key.partition(".")
        if dot and stage in STAGES:
            if stage != train_cfg.stage:
                continue   # another stage's override
            key = rest
        scope, _, name = key.rpartition(".")
        if scope not in ("", "model", "train"):
            raise ConfigError(f"--set {key}: the prefix must be 'model.', 'train.' or a stage "
                              f"({', '.join(STAGES)}), got {scope!r}.")
        in_model = name in model_fields and scope in ("", "model")
        in_train = name in train_fields and scope in ("", "train")
        if in_model and in_train:
            raise ConfigError(f"--set {key}: {name!r} exists in both configs; write model.{name} or train.{name}.")
        if in_model:
            model_changes[name] = _parse_value(text, model_hints[name], key)
        elif in_train:
            train_changes[name] = _parse_value(text, train_hints[name], key)
        else:
            import difflib
            close = difflib.get_close_matches(name, list(model_fields) + list(train_fields), n=3)
            tip = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"--set {key}: unknown config key {name!r}.{tip} "
                              "Run `python -m minimost train --preset tiny --print-config` to list every key.")
    new_train = train_cfg
    if train_changes:
        data = train_cfg.to_dict() | train_changes
        if "stage" in train_changes and "mixture" not in train_changes:
            data["mixture"] = {}  # a new stage gets its own default mixture
        new_train = TrainConfig.from_dict(data)
    new_model = dataclasses.replace(model_cfg, **model_changes) if model_changes else model_cfg
    return new_model, new_train
