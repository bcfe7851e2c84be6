r"""The hyper-parameter landscape: final test error over step size × topology, from one kernel.

Every grid point is predicted in closed form (:func:`p2pntk.dynamics.linearized_sweep`)
and a few are also actually trained, timing both in the same run.
"""
from __future__ import annotations

import time

import numpy as np

from . import dynamics, graphs, kernels, reproduction, results, stability, training
from .metrics import error_rate, mse


def check_sample(sample, n_lr_factors: int, n_topologies: int) -> list:
    """The trained cells ``sample`` as a list of (step index, topology index) pairs, checked
    against the grid before anything is computed (else ``ValueError`` naming the pair).

    Example:
        >>> check_sample([[0, 1], (2, 0)], 3, 2)
        [(0, 1), (2, 0)]
        >>> check_sample([[0, 4]], 3, 2)
        Traceback (most recent call last):
        ...
        ValueError: sample[0] = [0, 4] is outside the grid: each pair is (step index in 0..2, topology index in 0..1) for 3 step sizes x 2 topologies
    """
    grid = (f"each pair is (step index in 0..{n_lr_factors - 1}, topology index in 0..{n_topologies - 1}) for "
            f"{n_lr_factors} step sizes x {n_topologies} topologies")
    try:
        pairs = [tuple(s) for s in sample]
    except TypeError:
        raise ValueError(f"sample must be a list of (step index, topology index) pairs, got {sample!r}; {grid}") from None
    out = []
    for n, pair in enumerate(pairs):
        ok = len(pair) == 2 and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair)
        if not ok or not (0 <= pair[0] < n_lr_factors and 0 <= pair[1] < n_topologies):
            raise ValueError(f"sample[{n}] = {list(pair)} is outside the grid: {grid}")
        out.append((int(pair[0]), int(pair[1])))
    return out


def sweep(config: dict, lr_factors, topologies, sample) -> dict:
    r"""Hyper-parameter landscape: final test error over step size × topology.

    Every grid point is predicted in closed form from **one** kernel (the empirical
    NTK at :math:`\theta_0`, output-resolved), all together by
    :func:`p2pntk.dynamics.linearized_sweep` (one pass over the kernel per iteration); the points in ``sample`` (pairs of
    indices into ``lr_factors`` × ``topologies``) are also actually trained. The
    wall-clock times of both are measured in the same run. ``config`` fixes the
    rest (keys of :data:`p2pntk.reproduction.DEFAULTS`); the last of ``config["steps"]`` is the
    training length. ``sample`` is checked first (:func:`check_sample`).

    Diverged cells are marked, not reported as numbers: ``pred_diverged`` (the closed form
    left every bound, :class:`p2pntk.dynamics.SweepResult`) and ``actual_diverged`` (training
    stopped with NaN/inf outputs; False where not trained), and their errors and losses are NaN.
    """
    sample = check_sample(sample, len(lr_factors), len(topologies))
    cfg = reproduction.full_config(config)
    p, d, x, y, xt = reproduction.problem(cfg)
    owner, apply_fn, params0, f0, f0t = p.owner, p.apply_fn, p.params0, p.f0, p.f0_test
    k_end = [cfg["steps"][-1]]
    shape = (len(lr_factors), len(topologies))
    act_err, act_loss = np.full(shape, np.nan), np.full(shape, np.nan)
    act_div = np.zeros(shape, dtype=bool)
    t0 = time.perf_counter()
    K = np.asarray(kernels.empirical_ntk(apply_fn, params0, x))
    Kt = np.asarray(kernels.empirical_ntk(apply_fn, params0, xt, x))
    t_kernel = time.perf_counter() - t0
    Ws = [graphs.mixing_matrix(graphs.topology(t, cfg["n_agents"], seed=cfg["seed"]), cfg["rule"]) for t in topologies]
    bounds = np.array([stability.dgd_step_size_bound(W, K, owner) for W in Ws])
    lr = np.array(lr_factors)[:, None] * bounds[None, :]
    r = dynamics.linearized_sweep(cfg["algorithm"], Ws, K, owner, f0, y, lr, k_end, K_test=Kt, f0_test=f0t)
    nan_if = lambda div, v: np.where(div, np.nan, v)
    pred_err = nan_if(r.diverged, error_rate(r.test[:, :, -1], d["labels_test"]).mean(axis=-1))   # (lrs, topologies)
    pred_loss = nan_if(r.diverged, mse(r.test[:, :, -1], d["y_test"]).mean(axis=-1))
    t_pred = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i, j in sample:
        try:
            r_act = training.simulate(cfg["algorithm"], apply_fn, params0, Ws[j], x, y, owner, lr[i, j], k_end,
                                      x_test=xt)
        except FloatingPointError:             # training diverged: marked, no number
            act_div[i, j] = True
            continue
        act_err[i, j] = error_rate(r_act.test, d["labels_test"])[-1].mean()
        act_loss[i, j] = mse(r_act.test, d["y_test"])[-1].mean()
    t_train = time.perf_counter() - t0
    return dict(lr_factors=np.asarray(lr_factors), topologies=np.asarray(topologies), lr=lr,
                pred_error=pred_err, actual_error=act_err, pred_loss=pred_loss, actual_loss=act_loss,
                pred_diverged=r.diverged, pred_diverged_at=r.diverged_at, actual_diverged=act_div,
                sample=np.asarray(sample), seconds_predict_all=np.asarray(t_pred), seconds_kernel=np.asarray(t_kernel),
                seconds_train_sample=np.asarray(t_train), n_sample=np.asarray(len(sample)))


def cached_sweep(config: dict, lr_factors, topologies, sample, *, folder=None) -> dict:
    """:func:`sweep` through the results cache. Timings are part of the cached result
    (they describe the run that produced it)."""
    sample = check_sample(sample, len(lr_factors), len(topologies))
    cfg = reproduction.full_config(config)
    params = dict(config=cfg, lr_factors=list(lr_factors), topologies=list(topologies),
                  sample=[list(map(int, s)) for s in sample])
    return results.cached("sweep", params, lambda: sweep(cfg, lr_factors, topologies, sample), folder=folder)
