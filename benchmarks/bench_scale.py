"""Predictor time and peak memory versus the number of agents Q and of training points N.

Synthetic PSD kernels (analytic ReLU NTK of random unit vectors, :func:`common.synthetic_kernel`;
no network), shared by C = 10 outputs; DGD on a ring (Q = 2: the single edge; Metropolis weights, CSR mixing from
Q >= 32), step size half the DGD bound, N_test = N/4. Per case:

- ``per_iter_s``: best of 3 times of k steps of the recursion (the DGD definition's step on
  :class:`p2pntk.coefficients.CoefficientSystem`, the loop of :func:`p2pntk.dynamics.linearized_outputs`), divided by k;
- ``total_s``: one call with ``steps=[k]`` (set-up + k iterations + outputs of all agents);
- ``peak_MiB``: the kernels passed in plus the peak of memory allocated during the call,
  measured with ``tracemalloc`` (NumPy reports its buffers to it), in-process.

Exponents are least-squares log-log slopes of ``per_iter_s``; the largest sizes that
fit in 24 GiB extrapolate the measured memory (linear in Q, quadratic in N).
Baseline for the ratio: the former dense recursion (every agent's K a_q on all rows,
dense mixing), timed at the largest Q of the sweep (3 iterations, once: it is Q times slower).
"""
from __future__ import annotations

import tracemalloc

import numpy as np
from common import row, seconds, synthetic_kernel

from p2pntk import algorithms, coefficients, dynamics, graphs, metrics, stability

C = 10
BUDGET = 24 * 2 ** 30
FULL = dict(Qs=[2, 4, 8, 16, 32, 64, 128, 256], N_for_Q=2048, Ns=[128, 256, 512, 1024, 2048, 4096, 8192], Q_for_N=8,
            iterations=20, big=(256, 4096))
QUICK = dict(Qs=[2, 4, 8, 16, 32], N_for_Q=128, Ns=[64, 128, 256], Q_for_N=4, iterations=10, big=None)


def _setup(Q, K, Kt, seed=0):
    N = K.shape[0]
    rng = np.random.default_rng(seed)
    owner = rng.permutation(np.arange(N) % Q)
    W = graphs.mixing_matrix(graphs.topology("ring" if Q >= 3 else "complete", Q))
    f0, y = 0.1 * rng.standard_normal((N, C)), rng.standard_normal((N, C))
    f0t = 0.1 * rng.standard_normal((Kt.shape[0], C))
    lr = 0.5 * stability.dgd_step_size_bound(W, K, owner)
    return dict(algorithm="dgd", W=W, K=K, owner=owner, f0=f0, y=y, lr=lr, K_test=Kt, f0_test=f0t)


def _predict(args, k):
    return dynamics.linearized_outputs(steps=[k], **args)


def _iterate(step, A, iterations, repeat=3):
    def loop():
        B = A
        for _ in range(iterations):
            B = step(B)
        return B
    return seconds(loop, repeat)[0] / iterations


def _system(args):
    return coefficients.CoefficientSystem([args["W"]], args["K"], args["owner"], args["f0"], args["y"],
                                          args["K_test"], args["f0_test"])


def measure(Q, K, Kt, iterations):
    """per-iteration time, total time, peak memory (MiB) of one prediction."""
    args = _setup(Q, K, Kt)
    tk, _ = seconds(lambda: _predict(args, iterations))
    sys = _system(args)
    ops, step = sys.ops(args["lr"]), algorithms.get("dgd").step
    it = _iterate(lambda B: step(ops, {"x": B}, 0)["x"], np.zeros((Q,) + sys.resid0.shape), iterations)
    del sys
    tracemalloc.start()
    _predict(args, iterations)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return it, tk, (peak + K.nbytes + Kt.nbytes) / 2 ** 20


def dense_per_iter(Q, K, Kt, iterations):
    """Per-iteration time of the former dense recursion (all rows for every agent, dense W)."""
    sys = _system(_setup(Q, K, Kt))

    def step(B):
        G = sys.d[:, :, None] * (sys.apply(sys.Kmat, B) + sys.resid0[None])
        return (sys.W @ B.reshape(Q, -1)).reshape(B.shape) - 0.1 * G

    return _iterate(step, np.zeros((Q,) + sys.resid0.shape), min(iterations, 3), repeat=1)


