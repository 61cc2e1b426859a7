"""Checkpoints in and out: import DeepSeek-V2(-Lite) folders, export minimost models.

MoST starts from DeepSeek-V2-Lite's weights (most-reference.md §7.1): every tensor is copied by name,
the 64 routed experts keep their order (0..31 become the text group, 32..63 the audio group) and the
gate is kept. This module does that copy for minimost, and the way back out.

Notable features
- `config_from_deepseek`: a DeepSeek-V2 `config.json` -> `ModelConfig` (MLA, YaRN with mscale, dense
  first layer, shared experts, softmax top-k). Anything minimost does not implement (sigmoid scoring,
  group-limited routing, MoE every other layer, another architecture) is refused with a clear error
  instead of being imported wrongly.
- `load_deepseek_v2`: the model is built on the *meta* device (shapes, no memory), memory is allocated
  once for the final weights, then the safetensors shards are streamed one tensor at a time. Per-expert
  tensors `experts.{j}.{gate,up,down}_proj` land in row j of minimost's stacked (E, out, in) expert
  weights. Peak memory is the model plus one tensor (plus the OS page cache of the shard being read):
  there is never a second full copy. Names, shapes and file integrity are all checked from the shard
  headers *before* any memory is allocated, and every problem is reported by tensor name.
- `save_hf`: transformers' DeepSeek-V2 layout when the model can be expressed there (MLA attention,
  modality routing off, ...), so `DeepseekV2ForCausalLM.from_pretrained` reads it; otherwise the
  minimost layout (full `ModelConfig` + minimost tensor names), read back by `load_minimost`. Both are
  written to a temporary folder and renamed into place, so a crash never leaves half a checkpoint.

Where the two implementations meet (checked by tests/test_convert.py against transformers 5.24):
- RoPE rotates *adjacent* pairs (x0,x1),(x2,x3).. (transformers multiplies interleaved pairs as complex
  numbers; DeepSeek's original code de-interleaves q/k first, the same thing), so the import sets
  `rope_interleaved=True`.
- YaRN scales cos/sin by mscale(s, mscale)/mscale(s, mscale_all_dim) and the softmax by
  mscale(s, mscale_all_dim)^2, as in minimost.model.rope_frequencies / softmax_scale.

Layouts on disk (docs/checkpoints.md has the full description)
- DeepSeek-V2 / transformers: config.json (`model_type: deepseek_v2`), `model.safetensors` or
  `model-0000i-of-0000n.safetensors` + `model.safetensors.index.json`, names like
  `model.layers.3.mlp.experts.17.up_proj.weight`.
- minimost: config.json `{"model_type": "minimost", "format_version": 1, "dtype": ..., "model_config":
  ModelConfig.to_dict()}` and the same safetensors files with minimost's own names (`blocks.3.ffn.
  experts.w_up`, `token_modality`, ...).

Paper / reference: MoST (arXiv 2601.10272), built from DeepSeek-V2-Lite; most-reference.md §2.1 (V2-Lite's
config), §2.2 (MLA), §7.1 (building MoST from DeepSeek-V2-Lite). Taught in notebooks/08_scaling_up.ipynb;
the layouts, memory arithmetic and what is verified are in docs/checkpoints.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from minimost.config import TEXT, ConfigError, ModelConfig
from minimost.model import MAMoELM
from minimost.moe import Router

DEEPSEEK_MODEL_TYPE = "deepseek_v2"
MINIMOST_MODEL_TYPE = "minimost"
MINIMOST_FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 2**30  # transformers' default shard size (5 GB)


class CheckpointError(ValueError):
    """A checkpoint folder cannot be read or written; the message names the file or tensor at fault."""


# The config.json of deepseek-ai/DeepSeek-V2-Lite (the keys that matter; most-reference.md §2.1).
# config_from_deepseek(DEEPSEEK_V2_LITE_CONFIG, modality_routing=True) == preset("most") (tested).
DEEPSEEK_V2_LITE_CONFIG: dict[str, Any] = {
    "architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2", "torch_dtype": "bfloat16",
    "vocab_size": 102400, "hidden_size": 2048, "num_hidden_layers": 27, "num_attention_heads": 16,
    "num_key_value_heads": 16, "max_position_embeddings": 163840, "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False, "initializer_range": 0.02, "hidden_act": "silu", "attention_bias": False,
    "q_lora_rank": None, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
    "v_head_dim": 128, "rope_theta": 10000,
    "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                     "beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707},
    "first_k_dense_replace": 1, "intermediate_size": 10944, "moe_layer_freq": 1,
    "n_routed_experts": 64, "num_experts_per_tok": 6, "moe_intermediate_size": 1408, "n_shared_experts": 2,
    "scoring_func": "softmax", "topk_method": "greedy", "n_group": 1, "topk_group": 1,
    "norm_topk_prob": False, "routed_scaling_factor": 1.0, "aux_loss_alpha": 0.001, "seq_aux": True,
    "bos_token_id": 100000, "eos_token_id": 100001,
}


# --------------------------------------------------------------------------------------------
# 1. Configuration: DeepSeek-V2 config.json <-> ModelConfig
# --------------------------------------------------------------------------------------------

def _yarn_from_deepseek(hf: dict) -> dict[str, Any]:
    """The RoPE fields of ModelConfig from either spelling of a DeepSeek RoPE config.

    DeepSeek's own config.json (and transformers 4.x) has `rope_theta` plus `rope_scaling` with a
    `type` key; transformers 5 writes `rope_parameters` with `rope_type` and `rope_theta` inside.
    """
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    theta = float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))
    if kind in ("default", None):
        return dict(rope_theta=theta, rope_scaling="none")
    if kind != "yarn":
        raise CheckpointError(f"rope type {kind!r} is not supported; minimost implements plain RoPE and "
                              "DeepSeek's YaRN (rope_scaling.type = 'yarn').")
    for key in ("attention_factor", "truncate"):  # transformers-only knobs DeepSeek never sets
        if key in rope and rope[key] not in (None, True):
            raise CheckpointError(f"rope {key}={rope[key]!r} is not supported (DeepSeek's YaRN has no such key).")
    if rope.get("factor") is None:
        raise CheckpointError("rope_scaling is YaRN but has no 'factor'; add the context extension factor.")
    # Defaults are those of DeepSeek's modeling code (mscale 1, mscale_all_dim 0, betas 32/1, 4096).
    return dict(rope_theta=theta, rope_scaling="yarn", yarn_factor=float(rope["factor"]),
                yarn_original_max_seq_len=int(rope.get("original_max_position_embeddings", 4096)),
                yarn_beta_fast=float(rope.get("beta_fast", 32)), yarn_beta_slow=float(rope.get("beta_slow", 1)),
                yarn_mscale=float(rope.get("mscale", 1.0)),
                yarn_mscale_all_dim=float(rope.get("mscale_all_dim", 0.0)))


_REQUIRED_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "q_lora_rank",
                  "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "intermediate_size",
                  "moe_intermediate_size", "n_routed_experts", "num_experts_per_tok")


def config_from_deepseek(hf_config: dict, modality_routing: bool = False) -> ModelConfig:
    """The `ModelConfig` of a DeepSeek-V2 / V2-Lite `config.json` (a dict).

    modality_routing=False (default) gives plain DeepSeek routing: top-k over all experts, exactly the
    imported model. True gives MoST's MAMoE: experts 0..E/2-1 for text, E/2..E-1 for audio, same gate.
    Raises CheckpointError for another architecture or a routing/feature minimost does not implement.
    """
    hf = hf_config
    model_type = hf.get("model_type")
    if model_type != DEEPSEEK_MODEL_TYPE:
        hint = " (a minimost checkpoint: use load_minimost)" if model_type == MINIMOST_MODEL_TYPE else ""
        raise CheckpointError(f"config.json has model_type={model_type!r}{hint}; only DeepSeek-V2 / "
                              f"V2-Lite checkpoints (model_type '{DEEPSEEK_MODEL_TYPE}') can be imported.")
    missing = [k for k in _REQUIRED_KEYS if k not in hf]
    if missing:
        raise CheckpointError(f"config.json lacks the DeepSeek-V2 key(s) {missing}; is it a complete "
                              "DeepSeek-V2 config?")
    if hf["n_routed_experts"] is None:
        raise CheckpointError("n_routed_experts is null (a dense model); minimost needs routed experts.")

    # Routing: DeepSeek-V2 scores with a softmax and picks the top-k greedily. (Its config default is
    # spelled 'gready'.) Group-limited greedy with one group is the same thing.
    scoring = hf.get("scoring_func", "softmax")
    if scoring != "softmax":
        raise CheckpointError(f"scoring_func={scoring!r} is not supported; minimost's router uses a softmax "
                              "over the experts (DeepSeek-V2's 'softmax').")
    method = hf.get("topk_method") or "greedy"
    if method == "group_limited_greedy" and hf.get("n_group") not in (None, 1):
        raise CheckpointError(f"topk_method='group_limited_greedy' with n_group={hf.get('n_group')} and "
                              f"topk_group={hf.get('topk_group')} is not supported; minimost routes greedily "
                              "over all experts (only n_group=1 is equivalent).")
    if method not in ("greedy", "gready", "group_limited_greedy"):
        raise CheckpointError(f"topk_method={method!r} is not supported; expected 'greedy'.")
    if (hf.get("moe_layer_freq") or 1) != 1:
        raise CheckpointError(f"moe_layer_freq={hf['moe_layer_freq']} is not supported; minimost makes every "
                              "layer from first_k_dense_replace on an MoE layer (moe_layer_freq=1).")
    if hf.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"hidden_act={hf['hidden_act']!r} is not supported; experts are SwiGLU (silu).")
    for key in ("attention_bias", "mlp_bias"):
        if hf.get(key):
            raise CheckpointError(f"{key}=true is not supported; minimost's linear layers have no biases.")

    # DeepSeek-V2's code normalises the top-k weights *instead of* scaling them when norm_topk_prob is
    # set; minimost normalises then scales, so the scale is 1 in that case.
    renormalize = bool(hf.get("norm_topk_prob", False))
    scaling = 1.0 if renormalize else float(hf.get("routed_scaling_factor", 1.0))
    fields = dict(
        vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], n_layers=hf["num_hidden_layers"],
        n_heads=hf["num_attention_heads"], max_seq_len=hf.get("max_position_embeddings", 2048),
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)), tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        init_std=float(hf.get("initializer_range", 0.02)),
        attention="mla", q_lora_rank=hf["q_lora_rank"], kv_lora_rank=hf["kv_lora_rank"],
        qk_nope_head_dim=hf["qk_nope_head_dim"], qk_rope_head_dim=hf["qk_rope_head_dim"],
        v_head_dim=hf["v_head_dim"],
        rope_interleaved=True,  # DeepSeek's weights rotate adjacent pairs (module docstring)
        **_yarn_from_deepseek(hf),
        first_k_dense=hf.get("first_k_dense_replace", 0), dense_hidden=hf["intermediate_size"],
        n_experts=hf["n_routed_experts"], top_k=hf["num_experts_per_tok"],
        expert_hidden=hf["moe_intermediate_size"], n_shared_experts=hf.get("n_shared_experts") or 0,
        modality_routing=modality_routing, renormalize=renormalize, routed_scaling_factor=scaling,
        balance_loss="sequence" if hf.get("seq_aux", True) else "global",
        balance_alpha=float(hf.get("aux_loss_alpha", 0.001)),
    )
    try:
        return ModelConfig(**fields)
    except ConfigError as e:
        raise CheckpointError(f"config.json describes a model minimost cannot build: {e}") from e


def hf_layout_problems(cfg: ModelConfig) -> list[str]:
    """Why `cfg` cannot be written in transformers' DeepSeek-V2 layout (empty list: it can)."""
    problems = []
    if cfg.attention != "mla":
        problems.append("attention is MHA (DeepSeek-V2 uses MLA)")
    elif not cfg.rope_interleaved:
        problems.append("rope_interleaved=False (DeepSeek rotates adjacent pairs)")
    if cfg.modality_routing:
        problems.append("modality routing (MAMoE) is on")
    if cfg.renormalize:
        problems.append("renormalize=True (transformers 5 ignores norm_topk_prob)")
    if cfg.bias_balancing:
        problems.append("bias_balancing keeps an expert bias DeepSeek-V2 has no place for")
    if cfg.n_shared_experts == 0:
        problems.append("no shared experts (transformers always builds them)")
    if cfg.rope_scaling == "yarn" and not (
            (cfg.yarn_mscale and cfg.yarn_mscale_all_dim) or (cfg.yarn_mscale_all_dim == 0 and cfg.yarn_mscale == 1)):
        problems.append("a YaRN mscale pair that transformers computes differently from DeepSeek")
    return problems


