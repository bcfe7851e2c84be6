r"""Measurements on recorded outputs, and the generic numerics the chapters and tests share.

Output arrays are (S, Q, n, C): S recorded steps, Q agents, n points, C outputs.
"""
from __future__ import annotations

import numpy as np


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


def movement_error(pred, actual, f0):
    r"""Prediction error relative to how far the networks moved, per recorded step:
    :math:`\|\mathrm{pred} - \mathrm{actual}\| / \|\mathrm{actual} - f_0\|` over all agents and
    points (NaN while the networks have not moved, e.g. at k = 0). Not
    :func:`relative_error`, which divides by :math:`\|b\|` itself."""
    num = np.linalg.norm((pred - actual).reshape(len(pred), -1), axis=1)
    den = np.linalg.norm((actual - f0).reshape(len(actual), -1), axis=1)
    # undefined before the networks move (k = 0); 1e-5 is above float32 rounding of theta_0
    moved = den > 1e-5 * np.linalg.norm(np.asarray(f0))
    return np.where(moved, num / np.where(moved, den, 1.0), np.nan)
