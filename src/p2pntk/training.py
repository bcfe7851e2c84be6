r"""Actual peer-to-peer training of Q networks, all agents in one jitted step.

Agent :math:`q` holds the training points :math:`i` with ``owner[i] == q``
(:math:`N_q` of them) and the local loss
:math:`L_q(\theta) = \frac{1}{2N_q}\sum_{i\in q}\|f(x_i;\theta) - y_i\|^2`.
With mixing matrix :math:`W` and step size :math:`\eta`, iteration :math:`k`:

- DGD (Nedić & Ozdaglar, 2009): :math:`\theta_q^+ = \sum_l W_{ql}\theta_l - \eta\nabla L_q(\theta_q)`;
- ATC diffusion (Sayed, 2014): :math:`\theta_q^+ = \sum_l W_{ql}[\theta_l - \eta\nabla L_l(\theta_l)]`;
- CTA diffusion: :math:`\psi_q = \sum_l W_{ql}\theta_l`, :math:`\theta_q^+ = \psi_q - \eta\nabla L_q(\psi_q)`;
- centralised: :math:`\theta^+ = \theta - \eta\nabla L(\theta)`, :math:`L = \frac1Q\sum_q L_q`
  (every agent holds the same :math:`\theta`).

All agents start from the common initialisation ``params0``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

ALGORITHMS = ("dgd", "atc", "cta", "centralized")


@dataclass
class SimulationResult:
    """Outputs recorded at iterations ``steps``.

    Attributes:
        steps: (S,) iteration counts.
        train: (S, Q, N, C) agent q's outputs on all N training points.
        test: (S, Q, N_test, C) or ``None``.
        params: list over steps of the stacked parameter pytree (leading axis Q), or ``None``.
    """
    steps: np.ndarray
    train: np.ndarray
    test: np.ndarray | None = None
    params: list | None = None


def check_algorithm(algorithm: str) -> str:
    """Raise ``ValueError`` naming the allowed values if ``algorithm`` is unknown."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm={algorithm!r}; allowed: {', '.join(ALGORITHMS)}")
    return algorithm


def check_owner(owner, n_points: int, n_agents: int) -> np.ndarray:
    """Validate the assignment of training points to agents; return it as int array."""
    owner = np.asarray(owner)
    if owner.shape != (n_points,) or not np.issubdtype(owner.dtype, np.integer):
        raise ValueError(f"owner must be an integer array of shape ({n_points},), got {owner.dtype} {owner.shape}")
    if owner.min() < 0 or owner.max() >= n_agents:
        raise ValueError(f"owner values must be agents 0..{n_agents - 1}")
    counts = np.bincount(owner, minlength=n_agents)
    if (counts == 0).any():
        raise ValueError(f"every agent needs at least one training point; agents {np.flatnonzero(counts == 0).tolist()} "
                         f"have none (Q = {n_agents} agents for N = {n_points} points)")
    return owner


def check_steps(steps) -> np.ndarray:
    """Sorted, non-negative, integer iteration counts."""
    steps = np.asarray(steps)
    if steps.ndim != 1 or len(steps) == 0 or not np.issubdtype(steps.dtype, np.integer):
        raise ValueError("steps must be a non-empty 1-D sequence of integers")
    if steps[0] < 0 or np.any(np.diff(steps) < 0):
        raise ValueError("steps must be sorted and non-negative")
    return steps


def _local_data(x, y, owner, n_agents):
    """Pad each agent's points to the largest N_q; weights 1/N_q on real points, 0 on padding."""
    counts = np.bincount(owner, minlength=n_agents)
    n_max = counts.max()
    idx = np.zeros((n_agents, n_max), dtype=int)
    wts = np.zeros((n_agents, n_max))
    for q in range(n_agents):
        pts = np.flatnonzero(owner == q)
        idx[q, :len(pts)] = pts
        wts[q, :len(pts)] = 1.0 / len(pts)
    return x[idx], y[idx], jnp.asarray(wts, dtype=y.dtype)


def _mix(W, tree):
    """(W ⊗ I) applied to a pytree whose leaves have a leading agent axis."""
    return jax.tree.map(lambda p: jnp.tensordot(W, p, axes=1), tree)


