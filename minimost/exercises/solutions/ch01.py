"""Reference solutions to `minimost.exercises.ch01` (notebooks/01_moe_from_scratch.ipynb)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def topk_route(logits_NE: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over all experts in fp32, then the k largest probabilities (raw, not renormalised)."""
    probs_NE = torch.softmax(logits_NE.float(), dim=-1)                    # (N, E)
    weights_NK, indices_NK = torch.topk(probs_NE, k, dim=-1)               # (N, K) each, largest first
    return weights_NK, indices_NK


def swiglu_expert(x_ND, w_gate_HD, w_up_HD, w_down_DH) -> torch.Tensor:
    """down(silu(gate(x)) * up(x)) with (out, in) weights."""
    h_NH = F.silu(x_ND @ w_gate_HD.T) * (x_ND @ w_up_HD.T)                 # (N, H)
    return h_NH @ w_down_DH.T                                              # (N, D)


def switch_balance_loss(probs_NE: torch.Tensor, indices_NK: torch.Tensor, n_experts: int) -> torch.Tensor:
    """sum_i f_i * P_i with f from the (non-differentiable) counts and P from the probabilities."""
    N, K = indices_NK.shape
    counts_E = torch.bincount(indices_NK.reshape(-1), minlength=n_experts).float()   # (E,)
    f_E = counts_E * n_experts / (K * N)
    P_E = probs_NE.float().mean(dim=0)                                     # (E,)
    return (f_E * P_E).sum()


def sorted_dispatch(x_ND, weights_NK, indices_NK, w_gate_EHD, w_up_EHD, w_down_EDH) -> torch.Tensor:
    """Sort assignments by expert, run each expert on its contiguous slice, un-permute, combine."""
    (N, D), K, E = x_ND.shape, indices_NK.shape[1], w_gate_EHD.shape[0]
    expert_A = indices_NK.reshape(N * K)                                   # (A,) expert of assignment a
    order_A = torch.argsort(expert_A, stable=True)                         # (A,) assignments sorted by expert
    x_AD = x_ND[order_A // K]                                              # (A, D) the token each one reads
    counts = torch.bincount(expert_A, minlength=E).tolist()                # rows per expert
    out_AD = torch.empty_like(x_AD)
    start = 0
    for e, n_e in enumerate(counts):                                       # grouped_mm does this in one call
        rows = slice(start, start + n_e)
        out_AD[rows] = swiglu_expert(x_AD[rows], w_gate_EHD[e], w_up_EHD[e], w_down_EDH[e])
        start += n_e
    out_sorted_back_AD = torch.empty_like(out_AD)
    out_sorted_back_AD[order_A] = out_AD                                   # un-permute: row a = n*K + k
    out_NKD = out_sorted_back_AD.view(N, K, D)
    return (out_NKD.float() * weights_NK[:, :, None]).sum(dim=1).to(x_ND.dtype)
