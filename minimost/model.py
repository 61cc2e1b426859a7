"""The MAMoE decoder language model: norms, RoPE/YaRN, attention (MHA/GQA and MLA), KV cache, blocks, LM.

Notable features
- One decoder for speech and text (most-reference.md §2.2): attention, norms, embeddings and the dense
  first-k layers are shared by every modality; only the MoE layers (`minimost.moe`) look at the marks.
- Modality marks come from a declared id -> mark map (`token_modality` buffer, set by the tokenizer),
  never from hard-coded id ranges (DESIGN.md §2; most-reference.md §2.5).
- Rotary position embedding computed from per-token positions, so left-padded batches and packed
  documents get the right positions; DeepSeek's interleaved pairs or GPT-NeoX halves; YaRN exactly as
  DeepSeek-V2 (frequency ramp, cos/sin mscale, softmax-scale mscale^2).
- Two attentions, picked by `cfg.attention`: multi/grouped-query ("mha") and DeepSeek-V2 Multi-head
  Latent Attention ("mla", parameter names as in the DeepSeek/HF checkpoints, so import is a rename).
- Each attention has a fused path (`F.scaled_dot_product_attention`) and a readable masked softmax
  ("manual"); tests check that they agree.
- A preallocated KV cache for incremental decoding (generate.py); it remembers which cached keys are
  padding, so batched left-padded generation equals per-row generation.
- Loss = next-token cross-entropy + the routers' balance/z losses, returned separately for logging.

Paper/reference: MoST (arXiv 2601.10272) §3 MAMoE; most-reference.md §2.1 (backbone), §2.2 (decoder and
MLA), §2.5 (marks), §2.7 (bugs avoided here).

Shape legend: B batch, T new tokens, S keys (cached + new), D d_model, H query heads, h key/value heads,
d per-head query/key width, e per-head value width, R rotary width, V vocabulary, L layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from minimost.config import AUDIO, SPECIAL, TEXT, ModelConfig
from minimost.continuous import Projector
from minimost.moe import MoE, RouterStats, SwiGLU


class RMSNorm(nn.Module):
    """y = w * x / sqrt(mean(x^2) + eps), computed in fp32 so bf16 activations do not lose the scale."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)  # same cast order as DeepSeek, for bit-level agreement


# --------------------------------------------------------------------------------------------
# Rotary position embedding (RoPE) with YaRN context extension
# --------------------------------------------------------------------------------------------

