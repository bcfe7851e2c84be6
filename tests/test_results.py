"""Results files: deterministic bytes, atomic writes, corrupt files recomputed, keys follow code and params."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from p2pntk import results


def test_same_parameters_give_identical_bytes(tmp_path):
    arrays = {"a": np.arange(10.0), "b": np.eye(3, dtype=np.float32)}
    results.save(tmp_path / "x.npz", arrays, {"seed": 0})
    first = (tmp_path / "x.npz").read_bytes()
    time.sleep(1.1)  # zip time stamps have 2 s resolution: make sure they are not used
    results.save(tmp_path / "x.npz", arrays, {"seed": 0})
    assert (tmp_path / "x.npz").read_bytes() == first
    back, params = results.load(tmp_path / "x.npz")
    assert params == {"seed": 0} and back["b"].dtype == np.float32
    np.testing.assert_array_equal(back["a"], arrays["a"])


def test_cache_hit_miss_and_corrupt_file_recomputed(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"v": np.full(4, len(calls), dtype=float)}

    a = results.cached("demo", {"n": 4}, compute, folder=tmp_path)
    b = results.cached("demo", {"n": 4}, compute, folder=tmp_path)
    assert len(calls) == 1 and (a["v"] == b["v"]).all()
    results.cached("demo", {"n": 5}, compute, folder=tmp_path)  # new parameters: recomputed
    assert len(calls) == 2
    (path,) = [p for p in tmp_path.glob("demo-*.npz") if results.load(p)[1] == {"n": 4}]
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # truncate
    with pytest.warns(RuntimeWarning, match=r"is corrupt .*: recomputing it"):
        c = results.cached("demo", {"n": 4}, compute, folder=tmp_path)
    assert len(calls) == 3 and c["v"][0] == 3
    results.load(path)  # rewritten intact


def test_store_is_read_when_the_build_folder_lacks_a_result(tmp_path, monkeypatch):
    """A result kept in the repository's store (``data/results``) is used instead of
    recomputing it; the store is never written; a corrupt stored file is recomputed into
    the build folder; ``P2PNTK_STORE=`` turns the store off."""
    store, build = tmp_path / "store", tmp_path / "build"
    monkeypatch.setenv("P2PNTK_BUILD", str(build))
    monkeypatch.setenv("P2PNTK_STORE", str(store))
    calls = []

    def compute():
        calls.append(1)
        return {"v": np.full(3, float(len(calls))), "seconds_x": np.asarray(0.5)}

    results.cached("demo", {"n": 1}, compute)
    (made,) = (build / "results").glob("demo-*.npz")
    store.mkdir()
    made.rename(store / made.name)                      # kept in the store, gone from the build
    made.with_suffix(".timings.json").rename(store / made.with_suffix(".timings.json").name)
    r = results.cached("demo", {"n": 1}, compute)
    assert len(calls) == 1 and r["v"][0] == 1 and float(r["seconds_x"]) == 0.5
    assert not list((build / "results").glob("demo-*.npz"))   # read in place, nothing copied
    monkeypatch.setenv("P2PNTK_STORE", "")                     # no store: recomputed
    assert results.cached("demo", {"n": 1}, compute)["v"][0] == 2
    monkeypatch.setenv("P2PNTK_STORE", str(store))
    (build / "results" / made.name).unlink()
    (store / made.name).write_bytes(b"not a zip file")
    with pytest.warns(RuntimeWarning, match="is corrupt"):
        assert results.cached("demo", {"n": 1}, compute)["v"][0] == 3
    assert (store / made.name).read_bytes() == b"not a zip file" and (build / "results" / made.name).is_file()


def test_key_depends_on_code(monkeypatch):
    k1 = results.key("x", {"a": 1})
    edited = {**results.SOURCES, "graphs.py": results.SOURCES["graphs.py"] + b"\n# edited\n"}
    monkeypatch.setattr(results, "SOURCES", edited)
    assert results.key("x", {"a": 1}) != k1


WRITER = """
import sys, numpy as np
from p2pntk import results
big = np.random.default_rng(1).standard_normal(4_000_000)
print("ready", flush=True)
while True:
    results.save(sys.argv[1], {"v": big}, {"new": True})
"""


def test_killed_mid_write_leaves_old_file_intact(tmp_path):
    path = tmp_path / "r.npz"
    results.save(path, {"v": np.arange(5.0)}, {"new": False})
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.4)  # in the middle of (repeated) writes
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    arrays, params = results.load(path)  # never a partial file: the old one or a complete new one
    assert params in ({"new": False}, {"new": True})
    assert arrays["v"].shape == ((5,) if not params["new"] else (4_000_000,))


def test_experiment_results_are_byte_identical_across_runs(tmp_path):
    from p2pntk import reproduction

    cfg = dict(n_train=32, n_test=16, n_agents=4, width=64, steps=[0, 3, 10], affine=True, analytic=True)
    reproduction.cached_run(cfg, folder=tmp_path / "a")
    reproduction.cached_run(cfg, folder=tmp_path / "b")
    (fa,), (fb,) = list((tmp_path / "a").glob("run-*.npz")), list((tmp_path / "b").glob("run-*.npz"))
    assert fa.name == fb.name and fa.read_bytes() == fb.read_bytes()
