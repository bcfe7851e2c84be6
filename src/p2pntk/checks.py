r"""Validators of the inputs every back end shares, and the agents' weights :math:`D_q`.

Each check raises ``ValueError`` naming the parameter and what is allowed.
"""
from __future__ import annotations

import numpy as np


def check_owner(owner, n_points: int, n_agents: int) -> np.ndarray:
    """Validate the assignment of training points to agents; return it as int array.

    Example:
        >>> check_owner([0, 1, 1], 3, 2).tolist()
        [0, 1, 1]
    """
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


def check_lr(lr, name: str = "lr") -> float:
    """A positive finite step size.

    Example:
        >>> check_lr(-1.0)
        Traceback (most recent call last):
        ...
        ValueError: lr must be a positive finite step size, got -1.0
    """
    if not np.isfinite(lr) or lr <= 0:
        raise ValueError(f"{name} must be a positive finite step size, got {lr}")
    return float(lr)


def agent_weights(owner, n_agents: int) -> np.ndarray:
    r"""Diagonals of the agents' weight matrices :math:`D_q = \mathrm{diag}(\mathbb 1[i\in q]/N_q)`, shape (Q, N).

    Agent q's local loss is :math:`L_q = \tfrac12 r^\top D_q r` (residual :math:`r` over all N
    points); the centralised loss is :math:`\tfrac12 r^\top \bar D r` with
    :math:`\bar D = \tfrac1Q\sum_q D_q` (``agent_weights(owner, Q).mean(axis=0)``).

    Example:
        >>> agent_weights([0, 0, 1], 2)
        array([[0.5, 0.5, 0. ],
               [0. , 0. , 1. ]])
    """
    owner = np.asarray(owner)
    counts = np.bincount(owner, minlength=n_agents)
    return (owner[None, :] == np.arange(n_agents)[:, None]) / counts[:, None]
