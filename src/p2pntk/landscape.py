r"""The hyper-parameter landscape: final test error over step size × topology, from one kernel.

Every grid point is predicted in closed form (:func:`p2pntk.dynamics.linearized_sweep`)
and a few are also actually trained, timing both in the same run.
"""
from __future__ import annotations

import time

import numpy as np

from . import dynamics, graphs, kernels, reproduction, results, stability, training
from .metrics import error_rate, mse


def sweep(config: dict, lr_factors, topologies, sample) -> dict:
    r"""Hyper-parameter landscape: final test error over step size × topology.

    Every grid point is predicted in closed form from **one** kernel (the empirical
    NTK at :math:`\theta_0`, output-resolved), all together by
    :func:`p2pntk.dynamics.linearized_sweep` (one pass over the kernel per iteration); the points in ``sample`` (pairs of
    indices into ``lr_factors`` × ``topologies``) are also actually trained. The
    wall-clock times of both are measured in the same run. ``config`` fixes the
    rest (keys of :data:`p2pntk.reproduction.DEFAULTS`); the last of ``config["steps"]`` is the
    training length.
    """
    cfg = reproduction.full_config(config)
    p, d, x, y, xt = reproduction.problem(cfg)
    owner, apply_fn, params0, f0, f0t = p.owner, p.apply_fn, p.params0, p.f0, p.f0_test
    k_end = [cfg["steps"][-1]]
    shape = (len(lr_factors), len(topologies))
    act_err, act_loss = np.full(shape, np.nan), np.full(shape, np.nan)
    t0 = time.perf_counter()
    K = np.asarray(kernels.empirical_ntk(apply_fn, params0, x))
    Kt = np.asarray(kernels.empirical_ntk(apply_fn, params0, xt, x))
    t_kernel = time.perf_counter() - t0
    Ws = [graphs.mixing_matrix(graphs.topology(t, cfg["n_agents"], seed=cfg["seed"]), cfg["rule"]) for t in topologies]
    bounds = np.array([stability.dgd_step_size_bound(W, K, owner) for W in Ws])
    lr = np.array(lr_factors)[:, None] * bounds[None, :]
    r = dynamics.linearized_sweep(cfg["algorithm"], Ws, K, owner, f0, y, lr, k_end, K_test=Kt, f0_test=f0t)
    pred_err = error_rate(r.test[:, :, -1], d["labels_test"]).mean(axis=-1)         # (lrs, topologies)
    pred_loss = mse(r.test[:, :, -1], d["y_test"]).mean(axis=-1)
    t_pred = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i, j in sample:
        r = training.simulate(cfg["algorithm"], apply_fn, params0, Ws[j], x, y, owner, lr[i, j], k_end, x_test=xt)
        act_err[i, j] = error_rate(r.test, d["labels_test"])[-1].mean()
        act_loss[i, j] = mse(r.test, d["y_test"])[-1].mean()
    t_train = time.perf_counter() - t0
    return dict(lr_factors=np.asarray(lr_factors), topologies=np.asarray(topologies), lr=lr,
                pred_error=pred_err, actual_error=act_err, pred_loss=pred_loss, actual_loss=act_loss,
                sample=np.asarray(sample), seconds_predict_all=np.asarray(t_pred), seconds_kernel=np.asarray(t_kernel),
                seconds_train_sample=np.asarray(t_train), n_sample=np.asarray(len(sample)))


def cached_sweep(config: dict, lr_factors, topologies, sample, *, folder=None) -> dict:
    """:func:`sweep` through the results cache. Timings are part of the cached result
    (they describe the run that produced it)."""
    cfg = reproduction.full_config(config)
    params = dict(config=cfg, lr_factors=list(lr_factors), topologies=list(topologies),
                  sample=[list(map(int, s)) for s in sample])
    return results.cached("sweep", params, lambda: sweep(cfg, lr_factors, topologies, sample), folder=folder)
