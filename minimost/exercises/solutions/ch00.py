"""Reference solutions to `minimost.exercises.ch00` (notebooks/00_setup_and_tour.ipynb)."""

from __future__ import annotations

import json
from pathlib import Path

from minimost.config import ModelConfig


def read_log(path: str | Path) -> tuple[list[dict], list[dict]]:
    """Training records have "loss"; evaluation records have "eval/..." keys (prefix dropped)."""
    train, evals = [], []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if "loss" in record:
            train.append(record)
        elif any(k.startswith("eval/") for k in record):
            evals.append({k.removeprefix("eval/"): v for k, v in record.items()})
    return train, evals


def routed_expert_params(cfg: ModelConfig) -> int:
    """MoE layers x experts x (gate + up + down) = n_moe * E * 3 * D * H."""
    n_moe = sum(cfg.is_moe_layer(i) for i in range(cfg.n_layers))
    return n_moe * cfg.n_experts * 3 * cfg.d_model * cfg.expert_hidden


def active_params(cfg: ModelConfig) -> int:
    """Total minus the routed experts, plus the K/E share of them a token actually runs."""
    routed = routed_expert_params(cfg)
    return cfg.num_params() - routed + routed * cfg.top_k // cfg.n_experts
