"""Chapter 1 exercises (minimost/exercises/ch01.py) checked against minimost.moe."""

import pytest
import torch

from minimost.config import TEXT, ModelConfig
from minimost.moe import MoE, SwiGLU

D, H, E, K = 32, 16, 8, 2


@pytest.fixture
def ex(ex_kind, load):
    return load(ex_kind, "ch01")


def vanilla_moe(seed=0, **overrides) -> MoE:
    torch.manual_seed(seed)
    base = dict(d_model=D, expert_hidden=H, n_experts=E, top_k=K, modality_routing=False, init_std=0.2)
    cfg = ModelConfig(**(base | overrides))
    return MoE(cfg)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_topk_route_matches_router(ex, k):
    moe = vanilla_moe(top_k=k)
    x = torch.randn(2, 12, D)
    weights, indices, _ = moe.router(x, torch.full((2, 12), TEXT), torch.ones(2, 12, dtype=torch.bool))
    logits = x.reshape(-1, D) @ moe.router.gate.weight.T
    my_w, my_i = ex.topk_route(logits, k)
    assert my_w.dtype == torch.float32 and my_i.shape == (24, k)
    assert torch.equal(my_i, indices)
    torch.testing.assert_close(my_w, weights, rtol=0, atol=1e-6)
    assert (my_w.sum(-1) < 1).all()  # raw probabilities, not renormalised


def test_swiglu_expert_matches_package(ex):
    torch.manual_seed(0)
    mlp = SwiGLU(D, H)
    x = torch.randn(10, D)
    got = ex.swiglu_expert(x, mlp.gate.weight, mlp.up.weight, mlp.down.weight)
    torch.testing.assert_close(got, mlp(x), rtol=0, atol=1e-6)
    moe = vanilla_moe()
    e = 3
    got = ex.swiglu_expert(x, moe.experts.w_gate[e], moe.experts.w_up[e], moe.experts.w_down[e])
    y = moe.experts(x, torch.ones(10, 1), torch.full((10, 1), e))  # every token to expert e, weight 1
    torch.testing.assert_close(got, y, rtol=0, atol=1e-6)


@pytest.mark.parametrize("k", [1, 2])
def test_switch_balance_loss_matches_router(ex, k):
    moe = vanilla_moe(top_k=k, balance_loss="global", balance_alpha=0.01)
    x = torch.randn(3, 10, D)
    _, indices, stats = moe.router(x, torch.zeros(3, 10, dtype=torch.long), torch.ones(3, 10, dtype=torch.bool))
    probs = torch.softmax(x.reshape(-1, D) @ moe.router.gate.weight.T, dim=-1).detach().requires_grad_()
    loss = ex.switch_balance_loss(probs, indices, E)
    torch.testing.assert_close(loss * 0.01, stats.balance_loss.detach(), rtol=1e-5, atol=1e-7)
    loss.backward()
    assert probs.grad is not None and probs.grad.abs().sum() > 0


def test_switch_balance_loss_is_one_when_uniform(ex):
    probs = torch.full((16, E), 1.0 / E)
    indices = torch.arange(16 * K).reshape(16, K) % E  # every expert equally often
    torch.testing.assert_close(ex.switch_balance_loss(probs, indices, E), torch.tensor(1.0))


@pytest.mark.parametrize("dispatch", ["grouped", "loop", "dense"])
def test_sorted_dispatch_matches_experts(ex, dispatch):
    moe = vanilla_moe(dispatch=dispatch)
    x = torch.randn(20, D)
    weights, indices, _ = moe.router(x[None], torch.zeros(1, 20, dtype=torch.long), torch.ones(1, 20, dtype=torch.bool))
    expected = moe.experts(x, weights, indices)
    w = moe.experts
    got = ex.sorted_dispatch(x, weights, indices, w.w_gate, w.w_up, w.w_down)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_sorted_dispatch_with_an_idle_expert(ex):
    moe = vanilla_moe(dispatch="dense")
    x = torch.randn(6, D)
    indices = torch.tensor([[0, 1], [1, 0], [2, 0], [0, 2], [1, 2], [2, 1]])  # experts 3..7 idle
    weights = torch.rand(6, 2)
    w = moe.experts
    torch.testing.assert_close(ex.sorted_dispatch(x, weights, indices, w.w_gate, w.w_up, w.w_down),
                               moe.experts(x, weights, indices), rtol=0, atol=1e-5)