def config_to_deepseek(cfg: ModelConfig) -> dict[str, Any]:
    """`cfg` as a DeepSeek-V2 config.json dict, readable by transformers 5 and by DeepSeek's own code.

    Only fields that exist in DeepSeek's vocabulary are written; run-time choices (dispatch, attn_impl,
    dropout, z-loss, ...) come back with their defaults when the folder is imported again.
    """
    problems = hf_layout_problems(cfg)
    if problems:
        raise CheckpointError(f"this model cannot be written in the DeepSeek-V2 layout: {'; '.join(problems)}.")
    rope: dict[str, Any] | None = None
    if cfg.rope_scaling == "yarn":  # both spellings' keys, so old and new readers find theirs
        rope = {"type": "yarn", "rope_type": "yarn", "factor": cfg.yarn_factor,
                "original_max_position_embeddings": cfg.yarn_original_max_seq_len,
                "beta_fast": cfg.yarn_beta_fast, "beta_slow": cfg.yarn_beta_slow,
                "mscale": cfg.yarn_mscale, "mscale_all_dim": cfg.yarn_mscale_all_dim}
    return {
        "architectures": ["DeepseekV2ForCausalLM"], "model_type": DEEPSEEK_MODEL_TYPE,
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model, "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_heads,
        "max_position_embeddings": cfg.max_seq_len, "rms_norm_eps": cfg.norm_eps,
        "tie_word_embeddings": cfg.tie_embeddings, "initializer_range": cfg.init_std,
        "hidden_act": "silu", "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0,
        "q_lora_rank": cfg.q_lora_rank, "kv_lora_rank": cfg.kv_lora_rank,
        "qk_nope_head_dim": cfg.qk_nope_head_dim, "qk_rope_head_dim": cfg.qk_rope_head_dim,
        "v_head_dim": cfg.v_head_dim, "rope_theta": cfg.rope_theta, "rope_scaling": rope,
        "first_k_dense_replace": cfg.first_k_dense, "intermediate_size": cfg.dense_hidden,
        "moe_layer_freq": 1, "n_routed_experts": cfg.n_experts, "num_experts_per_tok": cfg.top_k,
        "moe_intermediate_size": cfg.expert_hidden, "n_shared_experts": cfg.n_shared_experts,
        "scoring_func": "softmax", "topk_method": "greedy", "n_group": 1, "topk_group": 1,
        "norm_topk_prob": False, "routed_scaling_factor": cfg.routed_scaling_factor,
        "seq_aux": cfg.balance_loss == "sequence",
        "aux_loss_alpha": cfg.balance_alpha if cfg.balance_loss != "none" else 0.0,
    }


