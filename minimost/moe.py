"""Modality-aware mixture of experts (MAMoE): router, routed experts, shared experts, router losses.

Notable features
- MoST's routing rule, exactly (most-reference.md §2.4): fp32 softmax over *all* experts, the other
  modality's experts zeroed *after* the softmax, top-k of what is left, raw (un-renormalised) weights.
- Every choice is a named `ModelConfig` field, so it can be ablated: mask before/after the softmax,
  renormalise, explicit expert groups, modality routing off (plain top-k), shared experts,
  balance loss none/global/sequence, z-loss, aux-loss-free bias balancing, the SPECIAL-token route.
- New routing rules are registered in a few lines (`@register_routing("name")`, selected by
  `ModelConfig.routing`); MoST's rule is the registered default "most" (docs/ablations.md).
- Padding is neither counted nor balanced, and SPECIAL tokens always reach real experts: the two MoST
  bugs of most-reference.md §2.7 (items 2 and 3) are fixed.
- Three interchangeable dispatches that give the same result (tested):
  `grouped` (default; sort by expert + `grouped_mm`, dropless, no host sync, deterministic combine),
  `loop` (readable per-expert loop, the test oracle) and `dense` (every expert on every token).

Paper / reference sections: MoE block and shared experts (most-reference.md §2.3), the MAMoEGate
algorithm (§2.4), dispatch (§2.6), bugs not reproduced (§2.7); dispatch costs: performance-anchors.md §1.

Shape letters
    B batch          T time (sequence)      N = B*T flattened tokens     D d_model
    E routed experts K top-k                H hidden width of one expert  M mark values (3)
    A = N*K token-slot assignments (one row per (token, chosen expert) pair)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from minimost.config import AUDIO, MARK_NAMES, SPECIAL, TEXT, ConfigError, ModelConfig

M = len(MARK_NAMES)  # number of mark values: text, audio, special

# `F.grouped_mm` is public from torch 2.10; 2.8-2.9 only had the private op (performance-anchors §1.3).
_grouped_mm = getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype expert matmuls run in: the autocast dtype when autocast is on, else x's own dtype."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


class SwiGLU(nn.Module):
    """`down(silu(gate(x)) * up(x))` without biases (most-reference.md §2.3). (..., d_in) -> (..., d_in).

    Used for the shared experts here and for the dense first-k layers in model.py.
    """

    def __init__(self, d_in: int, hidden: int):
        super().__init__()
        self.gate = nn.Linear(d_in, hidden, bias=False)
        self.up = nn.Linear(d_in, hidden, bias=False)
        self.down = nn.Linear(hidden, d_in, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


@dataclass
class RouterStats:
    """What one MoE layer reports besides its output (docs/INTERFACES.md).

    balance_loss: scalar, already times `balance_alpha` (0 when off). z_loss: scalar, already times
    `z_loss_coef`. tokens_per_expert_ME: (M, E) float, valid token-slot assignments per mark and expert
    (K per token). dropped: always 0 (dropless). indices_NK / weights_NK: the routing decision, detached.
    """

    balance_loss: torch.Tensor
    z_loss: torch.Tensor
    tokens_per_expert_ME: torch.Tensor
    dropped: int
    indices_NK: torch.Tensor
    weights_NK: torch.Tensor


# --------------------------------------------------------------------------------------------
# Routing variants: a registry, so a new rule is a few lines (docs/ablations.md)
# --------------------------------------------------------------------------------------------
# A routing variant decides, for every token, which K experts it uses and with what raw weight:
#
#     route(logits_NE fp32, allowed_NE bool, cfg, expert_bias_E or None) -> (probs_NE, weights_NK, indices_NK)
#
#   logits_NE   the gate's fp32 logits over ALL routed experts
#   allowed_NE  may token n use expert e (its mark's group; all True when modality_routing=False)
#   expert_bias the aux-loss-free balancing bias (None when off): steer the *choice* with it, never the weights
#   probs_NE    the probabilities the balance loss sees (MoST: masked, E = all experts)
#   weights_NK  raw weights of the K chosen experts; the Router then applies `renormalize` and
#               `routed_scaling_factor`, the same for every variant
#   indices_NK  int64 expert ids, exactly K = cfg.top_k per token (the dispatches need a fixed K)
#
# `ModelConfig.routing` names the variant ("most" by default). Register one with
#
#     @register_routing("my_rule")
#     def my_rule(logits_NE, allowed_NE, cfg, expert_bias):
#         ...
#         return probs_NE, weights_NK, indices_NK

RoutingFn = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
ROUTING_VARIANTS: dict[str, RoutingFn] = {}


def register_routing(name: str, *, overwrite: bool = False) -> Callable[[RoutingFn], RoutingFn]:
    """Decorator: make `fn` selectable as `ModelConfig(routing=name)`. Re-registering a name needs overwrite=True."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"a routing variant's name must be a Python identifier, got {name!r}.")

    def decorate(fn: RoutingFn) -> RoutingFn:
        if name in ROUTING_VARIANTS and ROUTING_VARIANTS[name] is not fn and not overwrite:
            raise ConfigError(f"routing variant {name!r} is already registered; pick another name or pass "
                              "overwrite=True.")
        ROUTING_VARIANTS[name] = fn
        return fn

    return decorate


