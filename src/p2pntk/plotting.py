"""The book's one figure style and the function that saves every figure.

Each figure is saved into :func:`p2pntk.paths.figures_dir` as PNG (150 dpi, for
the web) and PDF (for print), without time stamps so that reruns with the same
parameters give the same files, and as CSV: the plotted values, read back from the
figure's artists (:func:`figure_data`), so that readers can re-plot any figure.
"""
from __future__ import annotations

import logging
from pathlib import Path

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


def save(fig: plt.Figure, name: str, folder=None) -> list:
    """Save ``fig`` as ``<figures>/<name>.png``, ``.pdf`` and ``.csv``; return the three paths.

    ``folder`` replaces ``<figures>`` (:func:`p2pntk.paths.figures_dir`) when given (``p2pntk tune --out``).

    ``name`` is the figure's label in the book (``fig-...``); the pipeline checks
    that every figure a chapter names was written and is not empty, and links the
    CSV (the plotted values, :func:`figure_data`) from the figure's caption. Each
    file is written atomically (:func:`p2pntk.paths.atomic_write`): a reader never
    sees a partial figure.
    """
    import io

    from .paths import atomic_write

    logging.getLogger("fontTools").setLevel(logging.ERROR)  # font-subsetting chatter on PDF save
    out = Path(folder) if folder is not None else figures_dir()
    paths = [out / f"{name}.png", out / f"{name}.pdf", out / f"{name}.csv"]
    for path, metadata in zip(paths, ({"Software": None}, {"CreationDate": None, "Creator": None, "Producer": None})):
        buf = io.BytesIO()
        fig.savefig(buf, format=path.suffix[1:], metadata=metadata)
        atomic_write(path, buf.getvalue())
    atomic_write(paths[2], figure_csv(fig))
    return paths


#: Columns of a figure's CSV (:func:`figure_data`), one row per plotted point.
CSV_COLUMNS = ("panel", "title", "xlabel", "ylabel", "kind", "label", "series", "x", "y", "base", "value")


def _label(artist) -> str:
    """The artist's legend label, ``""`` for matplotlib's hidden ``_child0``-style labels."""
    label = artist.get_label() or ""
    return "" if label.startswith("_") else str(label)


def _data_coords(ax, artist, xy):
    """``xy`` (n, 2) of ``artist`` in the data coordinates of ``ax`` (e.g. axhline: x in axes units)."""
    import numpy as np

    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    transform = artist.get_transform()
    if transform == ax.transData or not len(xy):
        return xy
    return ax.transData.inverted().transform(transform.transform(xy))


