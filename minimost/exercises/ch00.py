"""Chapter 0 exercises: reading a run (notebooks/00_setup_and_tour.ipynb).

Fill in each function, then run `MINIMOST_EXERCISES=student pytest tests/exercises/test_ch00.py`.
The tests compare your result with what `minimost` itself computes: the pipeline's report, the
config's parameter arithmetic and the built model's parameter count.
"""

from __future__ import annotations

from pathlib import Path

from minimost.config import ModelConfig


def read_log(path: str | Path) -> tuple[list[dict], list[dict]]:
    """Exercise 1 - split a run's `log.jsonl` into training records and evaluation records.

    Every line of the file is one JSON object. Training records carry a "loss" key (and "step",
    "lm_loss", "lr", "load/...", ...); evaluation records carry "step" plus keys that start with
    "eval/" ("eval/valid_text_loss", "eval/valid_text_ppl"). Skip blank lines.
    Return (train_records, eval_records), both in file order. In the eval records, drop the "eval/"
    prefix from the keys and keep "step": {"step": 20, "valid_text_loss": 4.33, "valid_text_ppl": 76.6}.
    Checked against the metrics `minimost.pipeline` puts in report.json (its `_last_eval`).
    Hint: `json.loads`, `str.removeprefix`.
    """
    raise NotImplementedError("exercise 1 of chapter 0: write read_log")


def routed_expert_params(cfg: ModelConfig) -> int:
    """Exercise 2 - how many parameters live in the routed experts of the whole model?

    A layer `i` is a MoE layer when `cfg.is_moe_layer(i)` (the first `cfg.first_k_dense` layers are
    dense). Each MoE layer has `cfg.n_experts` routed SwiGLU experts; one expert has three bias-free
    matrices: gate and up (H x D) and down (D x H), with D = `cfg.d_model`, H = `cfg.expert_hidden`.
    Shared experts are *not* routed: leave them out. Checked against the built `MAMoELM`'s
    `experts` parameters for the micro and tiny presets.
    """
    raise NotImplementedError("exercise 2 of chapter 0: write routed_expert_params")


def active_params(cfg: ModelConfig) -> int:
    """Exercise 3 - parameters one token uses: all of them, minus the routed experts it skips.

    A token is routed to `cfg.top_k` of the `cfg.n_experts` experts of every MoE layer, so of the
    routed experts' parameters (exercise 2) only the fraction K / E is used. Everything else
    (embeddings, attention, norms, dense layers, shared experts, routers, the LM head) is used by
    every token. Use `cfg.num_params()` for the total. Return an int (use integer arithmetic).
    Checked against `ModelConfig.num_active_params()`.
    """
    raise NotImplementedError("exercise 3 of chapter 0: write active_params")
