"""The benchmark suite in quick mode: structure of the rows and the correctness checks it measures."""
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import run as suite  # noqa: E402

SECTIONS = {"predict", "methods", "nt", "loop", "padding", "scale", "gemm"}


@pytest.fixture(scope="module")
def rows():
    return suite.run_all(quick=True)


def test_every_bench_module_is_discovered():
    assert SECTIONS <= set(suite.modules())
    with pytest.raises(ValueError, match="unknown benchmark 'nope'; allowed: "):
        suite.load("nope")


def test_rows_have_the_common_keys_and_consistent_ratios(rows):
    assert {r["benchmark"] for r in rows} == set(suite.modules())
    for r in rows:
        assert {"benchmark", "case", "baseline_s", "ours_s", "ratio", "note"} <= set(r), r
        assert r["ours_s"] > 0 and isinstance(r["note"], str) and r["note"]
        if not math.isnan(r["baseline_s"]):
            assert r["ratio"] == pytest.approx(r["baseline_s"] / r["ours_s"])
        if r["target"] is not None:
            assert r["meets"] == (r["ratio"] >= r["target"])
    assert len(suite.table(rows)) == len(rows)


def test_one_agent_equals_neural_tangents(rows):
    (nt,) = [r for r in rows if r["benchmark"] == "nt"]
    assert nt["max_abs_diff"] <= 1e-8


def test_loop_equals_vectorised(rows):
    loops = [r for r in rows if r["benchmark"] == "loop"]
    assert loops and all(r["max_param_diff"] <= 1e-10 for r in loops)


def test_predict_has_both_kernels_and_the_24_config_sweep(rows):
    pred = [r for r in rows if r["benchmark"] == "predict"]
    assert any("empirical" in r["case"] for r in pred) and any("analytic" in r["case"] for r in pred)
    (sweep,) = [r for r in pred if r["case"].startswith("sweep")]
    assert sweep["n_configs"] == 24 and sweep["n_trained"] >= 1
    assert sweep["baseline_s"] == pytest.approx(sweep["train_s_per_cell"] * 24)


def test_methods_has_every_algorithm_and_the_failure_sweep_equals_single_runs(rows):
    from p2pntk import algorithms

    methods = [r for r in rows if r["benchmark"] == "methods"]
    per = {r["algorithm"]: r for r in methods if "algorithm" in r}
    assert set(per) == set(algorithms.ALGORITHMS)
    assert per["dgd"]["n_state"] == 1 and per["extra"]["n_state"] == 2
    assert all(0 <= r["movement_error"] < 0.5 for r in per.values())
    (fail,) = [r for r in methods if "link-failure" in r["case"]]
    assert fail["max_abs_diff_single"] <= 1e-9
    assert fail["baseline_s"] == pytest.approx(fail["train_s_per_realisation"] * fail["n_realisations"])


def test_padding_rows_equal_the_padded_layout_and_measure_the_waste(rows):
    from p2pntk import data

    pad = [r for r in rows if r["benchmark"] == "padding"]
    assert len(pad) == 2 and "padded layout" in pad[0]["case"] and "equal split" in pad[1]["case"]
    r = pad[0]
    assert r["max_abs_diff"] <= 1e-10                         # the same computation as the padded layout
    assert sum(r["counts"]) == r["n_train"] and len(r["counts"]) == r["n_agents"]
    assert r["padding_factor"] == pytest.approx(r["n_agents"] * max(r["counts"]) / r["n_train"]) and r["padding_factor"] > 1
    assert r["n_groups"] == len(set(r["counts"]))
    labels = data.digits(r["n_train"], 10)["labels_train"]
    assert sorted(r["counts"]) == sorted(map(int, np.bincount(data.partition(labels, r["n_agents"], "dirichlet",
                                                                             alpha=r["alpha"]))))
    assert pad[1]["padded_over_equal"] == pytest.approx(r["baseline_s"] / pad[1]["baseline_s"])


def test_scale_fits_are_finite_and_memory_grows(rows):
    scale = [r for r in rows if r["benchmark"] == "scale"]
    fits = [r for r in scale if "exponent_Q" in r or "exponent_N" in r]
    assert len(fits) == 2 and all(math.isfinite(r.get("exponent_Q", r.get("exponent_N"))) for r in fits)
    byN = [r["peak_MiB"] for r in scale if r["case"].startswith("Q=4, N=")]
    assert byN[-1] > 2 * byN[0]  # N quadruples: the kernels grow 16-fold
    assert all(r["largest_Q_24GiB" if "exponent_Q" in r else "largest_N_24GiB"] > 0 for r in fits)


def test_main_prints_the_table_and_saves_json_with_machine_info(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert suite.main(["--quick", "--only", "nt", "--json", str(out)]) == 0
    assert "ratio" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["quick"] is True and saved["rows"][0]["benchmark"] == "nt"
    assert {"cores", "numpy", "jax", "date"} <= set(saved["machine"])


def test_tune_scale_rows_measure_time_and_memory(rows):
    """The tuner's scale rows: 12 configurations each, a positive peak memory within its limit."""
    scale = [r for r in rows if r["benchmark"] == "tune" and r["case"].startswith("scale")]
    assert len(scale) == 2 and {r["case"].split(" kernel")[0].split(", ")[-1] for r in scale} == {"analytic", "resolved"}
    for r in scale:
        assert r["n_configs"] == 12 and r["ours_s"] > 0 and r["kernel_s"] > 0, r
        assert 0 < r["peak_GiB"] < r["limit_GiB"] and r["fits"], r