def figure_data(fig: plt.Figure) -> list[dict]:
    """The values plotted in ``fig``, one dict per point with the keys :data:`CSV_COLUMNS`.

    Read back from each axes' artists, so that no chapter has to export anything:
    lines (``kind`` ``line``: their x, y), scatter plots (``scatter``: the points, and the
    colour value in ``value`` when colour-mapped), bars and histograms (``bar``: the bar's
    centre and height in x, y, or y and width for horizontal bars, its baseline in
    ``base``), filled areas such as ``fill_between`` (``fill``: the polygon's vertices),
    line collections such as error bars or graph edges (``segment``: the end points),
    images and heat maps (``image``: the cell centres and their ``value``). Each row also
    carries its axes' index (``panel``), title and axis labels, and the artist's legend
    label; ``series`` numbers the artists of a panel. Lines without points (legend
    proxies) and colour bars are left out; coordinates not in data units (``axhline``'s
    x, in axes units) are converted to data units.

    Example:
        >>> import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
        >>> fig, ax = plt.subplots(); _ = ax.plot([0, 1], [2, 3], label="a"); _ = ax.set_xlabel("k")
        >>> [(r["kind"], r["label"], r["xlabel"], r["x"], r["y"]) for r in figure_data(fig)]
        [('line', 'a', 'k', 0.0, 2.0), ('line', 'a', 'k', 1.0, 3.0)]
        >>> plt.close(fig)
    """
    import numpy as np
    from matplotlib.collections import LineCollection, PathCollection, PolyCollection, QuadMesh
    from matplotlib.container import BarContainer

    rows = []
    for panel, ax in enumerate(fig.axes):
        if ax.get_label() == "<colorbar>":  # the colour scale, not data: the mapped values are in "value"
            continue
        title = " / ".join(t for t in (ax.get_title("left"), ax.get_title(), ax.get_title("right")) if t)
        head = dict(panel=panel, title=title, xlabel=ax.get_xlabel(), ylabel=ax.get_ylabel())
        series = 0

        def add(kind, label, points, base=None, value=None):
            nonlocal series
            for i, (x, y) in enumerate(points):
                rows.append({**head, "kind": kind, "label": label, "series": series, "x": float(x), "y": float(y),
                             "base": "" if base is None else float(base[i]),
                             "value": "" if value is None else float(value[i])})
            series += 1

        for line in ax.get_lines():
            xy = _data_coords(ax, line, line.get_xydata())
            if len(xy):
                add("line", _label(line), xy)
        for container in ax.containers:
            if not isinstance(container, BarContainer):
                continue
            horizontal = getattr(container, "orientation", None) == "horizontal"
            pts, base = [], []
            for r in container.patches:
                if horizontal:
                    pts.append((r.get_x() + r.get_width(), r.get_y() + r.get_height() / 2))
                    base.append(r.get_x())
                else:
                    pts.append((r.get_x() + r.get_width() / 2, r.get_y() + r.get_height()))
                    base.append(r.get_y())
            if pts:
                add("bar", _label(container), pts, base=base)
        for coll in ax.collections:
            label = _label(coll)
            if isinstance(coll, QuadMesh):
                values = np.ma.filled(np.ma.asarray(coll.get_array(), dtype=float).ravel(), np.nan)
                c = coll.get_coordinates()  # (M + 1, N + 1, 2) cell corners
                centres = ((c[:-1, :-1] + c[1:, :-1] + c[:-1, 1:] + c[1:, 1:]) / 4).reshape(-1, 2)
                if len(centres) == len(values):
                    add("image", label, _data_coords(ax, coll, centres), value=values)
            elif isinstance(coll, PathCollection):  # scatter
                offsets = coll.get_offsets()
                if len(offsets):
                    values = coll.get_array()
                    values = None if values is None or np.size(values) != len(offsets) else \
                        np.ma.filled(np.ma.asarray(values, dtype=float).ravel(), np.nan)
                    xy = np.asarray(offsets, dtype=float)
                    if coll.get_offset_transform() != ax.transData:
                        xy = ax.transData.inverted().transform(coll.get_offset_transform().transform(xy))
                    add("scatter", label, xy, value=values)
            elif isinstance(coll, LineCollection):
                for seg in coll.get_segments():
                    if len(seg):
                        add("segment", label, _data_coords(ax, coll, seg))
            elif isinstance(coll, PolyCollection):  # fill_between, fill_betweenx, violins
                for path in coll.get_paths():
                    if len(path.vertices):
                        add("fill", label, _data_coords(ax, coll, path.vertices))
        for image in ax.images:
            values = np.ma.filled(np.ma.asarray(image.get_array(), dtype=float), np.nan)
            if values.ndim != 2:
                continue
            left, right, bottom, top = image.get_extent()
            n_rows, n_cols = values.shape
            xs = left + (np.arange(n_cols) + 0.5) * (right - left) / n_cols
            ys = top + (np.arange(n_rows) + 0.5) * (bottom - top) / n_rows  # row 0 at the top (origin="upper")
            if image.origin == "lower":
                ys = bottom + (np.arange(n_rows) + 0.5) * (top - bottom) / n_rows
            gx, gy = np.meshgrid(xs, ys)
            add("image", _label(image), np.column_stack([gx.ravel(), gy.ravel()]), value=values.ravel())
    return rows


def figure_csv(fig: plt.Figure) -> str:
    """:func:`figure_data` of ``fig`` as CSV text (header :data:`CSV_COLUMNS`; floats to 10 digits)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in figure_data(fig):
        writer.writerow({k: format(v, ".10g") if isinstance(v, float) else v for k, v in row.items()})
    return buf.getvalue()


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


def tune_ranking(ax, result, max_cells: int = 60) -> None:
    """The ranking of :func:`p2pntk.tuning.tune`: the predicted objective of the stable cells in
    predicted order (dashed, the first ``max_cells``) and the trained networks' objective at the
    verified cells (filled squares), against the predicted rank."""
    t = result.table
    s = result.summary
    unit = {"error": "test error (fraction)", "loss": "test loss",
            "rounds": f"rounds to test error {s.get('target')}"}[s["objective"]]
    ok = t[t["stable"] & t["reached"]].head(max_cells)
    ax.plot(ok["rank"], ok["predicted"], marker="o", ms=3, color="C0", label="predicted (closed form)", **PREDICTED)
    tr = t[t["trained"] & t["stable"] & t["reached"]]
    ax.plot(tr["rank"], tr["actual"], "s", ms=7, color="C3", label="actual (trained networks)")
    ax.set_xlabel("predicted rank (1 = best)")
    ax.set_ylabel(f"{unit} after {s['budget']} {s['budget_unit']}" if s["objective"] != "rounds" else unit)
    ax.legend(fontsize="small")