def _largest(coef, budget_mib):
    """Largest positive x with polyval(coef, x) <= budget."""
    roots = np.roots(np.asarray(coef) - np.r_[np.zeros(len(coef) - 1), budget_mib])
    real = roots[np.isreal(roots)].real
    return float(real[real > 0].max())


def _size_rows(varied: str, sizes, measured) -> list[dict]:
    """One row per (Q, N) of a scan over ``varied``, from (per-iteration s, total s, peak MiB)."""
    return [row("scale", f"Q={Q}, N={N}", np.nan, it, f"per iteration, vs {varied}; peak {mem:.0f} MiB", Q=Q, N=N,
                per_iter_s=it, total_s=tot, peak_MiB=mem) for (Q, N), (it, tot, mem) in zip(sizes, measured)]


def run(quick: bool) -> list[dict]:
    cfg = QUICK if quick else FULL
    k = cfg["iterations"]
    rows = []
    K, Kt = synthetic_kernel(cfg["N_for_Q"], cfg["N_for_Q"] // 4)
    byQ = np.array([measure(Q, K, Kt, k) for Q in cfg["Qs"]])
    Qmax = cfg["Qs"][-1]
    t_dense = dense_per_iter(Qmax, K, Kt, k)
    slope_Q = metrics.loglog_slope(cfg["Qs"], byQ[:, 0])
    fit_Q = np.polyfit(cfg["Qs"], byQ[:, 2], 1)
    N = cfg["N_for_Q"]
    rows += _size_rows("Q", [(Q, N) for Q in cfg["Qs"]], byQ)
    largest_Q = _largest(fit_Q, BUDGET / 2 ** 20)
    rows.append(row("scale", f"Q={Qmax}, N={N}: dense vs row-blocked recursion", t_dense, byQ[-1, 0],
                    f"former dense recursion vs ours, per iteration; time ~ Q^{slope_Q:.2f} (fit over Q); "
                    f"memory {fit_Q[1]:.0f} MiB + {fit_Q[0]:.2f} MiB/agent -> largest Q in 24 GiB at N={N}: "
                    f"{largest_Q:.3g}",
                    exponent_Q=slope_Q, largest_Q_24GiB=largest_Q, N=N, Q=Qmax))
    byN = []
    for n in cfg["Ns"]:
        K, Kt = synthetic_kernel(n, n // 4)
        byN.append(measure(cfg["Q_for_N"], K, Kt, k))
        del K, Kt
    byN = np.array(byN)
    slope_N = metrics.loglog_slope(cfg["Ns"], byN[:, 0])
    fit_N = np.polyfit(cfg["Ns"], byN[:, 2], 2)
    Q = cfg["Q_for_N"]
    rows += _size_rows("N", [(Q, n) for n in cfg["Ns"]], byN)
    largest_N = _largest(fit_N, BUDGET / 2 ** 20)
    rows.append(row("scale", f"Q={Q}: fit over N", np.nan, byN[-1, 0],
                    f"time per iteration ~ N^{slope_N:.2f}; memory quadratic in N -> largest N in 24 GiB at Q={Q}: "
                    f"{largest_N:.4g}", exponent_N=slope_N, largest_N_24GiB=largest_N, Q=Q))
    if cfg["big"]:
        Qb, Nb = cfg["big"]
        K, Kt = synthetic_kernel(Nb, Nb // 4)
        it, tot, mem = measure(Qb, K, Kt, k)
        rows.append(row("scale", f"Q={Qb}, N={Nb}, C={C}", np.nan, it, f"issue requirement: fits in 24 GiB "
                        f"(peak {mem / 1024:.2f} GiB), {k} iterations + outputs in {tot:.3g} s",
                        Q=Qb, N=Nb, per_iter_s=it, total_s=tot, peak_MiB=mem, fits_24GiB=bool(mem * 2 ** 20 < BUDGET)))
    return rows