def simulate(algorithm, apply_fn, params0, W, x, y, owner, lr, steps, *, x_test=None, record_params=False):
    r"""Train Q copies of a network peer to peer and record their outputs.

    Args:
        algorithm: ``"dgd"``, ``"atc"``, ``"cta"`` or ``"centralized"``.
        apply_fn: ``apply_fn(params, x) -> (n, C)``, any JAX model (the
            nonlinear network, or its linearisation :func:`p2pntk.kernels.linearize`).
        params0: common initial parameters :math:`\theta_0` (a pytree).
        W: (Q, Q) mixing matrix (checked: symmetric, doubly stochastic).
        x, y: training inputs (N, ...) and targets (N, C).
        owner: (N,) agent holding each training point.
        lr: step size :math:`\eta`.
        steps: sorted iteration counts at which to record (0 allowed).
        x_test: optional test inputs.
        record_params: ``True`` records every agent's parameters; a function
            ``select(stacked_params)`` records only what it returns (e.g. a few
            weights — full parameters of wide networks do not fit in memory).

    Returns:
        :class:`SimulationResult` with ``train`` (S, Q, N, C) and ``test`` (S, Q, N_test, C).

    Raises:
        FloatingPointError: if outputs become NaN or inf (training diverged);
            the message gives the iteration and the step size.
    """
    from .graphs import check_mixing_matrix

    check_algorithm(algorithm)
    W = check_mixing_matrix(W)
    Q = W.shape[0]
    x, y = jnp.asarray(x), jnp.asarray(y)
    if y.ndim != 2 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must have shape (N, C) with N = {x.shape[0]}, got {y.shape}")
    for name, arr in (("x", x), ("y", y)):
        if not bool(jnp.all(jnp.isfinite(arr))):
            raise ValueError(f"{name} contains NaN or inf")
    owner = check_owner(owner, x.shape[0], Q)
    steps = check_steps(steps)
    if not np.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a positive finite step size, got {lr}")
    dtype = y.dtype
    Wj = jnp.asarray(W, dtype=dtype)
    xl, yl, wl = _local_data(x, y, owner, Q)

    def local_loss(p, xq, yq, wq):
        r = apply_fn(p, xq) - yq
        return 0.5 * jnp.sum(wq[:, None] * r ** 2)

    grads = jax.vmap(jax.grad(local_loss))

    def step(_, params):
        if algorithm == "dgd":
            g = grads(params, xl, yl, wl)
            return jax.tree.map(lambda m, gg: m - lr * gg, _mix(Wj, params), g)
        if algorithm == "atc":
            g = grads(params, xl, yl, wl)
            return _mix(Wj, jax.tree.map(lambda p, gg: p - lr * gg, params, g))
        if algorithm == "cta":
            psi = _mix(Wj, params)
            g = grads(psi, xl, yl, wl)
            return jax.tree.map(lambda p, gg: p - lr * gg, psi, g)
        g = grads(params, xl, yl, wl)  # centralised: every agent takes the step of the global loss
        return jax.tree.map(lambda p, gg: p - lr * jnp.mean(gg, axis=0, keepdims=True), params, g)

    @partial(jax.jit, donate_argnums=0)
    def advance(params, n):
        return jax.lax.fori_loop(0, n, step, params)

    outputs = jax.jit(jax.vmap(apply_fn, in_axes=(0, None)))
    params = jax.tree.map(lambda p: jnp.broadcast_to(p, (Q,) + p.shape).astype(p.dtype), params0)
    params = jax.tree.map(jnp.array, params)  # own copy (advance donates its input)
    train, test, recorded = [], [], []
    done = 0
    for s in steps:
        params = advance(params, int(s - done))
        done = int(s)
        f = outputs(params, x)
        if not bool(jnp.all(jnp.isfinite(f))):
            raise FloatingPointError(
                f"{algorithm} training diverged: outputs are NaN/inf at iteration {done} with lr={lr}; "
                "reduce the step size below the stability bound (p2pntk.stability)")
        train.append(np.asarray(f))
        if x_test is not None:
            test.append(np.asarray(outputs(params, jnp.asarray(x_test))))
        if record_params:
            kept = record_params(params) if callable(record_params) else params
            recorded.append(jax.tree.map(np.asarray, kept))
    return SimulationResult(steps, np.stack(train), np.stack(test) if x_test is not None else None,
                            recorded if record_params else None)
