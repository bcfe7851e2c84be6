r"""Tuning without training (:func:`p2pntk.tune`) against training the networks it ranks.

Baseline: :func:`p2pntk.training.simulate` of one configuration (DGD on a ring, Q agents, the
problem below), outputs recorded like the tuner's, in the precision the book trains in at this
size (float32 at the ``paper`` size, float64 for the quick case), timed compiled (one short call
beforehand). Ours: :func:`p2pntk.tuning.tune` of the same problem, kernel included, no cache
(a fresh folder), for

- landscapes of L = 24 and L = 96 configurations (6 and 24 step factors x 4 topologies),
  output-resolved empirical kernel: time per configuration against training one (issue target
  >= 50x; the flop limit is :math:`3P/(NC^2)` per configuration; the larger landscape shares
  the kernel among more configurations and multiplies it by more columns per pass);
- a single configuration, output-resolved (target >= 5x);
- 100 configurations (25 step factors x 4 topologies) with the shared kernel (output-traced,
  N x N): all of them against training one (target >= 1x: 100 configurations in less time
  than training one).

Scale (issue item 4): a landscape of 12 configurations (DGD and exact diffusion × ring and
Erdős–Rényi × 3 step factors, 100 iterations, 10 recorded) for Q = 64 agents, with the shared
(analytic) kernel at N = 4096 (limit 8 GiB) and the output-resolved empirical kernel at N = 2048
(limit 20 GiB; one (NC)² copy is 3.4 GB), each run in a fresh process whose peak resident memory
(``ru_maxrss``: the Python, JAX and TensorFlow runtime included) is the number printed, with its
time. The tuner stores per recorded step only the mean-over-agents test error and loss of each
configuration (and the training loss at the end), not every agent's outputs, and groups the points
by agent so that the recursion keeps no second copy of the kernel.

``kernel_fraction_of_peak``: the kernel's flop rate, :math:`2 (N + N_{\rm test}) N C^2 n` for the
hidden layer of width n (the output-resolved :func:`p2pntk.kernels.structured_ntk`, train and test
blocks; :math:`C` in place of :math:`C^2` for the shared kernel; the read-out layer's term is
C/n of it), over its time, as a fraction of the same peak.

``fraction_of_peak`` and ``bandwidth_GBps``: the recursion's flop rate
:math:`2 (NC)^2 L` per iteration over the time of the recursion alone (the tune's time minus
its kernel), as a fraction of the float64 matmul rate measured in the same run (best of 3
square products of size 2000), and the kernel bytes read per second (:math:`8 (NC)^2` per
iteration, one pass for all L configurations). ``bare_product_GFLOPs``: the rate of the
recursion's product alone, a random (n × n) by (n × L) float64 product (columns L·C for the
shared kernel), timed like the peak: the ceiling of the recursion, low for few columns (the
product of a matrix by a few vectors streams the matrix from memory for few flops per byte).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from common import row, seconds

from p2pntk import graphs, problems, training, tuning

FULL = dict(dataset="fashion_mnist", n_train=1024, n_test=1000, n_agents=8, width=4096, budget=500, record=10,
            train_dtype="float32")
QUICK = dict(dataset="digits", n_train=40, n_test=20, n_agents=4, width=64, budget=10, record=2,
             train_dtype="float64")
TOPOLOGIES = ["ring", "erdos_renyi", "star", "complete"]
SCALE_GRID = dict(algorithm=["dgd", "exact_diffusion"], topology=["ring", "erdos_renyi"], lr_factor=[0.25, 0.5, 1.0])
SCALE_FULL = [(dict(dataset="fashion_mnist", n_train=4096, n_test=1000, n_agents=64), "analytic", 1024, 100, 8),
              (dict(dataset="fashion_mnist", n_train=2048, n_test=200, n_agents=64), "resolved", 1024, 100, 20)]
SCALE_QUICK = [(dict(dataset="digits", n_train=256, n_test=64, n_agents=16), "analytic", 64, 10, 8),
               (dict(dataset="digits", n_train=128, n_test=32, n_agents=16), "resolved", 64, 10, 20)]
_CHILD = """
import json, resource, sys, tempfile, time
from p2pntk import tuning
a = json.loads(sys.argv[1])
with tempfile.TemporaryDirectory() as folder:
    t0 = time.perf_counter()
    r = tuning.tune(a["problem"], a["grid"], budget=a["budget"], record=10, kernel=a["kernel"], folder=folder,
                    progress=False)
    seconds = time.perf_counter() - t0
print(json.dumps(dict(seconds=seconds, kernel_s=r.summary["seconds_kernel"], n_cells=r.summary["n_cells"],
                      n_stable=r.summary["n_stable"], peak_GiB=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)))