# --------------------------------------------------------------------------------------------
# 2. Tensor names: checkpoint name -> where it goes in minimost
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Slot:
    """Where one checkpoint tensor goes: a minimost parameter/buffer, or row `expert` of a stacked one."""

    name: str
    expert: int | None = None


_EXPERT_WEIGHTS = {"gate_proj": "w_gate", "up_proj": "w_up", "down_proj": "w_down"}
_SWIGLU = {"gate_proj": "gate", "up_proj": "up", "down_proj": "down"}


def deepseek_names(cfg: ModelConfig) -> dict[str, Slot]:
    """Every tensor of a DeepSeek-V2 checkpoint of this config, with its minimost destination.

    This is the whole difference between the two layouts: a rename, plus the per-expert tensors that
    become rows of the stacked expert weights.
    """
    names = {"model.embed_tokens.weight": Slot("embed.weight"), "model.norm.weight": Slot("norm.weight")}
    if not cfg.tie_embeddings:  # tied: the checkpoint stores only the embedding
        names["lm_head.weight"] = Slot("lm_head.weight")
    attn = (["q_proj"] if cfg.q_lora_rank is None else ["q_a_proj", "q_a_layernorm", "q_b_proj"]) + [
        "kv_a_proj_with_mqa", "kv_a_layernorm", "kv_b_proj", "o_proj"]
    for i in range(cfg.n_layers):
        src, dst = f"model.layers.{i}.", f"blocks.{i}."
        names[src + "input_layernorm.weight"] = Slot(dst + "attn_norm.weight")
        names[src + "post_attention_layernorm.weight"] = Slot(dst + "ffn_norm.weight")
        for a in attn:
            names[f"{src}self_attn.{a}.weight"] = Slot(f"{dst}attn.{a}.weight")
        if not cfg.is_moe_layer(i):  # the dense first-k layers
            for hf, mm in _SWIGLU.items():
                names[f"{src}mlp.{hf}.weight"] = Slot(f"{dst}ffn.{mm}.weight")
            continue
        names[src + "mlp.gate.weight"] = Slot(dst + "ffn.router.gate.weight")
        if cfg.n_shared_experts:
            for hf, mm in _SWIGLU.items():
                names[f"{src}mlp.shared_experts.{hf}.weight"] = Slot(f"{dst}ffn.shared.{mm}.weight")
        for j in range(cfg.n_experts):
            for hf, mm in _EXPERT_WEIGHTS.items():
                names[f"{src}mlp.experts.{j}.{hf}.weight"] = Slot(f"{dst}ffn.experts.{mm}", j)
    return names


