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


def batch_weights(batches, owner, n_agents: int, n_iterations: int):
    r"""Per-iteration weights of the minibatch losses, (n_iterations + 1, N), or ``None`` for full batches.

    ``batches(k)`` returns Q index arrays, agent q's a non-empty subset of its own training
    points (or ``None``: full batch); agent q's loss at iteration k is
    :math:`\frac{1}{2|B_q(k)|}\sum_{i\in B_q(k)}\|f(x_i)-y_i\|^2`, i.e. the diagonal of
    :math:`D_q(k)` is :math:`\mathbb 1[i\in B_q(k)]/|B_q(k)|`. Each point belongs to one agent,
    so row k holds the diagonals of all :math:`D_q(k)` at once. Rows ``k = 0..n_iterations``
    (a tracker evaluates the gradient of iteration k + 1 at the end of step k). Errors name
    the agent and k.

    Example:
        >>> batch_weights(lambda k: [[k % 2], [2]], [0, 0, 1], 2, 1)
        array([[1., 0., 1.],
               [0., 1., 1.]])
    """
    if batches is None:
        return None
    if not callable(batches):
        raise ValueError(f"batches must be None or a callable k -> list of {n_agents} index arrays, got {batches!r}")
    owner = np.asarray(owner)
    full = agent_weights(owner, n_agents)
    out = np.zeros((n_iterations + 1, len(owner)))
    for k in range(n_iterations + 1):
        b = batches(k)
        if b is None:
            out[k] = full.sum(axis=0)
            continue
        if len(b) != n_agents:
            raise ValueError(f"batches({k}) must give one index array per agent ({n_agents}), got {len(b)}")
        arrs = [np.asarray(idx) for idx in b]
        sizes = np.array([a.size for a in arrs])
        cat = np.concatenate([a.ravel() for a in arrs])
        valid = (sizes.min() > 0 and all(a.ndim == 1 for a in arrs) and np.issubdtype(cat.dtype, np.integer)
                 and cat.min() >= 0 and cat.max() < len(owner)
                 and np.array_equal(owner[cat], np.repeat(np.arange(n_agents), sizes)) and len(np.unique(cat)) == len(cat))
        if not valid:                              # name the first agent whose batch is wrong
            for q, idx in enumerate(arrs):
                if idx.size == 0:
                    raise ValueError(f"batches({k}): the batch of agent {q} is empty")
                if not np.issubdtype(idx.dtype, np.integer) or idx.ndim != 1 or idx.min() < 0 or idx.max() >= len(owner) \
                        or np.any(owner[idx] != q) or len(np.unique(idx)) != len(idx):
                    raise ValueError(f"batches({k}): the batch of agent {q} must be distinct indices of agent {q}'s own "
                                     f"training points {np.flatnonzero(owner == q)[:8].tolist()}..., got {idx[:8].tolist()}")
        out[k, cat] = np.repeat(1.0 / sizes, sizes)
    return out
