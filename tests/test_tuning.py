"""p2pntk.tune: a grid ranked by the closed form, each cell the prediction of its one definition.

A tuned cell's curves must be those of ``linearized_outputs`` for the same configuration (the
same algorithm definition, mixing and step size) to round-off; the verified cells' actual curves
those of ``simulate``; the objective, ranking, verification statistics and cache must be what
their docstrings say.
"""
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import p2pntk
from p2pntk import data, dynamics, graphs, kernels, problems, training, tuning
from p2pntk.metrics import error_rate, mean_loss, mse

PROBLEM = dict(n_train=40, n_test=30, n_agents=4)
GRID = dict(algorithm=["dgd", "exact_diffusion"], topology=["ring", "complete"], lr_factor=[0.4, 1.1],
            failure=[0.0, 0.3], local_steps=[1, 2], width=[64])


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tune")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = tuning.tune(PROBLEM, GRID, budget=30, objective="loss", record=6, verify=2, folder=folder,
                        progress=False)
    return r, folder


def test_every_cell_of_the_grid_is_ranked_once(tuned):
    r, _ = tuned
    t = r.table
    assert len(t) == 2 * 2 * 2 * 2 * 2 == r.summary["n_cells"]
    assert sorted(t["rank"]) == list(range(1, len(t) + 1)) and sorted(t["cell"]) == list(range(len(t)))
    usable = t["stable"] & t["reached"]
    assert usable.iloc[: usable.sum()].all(), "stable cells come first"
    best = t[usable]["predicted"].to_numpy()
    assert (np.diff(best) >= 0).all(), "stable cells in increasing objective"
    assert p2pntk.tune is tuning.tune