def yarn_get_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN's attention temperature 0.1*m*ln(s) + 1 (1 when the context is not extended)."""
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def rope_frequencies(cfg: ModelConfig, dim: int, device=None) -> tuple[torch.Tensor, float]:
    """Inverse frequencies (dim/2,) for a rotary width `dim`, and the factor that multiplies cos/sin.

    Plain RoPE rotates pair i by angle pos * theta^(-2i/dim). YaRN (as in DeepSeek-V2) leaves the fast
    pairs alone (they turn many times within the original context, so they already generalise),
    divides the slow pairs' frequency by the factor s (position interpolation), and ramps linearly
    between them over the pairs whose number of turns in the original context lies in
    [beta_slow, beta_fast].
    """
    pairs = torch.arange(0, dim, 2, dtype=torch.float32, device=device)        # (dim/2,) = 2i
    pos_freqs = cfg.rope_theta ** (pairs / dim)                                 # (dim/2,) wavelength / 2pi
    if cfg.rope_scaling != "yarn":
        return 1.0 / pos_freqs, 1.0
    s, base, original = cfg.yarn_factor, cfg.rope_theta, cfg.yarn_original_max_seq_len

    def correction_dim(turns: float) -> float:  # the dimension whose wave turns `turns` times in `original`
        return dim * math.log(original / (turns * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(correction_dim(cfg.yarn_beta_fast)), 0)
    high = min(math.ceil(correction_dim(cfg.yarn_beta_slow)), dim - 1)
    if low == high:
        high += 0.001  # avoid a division by zero in the ramp
    ramp = ((pairs / 2 - low) / (high - low)).clamp(0, 1)                      # (dim/2,) 0 fast .. 1 slow
    inv_freq = (1.0 / (s * pos_freqs)) * ramp + (1.0 / pos_freqs) * (1 - ramp)
    cos_sin_scale = yarn_get_mscale(s, cfg.yarn_mscale) / yarn_get_mscale(s, cfg.yarn_mscale_all_dim)
    return inv_freq, cos_sin_scale


def softmax_scale(cfg: ModelConfig, qk_dim: int) -> float:
    """1/sqrt(d), times YaRN's mscale(s, mscale_all_dim)^2 (DeepSeek-V2: ~1.59 at s=40, m=0.707)."""
    scale = qk_dim ** -0.5
    if cfg.rope_scaling == "yarn":
        scale *= yarn_get_mscale(cfg.yarn_factor, cfg.yarn_mscale_all_dim) ** 2
    return scale


def rope_cos_sin(cfg: ModelConfig, dim: int, positions_BT: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every token's angles, shaped (B, 1, T, dim/2) to broadcast over heads.

    Computed on the fly from the positions (a few hundred flops) instead of a cached table: no buffer
    to keep in sync on the meta device or after loading, and any position layout works.
    """
    inv_freq, scale = rope_frequencies(cfg, dim, positions_BT.device)
    angles = positions_BT.float()[..., None] * inv_freq                   # (B, T, dim/2)
    return (angles.cos() * scale)[:, None], (angles.sin() * scale)[:, None]   # (B, 1, T, dim/2) each


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool) -> torch.Tensor:
    """Rotate pairs of x (B, heads, T, R) by the angles in cos/sin (B, 1, T, R/2), in fp32.

    interleaved=True pairs (x0,x1), (x2,x3), ... (DeepSeek's weights were trained this way);
    False pairs (x_i, x_{i+R/2}) (GPT-NeoX/Llama). The two differ only by a fixed permutation of the
    R dims, which is why a checkpoint must be used with the layout it was trained with.
    """
    x32 = x.float()
    if interleaved:
        a, b = x32[..., 0::2], x32[..., 1::2]                              # (B, heads, T, R/2)
        out = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1)  # (B, heads, T, R/2, 2)
        return out.flatten(-2).to(x.dtype)                                 # (B, heads, T, R)
    a, b = x32.chunk(2, dim=-1)
    return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1).to(x.dtype)


# --------------------------------------------------------------------------------------------
# KV cache and the attention kernel shared by both attentions
# --------------------------------------------------------------------------------------------

class KVCache:
    """Preallocated keys/values of every layer, (B, heads, S_max, dim), and which cached keys are real.

    For MLA this stores the *expanded* per-head K and V, like the HF port (most-reference.md §2.2): simple,
    but it gives up MLA's memory saving. The absorbed form would cache only the normalised latent
    (kv_lora_rank) and the shared rope key (qk_rope_head_dim) per token, fold kv_b_proj's key half into
    the query and its value half into o_proj, and attend in the latent space.
    """

    def __init__(self, cfg: ModelConfig, batch_size: int, max_len: int, device=None, dtype=torch.float32):
        if cfg.attention == "mha":
            heads, k_dim, v_dim = cfg.kv_heads, cfg.attn_head_dim, cfg.attn_head_dim
        else:
            heads, k_dim, v_dim = cfg.n_heads, cfg.qk_nope_head_dim + cfg.qk_rope_head_dim, cfg.v_head_dim
        self.k = [torch.zeros(batch_size, heads, max_len, k_dim, device=device, dtype=dtype)
                  for _ in range(cfg.n_layers)]
        self.v = [torch.zeros(batch_size, heads, max_len, v_dim, device=device, dtype=dtype)
                  for _ in range(cfg.n_layers)]
        self.valid = torch.zeros(batch_size, max_len, dtype=torch.bool, device=device)  # False = padding
        self.length = 0  # positions filled so far (the same for every row; padding included)

    @property
    def batch_size(self) -> int:
        return self.valid.shape[0]

    @property
    def max_len(self) -> int:
        return self.valid.shape[1]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's k/v (B, heads, T, dim) after the cached ones; return all keys/values so far."""
        start, end = self.length, self.length + k.shape[2]
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]  # (B, heads, S, dim)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask_B1TS: torch.Tensor, scale: float,
           impl: str, dropout_p: float) -> torch.Tensor:
    """softmax(q k^T * scale, masked) v. q (B, H, T, d), k (B, h, S, d), v (B, h, S, e) -> (B, H, T, e).

    With GQA (h < H) each key/value head serves H/h consecutive query heads.
    """
    k, v = k.to(q.dtype), v.to(q.dtype)  # no-op, unless the cache is kept in another dtype (autocast)
    if k.shape[1] != q.shape[1]:
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # (B, H, S, d), (B, H, S, e)
    if impl == "sdpa":  # fused kernel; a boolean mask is True where attention is allowed
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask_B1TS, dropout_p=dropout_p, scale=scale)
    scores = (q @ k.transpose(-2, -1)) * scale                       # (B, H, T, S)
    scores = scores.masked_fill(~mask_B1TS, float("-inf"))
    probs = scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype)  # fp32 softmax, as DeepSeek
    probs = F.dropout(probs, p=dropout_p)
    return probs @ v                                                 # (B, H, T, e)


