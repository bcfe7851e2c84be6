"""Agents sharded over host devices (``simulate(..., devices=n)``) equal the single-device run.

The number of CPU host devices is fixed by ``XLA_FLAGS=--xla_force_host_platform_device_count=N``
before jax is imported, so every N runs in its own subprocess (this file, run as a
script), which computes the unsharded reference and the sharded runs in the same
process and prints the largest deviations as JSON.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import p2pntk
from p2pntk import algorithms, graphs, problems, sharding, training

Q = 8
SRC = os.path.dirname(os.path.dirname(os.path.abspath(p2pntk.__file__)))
# float64, a contraction of a few dozen steps: the sharded and unsharded runs differ
# only in the summation order of the mixing (measured: below 1e-14 absolute on outputs of size ~1).
ATOL = 1e-12


N_DEVICES = (1, 2, 4, 8)
#: the paper's methods, a method with a different first update and a gradient tracker
SHARDED = algorithms.PAPER_ALGORITHMS + ("extra", "gradient_tracking")


def _env(n_devices):
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=SRC, JAX_PLATFORMS="cpu",
                XLA_FLAGS=f"--xla_force_host_platform_device_count={n_devices}")


@pytest.fixture(scope="module")
def reports():
    """Start every worker at once — one per number of host devices, and the two processes
    of the jax.distributed run — and collect (returncode, stdout, stderr) of each."""
    import socket
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    args = {n: [str(n)] for n in N_DEVICES}
    args.update({("process", i): ["2", "--process", str(i), "2", str(port)] for i in range(2)})
    procs = {key: subprocess.Popen([sys.executable, os.path.abspath(__file__), *a], env=_env(int(a[0])),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for key, a in args.items()}
    out = {}
    try:
        for key, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=400)
            out[key] = (proc.returncode, stdout, stderr)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    return out


def report(reports, key) -> dict:
    code, stdout, stderr = reports[key]
    assert code == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("n_devices", N_DEVICES)
def test_sharded_equals_single_device(reports, n_devices):
    rep = report(reports, n_devices)
    assert rep["n_devices"] == n_devices
    assert rep["file"].startswith(SRC)
    plans = {(c["topology"], c["mixing"]): c["plan"] for c in rep["cases"]}
    assert plans[("ring", "auto")] == ("all_gather" if n_devices == 1 else "ppermute")
    assert plans[("complete", "auto")] == "all_gather"
    assert plans[("schedule", "auto")] == "all_gather" and ("schedule", "ppermute") in plans
    assert {c["algorithm"] for c in rep["cases"]} == set(SHARDED)
    for c in rep["cases"]:
        assert c["train"] <= ATOL and c["params"] <= ATOL, c
    if n_devices >= 4:
        assert rep["indivisible"].startswith("devices: Q = 6 agents cannot be split evenly over 4 devices; "
                                             "allowed: None, an int among [1, 2, 3"), rep["indivisible"]


def test_devices_errors_name_the_allowed_values():
    import jax
    W = graphs.mixing_matrix(graphs.topology("ring", Q))
    n = len(jax.devices())
    with pytest.raises(ValueError, match=r"devices=.*allowed: None, an int among"):
        sharding.agent_mesh(n + 1, Q)
    with pytest.raises(ValueError, match="devices"):
        sharding.agent_mesh("two", Q)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("x",))
    with pytest.raises(ValueError, match="axis name 'agents'"):
        sharding.agent_mesh(mesh, Q)
    with pytest.raises(ValueError, match=r"devices: Q = 8 agents cannot be split evenly over 3"):
        sharding.mixing_plan(W, 3)
    with pytest.raises(ValueError, match="allowed: auto, ppermute, all_gather"):
        sharding.mixing_plan(W, 1, "ring")


@pytest.mark.parametrize("topology, n_dev, plan", [
    ("ring", 2, ("ppermute", (0, 1, 7))), ("ring", 8, ("ppermute", (0, 1, 7))),
    ("path", 4, ("ppermute", (0, 1, 7))), ("ring", 1, ("all_gather",)),
    ("complete", 2, ("all_gather",)), ("complete", 8, ("all_gather",)), ("star", 4, ("all_gather",)),
])
def test_mixing_plan_follows_the_sparsity_of_W(topology, n_dev, plan):
    W = graphs.mixing_matrix(graphs.topology(topology, Q))
    assert sharding.mixing_plan(W, n_dev) == plan


def worker(n_devices: int):
    import jax
    jax.config.update("jax_enable_x64", True)
    from p2pntk import algorithms, graphs, problems, sharding, training

    assert len(jax.devices()) == n_devices
    p = problems.problem("digits", 16, 10, Q, 16, with_kernel=False)
    steps = [0, 2, 15]
    cases = []
    ring, complete = (graphs.mixing_matrix(graphs.topology(t, Q)) for t in ("ring", "complete"))
    for topology in ("ring", "complete", "schedule"):   # schedule: W(k) alternates ring and complete
        W = {"ring": ring, "complete": complete, "schedule": np.stack([ring, complete, ring])}[topology]
        for algorithm in SHARDED if topology != "schedule" else ("dgd", "atc"):
            kw = dict(record_params=True)  # test outputs: checked by process_worker
            lr = 0.2 if algorithm in algorithms.PAPER_ALGORITHMS else 0.05   # the trackers' critical step is smaller
            ref = training.simulate(algorithm, p.apply_fn, p.params0, W, p.x, p.y, p.owner, lr, steps, **kw)
            # auto: ring -> ppermute, complete -> all_gather (n_devices > 1); DGD also forced the other way
            mixings = ["auto", "all_gather" if topology == "ring" else "ppermute"] if algorithm == "dgd" else ["auto"]
            for mixing in mixings:
                got = training.simulate(algorithm, p.apply_fn, p.params0, W, p.x, p.y, p.owner, lr, steps,
                                        devices=n_devices, mixing=mixing, **kw)
                leaves = zip(jax.tree.leaves(ref.params), jax.tree.leaves(got.params))
                cases.append(dict(
                    topology=topology, algorithm=algorithm, mixing=mixing,
                    plan=sharding.mixing_plan(W, n_devices, mixing)[0],
                    train=float(np.abs(ref.train - got.train).max()),
                    params=max(float(np.abs(a - b).max()) for a, b in leaves)))
    indivisible = None  # Q = 6 agents do not split over 4 devices
    if n_devices >= 4:
        W6 = graphs.mixing_matrix(graphs.topology("ring", 6))
        try:
            training.simulate("dgd", p.apply_fn, p.params0, W6, p.x, p.y, np.arange(len(p.y)) % 6, lr, [1],
                              devices=4)
            indivisible = "no error"
        except ValueError as e:
            indivisible = str(e)
    print(json.dumps(dict(n_devices=n_devices, file=p2pntk.__file__, cases=cases, indivisible=indivisible)))


def process_worker(n_local: int, process_id: int, n_processes: int, port: int):
    """One of ``n_processes`` processes of a jax.distributed run on localhost (gloo collectives)."""
    import jax
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=n_processes,
                               process_id=process_id)
    from p2pntk import algorithms, graphs, problems, sharding, training

    n_global = len(jax.devices())
    assert n_global == n_local * n_processes and len(jax.local_devices()) == n_local
    p = problems.problem("digits", 16, 10, Q, 16, with_kernel=False)
    cases = []
    for topology, algorithm in (("ring", "dgd"), ("complete", "cta")):  # ppermute and all_gather across processes
        W = graphs.mixing_matrix(graphs.topology(topology, Q))
        kw = dict(x_test=p.x_test, record_params=True)
        ref = training.simulate(algorithm, p.apply_fn, p.params0, W, p.x, p.y, p.owner, 0.2, [0, 2, 15], **kw)
        got = training.simulate(algorithm, p.apply_fn, p.params0, W, p.x, p.y, p.owner, 0.2, [0, 2, 15],
                                devices=n_global, **kw)
        leaves = zip(jax.tree.leaves(ref.params), jax.tree.leaves(got.params))
        cases.append(dict(topology=topology, algorithm=algorithm, plan=sharding.mixing_plan(W, n_global)[0],
                          train=float(np.abs(ref.train - got.train).max()),
                          test=float(np.abs(ref.test - got.test).max()),
                          params=max(float(np.abs(a - b).max()) for a, b in leaves)))
    print(json.dumps(dict(process_id=process_id, n_global=n_global, cases=cases)))


@pytest.mark.parametrize("process_id", [0, 1])
def test_two_processes_with_jax_distributed(reports, process_id):
    """Two processes of 2 host devices each (4 global devices), agents sharded over all 4:
    every process gets the full results, equal to its own single-device run."""
    rep = report(reports, ("process", process_id))
    assert rep["process_id"] == process_id and rep["n_global"] == 4
    assert [c["plan"] for c in rep["cases"]] == ["ppermute", "all_gather"]
    for c in rep["cases"]:
        assert c["train"] <= ATOL and c["test"] <= ATOL and c["params"] <= ATOL, c


if __name__ == "__main__":
    if "--process" in sys.argv:
        i = sys.argv.index("--process")
        process_worker(int(sys.argv[1]), *(int(a) for a in sys.argv[i + 1:i + 4]))
    else:
        worker(int(sys.argv[1]))