def test_a_cell_is_the_closed_form_of_its_configuration(tuned):
    """Every cell (each (method, failure, local steps) group, each step factor × topology in it):
    its curves equal linearized_outputs' to 1e-10, so no cell reads another cell's column."""
    r, _ = tuned
    p = problems.by_agent(problems.problem("digits", 40, 30, 4, 64, with_kernel=False))   # as tune builds it
    K, Kt = kernels.kernel(p.apply_fn, p.params0, p.x, p.x_test)
    t = r.table.set_index("cell")
    for n, c in t.iterrows():
        alg, fail, tau = c["algorithm"], c["failure"], c["local_steps"]
        W = graphs.mixing_matrix(graphs.topology(c["topology"], 4), c["rule"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out = dynamics.linearized_outputs(alg, tuning.mixing(W, fail, tau, 0), K, p.owner, p.f0, p.y, c["lr"],
                                              r.curves[n]["steps"], K_test=Kt, f0_test=p.f0_test)
        want = mse(out.test, p.y_test).mean(axis=-1)
        np.testing.assert_allclose(r.curves[n]["pred_loss"], want, rtol=1e-10)
        np.testing.assert_array_equal(r.curves[n]["pred_error"], error_rate(out.test, p.labels_test).mean(axis=-1))
        assert c["predicted"] == pytest.approx(want[-1], rel=1e-10)
        final, initial = mean_loss(out.train[-1], p.y), mean_loss(out.train[0], p.y)   # stable: training loss fell
        assert c["stable"] == (not c["diverged"] and final <= initial), n


def test_step_sizes_are_fractions_of_the_reference(tuned):
    r, _ = tuned
    t = r.table
    np.testing.assert_allclose(t["lr"], t["lr_factor"] * t["lr_reference"], rtol=1e-14)
    p = problems.by_agent(problems.problem("digits", 40, 30, 4, 64, with_kernel=False))   # as tune builds it
    K, _ = kernels.kernel(p.apply_fn, p.params0, p.x, p.x_test)
    W = graphs.mixing_matrix(graphs.topology("ring", 4), "metropolis")
    ring = t[(t["topology"] == "ring") & (t["failure"] == 0)]
    ring_fail = t[(t["topology"] == "ring") & (t["failure"] == 0.3)]
    from p2pntk import stability

    assert ring["lr_reference"].iloc[0] == pytest.approx(stability.dgd_step_size_bound(W, K, p.owner), rel=1e-12)
    expected = graphs.link_failures(W, 0.3).expected           # failing links: the bound of E[W]
    assert ring_fail["lr_reference"].iloc[0] == pytest.approx(stability.dgd_step_size_bound(expected, K, p.owner),
                                                             rel=1e-12)


def test_verified_cells_are_the_predicted_best_and_random_stable_ones(tuned):
    r, _ = tuned
    t = r.table
    trained = t[t["trained"]]
    assert len(trained) == 4 == r.summary["n_trained"]
    assert set(t.head(2)["cell"]) <= set(trained["cell"]), "the predicted top 2 are trained"
    assert trained["stable"].all()
    v = r.summary["verified"]
    assert v == tuning.verification(trained["predicted"], trained["actual"])
    assert r.summary["speedup_per_cell"] == pytest.approx(
        r.summary["seconds_train_per_cell"] / r.summary["seconds_predict_per_cell"])


def test_a_verified_cell_is_the_training_of_its_configuration(tuned):
    r, _ = tuned
    n = int(r.table[r.table["trained"]]["cell"].iloc[0])
    c = r.table.set_index("cell").loc[n]
    p = problems.by_agent(problems.problem("digits", 40, 30, 4, 64, with_kernel=False))   # as tune builds it
    W = graphs.mixing_matrix(graphs.topology(c["topology"], 4), c["rule"])
    act = training.simulate(c["algorithm"], p.apply_fn, p.params0, tuning.mixing(W, c["failure"], c["local_steps"], 0),
                            p.x, p.y, p.owner, c["lr"], r.curves[n]["steps"], x_test=p.x_test)
    np.testing.assert_allclose(r.curves[n]["actual_loss"], mse(np.asarray(act.test), p.y_test).mean(axis=-1),
                               rtol=1e-12)
    assert c["actual"] == pytest.approx(r.curves[n]["actual_loss"][-1])


def test_results_are_cached_and_resume(tuned, monkeypatch):
    """A second run with the same arguments computes nothing: no recursion, no training."""
    r, folder = tuned
    monkeypatch.setattr(dynamics, "linearized_sweep", lambda *a, **k: pytest.fail("recomputed a cached recursion"))
    monkeypatch.setattr(training, "simulate", lambda *a, **k: pytest.fail("retrained a cached cell"))
    again = tuning.tune(PROBLEM, GRID, budget=30, objective="loss", record=6, verify=2, folder=folder,
                        progress=False)
    cols = ["cell", "rank", "predicted", "actual"]
    assert again.table[cols].equals(r.table[cols])


def test_rounds_objective_and_budget_in_rounds(tmp_path):
    """Rounds to a target: floor(k / tau) at the first recorded k whose error meets it; with
    budget_unit='rounds' a cell with tau local steps runs tau times as many iterations."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = tuning.tune(PROBLEM, dict(local_steps=[1, 3], width=[64]), budget=20, budget_unit="rounds",
                        objective="rounds", target=0.5, record=10, folder=tmp_path, progress=False)
    for n, c in r.table.set_index("cell").iterrows():
        cur = r.curves[n]
        assert cur["steps"][-1] == 20 * c["local_steps"]
        hit = np.flatnonzero(cur["pred_error"] <= 0.5)
        want = cur["steps"][hit[0]] // c["local_steps"] if hit.size else np.nan
        np.testing.assert_equal(c["predicted"], want)
    assert tuning.objective_value([0.5, 0.2], [1, 1], [0, 10], 1, "rounds", target=0.1) != \
        tuning.objective_value([0.5, 0.2], [1, 1], [0, 10], 1, "rounds", target=0.1)   # NaN: not reached


def test_verification_statistics():
    v = tuning.verification([1, 2, 3, 4], [10, 30, 20, 40])
    assert v["spearman"] == pytest.approx(0.8) and v["regret"] == 0 and v["spread"] == 30
    v = tuning.verification([1, 2, 3, np.nan], [25, 20, 30, 1])           # NaN pairs are left out
    assert v["n"] == 3 and v["regret"] == 5 and v["spread"] == 10


def test_local_steps_around_link_failures():
    W = graphs.mixing_matrix(graphs.topology("ring", 5))
    fail = graphs.link_failures(W, 0.5, seed=3)
    both = graphs.local_steps(fail, 2)
    for k in range(6):
        np.testing.assert_array_equal(both(k), fail(k) if k % 2 == 1 else np.eye(5))


def test_npz_data_set(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 2, 3)), np.arange(30) % 3
    np.savez(tmp_path / "held.npz", x=x, y=y)
    d = data.from_npz(tmp_path / "held.npz", n_test=9)
    assert d["x_train"].shape == (21, 6) and d["x_test"].shape == (9, 6) and d["y_train"].shape == (21, 3)
    np.testing.assert_allclose(np.linalg.norm(d["x_train"], axis=1), np.sqrt(6))
    np.testing.assert_allclose(d["y_train"], np.eye(3)[d["labels_train"]] - 1 / 3)
    np.savez(tmp_path / "split.npz", x=x, y=y, x_test=x[:5], y_test=y[:5])
    d = data.load(str(tmp_path / "split.npz"), 12, None)
    assert len(d["x_train"]) == 12 and len(d["x_test"]) == 5
    np.testing.assert_array_equal(d["labels_test"], y[:5])


def test_tune_on_an_npz_data_set(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 5))
    np.savez(tmp_path / "mine.npz", x=x, y=(x[:, 0] > 0).astype(int))
    r = tuning.tune(dict(dataset=str(tmp_path / "mine.npz"), n_train=24, n_test=8, n_agents=3),
                    dict(width=[32], lr_factor=[0.5]), budget=5, folder=tmp_path, progress=False)
    assert len(r.table) == 1 and r.table["stable"].all()


def test_cli_writes_the_table_files_and_figure(tmp_path):
    env = {**os.environ, "P2PNTK_BUILD": str(tmp_path / "build")}
    out = subprocess.run([sys.executable, "-m", "p2pntk.cli", "tune", "--n-train", "20", "--n-test", "10",
                          "--n-agents", "3", "--width", "16", "--topology", "ring", "complete", "--lr-factor",
                          "0.5", "1", "--budget", "5", "--out", str(tmp_path / "out"), "--no-progress"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "rank" in out.stdout and "4 cells" in out.stdout
    for name in ("tune.csv", "tune.json", "tune-ranking.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    import pandas as pd

    t = pd.read_csv(tmp_path / "out" / "tune.csv")
    assert sorted(t["rank"]) == [1, 2, 3, 4]
    help_ = subprocess.run([sys.executable, "-m", "p2pntk.cli", "tune", "--help"], capture_output=True, text=True,
                           timeout=600)
    assert help_.returncode == 0 and "--verify" in help_.stdout and "--objective" in help_.stdout


def test_validation_happens_before_anything_is_computed(monkeypatch):
    monkeypatch.setattr(kernels, "kernel", lambda *a, **k: pytest.fail("computed a kernel"))
    with pytest.raises(ValueError, match="ring needs n_agents >= 3"):
        tuning.tune(dict(n_agents=2), dict(topology=["complete", "ring"]), progress=False)
    with pytest.raises(ValueError, match="unknown objective='speed'; allowed: error, loss, rounds"):
        tuning.tune(objective="speed", progress=False)
    with pytest.raises(ValueError, match=r"unknown problem keys \['width'\]"):
        tuning.tune(dict(width=10), progress=False)


def test_cells_are_numbered_in_cell_order(tuned):
    r, _ = tuned
    t = r.table.set_index("cell").sort_index()
    want = tuning.cells(GRID)
    assert len(want) == len(t)
    for n, c in enumerate(want):
        assert {a: t.loc[n, a] for a in tuning.AXES} == c


def test_train_trains_the_given_cells(tmp_path):
    r = tuning.tune(PROBLEM, dict(topology=["ring", "complete"], width=[32]), budget=4, record=2, train=[1],
                    folder=tmp_path, progress=False)
    t = r.table.set_index("cell").sort_index()
    assert t["trained"].tolist() == [False, True] and "verified" not in r.summary
    with pytest.raises(ValueError, match=r"train: cells \[2\] are outside the grid of 2 cells \(indices 0..1\)"):
        tuning.tune(PROBLEM, dict(topology=["ring", "complete"], width=[32]), train=[2], progress=False)
