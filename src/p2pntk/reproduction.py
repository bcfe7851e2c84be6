r"""One experiment of the paper's validation: predicted versus actual peer-to-peer training.

For one configuration (data, Q, topology, algorithm, width, step size, seed)
:func:`run` computes, at the recorded iterations, every agent's outputs on the
training and test sets from

- the **actual** nonlinear networks (:func:`p2pntk.training.simulate`);
- the **affine** model, brute-force training of the linearised networks (optional);
- the **closed form** (:func:`p2pntk.dynamics.linearized_outputs`) with the
  output-resolved empirical NTK, the output-traced (shared) empirical NTK, and
  optionally the analytic infinite-width NTK;

a few tracked weights of the first and the output layer for every agent (actual,
affine and predicted by :math:`\theta_0 + J^\top a_q`), and the prediction error of
*all* parameters of every dense layer :math:`l` (:class:`ParameterCheck`),

.. math:: e_l(k) = \Big(\sum_q \|\theta^{\rm pred}_{q,l}(k) - \theta_{q,l}(k)\|^2\Big)^{1/2}
          \Big/ \Big(\sum_q \|\theta_{q,l}(k) - \theta_{0,l}\|^2\Big)^{1/2},
          \qquad \theta^{\rm pred}_q(k) = \theta_0 + J^\top a_q(k),

stored as its numerator ``param_error`` and denominator ``param_movement``, (S, L) for
the L = depth + 1 dense layers (weights and biases of a layer together).
:func:`cached_run` stores the arrays with the configuration in ``_build/results``
(:mod:`p2pntk.results`).

The step size is ``lr_factor`` times the DGD stability bound
:func:`p2pntk.stability.dgd_step_size_bound` of the resolved empirical kernel.
The analytic-kernel prediction keeps the finite network's initial outputs
:math:`f_0` (zero for the default centred networks, ``center=True``) and
replaces only the kernel.

Kernels and closed forms are always float64. ``train_dtype="float32"`` trains the
actual networks in single precision (1.3–2.4 times faster on a 2-core CPU, measured), starting
from :math:`\theta_0` rounded to float32 (``simulate(..., dtype=)`` casts parameters and data);
outputs are stored as float64.
"""
from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from . import dynamics, graphs, kernels, problems, results, stability, training
from .coefficients import traced_kernel

DEFAULTS = dict(
    dataset="digits", n_train=256, n_test=256, n_agents=8, topology="ring", rule="metropolis",
    algorithm="dgd", width=1024, depth=1, activation="relu", lr_factor=0.5,
    steps=[0, 25, 50, 100, 200, 400], seed=0, partition="iid", alpha=0.5,
    affine=False, analytic=False, n_tracked=32, train_dtype="float64", center=True,
)


def full_config(config: dict) -> dict:
    """The full configuration: :data:`DEFAULTS` updated by ``config`` (unknown keys rejected)."""
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown configuration keys {sorted(unknown)}; allowed: {sorted(DEFAULTS)}")
    cfg = {**DEFAULTS, **config}
    cfg["steps"] = [int(s) for s in cfg["steps"]]
    if cfg["train_dtype"] not in training.TRAIN_DTYPES:
        raise ValueError(f"unknown train_dtype={cfg['train_dtype']!r}; allowed: {', '.join(training.TRAIN_DTYPES)}")
    return cfg


def _tracked(params0, x, n_tracked: int, seed: int):
    """Indices of ``n_tracked`` weights in the first and in the last weight matrix; first-layer
    weights are taken from input features that vary (a constant-zero pixel's weights never move)."""
    dense = [i for i, p in enumerate(params0) if p]
    rng = np.random.default_rng(seed)
    active = np.flatnonzero(np.linalg.norm(np.asarray(x), axis=0) > 0)
    W1, WL = params0[dense[0]][0], params0[dense[-1]][0]
    picks = [(dense[0], int(i), int(j)) for i, j in
             zip(rng.choice(active, n_tracked, replace=len(active) < n_tracked),
                 rng.choice(W1.shape[1], n_tracked, replace=W1.shape[1] < n_tracked))]
    picks += [(dense[-1], int(i), int(j)) for i, j in
              zip(rng.choice(WL.shape[0], n_tracked, replace=WL.shape[0] < n_tracked), rng.integers(0, WL.shape[1], n_tracked))]
    return picks


def _select(picks, stacked):
    """Tracked weights of all agents from stacked parameters (leading axis Q): (Q, n_picks)."""
    return jnp.stack([stacked[l][0][:, i, j] for l, i, j in picks], axis=1)