# transformers 5 keeps experts fused in memory: gate_up_proj (E, 2H, D) = [gate; up] and down_proj
# (E, D, H). Its save_pretrained writes the per-expert names above, but a raw `save_file(state_dict())`
# has these; accept them too, by splitting them into the per-expert names they stand for.
_FUSED = re.compile(r"model\.layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)")


def _fused_pieces(name: str, cfg: ModelConfig) -> tuple[tuple[int, ...], list[tuple[str, Any]]] | None:
    """For a fused expert tensor: its expected shape and [(per-expert name, index into it)]; else None."""
    m = _FUSED.fullmatch(name)
    if m is None:
        return None
    layer, kind = int(m.group(1)), m.group(2)
    E, H, D = cfg.n_experts, cfg.expert_hidden, cfg.d_model
    base = f"model.layers.{layer}.mlp.experts"
    if kind == "down_proj":
        return (E, D, H), [(f"{base}.{j}.down_proj.weight", (j,)) for j in range(E)]
    pieces = []
    for j in range(E):  # rows [0, H) of expert j are its gate, rows [H, 2H) its up projection
        pieces += [(f"{base}.{j}.gate_proj.weight", (j, slice(0, H))),
                   (f"{base}.{j}.up_proj.weight", (j, slice(H, 2 * H)))]
    return (E, 2 * H, D), pieces


