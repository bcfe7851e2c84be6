"""Every peer-to-peer method's closed form versus training it, and link-failure realisations in one batch.

Each method: for every algorithm of :data:`p2pntk.algorithms.ALGORITHMS`, baseline
:func:`p2pntk.training.simulate` of the Q = 8 networks (digits, ring, float64; compiled:
one call on [0, 1] beforehand compiles the method's step and the outputs, its time is in
the notes), ours :func:`p2pntk.dynamics.linearized_outputs` with the output-resolved
empirical NTK, the same recorded iterations and train and test outputs. The kernel is
shared by all methods, so it is not in these rows: its time (train + test, including
its JIT) is in their notes and counted once in the row ``all methods``, whose baseline
is the sum of the training times and ours the kernel plus the sum of the closed forms.
``n_state`` is the number of state variables of the method (the names of its iteration
matrix, :func:`p2pntk.stability.affine_map`; gradient caches not counted) and
``movement_error`` the prediction error on the test outputs at the last iteration
relative to how far the networks moved (:func:`p2pntk.metrics.movement_error`). Ours
includes the stability check of :func:`~p2pntk.dynamics.linearized_outputs` (for centralised
GD an eigen-decomposition of the NC x NC kernel: most of that row's time).

Step sizes: half of each method's critical step size
(:func:`p2pntk.stability.critical_step_size`) on the homogeneous model where every
agent's loss has the kernel's largest local curvature
:math:`L = \\max_q \\lambda_{\\max}(K_{qq})/N_q` along one common direction (K = L 1 1^T,
one point per agent, the same W). The exact threshold of the resolved kernel itself is
out of reach here: its iteration matrix has (states) x Q x NC rows (up to 20 480 at
N = 128, C = 10), each eigen-decomposition of the scan takes minutes. For DGD, ATC and CTA the
model's threshold is their sufficient bound (:func:`p2pntk.stability.step_size_bound`);
measured once on the shared kernel of the quick problem (N = 40, width 256), it was below
every method's exact threshold (0.43 to 0.88 of it; so the step sizes are 0.2 to 0.45 of it).

Link failures: DGD on the ring where every edge fails with probability p = 0.3 at every
iteration (:func:`p2pntk.graphs.link_failures`, one realisation per seed). Ours: the
empirical kernel (train + test; the time measured for the first section, same problem,
including its JIT) plus one :func:`p2pntk.dynamics.linearized_sweep` of all realisations.
Baseline: training one realisation takes ``train_s_per_realisation`` (the mean over a
few realisations, compiled after a warm-up call), extrapolated x the number of
realisations. ``max_abs_diff_single`` is the largest difference between one realisation's
column of the sweep and its own :func:`p2pntk.dynamics.linearized_outputs`;
``movement_error`` the largest over the trained realisations, against their columns.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from common import row, seconds

from p2pntk import algorithms, coefficients, dynamics, graphs, kernels, metrics, problems, stability, training

FULL = dict(n_train=128, n_test=128, width=4096, steps=[0, 50, 100, 200], realisations=64, n_trained=3)
QUICK = dict(n_train=40, n_test=40, width=256, steps=[0, 10, 25, 50], realisations=8, n_trained=2)
Q = 8
P_FAIL = 0.3
LR_FACTOR = 0.5
TARGET = 20.0   # link-failure realisations: predicted together >= 20x faster than trained (full size)


def _homogeneous():
    """The model K = 1 1^T with one point per agent (local curvature 1 along one common direction)."""
    return np.ones((Q, Q)), np.arange(Q)


def step_size(algorithm, W, L) -> float:
    """``LR_FACTOR`` x the critical step size of ``algorithm`` on the homogeneous model of curvature ``L``."""
    K1, owner1 = _homogeneous()
    return LR_FACTOR * stability.critical_step_size(algorithm, W, K1, owner1) / L


def n_state(algorithm, W) -> int:
    """Number of state variables of ``algorithm`` (its iteration matrix's names, on a tiny system)."""
    K1, owner1 = _homogeneous()
    zeros = np.zeros((Q, 1))
    system = coefficients.CoefficientSystem([W], K1, owner1, zeros, zeros)
    return len(stability.affine_map(algorithm, W, system, 1e-3, offset=False).names)


def _setup(cfg):
    p = problems.digits_problem(cfg["n_train"], cfg["n_test"], Q, cfg["width"], with_kernel=False)
    x, xt = jnp.asarray(p.x), jnp.asarray(p.x_test)

    def kernel():
        return (np.asarray(kernels.empirical_ntk(p.apply_fn, p.params0, x)),
                np.asarray(kernels.empirical_ntk(p.apply_fn, p.params0, xt, x)))

    t_kernel, (K, Kt) = seconds(kernel)
    W = graphs.mixing_matrix(graphs.topology("ring", Q))
    L = 2.0 / stability.step_size_bound("atc", W, K, p.owner)     # ATC's bound is 2 / L
    return p, x, xt, K, Kt, W, L, t_kernel


def _method_rows(cfg, p, x, xt, K, Kt, W, L, t_kernel):
    steps = cfg["steps"]
    y = jnp.asarray(p.y)
    size = f"Q={Q}, N={cfg['n_train']}, width {cfg['width']}, ring, {steps[-1]} its"
    common = dict(n_train=cfg["n_train"], n_test=cfg["n_test"], width=cfg["width"], iterations=steps[-1],
                  n_recorded=len(steps), kernel_s=t_kernel)
    rows = []
    for a in algorithms.ALGORITHMS:
        lr = step_size(a, W, L)
        train = lambda s: training.simulate(a, p.apply_fn, p.params0, W, x, y, p.owner, lr, s, x_test=xt)
        t_first, _ = seconds(lambda: train([0, 1]))              # compiles this method's step and the outputs
        t_train, act = seconds(lambda: train(steps))
        t_pred, pred = seconds(lambda: dynamics.linearized_outputs(a, W, K, p.owner, p.f0, p.y, lr, steps,
                                                                   K_test=Kt, f0_test=p.f0_test))
        err = float(metrics.movement_error(pred.test, act.test, p.f0_test)[-1])
        rows.append(row("methods", f"{a}, {size}", t_train, t_pred,
                        f"simulate (compiled; first call, 1 step: {t_first:.3g} s) vs closed form with the resolved "
                        f"empirical NTK, kernel not included (computed once for all methods: {t_kernel:.3g} s incl. "
                        f"its JIT, counted in the row 'all methods'); lr = {LR_FACTOR} x critical step size of the "
                        f"homogeneous model = {lr:.3g}",
                        algorithm=a, n_state=n_state(a, W), lr=lr, movement_error=err, train_first_call_s=t_first,
                        **common))
    base, ours = sum(r["baseline_s"] for r in rows), sum(r["ours_s"] for r in rows)
    rows.append(row("methods", f"all {len(rows)} methods, {size}, kernel included", base, t_kernel + ours,
                    f"sum of the {len(rows)} trainings (compiled) vs the empirical kernel once ({t_kernel:.3g} s, "
                    f"incl. its JIT) + the {len(rows)} closed forms ({ours:.3g} s)",
                    n_methods=len(rows), max_movement_error=max(r["movement_error"] for r in rows), **common))
    return rows


def _failure_row(cfg, p, x, xt, K, Kt, W, L, t_kernel, quick):
    n_real, n_trained, its = cfg["realisations"], cfg["n_trained"], cfg["steps"][-1]
    lr = step_size("dgd", W, L)
    Ws = [graphs.link_failures(W, P_FAIL, seed=s) for s in range(n_real)]
    t_sweep, sweep = seconds(lambda: dynamics.linearized_sweep("dgd", Ws, K, p.owner, p.f0, p.y, [lr], [its],
                                                               K_test=Kt, f0_test=p.f0_test))
    single = dynamics.linearized_outputs("dgd", graphs.link_failures(W, P_FAIL, seed=n_real - 1), K, p.owner, p.f0,
                                         p.y, lr, [its], K_test=Kt, f0_test=p.f0_test)
    diff = float(max(np.abs(sweep.test[0, n_real - 1] - single.test).max(),
                     np.abs(sweep.train[0, n_real - 1] - single.train).max()))
    y = jnp.asarray(p.y)
    train = lambda s: training.simulate("dgd", p.apply_fn, p.params0, Ws[s], x, y, p.owner, lr, [its], x_test=xt)
    t_first, _ = seconds(lambda: train(0))       # compiles the (its, Q, Q) schedule's loop
    times, errs = [], []
    for s in range(n_trained):
        t, act = seconds(lambda: train(s))
        times.append(t)
        errs.append(float(metrics.movement_error(sweep.test[0, s], act.test, p.f0_test)[-1]))
    per = float(np.mean(times))
    ours = t_kernel + t_sweep
    return row("methods", f"DGD, {n_real} link-failure realisations (p={P_FAIL}), Q={Q}, N={cfg['n_train']}, "
                          f"width {cfg['width']}, ring, {its} its", per * n_real, ours,
               f"empirical kernel ({t_kernel:.3g} s incl. its JIT, measured once for this problem) + one "
               f"linearized_sweep of all {n_real} realisations ({t_sweep:.3g} s) vs training (compiled; first call "
               f"{t_first:.3g} s) timed on {n_trained} realisations, mean {per:.3g} s, extrapolated x{n_real}"
               + ("" if quick else f"; target >= {TARGET:g}x"),
               target=None if quick else TARGET, n_realisations=n_real, n_trained=n_trained,
               train_s_per_realisation=per, train_first_call_s=t_first, kernel_s=t_kernel, sweep_s=t_sweep, lr=lr,
               p_fail=P_FAIL, max_abs_diff_single=diff, movement_error=max(errs), n_train=cfg["n_train"],
               n_test=cfg["n_test"], width=cfg["width"], iterations=its)


def run(quick: bool) -> list[dict]:
    cfg = QUICK if quick else FULL
    setup = _setup(cfg)
    return _method_rows(cfg, *setup) + [_failure_row(cfg, *setup, quick)]