class Attention(nn.Module):
    """Multi-head attention with optional grouped-query key/value heads (n_kv_heads < n_heads); no biases."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        H, h, d = cfg.n_heads, cfg.kv_heads, cfg.attn_head_dim
        self.q_proj = nn.Linear(cfg.d_model, H * d, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, h * d, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, h * d, bias=False)
        self.o_proj = nn.Linear(H * d, cfg.d_model, bias=False)
        self.scale = softmax_scale(cfg, d)

    def forward(self, x_BTD, cos, sin, mask_B1TS, cache: KVCache | None = None, layer: int = 0):
        cfg, (B, T, _) = self.cfg, x_BTD.shape
        q = self.q_proj(x_BTD).view(B, T, cfg.n_heads, -1).transpose(1, 2)   # (B, H, T, d)
        k = self.k_proj(x_BTD).view(B, T, cfg.kv_heads, -1).transpose(1, 2)  # (B, h, T, d)
        v = self.v_proj(x_BTD).view(B, T, cfg.kv_heads, -1).transpose(1, 2)  # (B, h, T, d)
        q, k = apply_rope(q, cos, sin, cfg.rope_interleaved), apply_rope(k, cos, sin, cfg.rope_interleaved)
        if cache is not None:
            k, v = cache.update(layer, k, v)                                 # (B, h, S, d)
        p = cfg.dropout if self.training else 0.0
        out = attend(q, k, v, mask_B1TS, self.scale, cfg.attn_impl, p)       # (B, H, T, d)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))            # (B, T, D)


class MLAttention(nn.Module):
    """DeepSeek-V2 Multi-head Latent Attention (most-reference.md §2.2); parameter names as in checkpoints.

    Keys and values of all heads are decoded from one small latent per token (kv_lora_rank wide), plus one
    rotary key shared by all heads. Position lives only in the qk_rope_head_dim part, so the latent part
    stays position-free (which is what makes the absorbed, latent-only cache possible; see KVCache).
    Per head, q and k are [nope | rope] (qk_nope_head_dim + qk_rope_head_dim), v is v_head_dim.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        H, D = cfg.n_heads, cfg.d_model
        qk_dim = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim
        if cfg.q_lora_rank is None:  # V2-Lite: a plain query projection
            self.q_proj = nn.Linear(D, H * qk_dim, bias=False)
        else:                        # V2: low-rank query, normalised in the middle
            self.q_a_proj = nn.Linear(D, cfg.q_lora_rank, bias=False)
            self.q_a_layernorm = RMSNorm(cfg.q_lora_rank, cfg.norm_eps)
            self.q_b_proj = nn.Linear(cfg.q_lora_rank, H * qk_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(D, cfg.kv_lora_rank + cfg.qk_rope_head_dim, bias=False)
        self.kv_a_layernorm = RMSNorm(cfg.kv_lora_rank, cfg.norm_eps)
        self.kv_b_proj = nn.Linear(cfg.kv_lora_rank, H * (cfg.qk_nope_head_dim + cfg.v_head_dim), bias=False)
        self.o_proj = nn.Linear(H * cfg.v_head_dim, D, bias=False)
        self.scale = softmax_scale(cfg, qk_dim)

    def forward(self, x_BTD, cos, sin, mask_B1TS, cache: KVCache | None = None, layer: int = 0):
        cfg, (B, T, _) = self.cfg, x_BTD.shape
        H, nope, rope = cfg.n_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim
        if cfg.q_lora_rank is None:
            q = self.q_proj(x_BTD)
        else:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x_BTD)))
        q = q.view(B, T, H, nope + rope).transpose(1, 2)                      # (B, H, T, nope+rope)
        q_nope, q_rope = q.split([nope, rope], dim=-1)

        latent, k_rope = self.kv_a_proj_with_mqa(x_BTD).split([cfg.kv_lora_rank, rope], dim=-1)
        kv = self.kv_b_proj(self.kv_a_layernorm(latent))                      # (B, T, H*(nope+e))
        kv = kv.view(B, T, H, nope + cfg.v_head_dim).transpose(1, 2)          # (B, H, T, nope+e)
        k_nope, v = kv.split([nope, cfg.v_head_dim], dim=-1)
        k_rope = k_rope.view(B, 1, T, rope)                                   # one rotary key for all heads

        q_rope = apply_rope(q_rope, cos, sin, cfg.rope_interleaved)
        k_rope = apply_rope(k_rope, cos, sin, cfg.rope_interleaved)
        q = torch.cat((q_nope, q_rope), dim=-1)                               # (B, H, T, d)
        k = torch.cat((k_nope, k_rope.expand(B, H, T, rope)), dim=-1)         # (B, H, T, d)
        if cache is not None:
            k, v = cache.update(layer, k, v)                                  # (B, H, S, d), (B, H, S, e)
        p = cfg.dropout if self.training else 0.0
        out = attend(q, k, v, mask_B1TS, self.scale, cfg.attn_impl, p)       # (B, H, T, e)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))             # (B, T, D)


