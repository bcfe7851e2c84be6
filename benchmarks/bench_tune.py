r"""Tuning without training (:func:`p2pntk.tune`) against training the networks it ranks.

Baseline: :func:`p2pntk.training.simulate` of one configuration (DGD on a ring, Q agents, the
problem below), outputs recorded like the tuner's, in the precision the book trains in at this
size (float32 at the ``paper`` size, float64 for the quick case), timed compiled (one short call
beforehand). Ours: :func:`p2pntk.tuning.tune` of the same problem, kernel included, no cache
(a fresh folder), for

- a landscape of L = 24 configurations (6 step factors x 4 topologies), output-resolved
  empirical kernel: time per configuration against training one (issue target >= 50x; the flop
  limit is :math:`3P/(NC^2)` per configuration);
- a single configuration, output-resolved (target >= 5x);
- 100 configurations (25 step factors x 4 topologies) with the shared kernel (output-traced,
  N x N): all of them against training one (target >= 1x: 100 configurations in less time
  than training one).

``fraction_of_peak`` and ``bandwidth_GBps``: the recursion's flop rate
:math:`2 (NC)^2 L` per iteration over the time of the recursion alone (the tune's time minus
its kernel), as a fraction of the float64 matmul rate measured in the same run (best of 3
square products of size 2000), and the kernel bytes read per second (:math:`8 (NC)^2` per
iteration, one pass for all L configurations).
"""
from __future__ import annotations

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
            ("single config, resolved kernel", dict(lr_factor=[0.5]), "resolved", 5.0, False),
            ("100 configs, shared kernel, all together", dict(topology=TOPOLOGIES,
             lr_factor=list(np.round(np.linspace(0.04, 1.0, 25), 2))), "shared", 1.0, False)):
        t, r = _tune(cfg, grid, kernel)
        L = r.summary["n_cells"]
        n = N * C if kernel == "resolved" else N
        cols = L if kernel == "resolved" else L * C
        t_rec = max(r.summary["seconds_predict"] - r.summary["seconds_kernel"], 1e-9)
        gflops = 2 * n * n * cols * cfg["budget"] / t_rec / 1e9
        ours = t / L if per else t
        rows.append(row("tune", f"{name}; {case}", t_train, ours,
                        f"tune {t:.3g} s for {L} configs (kernel {r.summary['seconds_kernel']:.3g} s); training one "
                        f"config {t_train:.3g} s; recursion {gflops:.3g} GFLOP/s = {gflops / peak:.1%} of the "
                        f"{peak:.3g} GFLOP/s matmul peak, {8 * n * n * cfg['budget'] / t_rec / 1e9:.3g} GB/s of kernel "
                        f"read; issue target >= {target:g}x" + (" per config" if per else ""),
                        target=None if quick else target, n_configs=L, tune_s=t, kernel_s=r.summary["seconds_kernel"],
                        recursion_GFLOPs=gflops, fraction_of_peak=gflops / peak,
                        bandwidth_GBps=8 * n * n * cfg["budget"] / t_rec / 1e9))
    return rows