def routing_variant(name: str) -> RoutingFn:
    """The registered routing function called `name`; a ConfigError listing the registered names otherwise."""
    if name not in ROUTING_VARIANTS:
        raise ConfigError(f"routing={name!r} is not a registered routing variant; registered: "
                          f"{', '.join(sorted(ROUTING_VARIANTS))}. Register a new one with "
                          "@minimost.moe.register_routing(name) (docs/ablations.md).")
    return ROUTING_VARIANTS[name]


@register_routing("most")
def most_routing(logits_NE, allowed_NE, cfg: ModelConfig, expert_bias=None):
    """The default: MoST's MAMoEGate (most-reference.md §2.4), honouring `mask_mode`.

    With `modality_routing=False` every expert is allowed and this is vanilla top-k over all experts
    (DeepSeek's MoEGate), which is how the ablation's vanilla arm is expressed.
    """
    # Softmax and the modality mask (§2.4). MoST: softmax over all E, then zero the other group,
    # so weights are *global* probabilities. "before_softmax" renormalises within the group instead.
    if cfg.mask_mode == "after_softmax":
        probs_NE = torch.softmax(logits_NE, dim=-1).masked_fill(~allowed_NE, 0.0)
    else:
        probs_NE = torch.softmax(logits_NE.masked_fill(~allowed_NE, float("-inf")), dim=-1)

    # Top-k. The bias only steers the choice; the weights come from the unbiased probabilities
    # (DeepSeek-V3 / torchtitan). Disallowed experts are -inf for selection: with MoST's "0" a
    # disallowed expert could win if the bias is positive or an allowed probability underflows.
    select_NE = probs_NE + expert_bias if expert_bias is not None else probs_NE
    select_NE = select_NE.masked_fill(~allowed_NE, float("-inf"))
    indices_NK = torch.topk(select_NE, cfg.top_k, dim=-1).indices              # (N, K)
    weights_NK = probs_NE.gather(1, indices_NK)                                # (N, K) fp32
    return probs_NE, weights_NK, indices_NK


@register_routing("topk")
def topk_routing(logits_NE, allowed_NE, cfg: ModelConfig, expert_bias=None):
    """Plain top-k over all experts that *ignores* the modality mask (the expert groups stay declared).

    Same result as `modality_routing=False` with the "most" rule; shown as the smallest variant.
    """
    return most_routing(logits_NE, torch.ones_like(allowed_NE), cfg, expert_bias)


# --------------------------------------------------------------------------------------------
# Router
# --------------------------------------------------------------------------------------------

