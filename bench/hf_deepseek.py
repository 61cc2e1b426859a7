"""Hugging Face transformers' DeepSeek-V2 MoE block, loaded with a minimost `MoE`'s weights (a benchmark peer).

    block = hf_moe_from_minimost(moe, implementation="grouped_mm")   # or "eager"
    y_BTD = block(x_BTD)

Weight map (minimost layout (E, out, in) is also HF v5's):
    router.gate.weight (E, D)            -> gate.weight (E, D), fp32 in HF
    experts.w_gate, w_up (E, H, D)       -> experts.gate_up_proj (E, 2H, D) = cat([w_gate, w_up], dim=1)
    experts.w_down (E, D, H)             -> experts.down_proj (E, D, H)
    shared.gate / up / down              -> shared_experts.gate_proj / up_proj / down_proj

HF's router is DeepSeek-V2's plain top-k over all E experts (`topk_method="greedy"`, raw softmax weights,
`norm_topk_prob=False`, scale 1.0): the same function as minimost with `modality_routing=False`, no
modality mask. The benchmark therefore times HF's block with its own (unmasked) routing: the same FLOPs
and the same kind of expert load, not the same expert choice as minimost's modality-aware router.
tests/test_bench.py checks outputs and gradients against minimost with `modality_routing=False`.
Returns None when transformers (or its DeepSeek-V2 model) is not installed.
"""

from __future__ import annotations

import torch


def hf_available() -> bool:
    try:
        from transformers.models.deepseek_v2 import modeling_deepseek_v2  # noqa: F401
    except Exception:
        return False
    return True


def hf_moe_from_minimost(moe, implementation: str = "grouped_mm"):
    """A `DeepseekV2Moe` with `moe`'s weights, on its device and dtype (router kept in fp32 as HF does)."""
    if not hf_available():
        return None
    from transformers import DeepseekV2Config
    from transformers.models.deepseek_v2.modeling_deepseek_v2 import DeepseekV2Moe

    c = moe.cfg
    hf_cfg = DeepseekV2Config(
        hidden_size=c.d_model, moe_intermediate_size=c.expert_hidden, n_routed_experts=c.n_experts,
        num_experts_per_tok=c.top_k, n_shared_experts=c.n_shared_experts, topk_method="greedy",
        norm_topk_prob=False, routed_scaling_factor=c.routed_scaling_factor, hidden_act="silu",
        n_group=1, topk_group=1, mlp_bias=False, num_hidden_layers=1, vocab_size=32,
        experts_implementation=implementation)
    hf_cfg._experts_implementation = implementation
    ref = moe.experts.w_gate
    block = DeepseekV2Moe(hf_cfg).to(device=ref.device, dtype=ref.dtype)
    with torch.no_grad():
        block.gate.weight.data = moe.router.gate.weight.detach().float().clone()  # HF keeps its router fp32
        block.experts.gate_up_proj.copy_(torch.cat([moe.experts.w_gate, moe.experts.w_up], dim=1))
        block.experts.down_proj.copy_(moe.experts.w_down)
        if moe.shared is not None:
            block.shared_experts.gate_proj.weight.copy_(moe.shared.gate.weight)
            block.shared_experts.up_proj.weight.copy_(moe.shared.up.weight)
            block.shared_experts.down_proj.weight.copy_(moe.shared.down.weight)
    return block
