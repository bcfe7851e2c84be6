"""Plotting helpers: actual (solid) and predicted (dashed) curves of every agent."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from p2pntk import plotting


def test_per_agent_draws_each_agent_solid_and_dashed():
    k = np.arange(4)
    actual, predicted = np.random.default_rng(0).random((2, 4, 3))       # (S=4, Q=3)
    fig, (a1, a2) = plt.subplots(1, 2)
    plotting.per_agent(a1, k, actual, predicted)                         # one colour per agent, no labels
    plotting.per_agent(a2, k, actual, predicted, colors=("C0", "C3"))    # two colours, first agent labelled
    for ax in (a1, a2):
        lines = ax.get_lines()
        assert len(lines) == 6
        assert [l.get_linestyle() for l in lines] == ["-", "--"] * 3
        np.testing.assert_array_equal(lines[2].get_ydata(), actual[:, 1])
        np.testing.assert_array_equal(lines[3].get_ydata(), predicted[:, 1])
    assert [l.get_label() for l in a2.get_lines()][:2] == ["actual", "predicted"]
    assert not any(l.get_label() in ("actual", "predicted") for l in a1.get_lines())
    assert a1.get_lines()[0].get_color() != a1.get_lines()[2].get_color()
    plotting.style_legend(a1)
    assert [t.get_text() for t in a1.get_legend().get_texts()] == ["actual", "predicted"]
    plt.close(fig)


def test_figure_data_of_lines_scatter_bars_and_fill_between(tmp_path, monkeypatch):
    """The CSV beside each figure holds the plotted values, read back from the artists."""
    import csv

    monkeypatch.setenv("P2PNTK_FIG_DIR", str(tmp_path))
    fig, (a1, a2) = plt.subplots(1, 2)
    a1.plot([0, 1, 2], [1.0, 0.5, 0.25], label="error")
    a1.scatter([0.5, 1.5], [0.7, 0.3], c=[1.0, 2.0], label="samples")
    a1.fill_between([0, 1, 2], [0.9, 0.4, 0.2], [1.1, 0.6, 0.3], label="band")
    a1.axhline(0.1, label="floor")
    a1.set(title="errors", xlabel="iteration $k$", ylabel="error", yscale="log")
    a1.plot([], [], label="legend proxy")  # no points: left out
    a2.bar(["ring", "star"], [3.0, 4.0], bottom=[1.0, 0.0], label="rate")
    a2.barh([0, 1], [5.0, 6.0], label="h")
    a2.set_title("rates")
    png, pdf, path = plotting.save(fig, "fig-mixed")
    assert path == tmp_path / "fig-mixed.csv" and png.is_file() and pdf.is_file()
    rows = list(csv.DictReader(path.open()))
    assert tuple(rows[0]) == plotting.CSV_COLUMNS

    def pick(kind, label):
        return [(float(r["x"]), float(r["y"])) for r in rows if r["kind"] == kind and r["label"] == label]

    assert pick("line", "error") == [(0, 1.0), (1, 0.5), (2, 0.25)]
    assert pick("scatter", "samples") == [(0.5, 0.7), (1.5, 0.3)]
    assert [r["value"] for r in rows if r["label"] == "samples"] == ["1", "2"]
    band = pick("fill", "band")
    assert {(0, 0.9), (2, 0.2), (2, 0.3), (0, 1.1)} <= set(band)  # the polygon's vertices
    floor = pick("line", "floor")  # axhline: x spans the axes, converted to data units
    assert [y for _, y in floor] == [0.1, 0.1] and floor[0][0] < 0 and floor[1][0] > 2
    assert pick("bar", "rate") == [(0, 4.0), (1, 4.0)]  # centre and top; baseline in "base"
    assert [r["base"] for r in rows if r["label"] == "rate"] == ["1", "0"]
    assert pick("bar", "h") == [(5.0, 0), (6.0, 1)]  # horizontal: value in x, centre in y
    assert {r["title"] for r in rows if r["panel"] == "0"} == {"errors"}
    assert {(r["xlabel"], r["ylabel"]) for r in rows if r["panel"] == "0"} == {("iteration $k$", "error")}
    assert {r["title"] for r in rows if r["panel"] == "1"} == {"rates"}
    assert "legend proxy" not in {r["label"] for r in rows}
    assert len({(r["panel"], r["series"]) for r in rows}) == 6
    plt.close(fig)


def test_figure_data_of_images_and_heatmaps_skips_colour_bars():
    import seaborn as sns

    fig, (a1, a2) = plt.subplots(1, 2)
    a1.imshow(np.array([[1.0, 2.0], [3.0, 4.0]]))
    sns.heatmap(np.array([[5.0, 6.0, 7.0]]), ax=a2)  # adds a colour bar axes
    rows = plotting.figure_data(fig)
    assert {r["panel"] for r in rows} == {0, 1}
    image = {(r["x"], r["y"]): r["value"] for r in rows if r["panel"] == 0}
    assert image == {(0, 0): 1.0, (1, 0): 2.0, (0, 1): 3.0, (1, 1): 4.0}  # cell centres, row 0 at y = 0
    heat = [(r["x"], r["y"], r["value"]) for r in rows if r["panel"] == 1]
    assert heat == [(0.5, 0.5, 5.0), (1.5, 0.5, 6.0), (2.5, 0.5, 7.0)]
    plt.close(fig)
