"""Chapter 1 exercises: a mixture of experts from scratch (notebooks/01_moe_from_scratch.ipynb).

Fill in each function, then run `MINIMOST_EXERCISES=student pytest tests/exercises/test_ch01.py`.
The tests compare your result with `minimost.moe` on random inputs. Shapes: N tokens, D model width,
E experts, K top-k, H expert hidden width.
"""

from __future__ import annotations

import torch


def topk_route(logits_NE: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exercise 1 - the plain top-k router (no modalities).

    Softmax the router logits over all E experts in fp32, keep the k largest probabilities per token.
    Return (weights_NK fp32, indices_NK int64), largest first. The weights are the raw probabilities,
    not renormalised (MoST's `norm_topk_prob=False`), so each row sums to less than 1.
    Hint: `torch.softmax`, `torch.topk`. Checked against `minimost.moe.Router` with
    `modality_routing=False`.
    """
    raise NotImplementedError("exercise 1 of chapter 1: write topk_route")


def swiglu_expert(x_ND: torch.Tensor, w_gate_HD: torch.Tensor, w_up_HD: torch.Tensor,
                  w_down_DH: torch.Tensor) -> torch.Tensor:
    """Exercise 2 - one SwiGLU expert: down(silu(gate(x)) * up(x)), no biases. (N, D) -> (N, D).

    The weights use nn.Linear's (out, in) layout: w_gate and w_up are (H, D), w_down is (D, H).
    Checked against `minimost.moe.SwiGLU` and one expert of `minimost.moe.Experts`.
    """
    raise NotImplementedError("exercise 2 of chapter 1: write swiglu_expert")


def switch_balance_loss(probs_NE: torch.Tensor, indices_NK: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Exercise 3 - the Switch-style load-balancing loss over all N tokens (no alpha).

        f_i = E / (K * N) * #{(n, k) : indices[n, k] = i}     (the share of assignments; no gradient)
        P_i = (1 / N) * sum_n probs[n, i]                     (the mean router probability; gradient)
        loss = sum_i f_i * P_i

    With a perfectly uniform router the loss is 1 whatever K is. Return a scalar tensor through which
    the gradient reaches `probs_NE`. Checked against `minimost.moe.Router` with `balance_loss="global"`
    (whose value is this times `balance_alpha`).
    """
    raise NotImplementedError("exercise 3 of chapter 1: write switch_balance_loss")


def sorted_dispatch(x_ND: torch.Tensor, weights_NK: torch.Tensor, indices_NK: torch.Tensor,
                    w_gate_EHD: torch.Tensor, w_up_EHD: torch.Tensor, w_down_EDH: torch.Tensor) -> torch.Tensor:
    """Exercise 4 - dispatch by sorting: y_n = sum_k weights[n, k] * Expert_{indices[n, k]}(x_n). -> (N, D).

    1. Flatten the N*K (token, slot) assignments and sort them by expert (`torch.argsort(stable=True)`).
    2. Gather the token each assignment reads (assignment a belongs to token a // K).
    3. Count assignments per expert; expert e owns one contiguous slice of the sorted rows. Run each
       expert on its slice (a loop over E slices is fine here: that is what grouped_mm does in one call).
    4. Un-permute the outputs back to (N, K, D) and take the weighted sum over K in fp32.
    Checked against `minimost.moe.Experts` with every dispatch.
    """
    raise NotImplementedError("exercise 4 of chapter 1: write sorted_dispatch")