# Tensors some checkpoints carry that are not weights (recomputed from the config here).
_IGNORED = re.compile(r".*rotary_emb\.inv_freq")


def minimost_names(model: MAMoELM) -> dict[str, Slot]:
    """The minimost layout: every parameter and persistent buffer under its own name (tied head once)."""
    names = {n: Slot(n) for n in model.state_dict(keep_vars=True)}
    if model.cfg.tie_embeddings:
        names.pop("lm_head.weight")
    return names


# --------------------------------------------------------------------------------------------
# 3. Reading a folder: config, shard list, shard headers
# --------------------------------------------------------------------------------------------

def _read_config(folder: Path) -> dict:
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder; pass the checkpoint folder (with config.json).")
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {CONFIG_NAME}; a checkpoint folder needs its config next to "
                              "the safetensors shards.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}).") from e


def _shard_files(folder: Path) -> list[Path]:
    """The safetensors files of a folder: from the index if there is one, else the single file."""
    index = folder / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{index} is not a valid safetensors index ({e!r}).") from e
        files = sorted(set(weight_map.values()))
        absent = [f for f in files if not (folder / f).is_file()]
        if absent:
            raise CheckpointError(f"{index.name} lists shard(s) missing from {folder}: {absent[:5]}"
                                  f"{' ...' if len(absent) > 5 else ''}; the download is incomplete.")
        return [folder / f for f in files]
    if (folder / SINGLE_FILE).is_file():
        return [folder / SINGLE_FILE]
    other = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.safetensors"))
    hint = f" (found {other[:3]}; only {SINGLE_FILE} or an {INDEX_FILE} with its shards are read)" if other else ""
    raise CheckpointError(f"{folder} has no safetensors weights: neither {INDEX_FILE} nor {SINGLE_FILE}{hint}.")


