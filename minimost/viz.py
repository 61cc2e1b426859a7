"""Pictures of routing: which experts each token uses, and how the load splits by modality.

Pure functions that return `matplotlib.figure.Figure` objects built without pyplot, so they leave no
global figure state behind, work under the Agg backend (CI, servers) and can be saved with `savefig=`.
In a notebook, show one with `display(fig)`. The interactive explorer is a thin ipywidgets wrapper;
all its logic lives in the pure functions, so it is tested without a kernel.

    routing_matrix(model, ids)        (L, T, E) routing weights of one sequence, one row per token
    plot_routing(model, ids, layer)   token x expert heatmaps, expert groups and token modalities marked
    expert_load(stats)                (L, M, E) token-slot counts from `LMOutput.router_stats`
    plot_expert_load(stats, cfg)      layer x expert load, one panel per modality
    routing_explorer(model, ids)      a widget: pick a layer and a token window, see the heatmap
    plot_expert_load_by_arm(loads, cfgs)  ablation arms x modality load heatmaps (minimost/ablate.py)
    plot_ablation_bars(summary)       metric means per arm with ±1 std error bars

Taught in notebooks/02_mamoe.ipynb. Shape letters as in moe.py: L MoE layers, T tokens, E routed
experts, K top-k, M mark values (text, audio, special).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from minimost.config import AUDIO, MARK_NAMES, SPECIAL, TEXT, ModelConfig
from minimost.moe import RouterStats

MARK_COLORS = {TEXT: "tab:blue", AUDIO: "tab:orange", SPECIAL: "tab:gray"}
CMAP = "viridis"


def moe_layers(cfg: ModelConfig) -> list[int]:
    """Decoder-layer index of each MoE layer, in the order of `LMOutput.router_stats`."""
    return [i for i in range(cfg.n_layers) if cfg.is_moe_layer(i)]


def expert_order(cfg: ModelConfig) -> tuple[list[int], list[int]]:
    """Experts listed group by group (text group, then audio group), and the size of each group.

    With MoST's index groups this is just 0..E-1 split in half; with explicit groups the plots reorder
    the experts so that each group is one contiguous block. Vanilla routing: one group of all experts.
    """
    if not cfg.modality_routing:
        return list(range(cfg.n_experts)), [cfg.n_experts]
    text, audio = cfg.expert_groups()
    return list(text) + list(audio), [len(text), len(audio)]


def _one_sequence(input_ids: torch.Tensor) -> torch.Tensor:
    ids = torch.as_tensor(input_ids)
    if ids.dim() == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.dim() != 1:
        raise ValueError(f"pass one sequence of ids, shape (T,) or (1, T); got shape {tuple(ids.shape)}. "
                         "For a batch, pick a row: ids[i].")
    return ids


@torch.no_grad()
def routing_matrix(model, input_ids: torch.Tensor, marks: torch.Tensor | None = None) -> torch.Tensor:
    """Routing weights of one sequence in every MoE layer, (L, T, E) fp32 on the CPU.

    Row t of layer l holds token t's weight on each expert: the K chosen experts carry the weights the
    router gave them (`RouterStats.weights_NK`), every other expert 0. So a row sums to the token's
    total routed weight (below 1 under MoST's un-renormalised rule) and is 0 outside the token's group.
    The model runs once in eval mode (no dropout); its training flag is restored afterwards.
    """
    ids = _one_sequence(input_ids)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = model(ids[None].to(device), marks_BT=None if marks is None else _one_sequence(marks)[None].to(device))
    finally:
        model.train(was_training)
    T, E = ids.shape[0], model.cfg.n_experts
    layers = []
    for s in out.router_stats:
        w_TE = torch.zeros(T, E).scatter_(1, s.indices_NK.cpu(), s.weights_NK.float().cpu())  # (T, E)
        layers.append(w_TE)
    return torch.stack(layers)                                                  # (L, T, E)


def _save(fig: Figure, savefig) -> Figure:
    if savefig is not None:
        fig.savefig(savefig, dpi=120, bbox_inches="tight")
    return fig


def _draw_routing(matrix_LTE: torch.Tensor, marks_T: torch.Tensor, cfg: ModelConfig, layers: list[int],
                  labels: Sequence[str] | None, title: str | None) -> Figure:
    """The drawing behind `plot_routing` (and the explorer): one heatmap per layer plus a colour bar."""
    order, sizes = expert_order(cfg)
    moe_ids = moe_layers(cfg)
    L_shown, T, E = len(layers), matrix_LTE.shape[1], matrix_LTE.shape[2]
    vmax = max(float(matrix_LTE.max()), 1e-6)
    width = min(max(6.0, 0.22 * T + 2.5), 18.0)
    fig = Figure(figsize=(width, 0.9 + L_shown * (0.7 + min(0.22 * E, 2.6))), layout="constrained")
    axes = fig.subplots(L_shown, 1, sharex=True, squeeze=False)[:, 0]
    strip_13 = np.array([[to_rgb(MARK_COLORS[int(m)]) for m in marks_T.tolist()]])   # (1, T, 3)
    image = None
    for ax, layer in zip(axes, layers):
        w_ET = matrix_LTE[moe_ids.index(layer)][:, order].T.numpy()             # (E, T), experts in group order
        image = ax.imshow(np.ma.masked_equal(w_ET, 0.0), aspect="auto", cmap=CMAP, vmin=0.0, vmax=vmax,
                          interpolation="nearest", extent=(-0.5, T - 0.5, E - 0.5, -0.5))
        # the modality strip: one coloured cell per token, just above the heatmap
        ax.imshow(strip_13, aspect="auto", interpolation="nearest", extent=(-0.5, T - 0.5, -0.7, -1.7))
        ax.set_ylim(E - 0.5, -1.7)
        ax.set_xlim(-0.5, T - 0.5)
        every = -(-E // 16)                                                     # at most ~16 expert labels
        ax.set_yticks([-1.2, *range(0, E, every)], ["mark", *map(str, order[::every])], fontsize=7)
        ax.set_ylabel("expert")
        ax.set_title(f"layer {layer}", fontsize=9, loc="left")
        if len(sizes) == 2:  # the boundary between the text group and the audio group
            ax.axhline(sizes[0] - 0.5, color="red", lw=1.5)
            for start, size, name in ((0, sizes[0], "text experts"), (sizes[0], sizes[1], "audio experts")):
                ax.text(T - 0.3, start + size / 2 - 0.5, name, rotation=270, va="center", ha="left",
                        fontsize=7, color=MARK_COLORS[TEXT if name.startswith("text") else AUDIO])
    axes[-1].set_xlabel("token position")
    if labels is not None:
        every = -(-T // 64)                                                     # at most ~64 token labels
        axes[-1].set_xticks(range(0, T, every), list(labels)[::every], rotation=90, fontsize=6)
    fig.colorbar(image, ax=list(axes), label="routing weight", shrink=0.9, pad=0.04)
    handles = [Patch(color=MARK_COLORS[m], label=f"{MARK_NAMES[m]} token") for m in (TEXT, AUDIO, SPECIAL)]
    fig.legend(handles=handles, loc="outside upper right", ncols=3, fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10, x=0.02, ha="left")
    return fig


def plot_routing(model, input_ids: torch.Tensor, layer: int | None = None, *, marks: torch.Tensor | None = None,
                 labels: Sequence[str] | None = None, title: str | None = None, savefig=None) -> Figure:
    """Heatmap of which experts each token of one sequence uses: tokens along x, experts along y.

    layer: a decoder-layer index (a MoE layer), or None for one panel per MoE layer. Empty cells are
    experts the token did not choose; the colour is the routing weight. A strip above each panel shows
    each token's modality mark (the id it reads, most-reference.md §2.5), and a red line separates the
    text group from the audio group (experts are listed group by group). labels: one string per token
    for the x axis. Returns a Figure with one axes per panel plus one for the colour bar.
    """
    ids = _one_sequence(input_ids)
    cfg = model.cfg
    layers = moe_layers(cfg) if layer is None else [layer]
    if layer is not None and layer not in moe_layers(cfg):
        raise ValueError(f"layer {layer} is not a MoE layer; MoE layers are {moe_layers(cfg)}.")
    if labels is not None and len(labels) != ids.shape[0]:
        raise ValueError(f"labels has {len(labels)} entries for {ids.shape[0]} tokens.")
    matrix = routing_matrix(model, ids, marks)
    marks_T = model.token_modality[ids.to(model.token_modality.device)].cpu() if marks is None else _one_sequence(marks)
    return _save(_draw_routing(matrix, marks_T, cfg, layers, labels, title), savefig)


def expert_load(stats: Sequence[RouterStats]) -> torch.Tensor:
    """(L, M, E) token-slot assignments per layer, mark and expert, from `LMOutput.router_stats`.

    Sum it over several batches to measure load on more data: `sum(expert_load(out.router_stats) ...)`.
    """
    return torch.stack([s.tokens_per_expert_ME.detach().float().cpu() for s in stats])


def plot_expert_load(stats_or_loads, cfg: ModelConfig, *, marks: Sequence[int] = (TEXT, AUDIO),
                     title: str | None = None, savefig=None) -> Figure:
    """Expert load per layer, one panel per modality (text tokens, audio tokens by default).

    stats_or_loads: `LMOutput.router_stats` (a list of RouterStats) or a load tensor (L, M, E) / (M, E).
    Cell (l, e) of the panel for mark m is the share of mark-m token-slot assignments in layer l that
    went to expert e (each row sums to 1; uniform load is 1/E, or 1/|group| with modality routing).
    Experts are listed group by group with a red line between the groups. Returns a Figure with one
    axes per mark plus one for the colour bar.
    """
    if isinstance(stats_or_loads, torch.Tensor):
        loads = stats_or_loads.detach().float().cpu()
    else:
        loads = expert_load(stats_or_loads)
    if loads.dim() == 2:
        loads = loads[None]
    if loads.dim() != 3 or loads.shape[2] != cfg.n_experts:
        raise ValueError(f"expected loads of shape (L, M, E={cfg.n_experts}) or (M, E), got {tuple(loads.shape)}.")
    order, sizes = expert_order(cfg)
    layer_ids = moe_layers(cfg) if loads.shape[0] == len(moe_layers(cfg)) else list(range(loads.shape[0]))
    L, E = loads.shape[0], cfg.n_experts
    fig = Figure(figsize=(min(2.0 + 0.45 * E, 9.0) * len(marks) / 1.5 + 1.0, 1.4 + 0.45 * L),
                 layout="constrained")
    axes = fig.subplots(1, len(marks), sharey=True, squeeze=False)[0]
    shares = []
    for m in marks:
        counts_LE = loads[:, m, order]                                          # (L, E) in group order
        shares.append(counts_LE / counts_LE.sum(dim=1, keepdim=True).clamp(min=1e-9))
    vmax = max(float(torch.stack(shares).max()), 1e-6)
    image = None
    for ax, m, share_LE in zip(axes, marks, shares):
        # an expert that got nothing is left blank, so "never used" stands out from "used a little"
        image = ax.imshow(np.ma.masked_equal(share_LE.numpy(), 0.0), aspect="auto", cmap=CMAP, vmin=0.0,
                          vmax=vmax, interpolation="nearest")
        n = int(loads[:, m].sum(dim=1).max())
        ax.set_title(f"{MARK_NAMES[m]} tokens ({n} assignments/layer)", fontsize=9,
                     color=MARK_COLORS[m])
        ax.set_xticks(range(E), list(map(str, order)), fontsize=7)
        ax.set_xlabel("expert")
        if len(sizes) == 2:
            ax.axvline(sizes[0] - 0.5, color="red", lw=1.5)
    axes[0].set_yticks(range(L), [f"layer {i}" for i in layer_ids], fontsize=8)
    fig.colorbar(image, ax=list(axes), label="share of assignments", shrink=0.9)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, savefig)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


def routing_explorer(model, input_ids: torch.Tensor, *, marks: torch.Tensor | None = None,
                     labels: Sequence[str] | None = None, window: int = 48):
    """An ipywidgets box to explore `plot_routing`: a layer dropdown, a token-window slider, the heatmap.

    The model runs once; every change redraws from the stored routing matrix into an Image widget
    (PNG bytes), so it works in any front end and without a kernel (tests set the widgets' values).
    Returns a VBox whose children are (controls HBox, Image); `box.layer` and `box.tokens` are the
    two controls.
    """
    import ipywidgets as widgets

    ids = _one_sequence(input_ids)
    cfg, T = model.cfg, ids.shape[0]
    matrix = routing_matrix(model, ids, marks)
    marks_T = model.token_modality[ids.to(model.token_modality.device)].cpu() if marks is None else _one_sequence(marks)
    names = list(labels) if labels is not None else None

    layer = widgets.Dropdown(options=[("all layers", -1)] + [(f"layer {i}", i) for i in moe_layers(cfg)],
                             value=-1, description="layer")
    tokens = widgets.IntRangeSlider(value=(0, min(T, window)), min=0, max=T, step=1, description="tokens",
                                    continuous_update=False)
    image = widgets.Image(format="png")

    def redraw(_change=None) -> None:
        lo, hi = tokens.value
        lo = min(lo, T - 1)
        hi = max(hi, lo + 1)                                                    # at least one token
        layers = moe_layers(cfg) if layer.value == -1 else [layer.value]
        fig = _draw_routing(matrix[:, lo:hi], marks_T[lo:hi], cfg, layers,
                            names[lo:hi] if names is not None else [str(i) for i in range(lo, hi)], None)
        image.value = _png(fig)

    layer.observe(redraw, names="value")
    tokens.observe(redraw, names="value")
    redraw()
    box = widgets.VBox([widgets.HBox([layer, tokens]), image])
    box.layer, box.tokens = layer, tokens
    return box


# --------------------------------------------------------------------------------------------
# Ablation plots (minimost/ablate.py, docs/ablations.md)
# --------------------------------------------------------------------------------------------

def _load_shares(loads_LME: torch.Tensor, cfg: ModelConfig, mark: int) -> torch.Tensor:
    """(L, E) share of mark-m assignments per expert in each layer, experts in group order."""
    order, _ = expert_order(cfg)
    counts_LE = loads_LME[:, mark, order].float()
    return counts_LE / counts_LE.sum(dim=1, keepdim=True).clamp(min=1e-9)


def plot_expert_load_by_arm(loads: dict, cfgs: dict, *, marks: Sequence[int] = (TEXT, AUDIO),
                            title: str | None = "expert load by modality", savefig=None) -> Figure:
    """Per-layer expert-load heatmaps, one row per ablation arm and one column per modality.

    loads: {arm: (L, M, E) token-slot counts} (e.g. `viz.expert_load` summed over batches and seeds);
    cfgs: {arm: ModelConfig}, for the expert groups (a red line between the text and the audio group when
    the arm routes by modality). Cell (l, e): share of that modality's assignments in layer l that went to
    expert e; all panels share one colour scale, so MAMoE's confinement and vanilla's spread compare directly.
    """
    arms = list(loads)
    if not arms:
        raise ValueError("no loads to plot: pass {arm: (L, M, E) tensor}.")
    L, _, E = torch.as_tensor(loads[arms[0]]).shape
    shares = {(a, m): _load_shares(torch.as_tensor(loads[a]), cfgs[a], m) for a in arms for m in marks}
    vmax = max(max(float(s.max()) for s in shares.values()), 1e-6)
    fig = Figure(figsize=(min(2.0 + 0.4 * E, 9.0) * len(marks) / 1.5 + 1.0, 0.8 + len(arms) * (0.6 + 0.4 * L)),
                 layout="constrained")
    axes = fig.subplots(len(arms), len(marks), squeeze=False)
    image = None
    for r, arm in enumerate(arms):
        order, sizes = expert_order(cfgs[arm])
        layer_ids = moe_layers(cfgs[arm]) if len(moe_layers(cfgs[arm])) == L else list(range(L))
        for c, m in enumerate(marks):
            ax = axes[r, c]
            image = ax.imshow(np.ma.masked_equal(shares[(arm, m)].numpy(), 0.0), aspect="auto", cmap=CMAP,
                              vmin=0.0, vmax=vmax, interpolation="nearest")
            ax.set_title(f"{arm}: {MARK_NAMES[m]} tokens", fontsize=9, color=MARK_COLORS[m], loc="left")
            ax.set_xticks(range(E), list(map(str, order)), fontsize=6)
            ax.set_yticks(range(L), [f"layer {i}" for i in layer_ids], fontsize=7)
            if len(sizes) == 2:
                ax.axvline(sizes[0] - 0.5, color="red", lw=1.5)
            if r == len(arms) - 1:
                ax.set_xlabel("expert")
    fig.colorbar(image, ax=axes.ravel().tolist(), label="share of assignments", shrink=0.9)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, savefig)


def plot_ablation_bars(summary: dict, arms: Sequence[str] | None = None, *, lower_is_better=None,
                       title: str | None = None, savefig=None) -> Figure:
    """Bars of each metric's mean per arm with ±1 standard deviation error bars, one panel per metric.

    The y axis of each panel is zoomed on the data (it does not start at 0), so read the axis labels.

    summary: {arm: {metric: {"mean", "std", "n"}}} as `ablate.aggregate` returns it. lower_is_better:
    optional callable metric -> bool, used to mark each panel's title with ↓ or ↑. Seeds are drawn as dots.
    """
    arms = list(arms or summary)
    metrics = sorted({m for a in arms for m in summary.get(a, {})})
    if not metrics:
        raise ValueError("no metrics to plot.")
    cols = min(len(metrics), 3)
    rows = -(-len(metrics) // cols)
    fig = Figure(figsize=(cols * max(2.6, 0.55 * len(arms) + 1.2), rows * 2.8), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    colors = [f"C{i % 10}" for i in range(len(arms))]
    for ax, metric in zip(axes, metrics):
        xs = [i for i, a in enumerate(arms) if metric in summary.get(a, {})]
        cells = [summary[arms[i]][metric] for i in xs]
        ax.bar(xs, [c["mean"] for c in cells], yerr=[c["std"] for c in cells], capsize=4,
               color=[colors[i] for i in xs], alpha=0.8)
        for x, c in zip(xs, cells):
            vals = c.get("values", [])
            ax.plot([x] * len(vals), vals, "k.", ms=3)
        # zoom on the data: differences between arms are small next to the metric itself
        lo = min(min(c["mean"] - c["std"], *c.get("values", [c["mean"]])) for c in cells)
        hi = max(max(c["mean"] + c["std"], *c.get("values", [c["mean"]])) for c in cells)
        pad = 0.15 * (hi - lo) or 0.05 * abs(hi) or 1.0
        ax.set_ylim(lo - pad, hi + pad)
        arrow = "" if lower_is_better is None else (" ↓" if lower_is_better(metric) else " ↑")
        ax.set_title(metric + arrow, fontsize=9)
        ax.set_xticks(range(len(arms)), arms, rotation=35, ha="right", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    fig.suptitle(title or "ablation: mean ± std over seeds", fontsize=10)
    return _save(fig, savefig)
