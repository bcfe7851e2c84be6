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