@contextlib.contextmanager
def _open_shard(path: Path):
    """safe_open with an error that names the file. The header is validated on open: safetensors refuses a
    file whose size does not match the offsets in its header, which is how truncation shows up."""
    from safetensors import SafetensorError, safe_open

    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read shard {path.name} ({e}); the file is truncated or corrupt: "
                              "download or export it again.") from e
    with handle as f:
        yield f


def _headers(shards: list[Path]) -> Iterator[tuple[Path, str, tuple[int, ...]]]:
    """(shard, tensor name, shape) for every tensor, from the headers only (no tensor data is read)."""
    for shard in shards:
        with _open_shard(shard) as f:
            for name in f.keys():  # noqa: SIM118 (a safe_open handle is not iterable)
                yield shard, name, tuple(f.get_slice(name).get_shape())


# --------------------------------------------------------------------------------------------
# 4. Streaming shards into a model built on the meta device
# --------------------------------------------------------------------------------------------

def _plan(shards: list[Path], names: dict[str, Slot], shapes: dict[str, torch.Size], cfg: ModelConfig
          ) -> dict[Path, list[tuple[str, list[tuple[str, Any]]]]]:
    """Check every tensor against the model before anything is loaded; return what to copy per shard.

    The result maps shard -> [(checkpoint name, [(destination name, index into the tensor), ...])].
    Raises one CheckpointError listing every unmapped, missing, duplicated or misshapen tensor.
    """
    def expected(dest: str) -> tuple[int, ...]:
        slot = names[dest]
        shape = tuple(shapes[slot.name])
        return shape if slot.expert is None else shape[1:]

    plan: dict[Path, list] = {s: [] for s in shards}
    seen: dict[str, Path] = {}
    unmapped, wrong, twice = [], [], []
    for shard, name, shape in _headers(shards):
        if name in names:
            pieces = [(name, ())]
            if shape != expected(name):
                wrong.append(f"{name} in {shard.name}: expected shape {expected(name)} (minimost's "
                             f"{names[name].name}), found {shape}")
        elif (fused := _fused_pieces(name, cfg)) is not None:
            want, pieces = fused
            if shape != want:
                wrong.append(f"{name} in {shard.name}: expected shape {want} (fused experts), found {shape}")
        elif _IGNORED.fullmatch(name):
            continue
        else:
            unmapped.append(f"{name} ({shard.name})")
            continue
        for dest, _ in pieces:
            if dest in seen:
                twice.append(f"{dest} ({seen[dest].name} and {shard.name})")
            seen[dest] = shard
        plan[shard].append((name, pieces))
    missing = [n for n in names if n not in seen]

    problems = []
    for title, items in (("tensors with the wrong shape", wrong),
                         ("unmapped checkpoint tensors (minimost has no place for them)", unmapped),
                         ("tensors missing from the checkpoint", missing), ("tensors stored twice", twice)):
        if items:
            shown = "\n  ".join(items[:20]) + (f"\n  ... and {len(items) - 20} more" if len(items) > 20 else "")
            problems.append(f"{title} ({len(items)}):\n  {shown}")
    if problems:
        raise CheckpointError("the checkpoint does not match the model:\n" + "\n".join(problems))
    return plan


def _meta_model(cfg: ModelConfig) -> MAMoELM:
    """The model with shapes but no storage: building 15.7 B parameters this way costs no memory."""
    with torch.device("meta"):
        return MAMoELM(cfg)


@torch.no_grad()
def _materialise(model: MAMoELM, dtype: torch.dtype, device) -> None:
    """Allocate the real (uninitialised) storage once, in the final dtype, and give buffers real values.

    Every parameter is overwritten by the checkpoint afterwards; buffers are not weights, so they are
    recomputed here: the id -> mark map (all text until a tokenizer declares speech units) and each
    router's constant tables, which only depend on the config.
    """
    model.to(dtype=dtype)          # on meta: changes the recorded dtype, allocates nothing
    model.to_empty(device=device)  # the one allocation of the model's size
    if model.cfg.tie_embeddings:   # to_empty makes new Parameter objects, which unties the head
        model.lm_head.weight = model.embed.weight
    model.token_modality.fill_(TEXT)
    for module in model.modules():
        if isinstance(module, Router):
            fresh = Router(module.cfg)  # small: a gate of E x D on the CPU, thrown away
            for bname, buf in fresh.named_buffers(recurse=False):
                setattr(module, bname, buf.to(device=device, dtype=dtype if buf.is_floating_point() else None))


