"""The book's one figure style and the function that saves every figure.

Each figure is saved twice into :func:`p2pntk.paths.figures_dir`: PNG (150 dpi,
for the web) and PDF (for print), without time stamps so that reruns with the
same parameters give the same files.
"""
from __future__ import annotations

import logging

import matplotlib
import matplotlib.pyplot as plt
import seaborn as sns

from .paths import figures_dir

#: Line style telling predictions from measurements in every figure.
PREDICTED = dict(linestyle="--", linewidth=1.6)
ACTUAL = dict(linestyle="-", linewidth=1.2, alpha=0.85)


def use_style() -> None:
    """Apply the shared seaborn/matplotlib style (call once per chapter)."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    matplotlib.rcParams.update({
        "figure.dpi": 100,
        "figure.constrained_layout.use": True,
        "savefig.dpi": 150,
        "savefig.bbox": "tight",
        "axes.titlesize": "medium",
        "legend.fontsize": "small",
        "pdf.fonttype": 42,
        "svg.hashsalt": "p2pntk",
    })


def save(fig: plt.Figure, name: str) -> list:
    """Save ``fig`` as ``<figures>/<name>.png`` and ``.pdf``; return the two paths.

    ``name`` is the figure's label in the book (``fig-...``); the pipeline checks
    that every figure a chapter names was written and is not empty. Each file is
    written atomically (:func:`p2pntk.paths.atomic_write`): a reader never sees a
    partial figure.
    """
    import io

    from .paths import atomic_write

    logging.getLogger("fontTools").setLevel(logging.ERROR)  # font-subsetting chatter on PDF save
    out = figures_dir()
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    for path, metadata in zip(paths, ({"Software": None}, {"CreationDate": None, "Creator": None, "Producer": None})):
        buf = io.BytesIO()
        fig.savefig(buf, format=path.suffix[1:], metadata=metadata)
        atomic_write(path, buf.getvalue())
    return paths


def draw_graph(ax, graph, title: str = "") -> None:
    """Draw a communication graph (stored node positions if any, else a spring layout, seed 0)."""
    import networkx as nx

    pos = nx.get_node_attributes(graph, "pos") or (
        nx.circular_layout(graph) if graph.graph.get("name") in ("ring", "complete")
        else nx.spring_layout(graph, seed=0)
    )
    nx.draw_networkx_edges(graph, pos, ax=ax, alpha=0.5, width=0.8)
    nx.draw_networkx_nodes(graph, pos, ax=ax, node_size=40, node_color="C0")
    ax.set_title(title)
    ax.set_axis_off()


def per_agent(ax, k, actual, predicted, colors=None, labels=("actual", "predicted")) -> None:
    """Plot one metric of every agent over iterations: actual (solid) and predicted (dashed).

    Args:
        ax: matplotlib axes.
        k: (S,) recorded iterations.
        actual, predicted: (S, Q) metric per recorded iteration and agent.
        colors: ``None`` gives each agent its own colour (``C0``, ``C1``, ...); a pair
            ``(actual colour, predicted colour)`` draws all agents in those two colours and
            labels the first agent's curves with ``labels`` (for a legend).
    """
    for q in range(actual.shape[1]):
        ca, cp = colors if colors is not None else (f"C{q % 10}",) * 2
        first = colors is not None and q == 0
        ax.plot(k, actual[:, q], color=ca, label=labels[0] if first else None, **ACTUAL)
        ax.plot(k, predicted[:, q], color=cp, label=labels[1] if first else None, **PREDICTED)


def style_legend(ax, color="k", labels=("actual", "predicted"), **kwargs) -> None:
    """A legend telling actual (solid) from predicted (dashed) lines, drawn in ``color``."""
    ax.plot([], [], color=color, label=labels[0], **ACTUAL)
    ax.plot([], [], color=color, label=labels[1], **PREDICTED)
    ax.legend(**kwargs)