class Router(nn.Module):
    """The MAMoE gate (most-reference.md §2.4): picks K experts per token among those its mark allows.

    forward(x_BTD, marks_BT, valid_BT) -> (weights_NK fp32, indices_NK int64, RouterStats).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        E = cfg.n_experts
        self.gate = nn.Linear(cfg.d_model, E, bias=False)  # weight (E, D), as DeepSeek's gate
        self.route = routing_variant(cfg.routing)  # the registered rule (registry above)
        # Aux-loss-free balancing (DeepSeek-V3): a bias that steers *selection* only; not a parameter,
        # it is moved by `MoE.update_bias`, never by the optimizer.
        self.register_buffer("expert_bias", torch.zeros(E) if cfg.bias_balancing else None)

        # allowed_ME[m, e]: may a token of mark m use expert e? Built from the config, never from the
        # data, so it is a constant of the layer (non-persistent: it is not learned state).
        text, audio = cfg.expert_groups()
        allowed_ME = torch.zeros(M, E, dtype=torch.bool)
        group_E = torch.zeros(E, dtype=torch.long)  # 0 = text group, 1 = audio group (for update_bias)
        if cfg.modality_routing:
            allowed_ME[TEXT, list(text)] = True
            allowed_ME[AUDIO, list(audio)] = True
            group_E[list(audio)] = 1
            # MoST gives mark 2 *no* expert (§2.7 item 2); minimost follows a declared route instead.
            allowed_ME[SPECIAL] = {"text": allowed_ME[TEXT], "audio": allowed_ME[AUDIO],
                                   "all": torch.ones(E, dtype=torch.bool)}[cfg.special_token_route]
        else:
            allowed_ME[:] = True  # vanilla top-k over all experts (stage-0 text model, ablation baseline)
        self.register_buffer("allowed_ME", allowed_ME, persistent=False)
        self.register_buffer("group_E", group_E, persistent=False)

    def forward(self, x_BTD: torch.Tensor, marks_BT: torch.Tensor, valid_BT: torch.Tensor):
        cfg, (B, T, D), E, K = self.cfg, x_BTD.shape, self.cfg.n_experts, self.cfg.top_k
        x_ND = x_BTD.reshape(B * T, D)
        marks_N = marks_BT.reshape(B * T).long()
        valid_N = valid_BT.reshape(B * T)

        # 1. Logits in fp32 even under bf16 autocast: the softmax over E experts is precision-sensitive.
        with torch.autocast(x_ND.device.type, enabled=False):
            logits_NE = x_ND.float() @ self.gate.weight.float().T             # (N, E)

        # 2-5. Mask, softmax and top-k: the routing variant (`cfg.routing`, default "most" = MoST's rule).
        allowed_NE = self.allowed_ME[marks_N]                                  # (N, E) bool
        probs_NE, weights_NK, indices_NK = self.route(logits_NE, allowed_NE, cfg, self.expert_bias)

        # 6. MoST keeps the raw probabilities (norm_topk_prob=false, scaling 1.0).
        if cfg.renormalize:
            weights_NK = weights_NK / weights_NK.sum(dim=-1, keepdim=True)
        weights_NK = weights_NK * cfg.routed_scaling_factor

        # Statistics and losses see only real tokens (MoST routes and balances padding, §2.7 item 3).
        valid_f_N = valid_N.float()
        slot_valid_NK = valid_f_N[:, None].expand(B * T, K)                    # (N, K)
        # valid token-slot assignments per (mark, expert): a static-shape scatter, no host sync
        tokens_per_expert_ME = torch.zeros(M * E, device=x_ND.device).scatter_add_(
            0, (marks_N[:, None] * E + indices_NK).reshape(-1), slot_valid_NK.reshape(-1)
        ).view(M, E)                                                           # (M, E)

        zero = logits_NE.new_zeros(())
        balance_loss = (zero if cfg.balance_loss == "none"
                        else self._balance_loss(probs_NE, indices_NK, valid_BT))
        if cfg.z_loss_coef > 0:  # ST-MoE router z-loss: keeps the logits small
            lse2_N = torch.logsumexp(logits_NE, dim=-1).square()               # (N,)
            z_loss = cfg.z_loss_coef * (lse2_N * valid_f_N).sum() / valid_f_N.sum().clamp(min=1)
        else:
            z_loss = zero
        stats = RouterStats(balance_loss, z_loss, tokens_per_expert_ME.detach(), 0,
                            indices_NK.detach(), weights_NK.detach())
        return weights_NK, indices_NK, stats

    def _balance_loss(self, probs_NE, indices_NK, valid_BT) -> torch.Tensor:
        """Switch-style f·P balance loss on the *masked* probabilities, E = all experts (§2.4 step 7).

        f_i = E/(K·T)·#{(t,k): idx=i} (no gradient) and P_i = mean_t probs_i (carries the gradient), both
        over valid tokens only. "sequence": per sequence, then the mean over sequences that have at
        least one valid token (an all-padding sequence contributes nothing). "global": over the batch.
        With uniform probabilities Σ_i f_i·P_i = 1 whatever K is, so α keeps its meaning across top-k.
        """
        cfg, (B, T), E, K = self.cfg, valid_BT.shape, self.cfg.n_experts, self.cfg.top_k
        valid_BT = valid_BT.float()
        # counts_BE[b, i]: valid assignments of sequence b to expert i (scatter of 0/1, no host sync)
        counts_BE = probs_NE.new_zeros(B, E).scatter_add_(
            1, indices_NK.view(B, T * K), valid_BT[:, :, None].expand(B, T, K).reshape(B, T * K))
        prob_sum_BE = (probs_NE.view(B, T, E) * valid_BT[:, :, None]).sum(dim=1)  # (B, E)
        n_valid_B = valid_BT.sum(dim=1)                                            # (B,) T_b
        if cfg.balance_loss == "global":  # the whole batch as one sequence
            counts_BE = counts_BE.sum(0, keepdim=True)                             # (1, E)
            prob_sum_BE = prob_sum_BE.sum(0, keepdim=True)                         # (1, E)
            n_valid_B = n_valid_B.sum(0, keepdim=True)                             # (1,)
        denom_B1 = n_valid_B.clamp(min=1)[:, None]                                 # (B, 1), no 0/0
        f_BE = counts_BE * (E / K) / denom_B1
        P_BE = prob_sum_BE / denom_B1
        per_seq_B = (f_BE * P_BE).sum(dim=1)                                       # (B,) 0 if empty
        n_seqs = (n_valid_B > 0).sum().clamp(min=1)
        return cfg.balance_alpha * per_seq_B.sum() / n_seqs


# --------------------------------------------------------------------------------------------
# Routed experts and the three dispatches
# --------------------------------------------------------------------------------------------

class Experts(nn.Module):
    """E SwiGLU experts with stacked weights, layout (E, out, in): w_gate, w_up (E, H, D), w_down (E, D, H).

    forward(x_ND, weights_NK, indices_NK) -> y_ND = Σ_k weights[n,k] · Expert_{indices[n,k]}(x_n), the
    weighted sum done in fp32 and returned in x's dtype. `dispatch` ("grouped" | "loop" | "dense") picks
    the implementation; all three give the same result (tests/test_moe.py).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        E, H, D = cfg.n_experts, cfg.expert_hidden, cfg.d_model
        self.w_gate = nn.Parameter(torch.empty(E, H, D))
        self.w_up = nn.Parameter(torch.empty(E, H, D))
        self.w_down = nn.Parameter(torch.empty(E, D, H))
        self.dispatch = cfg.dispatch

    def forward(self, x_ND, weights_NK, indices_NK) -> torch.Tensor:
        if self.dispatch == "grouped" and _grouped_mm is not None:
            out_NKD = self._grouped(x_ND, indices_NK)
        elif self.dispatch == "dense":
            return self._dense(x_ND, weights_NK, indices_NK)
        else:  # "loop", and "grouped" on a torch without grouped_mm
            out_NKD = self._loop(x_ND, indices_NK)
        # Combine in fp32: y_n = Σ_k w_nk · out_nk. A sum over a fixed axis, so deterministic (no atomics).
        y_ND = (out_NKD.float() * weights_NK[:, :, None]).sum(dim=1)
        return y_ND.to(x_ND.dtype)

    def _weights(self, dtype):
        return self.w_gate.to(dtype), self.w_up.to(dtype), self.w_down.to(dtype)

    def _loop(self, x_ND, indices_NK) -> torch.Tensor:
        """The readable oracle: for each expert, gather the (token, slot) pairs that chose it. -> (N, K, D).

        `torch.where` and the empty-expert skip synchronise with the host once per expert; that is
        what makes this slow on a GPU (performance-anchors §1.1) and why it is not the default.
        """
        (N, D), K = x_ND.shape, indices_NK.shape[1]
        # unbind, not w[e]: the backward of E separate index ops would build E full-size (E, H, D)
        # gradients, a cost that grows with E² (46.5 s -> 1.8 s at MoST's layer shape, bench/bench_moe.py).
        w_gate, w_up, w_down = (w.unbind(0) for w in self._weights(_compute_dtype(x_ND)))
        out_NKD = x_ND.new_zeros(N, K, D, dtype=w_gate[0].dtype)
        for e in range(len(w_gate)):
            token_idx, slot_idx = torch.where(indices_NK == e)  # the n_e pairs routed to expert e
            if token_idx.numel() == 0:
                continue
            x_eD = x_ND[token_idx].to(w_gate[e].dtype)                         # (n_e, D)
            h_eH = F.silu(x_eD @ w_gate[e].T) * (x_eD @ w_up[e].T)            # (n_e, H)
            out_NKD[token_idx, slot_idx] = h_eH @ w_down[e].T                  # (n_e, D) into its slots
        return out_NKD

    def _grouped(self, x_ND, indices_NK) -> torch.Tensor:
        """Sort the N·K assignments by expert and run every expert in one grouped GEMM. -> (N, K, D).

        Dropless and free of host syncs: the only data-dependent quantity, the group sizes, stays on the
        device as `offs`. An expert that gets no token is an empty group, so a text-only batch runs the
        same code as a mixed one (performance-anchors §1.3, §7).
        """
        (N, D), K = x_ND.shape, indices_NK.shape[1]
        w_gate, w_up, w_down = self._weights(_compute_dtype(x_ND))
        E = w_gate.shape[0]
        expert_A = indices_NK.reshape(N * K)                                   # (A,) expert of each slot
        order_A = torch.argsort(expert_A, stable=True)                         # (A,) slots sorted by expert
        x_AD = x_ND[order_A // K].to(w_gate.dtype)                             # (A, D) token read by each
        counts_E = torch.zeros(E, dtype=torch.long, device=x_ND.device).scatter_add_(
            0, expert_A, torch.ones_like(expert_A))                            # (E,) slots per expert
        offs_E = torch.cumsum(counts_E, dim=0).to(torch.int32)                 # (E,) end row of each group
        # weights are stored (E, out, in); the transposed view is the column-major operand grouped_mm likes
        h_AH = (F.silu(_grouped_mm(x_AD, w_gate.transpose(-2, -1), offs=offs_E))
                * _grouped_mm(x_AD, w_up.transpose(-2, -1), offs=offs_E))      # (A, H)
        out_AD = _grouped_mm(h_AH, w_down.transpose(-2, -1), offs=offs_E)      # (A, D), sorted order
        # Un-permute with the inverse permutation: row a of the result is assignment a = n*K + k.
        inverse_A = torch.empty_like(order_A).scatter_(0, order_A, torch.arange(N * K, device=x_ND.device))
        return out_AD[inverse_A].view(N, K, D)                                 # (N, K, D)

    def _dense(self, x_ND, weights_NK, indices_NK) -> torch.Tensor:
        """The reference: every expert on every token, mixed by a dense (N, E) weight matrix. -> (N, D).

        E/K times the useful work, so only for tests and tiny shapes.
        """
        w_gate, w_up, w_down = self._weights(_compute_dtype(x_ND))
        x = x_ND.to(w_gate.dtype)
        h_NEH = F.silu(torch.einsum("nd,ehd->neh", x, w_gate)) * torch.einsum("nd,ehd->neh", x, w_up)
        out_NED = torch.einsum("neh,edh->ned", h_NEH, w_down)                  # (N, E, D)
        dense_NE = torch.zeros_like(out_NED[:, :, 0], dtype=torch.float32).scatter(
            1, indices_NK, weights_NK)                                         # (N, E), 0 if not chosen
        return torch.einsum("ne,ned->nd", dense_NE, out_NED.float()).to(x_ND.dtype)


# --------------------------------------------------------------------------------------------
# The MoE layer
# --------------------------------------------------------------------------------------------

class MoE(nn.Module):
    """One MAMoE feed-forward layer: y = Σ_k w_k · Expert_{idx_k}(x) + Shared(x) (most-reference.md §2.3).

    forward(x_BTD, marks_BT, valid_BT=None, check_inputs=True) -> (y_BTD, RouterStats).
    marks_BT: int (B, T) in {TEXT, AUDIO, SPECIAL}; valid_BT: bool (B, T), False on padding (None = all
    real). `check_inputs=False` skips the host-syncing mark check (it is skipped anyway under compile).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.router = Router(cfg)
        self.experts = Experts(cfg)
        # The shared experts see every token with weight 1, whatever its modality; n of them of width H
        # are one SwiGLU of width n·H (DeepSeek's fusion; MoST: 2 × 1408 = 2816).
        n_shared = cfg.n_shared_experts
        self.shared = SwiGLU(cfg.d_model, n_shared * cfg.expert_hidden) if n_shared > 0 else None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """normal(0, init_std) for the gate, the routed and the shared experts; expert bias to 0."""
        std = self.cfg.init_std
        for w in (self.router.gate.weight, self.experts.w_gate, self.experts.w_up, self.experts.w_down):
            nn.init.normal_(w, mean=0.0, std=std)
        if self.shared is not None:
            for lin in (self.shared.gate, self.shared.up, self.shared.down):
                nn.init.normal_(lin.weight, mean=0.0, std=std)
        if self.router.expert_bias is not None:
            self.router.expert_bias.zero_()

    def forward(self, x_BTD, marks_BT, valid_BT=None, check_inputs: bool = True):
        B, T, D = x_BTD.shape
        if valid_BT is None:
            valid_BT = torch.ones(B, T, dtype=torch.bool, device=x_BTD.device)
        if check_inputs and not torch.compiler.is_compiling():
            _check_marks(x_BTD, marks_BT, valid_BT)
        weights_NK, indices_NK, stats = self.router(x_BTD, marks_BT, valid_BT)
        x_ND = x_BTD.reshape(B * T, D)
        y_ND = self.experts(x_ND, weights_NK, indices_NK)                      # (N, D) routed part
        if self.shared is not None:
            y_ND = y_ND + self.shared(x_ND)
        return y_ND.view(B, T, D), stats

    @torch.no_grad()
    def update_bias(self, tokens_per_expert_E: torch.Tensor) -> None:
        """Aux-loss-free balancing step (DeepSeek-V3, arXiv 2408.15664): bias += rate·sign(mean − load).

        tokens_per_expert_E: (E,) load since the last step (an (M, E) `tokens_per_expert_ME` is summed
        over marks). The mean is taken *within each modality group*: selection only ever compares
        experts of one group, so being busier than the other group's experts is not imbalance.
        The bias is then re-centred to zero mean. Does nothing when `bias_balancing` is off.
        """
        bias_E = self.router.expert_bias
        if bias_E is None:
            return
        load_E = tokens_per_expert_E.to(bias_E.device, torch.float32)
        if load_E.dim() == 2:
            load_E = load_E.sum(dim=0)                                         # (M, E) -> (E,)
        group_E = self.router.group_E                                          # (E,) 0 text, 1 audio
        load_sum_G = torch.zeros(2, device=load_E.device).index_add_(0, group_E, load_E)   # (2,)
        mean_E = (load_sum_G / torch.bincount(group_E, minlength=2).clamp(min=1))[group_E]  # (E,)
        bias_E += self.cfg.bias_update_rate * torch.sign(mean_E - load_E)
        bias_E -= bias_E.mean()


def _check_marks(x_BTD, marks_BT, valid_BT) -> None:
    """Eager-mode input check with an actionable message (one host sync; skipped under compile)."""
    if marks_BT.shape != x_BTD.shape[:2] or valid_BT.shape != x_BTD.shape[:2]:
        raise ValueError(f"marks_BT {tuple(marks_BT.shape)} and valid_BT {tuple(valid_BT.shape)} must both "
                         f"have shape (B, T) = {tuple(x_BTD.shape[:2])}.")
    if marks_BT.dtype.is_floating_point or marks_BT.dtype == torch.bool:
        raise ValueError(f"marks_BT must be an integer tensor, got {marks_BT.dtype}.")
    bad = (marks_BT < 0) | (marks_BT >= M)
    if bool(bad.any()):
        found = sorted(set(marks_BT[bad].tolist()))
        raise ValueError(f"modality marks must be {', '.join(f'{k} ({v})' for k, v in MARK_NAMES.items())}; "
                         f"found {found[:8]}. Marks come from the tokenizer's id->modality map "
                         "(model.token_modality); an id outside it needs a declared mark.")