@torch.no_grad()
def _stream(model: MAMoELM, names: dict[str, Slot], plan: dict[Path, list]) -> None:
    """Copy the tensors in, one shard at a time and one tensor at a time (copy_ casts the dtype)."""
    targets = dict(model.named_parameters()) | dict(model.named_buffers())
    for shard, entries in plan.items():
        with _open_shard(shard) as f:
            for ckpt_name, pieces in entries:
                tensor = f.get_tensor(ckpt_name)
                for dest, index in pieces:
                    slot = names[dest]
                    out = targets[slot.name]
                    if slot.expert is not None:
                        out = out[slot.expert]           # a view: row j of the stacked (E, out, in) weight
                    out.copy_(tensor[index])
                del tensor                               # at most one checkpoint tensor alive at a time


def _load(folder: Path, cfg: ModelConfig, names_of, dtype: torch.dtype, device) -> MAMoELM:
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise CheckpointError(f"dtype must be a floating torch dtype (torch.bfloat16, torch.float32), got {dtype!r}.")
    shards = _shard_files(folder)
    model = _meta_model(cfg)
    names = names_of(model)
    shapes = {n: t.shape for n, t in model.state_dict(keep_vars=True).items()}
    plan = _plan(shards, names, shapes, cfg)  # every check happens here, before any allocation
    _materialise(model, dtype, device)
    _stream(model, names, plan)
    return model.eval()


def load_deepseek_v2(path, dtype: torch.dtype = torch.bfloat16, modality_routing: bool = False,
                     device="cpu", overrides: dict[str, Any] | None = None) -> MAMoELM:
    """Import a DeepSeek-V2 / V2-Lite folder (config.json + safetensors) as a minimost `MAMoELM`.

    modality_routing=False reproduces DeepSeek's model; True is the start of MoST (text experts are the
    first half, audio experts the second, the gate is kept; most-reference.md §7.1). `overrides` sets
    other ModelConfig fields that do not change the weights' shapes (e.g. dispatch, max_seq_len).
    Returns the model in eval mode with every token id marked text.
    """
    folder = Path(path)
    cfg = config_from_deepseek(_read_config(folder), modality_routing=modality_routing)
    if overrides:
        try:
            cfg = ModelConfig.from_dict(cfg.to_dict() | overrides)
        except ConfigError as e:
            raise CheckpointError(f"overrides {overrides} are not valid: {e}") from e
    return _load(folder, cfg, lambda model: deepseek_names(model.cfg), dtype, device)


def load_minimost(path, dtype: torch.dtype | None = None, device="cpu") -> MAMoELM:
    """Read a folder written by `save_hf` in the minimost layout. dtype None keeps the saved dtype."""
    folder = Path(path)
    raw = _read_config(folder)
    if raw.get("model_type") != MINIMOST_MODEL_TYPE:
        hint = " (use load_deepseek_v2)" if raw.get("model_type") == DEEPSEEK_MODEL_TYPE else ""
        raise CheckpointError(f"{folder / CONFIG_NAME} has model_type={raw.get('model_type')!r}{hint}; "
                              f"expected {MINIMOST_MODEL_TYPE!r}.")
    if raw.get("format_version") != MINIMOST_FORMAT_VERSION:
        raise CheckpointError(f"minimost layout version {raw.get('format_version')!r} is not readable by this "
                              f"version (expects {MINIMOST_FORMAT_VERSION}).")
    try:
        cfg = ModelConfig.from_dict(raw["model_config"])
    except (KeyError, TypeError, ConfigError) as e:
        raise CheckpointError(f"{folder / CONFIG_NAME} holds no valid model_config ({e!r}).") from e
    dtype = dtype or getattr(torch, raw.get("dtype", "float32"))
    return _load(folder, cfg, minimost_names, dtype, device)


def load_checkpoint(path, **kwargs) -> MAMoELM:
    """Either layout: dispatch on config.json's model_type (kwargs go to the matching loader)."""
    kind = _read_config(Path(path)).get("model_type")
    return (load_minimost if kind == MINIMOST_MODEL_TYPE else load_deepseek_v2)(path, **kwargs)