"""


def _scale(problem, kernel, width, budget):
    """Time and peak resident memory of one tune call in a fresh process."""
    arg = json.dumps(dict(problem=problem, grid={**SCALE_GRID, "width": [width]}, budget=budget, kernel=kernel))
    out = subprocess.run([sys.executable, "-c", _CHILD, arg], capture_output=True, text=True, check=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def _tune(cfg, grid, kernel="resolved"):
    problem = {k: cfg[k] for k in ("dataset", "n_train", "n_test", "n_agents")}
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        r = tuning.tune(problem, {**grid, "width": [cfg["width"]]}, budget=cfg["budget"], record=cfg["record"],
                        kernel=kernel, folder=folder, progress=False)
        return time.perf_counter() - t0, r


def _train_one(cfg):
    """Seconds of one compiled training run (DGD, ring), recorded like the tuner."""
    import jax.numpy as jnp

    p = problems.problem(cfg["dataset"], cfg["n_train"], cfg["n_test"], cfg["n_agents"], cfg["width"],
                         with_kernel=False)
    W = graphs.mixing_matrix(graphs.topology("ring", cfg["n_agents"]))
    lr = 1e-3                       # the cost does not depend on the step size; a small one cannot diverge
    steps = tuning.recording_steps(cfg["budget"], cfg["record"])
    x, y, xt = jnp.asarray(p.x), jnp.asarray(p.y), jnp.asarray(p.x_test)
    train = lambda s: training.simulate("dgd", p.apply_fn, p.params0, W, x, y, p.owner, lr, s, x_test=xt,
                                        dtype=cfg["train_dtype"])
    train([0, 1])                                            # compiles
    return seconds(lambda: train(steps))[0]


def run(quick: bool) -> list[dict]:
    cfg = QUICK if quick else FULL
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2000, 2000)), rng.standard_normal((2000, 2000))
    peak = 2 * 2000 ** 3 / seconds(lambda: a @ b, 3)[0] / 1e9
    t_train = _train_one(cfg)
    N, C = cfg["n_train"], 10
    case = (f"{cfg['dataset']} N={N}, C={C}, Q={cfg['n_agents']}, width {cfg['width']}, {cfg['budget']} its, "
            f"training in {cfg['train_dtype']}")
    rows = []
    for name, grid, kernel, target, per in (
            ("landscape 24 configs, resolved kernel, per config", dict(topology=TOPOLOGIES,
             lr_factor=[0.1, 0.25, 0.5, 0.75, 0.95, 1.2]), "resolved", 50.0, True),
            ("landscape 96 configs, resolved kernel, per config", dict(topology=TOPOLOGIES,
             lr_factor=list(np.round(np.linspace(0.05, 1.2, 24), 3))), "resolved", 50.0, True),
            ("single config, resolved kernel", dict(lr_factor=[0.5]), "resolved", 5.0, False),
            ("100 configs, shared kernel, all together", dict(topology=TOPOLOGIES,
             lr_factor=list(np.round(np.linspace(0.04, 1.0, 25), 2))), "shared", 1.0, False)):
        t, r = _tune(cfg, grid, kernel)
        L = r.summary["n_cells"]
        n = N * C if kernel == "resolved" else N
        cols = L if kernel == "resolved" else L * C
        t_rec = max(r.summary["seconds_predict"] - r.summary["seconds_kernel"], 1e-9)
        gflops = 2 * n * n * cols * cfg["budget"] / t_rec / 1e9
        kflops = 2 * (N + cfg["n_test"]) * N * (C * C if kernel == "resolved" else C) * cfg["width"] \
            / r.summary["seconds_kernel"] / 1e9
        Kr, Ar = rng.standard_normal((n, n)), rng.standard_normal((n, cols))
        bare = 2 * n * n * cols / seconds(lambda: Kr @ Ar, 3)[0] / 1e9   # the recursion's product alone
        del Kr, Ar
        bandwidth = 8 * n * n * cfg["budget"] / t_rec / 1e9
        ours = t / L if per else t
        rows.append(row("tune", f"{name}; {case}", t_train, ours,
                        f"tune {t:.3g} s for {L} configs (kernel {r.summary['seconds_kernel']:.3g} s, {kflops:.3g} "
                        f"GFLOP/s = {kflops / peak:.1%} of peak); training one "
                        f"config {t_train:.3g} s; recursion {gflops:.3g} GFLOP/s = {gflops / peak:.1%} of the "
                        f"{peak:.3g} GFLOP/s matmul peak (a bare ({n}x{n})·({n}x{cols}) product, the recursion's one per "
                        f"iteration: {bare:.3g} GFLOP/s), {bandwidth:.3g} GB/s of kernel "
                        f"read; issue target >= {target:g}x" + (" per config" if per else ""),
                        target=None if quick else target, n_configs=L, tune_s=t, kernel_s=r.summary["seconds_kernel"],
                        recursion_GFLOPs=gflops, fraction_of_peak=gflops / peak,
                        kernel_GFLOPs=kflops, kernel_fraction_of_peak=kflops / peak, bare_product_GFLOPs=bare,
                        bandwidth_GBps=bandwidth))
    for problem, kernel, width, budget, limit in (SCALE_QUICK if quick else SCALE_FULL):
        m = _scale(problem, kernel, width, budget)
        fits = m["peak_GiB"] <= limit
        rows.append(row("tune", f"scale: {m['n_cells']} configs, {kernel} kernel; {problem['dataset']} "
                        f"N={problem['n_train']}, N_test={problem['n_test']}, Q={problem['n_agents']}, width {width}, "
                        f"{budget} its", np.nan, m["seconds"],
                        f"peak memory {m['peak_GiB']:.2f} GiB (limit {limit} GiB: {'within' if fits else 'over'}); "
                        f"{m['seconds']:.3g} s (kernel {m['kernel_s']:.3g} s), {m['n_stable']} of {m['n_cells']} "
                        "configs stable", peak_GiB=m["peak_GiB"], limit_GiB=limit, fits=bool(fits),
                        kernel_s=m["kernel_s"], n_configs=m["n_cells"]))
    return rows