@functools.partial(jax.jit, static_argnums=(0, 5))
def _agent_check(apply_fn, params0, x, a, actual, picks):
    """One agent: predicted parameters theta_0 + J^T a, their tracked weights, and per dense
    layer the squared norms of (predicted - actual) and of (actual - theta_0), in params0's dtype."""
    _, vjp = jax.vjp(lambda p: apply_fn(p, x), params0)
    (delta,) = vjp(a.astype(jax.tree.leaves(params0)[0].dtype))
    pred = jax.tree.map(jnp.add, params0, delta)
    actual = jax.tree.map(lambda u, p: u.astype(p.dtype), actual, params0)
    sq = lambda tree: sum(jnp.sum(jnp.square(v)) for v in jax.tree.leaves(tree))
    dense = [i for i, p in enumerate(params0) if p]
    err = jnp.stack([sq(jax.tree.map(jnp.subtract, pred[i], actual[i])) for i in dense])
    mov = jnp.stack([sq(jax.tree.map(jnp.subtract, actual[i], params0[i])) for i in dense])
    return jnp.stack([pred[l][0][i, j] for l, i, j in picks]), err, mov


class ParameterCheck:
    r"""``record_params`` callback of :func:`p2pntk.training.simulate` that compares all
    parameters of the actual networks with their prediction, layer by layer.

    At the s-th recorded step (calls come in the order of ``steps``) it forms, for every
    agent q, :math:`\theta^{\rm pred}_q = \theta_0 + J^\top a_q(k_s)` (one vector–Jacobian
    product, ``coef[s, q]`` the closed form's coefficients) and accumulates over the agents,
    per dense layer l,

    .. math:: E_{sl} = \sum_q \|\theta^{\rm pred}_{q,l} - \theta_{q,l}\|^2, \qquad
              M_{sl} = \sum_q \|\theta_{q,l} - \theta_{0,l}\|^2

    (weights and bias of the layer, in the dtype of :math:`\theta_0`); the relative error
    of layer l is :math:`\sqrt{E_{sl}/M_{sl}}`. Full parameters of all agents are never
    stored, only the tracked weights ``picks``. Cost: one forward and backward pass over
    the N training points per agent and recorded step.

    Args:
        apply_fn, params0, x: the network, :math:`\theta_0` and the training inputs (rows of J).
        coef: (S, Q, N, C) coefficients of the closed form at the recorded steps.
        picks: (layer, i, j) indices of tracked weights (as in :func:`_tracked`).

    After training, :meth:`result` returns ``param_error`` :math:`\sqrt E` and
    ``param_movement`` :math:`\sqrt M`, both (S, L), ``pred_weights`` (S, Q, n_picks),
    and ``seconds_predict_params``.
    """

    def __init__(self, apply_fn, params0, x, coef, picks):
        self.apply_fn, self.params0, self.x = apply_fn, params0, x
        self.coef, self.picks = np.asarray(coef), tuple(tuple(int(v) for v in p) for p in picks)
        self.err, self.mov, self.pred, self.seconds = [], [], [], 0.0

    def __call__(self, stacked):
        t0 = time.perf_counter()
        s = len(self.err)
        if s >= len(self.coef):
            raise ValueError(f"ParameterCheck called {s + 1} times for {len(self.coef)} recorded steps")
        out = [_agent_check(self.apply_fn, self.params0, self.x, jnp.asarray(a), jax.tree.map(lambda u: u[q], stacked),
                            self.picks) for q, a in enumerate(self.coef[s])]
        self.pred.append(np.stack([np.asarray(o[0]) for o in out]))
        self.err.append(np.sum([np.asarray(o[1]) for o in out], axis=0))
        self.mov.append(np.sum([np.asarray(o[2]) for o in out], axis=0))
        self.seconds += time.perf_counter() - t0
        return _select(self.picks, stacked)

    def result(self) -> dict:
        return dict(param_error=np.sqrt(np.stack(self.err)), param_movement=np.sqrt(np.stack(self.mov)),
                    pred_weights=np.stack(self.pred), seconds_predict_params=np.asarray(self.seconds))


def layer_errors(r) -> np.ndarray:
    r"""Relative prediction error of each dense layer's parameters, (S, L):
    ``param_error / param_movement`` of a :func:`run` result, NaN where the layer has not moved
    (k = 0, or a movement below 1e-12 times the layer's largest).

    Example:
        >>> layer_errors(dict(param_error=np.array([[0.0, 0.0], [0.1, 0.3]]),
        ...                   param_movement=np.array([[0.0, 0.0], [1.0, 2.0]])))
        array([[ nan,  nan],
               [0.1 , 0.15]])
    """
    num, den = np.asarray(r["param_error"], np.float64), np.asarray(r["param_movement"], np.float64)
    moved = den > 1e-12 * den.max(axis=0, keepdims=True)
    return np.where(moved, num / np.where(moved, den, 1.0), np.nan)