# --------------------------------------------------------------------------------------------
# 5. Export
# --------------------------------------------------------------------------------------------

def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _write_shards(folder: Path, tensors: list[tuple[str, int, Any]], max_shard_bytes: int) -> None:
    """Write (name, nbytes, make_tensor) in order into shards of at most max_shard_bytes (a tensor
    larger than that gets its own shard). Tensors are made only when their shard is written, so memory
    holds the model plus one shard. One shard -> model.safetensors; several -> numbered files + index."""
    from safetensors.torch import save_file

    groups: list[list[tuple[str, int, Any]]] = [[]]
    size = 0
    for item in tensors:
        if groups[-1] and size + item[1] > max_shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += item[1]
    n = len(groups)
    files = [SINGLE_FILE] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    weight_map = {}
    for file, group in zip(files, groups):
        # clone(): stacked-expert rows share storage, which save_file refuses; also moves GPU -> CPU
        shard = {name: make().detach().to("cpu", copy=True).contiguous() for name, _, make in group}
        save_file(shard, str(folder / file), metadata={"format": "pt"})
        weight_map |= {name: file for name in shard}
        del shard
    if n > 1:
        index = {"metadata": {"total_size": sum(t[1] for t in tensors)}, "weight_map": weight_map}
        (folder / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def _atomic_folder(path: Path):
    """Yield a temporary sibling folder; on success it replaces `path` by renames, on error it is removed."""
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"{path} exists and is not a folder.")
    if path.is_dir() and any(path.iterdir()) and not (path / CONFIG_NAME).is_file():
        raise CheckpointError(f"{path} is a non-empty folder without {CONFIG_NAME}; refusing to overwrite "
                              "something that is not a checkpoint. Choose a new or empty folder.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.parent / f".{path.name}.old-{os.getpid()}"
    if path.exists():
        path.rename(old)  # two renames: the old checkpoint stays whole until the new one is in place
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def save_hf(model: MAMoELM, path, tokenizer_files: Iterable | None = None,
            max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> str:
    """Write `model` to the folder `path`; return the layout used ("deepseek_v2" or "minimost").

    transformers' DeepSeek-V2 layout when `hf_layout_problems(model.cfg)` is empty (then
    `DeepseekV2ForCausalLM.from_pretrained(path)` and `load_deepseek_v2(path)` both read it); otherwise
    the minimost layout, read by `load_minimost`. tokenizer_files are copied into the folder as they are.
    An existing checkpoint folder at `path` is replaced atomically.
    """
    cfg, folder = model.cfg, Path(path)
    extra = [Path(p) for p in tokenizer_files or ()]
    for p in extra:
        if not p.is_file():
            raise CheckpointError(f"tokenizer file {p} does not exist.")
        if p.name == CONFIG_NAME or p.name.endswith(".safetensors") or p.name == INDEX_FILE:
            raise CheckpointError(f"tokenizer file {p.name} would overwrite part of the checkpoint.")
    state = model.state_dict()
    dtype = model.embed.weight.dtype
    if not hf_layout_problems(cfg):
        layout, config = DEEPSEEK_MODEL_TYPE, config_to_deepseek(cfg)
        config |= {"dtype": _dtype_name(dtype), "torch_dtype": _dtype_name(dtype)}  # new and old readers
        names = deepseek_names(cfg)
    else:
        layout = MINIMOST_MODEL_TYPE
        config = {"model_type": MINIMOST_MODEL_TYPE, "format_version": MINIMOST_FORMAT_VERSION,
                  "dtype": _dtype_name(dtype), "model_config": cfg.to_dict()}
        names = minimost_names(model)

    def maker(slot: Slot):
        t = state[slot.name]
        return (lambda: t) if slot.expert is None else (lambda: t[slot.expert])

    def nbytes(slot: Slot) -> int:
        t = state[slot.name]
        return (t.numel() // (t.shape[0] if slot.expert is not None else 1)) * t.element_size()

    tensors = [(name, nbytes(slot), maker(slot)) for name, slot in names.items()]
    with _atomic_folder(folder) as tmp:
        _write_shards(tmp, tensors, max_shard_bytes)
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        for p in extra:
            shutil.copyfile(p, tmp / p.name)
    return layout
