"""Tests for minimost/viz.py: figures, the routing matrix, and the widget driven without a kernel."""

from __future__ import annotations

import dataclasses

import matplotlib
import pytest
import torch
from matplotlib.figure import Figure

from minimost import viz
from minimost.config import AUDIO, SPECIAL, TEXT, preset
from minimost.model import MAMoELM
from minimost.smoke import synthetic_batch, synthetic_modality_map


def make_model(**overrides) -> MAMoELM:
    torch.manual_seed(0)
    cfg = dataclasses.replace(preset("micro"), init_std=0.2, **overrides)
    model = MAMoELM(cfg)
    model.set_modality_map(synthetic_modality_map(cfg.vocab_size))
    return model


@pytest.fixture(scope="module")
def model() -> MAMoELM:
    return make_model()


@pytest.fixture(scope="module")
def ids(model) -> torch.Tensor:
    return synthetic_batch(model.cfg, model.token_modality, 1, 30, torch.Generator().manual_seed(0))[0]


def allowed_groups(cfg):
    text, audio = cfg.expert_groups()
    route = {"text": text, "audio": audio, "all": tuple(range(cfg.n_experts))}[cfg.special_token_route]
    return {TEXT: set(text), AUDIO: set(audio), SPECIAL: set(route)}


@pytest.mark.parametrize("groups", [None, ((0, 2, 4, 6), (1, 3, 5, 7))])
def test_routing_matrix_rows_are_the_routing_weights(groups):
    extra = {} if groups is None else dict(text_experts=groups[0], audio_experts=groups[1])
    model = make_model(**extra)
    ids = synthetic_batch(model.cfg, model.token_modality, 1, 30, torch.Generator().manual_seed(0))[0]
    assert {TEXT, AUDIO, SPECIAL} <= set(model.token_modality[ids].tolist())
    matrix = viz.routing_matrix(model, ids)
    L, T, E = len(viz.moe_layers(model.cfg)), ids.shape[0], model.cfg.n_experts
    assert matrix.shape == (L, T, E)
    out = model(ids[None])
    allowed = allowed_groups(model.cfg)
    for layer, s in enumerate(out.router_stats):
        torch.testing.assert_close(matrix[layer].sum(-1), s.weights_NK.sum(-1))  # row sum = token's weights
        assert ((matrix[layer] > 0).sum(-1) == model.cfg.top_k).all()
        for t, mark in enumerate(model.token_modality[ids].tolist()):
            outside = [e for e in range(E) if e not in allowed[mark]]
            assert (matrix[layer, t, outside] == 0).all()                       # zero outside the group


def test_routing_matrix_accepts_1_T_and_restores_training_mode(model, ids):
    model.train()
    torch.testing.assert_close(viz.routing_matrix(model, ids[None]), viz.routing_matrix(model, ids))
    assert model.training
    with pytest.raises(ValueError, match="one sequence"):
        viz.routing_matrix(model, torch.stack([ids, ids]))


def test_plot_routing_axes(model, ids):
    L = len(viz.moe_layers(model.cfg))
    fig = viz.plot_routing(model, ids)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == L + 1                          # one heatmap per MoE layer + the colour bar
    fig = viz.plot_routing(model, ids, layer=1, labels=[str(i) for i in ids.tolist()], title="t")
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="not a MoE layer"):
        viz.plot_routing(model, ids, layer=7)


def test_plot_routing_skips_dense_layers():
    model = make_model(n_layers=3, first_k_dense=1)
    ids = synthetic_batch(model.cfg, model.token_modality, 1, 12, torch.Generator().manual_seed(0))[0]
    assert viz.moe_layers(model.cfg) == [1, 2]
    assert viz.routing_matrix(model, ids).shape[0] == 2
    assert len(viz.plot_routing(model, ids).axes) == 3


def test_plot_expert_load(model, ids, tmp_path):
    out = model(ids[None])
    fig = viz.plot_expert_load(out.router_stats, model.cfg, savefig=tmp_path / "load.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 3  # text, audio, colour bar
    assert (tmp_path / "load.png").stat().st_size > 0
    load = viz.expert_load(out.router_stats)
    assert load.shape == (len(out.router_stats), 3, model.cfg.n_experts)
    assert len(viz.plot_expert_load(load, model.cfg, marks=(TEXT, AUDIO, SPECIAL)).axes) == 4
    assert len(viz.plot_expert_load(load[0], model.cfg).axes) == 3          # one layer (M, E)
    with pytest.raises(ValueError):
        viz.plot_expert_load(torch.zeros(2, 3, 5), model.cfg)


def test_vanilla_model_plots_without_groups():
    model = make_model(modality_routing=False)
    ids = synthetic_batch(model.cfg, model.token_modality, 1, 16, torch.Generator().manual_seed(0))[0]
    assert viz.expert_order(model.cfg) == (list(range(8)), [8])
    assert len(viz.plot_routing(model, ids).axes) == 3
    assert len(viz.plot_expert_load(model(ids[None]).router_stats, model.cfg).axes) == 3


def test_no_pyplot_state_leaks(model, ids, tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    viz.plot_routing(model, ids, savefig=tmp_path / "r.png")
    viz.plot_expert_load(model(ids[None]).router_stats, model.cfg)
    assert plt.get_fignums() == before
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    assert matplotlib.get_backend()  # importing viz did not need an interactive backend


def test_routing_explorer_updates_without_a_kernel(model, ids):
    box = viz.routing_explorer(model, ids, labels=[str(i) for i in ids.tolist()], window=20)
    image = box.children[1]
    first = image.value
    assert first[:4] == b"\x89PNG"
    box.layer.value = viz.moe_layers(model.cfg)[-1]          # pick one layer: the image is redrawn
    one_layer = image.value
    assert one_layer != first
    box.tokens.value = (5, 15)                               # move the token window
    assert image.value != one_layer
    T = ids.shape[0]
    box.tokens.value = (T, T)                                # an empty window still draws one token
    assert image.value[:4] == b"\x89PNG"
    assert box.layer.options[0][1] == -1 and len(box.layer.options) == len(viz.moe_layers(model.cfg)) + 1
