"""Step time of ``training.simulate`` with the agents sharded over 1, 2, 4, 8 CPU host devices.

``run(quick)`` returns one row per (topology, number of devices): ``baseline_s`` is the
time of one iteration of the default path (``devices=None``, all Q = 8 agents vmapped on
one device) and ``ours_s`` that of ``devices=n`` in a process started with
``XLA_FLAGS=--xla_force_host_platform_device_count=n``; ``ratio = baseline_s / ours_s``
(above 1: sharding is faster). Each number of devices runs in its own subprocess, one
after the other (so they do not compete for cores); each time is the best of a few
repetitions of ``simulate`` after a first call that compiles (the compiled step is cached
across calls, so the timed calls do not recompile). Standalone: ``python benchmarks/bench_sharding.py [--quick]``.

Host devices share the machine's cores: with 2 cores, more than 2 devices cannot run
faster than 2, and a single device already uses both cores through XLA's intra-op
threads, so on such a machine sharding measures the cost of the collectives, not a
speed-up; the speed-up is for several GPUs or hosts.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
DEVICES = (1, 2, 4, 8)
Q = 8


def _config(quick: bool) -> dict:
    return dict(n_train=64, width=256, iters=200, repeats=3) if quick else \
        dict(n_train=256, width=1024, iters=200, repeats=3)


def _worker(n_devices: int, cfg: dict):
    """In a process with ``n_devices`` host devices: seconds per iteration, per topology and path."""
    import jax
    jax.config.update("jax_enable_x64", True)
    from p2pntk import graphs, problems, sharding, training

    assert len(jax.devices()) == n_devices
    p = problems.problem("digits", cfg["n_train"], 10, Q, cfg["width"], with_kernel=False)
    out = {}
    for topology in ("ring", "complete"):
        W = graphs.mixing_matrix(graphs.topology(topology, Q))
        paths = {"sharded": n_devices}
        if n_devices == 1:
            paths["single"] = None
        for name, devices in paths.items():
            run = lambda k: training.simulate("dgd", p.apply_fn, p.params0, W, p.x, p.y, p.owner, 0.1, [k],
                                              devices=devices)
            t0 = time.perf_counter()
            run(1)  # compiles (unless an earlier case had the same structure)
            first_s = time.perf_counter() - t0
            # per iteration: difference of k and 2k iterations (removes set-up, outputs and transfers)
            k = cfg["iters"]
            t1 = min(_timed(run, k) for _ in range(cfg["repeats"]))
            t2 = min(_timed(run, 2 * k) for _ in range(cfg["repeats"]))
            out[f"{topology}/{name}"] = dict(step_s=max(t2 - t1, 1e-12) / k, first_s=first_s,
                                             plan=sharding.mixing_plan(W, n_devices)[0] if devices else "vmap")
    print(json.dumps(out))


def _timed(run, k):
    t0 = time.perf_counter()
    run(k)
    return time.perf_counter() - t0


def _measure(n_devices: int, cfg: dict) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(SRC)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
               XLA_FLAGS=f"--xla_force_host_platform_device_count={n_devices}")
    res = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(n_devices), json.dumps(cfg)],
                         env=env, capture_output=True, text=True, timeout=1800)
    if res.returncode:
        raise RuntimeError(f"bench_sharding worker with {n_devices} devices failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def run(quick: bool = True) -> list[dict]:
    cfg = _config(quick)
    per_n = {n: _measure(n, cfg) for n in DEVICES}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rows = []
    for topology in ("ring", "complete"):
        baseline = per_n[1][f"{topology}/single"]["step_s"]
        for n in DEVICES:
            m = per_n[n][f"{topology}/sharded"]
            note = (f"DGD, Q={Q}, {topology} ({m['plan']}), digits N={cfg['n_train']}, MLP width {cfg['width']}, "
                    f"float64; baseline: devices=None on 1 device; first call (compilation) {m['first_s']:.2f} s")
            if n > cores:
                note += f"; {n} host devices share {cores} cores: no speed-up expected beyond {cores}"
            elif n > 1:
                note += "; the 1-device baseline already uses every core (XLA intra-op threads)"
            rows.append(dict(benchmark="sharding", case=f"devices={n} {topology}", baseline_s=baseline,
                             ours_s=m["step_s"], ratio=baseline / m["step_s"], target=None, meets=None,
                             note=note, devices=n, plan=m["plan"], first_call_s=m["first_s"]))
    return rows


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(int(sys.argv[2]), json.loads(sys.argv[3]))
    else:
        for row in run(quick="--quick" in sys.argv):
            print(json.dumps(row))