def problem(cfg):
    """The configuration's data, split, network and initial outputs (kernel not computed:
    callers time it), with the label/target arrays under the names results files use."""
    p = problems.problem(cfg["dataset"], cfg["n_train"], cfg["n_test"], cfg["n_agents"], cfg["width"],
                            depth=cfg["depth"], partition=cfg["partition"], alpha=cfg["alpha"], seed=cfg["seed"],
                            activation=cfg["activation"], with_kernel=False, center=cfg["center"])
    d = dict(y_train=p.y, y_test=p.y_test, labels_train=p.labels, labels_test=p.labels_test)
    return p, d, jnp.asarray(p.x), jnp.asarray(p.y), jnp.asarray(p.x_test)


def run(config: dict) -> dict:
    """Run one configuration (keys of :data:`DEFAULTS`); returns a dict of arrays (see module docstring)."""
    cfg = full_config(config)
    timings = {}
    p, d, x, y, xt = problem(cfg)
    owner, apply_fn, kernel_fn, params0, f0, f0t = p.owner, p.apply_fn, p.kernel_fn, p.params0, p.f0, p.f0_test
    W = graphs.mixing_matrix(graphs.topology(cfg["topology"], cfg["n_agents"], seed=cfg["seed"]), cfg["rule"])

    t0 = time.perf_counter()
    K = np.asarray(kernels.empirical_ntk(apply_fn, params0, x))
    Kt = np.asarray(kernels.empirical_ntk(apply_fn, params0, xt, x))
    timings["kernel"] = time.perf_counter() - t0
    lr = cfg["lr_factor"] * stability.dgd_step_size_bound(W, K, owner)
    alg, steps = cfg["algorithm"], cfg["steps"]
    out = dict(steps=np.asarray(steps), owner=owner, W=W, lr=np.asarray(lr), y_train=d["y_train"],
               y_test=d["y_test"], labels_train=d["labels_train"], labels_test=d["labels_test"],
               f0_train=np.asarray(f0), f0_test=np.asarray(f0t))

    t0 = time.perf_counter()
    res = dynamics.linearized_outputs(alg, W, K, owner, f0, y, lr, steps, K_test=Kt, f0_test=f0t)
    timings["predict_resolved"] = time.perf_counter() - t0
    out.update(pred_train=res.train, pred_test=res.test)
    coef = res.coef
    Ktr, Kttr = traced_kernel(K), traced_kernel(Kt)
    t0 = time.perf_counter()
    res = dynamics.linearized_outputs(alg, W, Ktr, owner, f0, y, lr, steps, K_test=Kttr, f0_test=f0t)
    timings["predict_traced"] = time.perf_counter() - t0
    out.update(traced_train=res.train, traced_test=res.test)
    del K, Kt
    if cfg["analytic"]:
        t0 = time.perf_counter()
        Ka, Kat = kernels.analytic_ntk_train_test(kernel_fn, x, xt)
        res = dynamics.linearized_outputs(alg, W, Ka, owner, f0, y, lr, steps, K_test=Kat, f0_test=f0t)
        timings["predict_analytic"] = time.perf_counter() - t0
        out.update(analytic_train=res.train, analytic_test=res.test)

    picks = _tracked(params0, x, cfg["n_tracked"], cfg["seed"])
    out["tracked_index"] = np.asarray(picks)
    check = ParameterCheck(apply_fn, params0, x, coef, picks)     # predicted parameters, layer by layer
    t0 = time.perf_counter()
    act = training.simulate(alg, apply_fn, params0, W, x, y, owner, lr, steps, x_test=xt,
                            record_params=check, dtype=cfg["train_dtype"])
    checked = check.result()
    timings["train_actual"] = time.perf_counter() - t0 - float(checked.pop("seconds_predict_params"))
    timings["predict_params"] = check.seconds
    out.update(checked)
    out.update(actual_train=np.asarray(act.train, np.float64), actual_test=np.asarray(act.test, np.float64),
               actual_weights=np.stack(act.params).astype(np.float64))
    if cfg["affine"]:
        t0 = time.perf_counter()
        lin = training.simulate(alg, kernels.linearize(apply_fn, params0), params0, W, x, y, owner, lr, steps,
                                x_test=xt, record_params=lambda p: _select(picks, p))
        timings["train_affine"] = time.perf_counter() - t0
        out.update(affine_train=lin.train, affine_test=lin.test, affine_weights=np.stack(lin.params))
    out.update({f"seconds_{k}": np.asarray(v) for k, v in timings.items()})
    return out


def cached_run(config: dict, *, folder=None) -> dict:
    """:func:`run` through the results cache (keyed by the full configuration and the code)."""
    cfg = full_config(config)
    return results.cached("run", cfg, lambda: run(cfg), folder=folder)
