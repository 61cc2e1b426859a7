"""MoST's training-time expert dispatch, re-expressed on minimost's weights (a benchmark peer, not a feature).

What MoST's `MoE.forward` does when `self.training` (most-reference.md §2.6), written here from that
description:

1. repeat every token row K times (`repeat_interleave`), so row a = n*K + k is token n's k-th slot;
2. loop over **all** E experts in Python; expert e takes the rows whose slot chose it through a boolean
   mask and writes its output into an empty buffer at the same rows (on a GPU every boolean index is a
   host synchronisation, and an expert with no token still costs the mask and the launch);
3. reshape the buffer to (N, K, D), multiply by the fp32 gate weights, sum over the K slots, cast back;
4. add the shared experts (every token, weight 1);
5. attach the auxiliary balance loss with an identity autograd function whose backward gives the loss a
   gradient of 1 (so the loss never shows in the value, only in the gradients).

Like MoST (a DeepSeek-V2 `nn.ModuleList` of E expert MLPs), the experts are E *separate* modules, each
with its own gate/up/down `nn.Linear`: `most_experts_from_minimost(moe)` copies a `minimost.moe.MoE`'s
stacked (E, out, in) weights into such a list. This matters for the backward cost: slicing one stacked
parameter per expert (`w[e]`) makes autograd build a full-size (E, out, in) gradient for every slice and
add them up, E times the memory traffic of the weights (measured: 46 s instead of 1.8 s for one weight at
MoST's shape on a CPU core; `w.unbind(0)` avoids it). MoST's separate parameters do not pay that.

`most_mask_loop_forward(moe, experts, x_BTD, marks_BT, valid_BT)` runs the dispatch with `moe`'s router and
shared experts and the separate `experts`, so it computes the same function as minimost's dispatches on
the same weights (tests/test_bench.py checks it against the `dense` reference). Shape letters as in
minimost/moe.py.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from minimost.moe import SwiGLU


class AddAuxiliaryLoss(torch.autograd.Function):
    """Identity on y in the forward pass; in the backward pass the aux loss receives a gradient of 1."""

    @staticmethod
    def forward(ctx, y, aux_loss):
        ctx.aux_dtype, ctx.aux_device = aux_loss.dtype, aux_loss.device
        return y

    @staticmethod
    def backward(ctx, grad_y):
        return grad_y, torch.ones((), dtype=ctx.aux_dtype, device=ctx.aux_device)


def most_experts_from_minimost(moe) -> nn.ModuleList:
    """E separate SwiGLU expert modules (MoST's layout) holding copies of `moe`'s stacked expert weights."""
    ex = moe.experts
    E, H, D = ex.w_gate.shape
    experts = nn.ModuleList(SwiGLU(D, H) for _ in range(E)).to(device=ex.w_gate.device, dtype=ex.w_gate.dtype)
    with torch.no_grad():
        for e, expert in enumerate(experts):
            expert.gate.weight.copy_(ex.w_gate[e])
            expert.up.weight.copy_(ex.w_up[e])
            expert.down.weight.copy_(ex.w_down[e])
    return experts


def most_mask_loop_forward(moe, experts: nn.ModuleList, x_BTD: torch.Tensor, marks_BT: torch.Tensor,
                           valid_BT: torch.Tensor | None = None, attach_aux: bool = True):
    """MoST's training dispatch: `moe`'s router and shared experts, the separate `experts`. -> (y_BTD, stats)."""
    B, T, D = x_BTD.shape
    K, E = moe.cfg.top_k, moe.cfg.n_experts
    if valid_BT is None:
        valid_BT = torch.ones(B, T, dtype=torch.bool, device=x_BTD.device)
    weights_NK, indices_NK, stats = moe.router(x_BTD, marks_BT, valid_BT)
    x_ND = x_BTD.reshape(B * T, D)

    x_AD = x_ND.repeat_interleave(K, dim=0)                     # (N*K, D): token n at rows n*K .. n*K+K-1
    expert_A = indices_NK.reshape(-1)                           # (N*K,) the expert of each row
    y_AD = torch.empty_like(x_AD)
    for e in range(E):                                          # every expert, used or not
        mask_A = expert_A == e                                  # boolean mask: a host sync per expert on GPU
        y_AD[mask_A] = experts[e](x_AD[mask_A]).to(y_AD.dtype)
    y_ND = (y_AD.view(B * T, K, D).float() * weights_NK[:, :, None]).sum(dim=1).to(x_BTD.dtype)
    if moe.shared is not None:
        y_ND = y_ND + moe.shared(x_ND)
    y_BTD = y_ND.view(B, T, D)
    if attach_aux and torch.is_grad_enabled() and stats.balance_loss.requires_grad:
        y_BTD = AddAuxiliaryLoss.apply(y_BTD, stats.balance_loss)
    return y_BTD, stats