# --------------------------------------------------------------------------------------------
# Decoder block and the language model
# --------------------------------------------------------------------------------------------

class DecoderBlock(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + ffn(norm(x), marks). Only the MoE ffn sees the marks."""

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = MLAttention(cfg) if cfg.attention == "mla" else Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.is_moe = cfg.is_moe_layer(layer)  # DeepSeek: layers < first_k_dense are dense
        self.ffn = MoE(cfg) if self.is_moe else SwiGLU(cfg.d_model, cfg.dense_hidden)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x_BTD, marks_BT, valid_BT, cos, sin, mask_B1TS, cache=None, check_inputs=True):
        x_BTD = x_BTD + self.drop(self.attn(self.attn_norm(x_BTD), cos, sin, mask_B1TS, cache, self.layer))
        h = self.ffn_norm(x_BTD)
        if self.is_moe:
            y, stats = self.ffn(h, marks_BT, valid_BT, check_inputs=check_inputs)
        else:
            y, stats = self.ffn(h), None
        return x_BTD + self.drop(y), stats


@dataclass
class LMOutput:
    """What `MAMoELM.forward` returns. Losses are None when no labels were given (router_loss never is)."""

    logits: torch.Tensor                     # (B, T, V)
    loss: torch.Tensor | None = None         # lm_loss + router_loss: what the trainer backpropagates
    lm_loss: torch.Tensor | None = None      # mean next-token cross-entropy over supervised positions
    router_loss: torch.Tensor | None = None  # sum over MoE layers of balance + z losses (already weighted)
    router_stats: list[RouterStats] = field(default_factory=list)  # one per MoE layer


def _is_int(t: torch.Tensor) -> bool:
    return not t.dtype.is_floating_point and not t.dtype.is_complex and t.dtype != torch.bool


class MAMoELM(nn.Module):
    """Decoder-only LM with modality-aware MoE layers: embedding, L blocks, final RMSNorm, LM head."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(DecoderBlock(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        # MoST-C: continuous speech frames (encoder width) -> d_model, trained with the LM (continuous.py).
        self.audio_projector = (Projector(cfg.audio_feature_dim, cfg.d_model, cfg.audio_projector,
                                          cfg.audio_downsample) if cfg.audio_feature_dim else None)
        # id -> mark (TEXT/AUDIO/SPECIAL); the tokenizer declares it through set_modality_map.
        self.register_buffer("token_modality", torch.full((cfg.vocab_size,), TEXT, dtype=torch.long))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """N(0, init_std) for every matrix; residual-output matrices get std / sqrt(2L) (GPT-2).

        Each of the 2L residual branches (attention and ffn per block) adds its output to the stream;
        shrinking the last projection of each keeps the stream's variance roughly independent of depth
        at initialisation instead of growing with L.
        """
        residual_std = self.cfg.init_std / math.sqrt(2 * self.cfg.n_layers)
        for name, p in self.named_parameters():
            if p.dim() < 2:
                continue  # norm weights stay at one
            is_output = name.endswith(("o_proj.weight", "down.weight", "w_down"))
            nn.init.normal_(p, mean=0.0, std=residual_std if is_output else self.cfg.init_std)

    def set_modality_map(self, token_modality: torch.Tensor) -> None:
        """Install the tokenizer's id -> mark map: a (V,) integer tensor of TEXT, AUDIO or SPECIAL."""
        t = torch.as_tensor(token_modality)
        if t.dim() != 1 or t.shape[0] != self.cfg.vocab_size or not _is_int(t):
            raise ValueError(f"token_modality must be a 1-D integer tensor of length vocab_size="
                             f"{self.cfg.vocab_size}, got shape {tuple(t.shape)} and dtype {t.dtype}.")
        bad = ~torch.isin(t, torch.tensor([TEXT, AUDIO, SPECIAL]))
        if bad.any():
            raise ValueError(f"token_modality values must be {TEXT} (text), {AUDIO} (audio) or {SPECIAL} "
                             f"(special); ids {bad.nonzero().flatten()[:5].tolist()} have other values.")
        self.token_modality.copy_(t)

    def num_params(self) -> int:
        """Parameters of the built model (tied weights counted once); equals `cfg.num_params()`."""
        return sum(p.numel() for p in self.parameters())

    def make_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty KV cache on the model's device and dtype, for up to max_len tokens (default max_seq_len).

        Size it to the prompt + new tokens: at `most` scale a max_seq_len cache is tens of GB per row.
        """
        w = self.embed.weight
        return KVCache(self.cfg, batch_size, max_len or self.cfg.max_seq_len, device=w.device, dtype=w.dtype)

    def _check_inputs(self, ids, marks, attention_mask, doc_ids, labels, cache, positions) -> None:
        """Explain malformed inputs before they become silent garbage. Reads values, so it may sync."""
        cfg = self.cfg
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or not _is_int(ids):
            what = f"{ids.dtype} of shape {tuple(ids.shape)}" if isinstance(ids, torch.Tensor) else type(ids)
            raise ValueError(f"input_ids must be an integer tensor of shape (B, T), got {what}.")
        B, T = ids.shape
        for name, t in (("marks", marks), ("attention_mask", attention_mask), ("doc_ids", doc_ids),
                        ("labels", labels), ("positions", positions)):
            if t is not None and tuple(t.shape) != (B, T):
                raise ValueError(f"{name} must have the shape of input_ids {(B, T)}, got {tuple(t.shape)}.")
            if t is not None and name != "attention_mask" and not _is_int(t):
                raise ValueError(f"{name} must be an integer tensor, got dtype {t.dtype}.")
        if T == 0:
            raise ValueError("input_ids is empty along the sequence; pass at least one token.")
        if ids.min() < 0 or ids.max() >= cfg.vocab_size:
            raise ValueError(f"input_ids must lie in [0, vocab_size={cfg.vocab_size}), got values in "
                             f"[{ids.min().item()}, {ids.max().item()}].")
        valid = torch.ones_like(ids, dtype=torch.bool)
        if attention_mask is not None:
            if attention_mask.dtype != torch.bool and not (
                    _is_int(attention_mask) and ((attention_mask == 0) | (attention_mask == 1)).all()):
                raise ValueError(f"attention_mask must be bool or 0/1 integers (1 = real token, 0 = "
                                 f"padding), got dtype {attention_mask.dtype} or other values.")
            valid = attention_mask.bool()
        if marks is not None:
            wrong = (marks != self.token_modality[ids]) & valid
            if wrong.any():
                b, t = wrong.nonzero()[0].tolist()
                i = ids[b, t].item()
                raise ValueError(f"marks disagree with token_modality[input_ids] at (batch {b}, position "
                                 f"{t}): id {i} has mark {self.token_modality[i].item()} but marks says "
                                 f"{marks[b, t].item()}. Leave marks=None to derive them from the ids, or "
                                 "fix the map with set_modality_map.")
        if labels is not None and ((labels != -100) & ((labels < 0) | (labels >= cfg.vocab_size))).any():
            raise ValueError(f"labels must be -100 (ignored) or ids in [0, {cfg.vocab_size}).")
        past = cache.length if cache is not None else 0
        if past + T > cfg.max_seq_len:
            raise ValueError(f"sequence too long: {past} cached + {T} new = {past + T} tokens, but "
                             f"max_seq_len={cfg.max_seq_len}.")
        if cache is not None:
            if cache.batch_size != B:
                raise ValueError(f"the cache was made for batch size {cache.batch_size}, got a batch of {B}.")
            if past + T > cache.max_len:
                raise ValueError(f"the cache holds {cache.max_len} positions; {past} cached + {T} new "
                                 "do not fit.")
            if doc_ids is not None:
                raise ValueError("doc_ids (packed documents) cannot be combined with a KV cache; "
                                 "pass doc_ids=None.")

    def forward(self, input_ids_BT: torch.Tensor, marks_BT: torch.Tensor | None = None,
                attention_mask_BT: torch.Tensor | None = None, doc_ids_BT: torch.Tensor | None = None,
                labels_BT: torch.Tensor | None = None, cache: KVCache | None = None,
                positions_BT: torch.Tensor | None = None, check_inputs: bool = True,
                audio_BTC: torch.Tensor | None = None, audio_mask_BT: torch.Tensor | None = None) -> LMOutput:
        """Logits (B, T, V) and losses for token ids (B, T).

        marks_BT: modality per position (default token_modality[ids]). attention_mask_BT: 1/True on real
        tokens, 0/False on padding (left padding for generation). doc_ids_BT: document id per position
        for packed sequences (attention stays inside a document, positions restart). labels_BT: aligned
        with input_ids (the logits at t are scored against labels[t+1]); -100 = not supervised.
        cache: KVCache to read and extend (incremental decoding). positions_BT: explicit RoPE positions.
        check_inputs=False skips the validation (it syncs with the device; the trainer turns it off).
        audio_BTC, audio_mask_BT: continuous speech input (MoST-C, `minimost.continuous`): where the mask
        is True the position's embedding is replaced by audio_projector(audio) and its mark is AUDIO.
        """
        if check_inputs:
            self._check_inputs(input_ids_BT, marks_BT, attention_mask_BT, doc_ids_BT, labels_BT, cache,
                               positions_BT)
        cfg, (B, T), dev = self.cfg, input_ids_BT.shape, input_ids_BT.device
        valid_BT = (attention_mask_BT.bool() if attention_mask_BT is not None
                    else torch.ones(B, T, dtype=torch.bool, device=dev))
        if marks_BT is None:  # a token is routed by the id it reads (most-reference.md §2.5)
            marks_BT = self.token_modality[input_ids_BT]

        # Which keys each query may see: causal, not padding, same document, (B, 1, T, S).
        past = cache.length if cache is not None else 0
        if cache is not None:
            cache.valid[:, past:past + T] = valid_BT
            key_valid_BS = cache.valid[:, :past + T]
        else:
            key_valid_BS = valid_BT
        q_idx = torch.arange(past, past + T, device=dev)
        k_idx = torch.arange(past + T, device=dev)
        mask = (k_idx[None, :] <= q_idx[:, None])[None] & key_valid_BS[:, None, :]   # (B, T, S)
        if doc_ids_BT is not None:
            mask = mask & (doc_ids_BT[:, :, None] == doc_ids_BT[:, None, :])
        # Every query sees at least itself: padding rows stay finite instead of softmax([-inf...]) = NaN.
        mask = (mask | (k_idx[None, :] == q_idx[:, None])[None])[:, None]           # (B, 1, T, S)

        if positions_BT is None:
            positions_BT = self._default_positions(valid_BT, doc_ids_BT, cache, past)
        rope_dim = cfg.qk_rope_head_dim if cfg.attention == "mla" else cfg.attn_head_dim
        cos, sin = rope_cos_sin(cfg, rope_dim, positions_BT)                        # (B, 1, T, R/2)

        x = self.embed(input_ids_BT)                                                # (B, T, D)
        if audio_mask_BT is not None:  # spliced speech frames: projected, and routed to the audio experts
            if self.audio_projector is None:
                raise ValueError("continuous audio was given but the model has no projector; set "
                                 "audio_feature_dim to the speech encoder's width (see docs/continuous.md).")
            if audio_BTC is None or audio_BTC.shape[:2] != (B, T) or audio_mask_BT.shape != (B, T):
                raise ValueError(f"audio_mask_BT must be (B, T)={(B, T)} and audio_BTC (B, T, C), got "
                                 f"{tuple(audio_mask_BT.shape)} and "
                                 f"{None if audio_BTC is None else tuple(audio_BTC.shape)}.")
            x = torch.where(audio_mask_BT[..., None], self.audio_projector(audio_BTC).to(x.dtype), x)
            marks_BT = marks_BT.masked_fill(audio_mask_BT, AUDIO)
        stats: list[RouterStats] = []
        for block in self.blocks:
            x, s = block(x, marks_BT, valid_BT, cos, sin, mask, cache, check_inputs)
            if s is not None:
                stats.append(s)
        if cache is not None:
            cache.length += T
        logits = self.lm_head(self.norm(x))                                         # (B, T, V)

        zero = logits.new_zeros((), dtype=torch.float32)
        router_loss = sum((s.balance_loss + s.z_loss for s in stats), zero)
        out = LMOutput(logits=logits, router_loss=router_loss, router_stats=stats)
        if labels_BT is not None:
            # Predict t+1 from t; padded targets are never scored, even if the caller forgot to mask them.
            targets = labels_BT[:, 1:].masked_fill(~valid_BT[:, 1:], -100)          # (B, T-1)
            ce = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(),
                                 ignore_index=-100, reduction="sum")
            out.lm_loss = ce / (targets != -100).sum().clamp(min=1)  # no NaN when nothing is supervised
            out.loss = out.lm_loss + router_loss
        return out

    @staticmethod
    def _default_positions(valid_BT, doc_ids_BT, cache, past) -> torch.Tensor:
        """RoPE positions (B, T): index within the document when packed, else real tokens seen before."""
        B, T = valid_BT.shape
        if doc_ids_BT is not None:
            t = torch.arange(T, device=valid_BT.device).expand(B, T)
            starts = torch.ones_like(valid_BT)
            starts[:, 1:] = doc_ids_BT[:, 1:] != doc_ids_BT[:, :-1]                 # (B, T) a doc begins
            return t - torch.where(starts, t, 0).cummax(dim=1).values               # (B, T)
        # Left padding: the first real token is position 0. With a cache, continue from the real
        # tokens already cached in that row (rows of a batch have different amounts of padding).
        seen = cache.valid[:, :past].sum(-1, keepdim=True) if cache is not None else 0  # (B, 1)
        return (valid_BT.long().cumsum(-1) - 1).clamp(min=0) + seen
