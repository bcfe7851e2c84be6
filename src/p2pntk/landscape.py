r"""The hyper-parameter landscape: final test error over step size × topology, from one kernel.

A view of :func:`p2pntk.tuning.tune` for one method, as (step size, topology) arrays: every
grid point is predicted in closed form (:func:`p2pntk.dynamics.linearized_sweep`) and a few
are also actually trained.
"""
from __future__ import annotations

import numpy as np

from . import reproduction, tuning


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


def sweep(config: dict, lr_factors, topologies, sample, *, folder=None) -> dict:
    r"""Hyper-parameter landscape: final test error over step size × topology, as (I, T) arrays.

    A view of :func:`p2pntk.tuning.tune` (the one implementation) for one method: every grid
    point is predicted in closed form from **one** kernel (the empirical NTK at
    :math:`\theta_0`, output-resolved), all together by
    :func:`p2pntk.dynamics.linearized_sweep`; the points in ``sample`` (pairs of indices into
    ``lr_factors`` × ``topologies``) are also actually trained, and the wall-clock times of both
    are those of the run that computed them. ``config`` fixes the rest (keys of
    :data:`p2pntk.reproduction.DEFAULTS`: data, Q, rule, algorithm, width, depth, activation,
    partition, seed, ``train_dtype``; the last of ``config["steps"]`` is the training length).
    ``sample`` is checked first (:func:`check_sample`).

    Diverged cells are marked, not reported as numbers: ``pred_diverged`` (the closed form
    left every bound, :class:`p2pntk.dynamics.SweepResult`) and ``actual_diverged`` (training
    stopped with NaN/inf outputs; False where not trained), and their errors and losses are NaN.
    """
    sample = check_sample(sample, len(lr_factors), len(topologies))
    cfg = reproduction.full_config(config)
    if not cfg["center"]:
        raise ValueError("the landscape uses centred networks (center=True), got center=False")
    problem = {k: cfg[k] for k in tuning.PROBLEM}
    grid = dict(algorithm=[cfg["algorithm"]], topology=list(topologies), rule=[cfg["rule"]],
                lr_factor=list(lr_factors), width=[cfg["width"]])
    T = len(topologies)
    r = tuning.tune(problem, grid, budget=cfg["steps"][-1], record=1, train=[i * T + j for i, j in sample],
                    train_dtype=cfg["train_dtype"], folder=folder, progress=False)
    t = r.table.set_index("cell").sort_index()
    shape = (len(lr_factors), T)
    col = lambda name: t[name].to_numpy().reshape(shape)
    s = r.summary
    return dict(lr_factors=np.asarray(lr_factors), topologies=np.asarray(topologies), lr=col("lr"),
                pred_error=col("pred_error"), actual_error=col("actual_error"), pred_loss=col("pred_loss"),
                actual_loss=col("actual_loss"), pred_diverged=col("diverged"), pred_diverged_at=col("diverged_at"),
                actual_diverged=col("actual_diverged"), sample=np.asarray(sample),
                seconds_predict_all=np.asarray(s["seconds_predict"]), seconds_kernel=np.asarray(s["seconds_kernel"]),
                seconds_train_sample=np.asarray(s.get("seconds_train", 0.0)), n_sample=np.asarray(len(sample)))


def cached_sweep(config: dict, lr_factors, topologies, sample, *, folder=None) -> dict:
    """:func:`sweep`, whose recursion and trained cells are cached by :func:`p2pntk.tuning.tune`
    (timings are those of the run that computed them)."""
    return sweep(config, lr_factors, topologies, sample, folder=folder)
