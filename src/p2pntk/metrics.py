r"""Measurements on recorded outputs, and the generic numerics the chapters and tests share.

Output arrays are (S, Q, n, C): S recorded steps, Q agents, n points, C outputs. Losses and
errors over all points (:func:`mse`, :func:`mean_loss`, :func:`error_rate`), on each agent's
own points (:func:`agent_losses`, :func:`agent_error_rates`) and their network average
(:func:`network_loss`); disagreement in output space (:func:`output_disagreement`); prediction
errors (:func:`relative_error`, :func:`movement_error`).
"""
from __future__ import annotations

import numpy as np

from .checks import agent_weights


def relative_error(a, b) -> float:
    r"""Relative error :math:`\|a - b\|_2 / \|b\|_2` (Frobenius norm over all entries).

    Not :func:`movement_error`, which divides by how far the networks moved.

    Example:
        >>> round(relative_error([1.0, 3.0], [1.0, 1.0]), 12)
        1.414213562373
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def loglog_slope(x, y, *, intercept: bool = False):
    r"""Least-squares slope :math:`p` of :math:`\log y = p \log x + c` (fitted order of a power law).

    With ``intercept=True`` returns ``(p, c)``.

    Example:
        >>> round(loglog_slope([1, 2, 4], [3, 12, 48]), 12)
        2.0
    """
    p, c = np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)
    return (float(p), float(c)) if intercept else float(p)


def mse(outputs, y):
    r"""Per step and agent :math:`\frac{1}{2n}\sum_i \|f_q(x_i) - y_i\|^2`, shape ``outputs.shape[:-2]``."""
    return 0.5 * np.mean(np.sum((np.asarray(outputs) - y) ** 2, axis=-1), axis=-1)


def mean_loss(outputs, y) -> np.ndarray:
    r"""Training loss of every agent's model on all N points, averaged over agents.

    .. math:: \bar L = \frac1Q \sum_q \frac1{2N}\sum_{i=1}^N \|f_q(x_i) - y_i\|_2^2 .

    Args:
        outputs: (..., Q, N, C) outputs (e.g. ``result.train``); y: (N, C).

    Returns:
        array of shape ``outputs.shape[:-3]``.
    """
    return mse(np.asarray(outputs, dtype=np.float64), np.asarray(y)).mean(axis=-1)


def error_rate(outputs, labels):
    """Per step and agent classification error (fraction of argmax mistakes), shape (S, Q)."""
    return np.mean(np.argmax(outputs, axis=-1) != labels, axis=-1)


def output_disagreement(outputs):
    r"""Consensus disagreement of the outputs, :math:`\sqrt{\frac1Q\sum_q \|f_q - \bar f\|^2 / n}` per step, shape (S,).

    Not :func:`p2pntk.geometry.parameter_disagreement`, which measures parameters.
    """
    dev = outputs - outputs.mean(axis=1, keepdims=True)
    return np.sqrt(np.mean(np.sum(dev ** 2, axis=-1), axis=(1, 2)))


def movement_error(pred, actual, f0, *, steps=None, tol: float = 1e-5):
    r"""Prediction error relative to how far the networks moved, per recorded step:
    :math:`\|\mathrm{pred} - \mathrm{actual}\| / \|\mathrm{actual} - f_0\|` over all agents and
    points. Not :func:`relative_error`, which divides by :math:`\|b\|` itself.

    NaN while the networks have not moved: where the movement is at most ``tol`` times the
    scale of the run, the largest of :math:`\|f_0\|` and the movements at all recorded steps
    (at k = 0 the movement is round-off, e.g. of float32 training; for centred networks
    :math:`f_0 = 0`, so :math:`\|f_0\|` alone gives no scale), and where ``steps`` (the
    iteration of each recorded step, optional) is 0 — needed when k = 0 is the only
    recorded step of a centred network, which then has no scale at all.

    Args:
        pred, actual: (S, ...) outputs at S recorded steps; f0: the initial outputs (broadcast).

    Example (a centred network, f0 = 0, with round-off at k = 0):
        >>> actual = np.array([[1e-9, -1e-9], [0.5, 0.4]]); pred = np.array([[0.0, 0.0], [0.5, 0.5]])
        >>> movement_error(pred, actual, np.zeros(2))
        array([       nan, 0.15617376])
    """
    pred, actual = np.asarray(pred, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    f0 = np.asarray(f0, dtype=np.float64)
    num = np.linalg.norm((pred - actual).reshape(len(pred), -1), axis=1)
    den = np.linalg.norm((actual - f0).reshape(len(actual), -1), axis=1)
    scale = max(float(np.linalg.norm(f0)), float(den.max(initial=0.0)))
    moved = den > tol * scale
    if steps is not None:
        steps = np.asarray(steps)
        if steps.shape != den.shape:
            raise ValueError(f"steps must give the iteration of each of the {len(den)} recorded steps, got shape "
                             f"{steps.shape}")
        moved &= steps != 0
    return np.where(moved, num / np.where(moved, den, 1.0), np.nan)


def _own(outputs, owner):
    """(..., Q, N, C) outputs, (Q, N) weights of :func:`p2pntk.checks.agent_weights` for ``owner``."""
    outputs = np.asarray(outputs, dtype=np.float64)
    owner = np.asarray(owner)
    Q, N = outputs.shape[-3], outputs.shape[-2]
    if owner.shape != (N,) or not np.issubdtype(owner.dtype, np.integer) or owner.min() < 0 or owner.max() >= Q \
            or len(np.unique(owner)) != Q:
        raise ValueError(f"owner must be an integer array of shape ({N},) giving every one of the Q = {Q} agents "
                         f"of the outputs at least one point, got {owner.dtype} {owner.shape}")
    return outputs, agent_weights(owner, Q)


def agent_losses(outputs, y, owner) -> np.ndarray:
    r"""Every agent's loss on its **own** training points, the local loss it minimises:

    .. math:: L_q = \frac1{2N_q}\sum_{i:\,\mathrm{owner}_i = q} \|f_q(x_i) - y_i\|_2^2 .

    Args:
        outputs: (..., Q, N, C) outputs on the N training points (e.g. ``result.train``);
        y: (N, C) targets; owner: (N,) agent of each point.

    Returns:
        array of shape ``outputs.shape[:-2]`` (..., Q). Not :func:`mse`, which averages over
        all N points; :func:`network_loss` is their average over agents.

    Example:
        >>> f = np.array([[[1.0], [0.0], [0.0]], [[0.0], [0.0], [2.0]]])      # Q = 2 agents, N = 3
        >>> agent_losses(f, np.zeros((3, 1)), [0, 0, 1])
        array([0.25, 2.  ])
    """
    outputs, d = _own(outputs, owner)
    sq = 0.5 * np.sum((outputs - np.asarray(y, dtype=np.float64)) ** 2, axis=-1)    # (..., Q, N)
    return np.sum(d * sq, axis=-1)


def network_loss(outputs, y, owner) -> np.ndarray:
    r"""The objective of peer-to-peer training, the agents' own losses averaged over the network:
    :math:`\frac1Q\sum_q L_q` (:func:`agent_losses`), shape ``outputs.shape[:-3]``. At consensus
    (every :math:`f_q = f`) it is the centralised loss :math:`\tfrac12 r^\top \bar D r`.

    Example:
        >>> f = np.array([[[1.0], [0.0], [0.0]], [[0.0], [0.0], [2.0]]])
        >>> float(network_loss(f, np.zeros((3, 1)), [0, 0, 1]))
        1.125
    """
    return agent_losses(outputs, y, owner).mean(axis=-1)


def agent_error_rates(outputs, labels, owner) -> np.ndarray:
    r"""Every agent's classification error on its **own** training points: the fraction of
    :math:`i` with :math:`\mathrm{owner}_i = q` and :math:`\arg\max_c f_{q,c}(x_i) \ne \ell_i`,
    shape ``outputs.shape[:-2]`` (..., Q); ``.mean(axis=-1)`` is the network average.
    Not :func:`error_rate`, which counts all N points.

    Example:
        >>> f = np.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]])
        >>> agent_error_rates(f, [0, 0, 1], [0, 0, 1])
        array([0.5, 0. ])
    """
    outputs, d = _own(outputs, owner)
    wrong = np.argmax(outputs, axis=-1) != np.asarray(labels)                       # (..., Q, N)
    return np.sum(d * wrong, axis=-1)
