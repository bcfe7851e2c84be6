r"""Every peer-to-peer algorithm, defined once: its state, their initialisation, one step.

An algorithm is written on the few operations every back end provides, where a
*stacked* variable holds one value per agent (Q of them):

- ``ops.mix(v, k)``: :math:`(W(k)\otimes I)\,v`, every agent averages its neighbours'
  values with the weights of the mixing matrix of iteration :math:`k`;
- ``ops.grad(x, k)``: the stacked local gradients :math:`[\nabla L_q(x_q)]_q`, every
  agent's gradient of its own loss at its own iterate;
- ``ops.average(v)``: :math:`\tfrac1Q\sum_q v_q` at every agent (an all-reduce; used by
  centralised gradient descent only);
- linear combinations of stacked variables (``+``, ``-``, a scalar ``*``), and the step
  size ``ops.lr``.

A definition is an :class:`Algorithm`: ``init(ops, x0)`` returns the state variables
(a ``dict``; ``"x"`` is the iterate every agent evaluates its network at) from the
common initial iterate, and ``step(ops, state, k)`` returns the state of iteration
:math:`k + 1`. Three back ends instantiate the same definition:

- actual training on parameter pytrees (:func:`p2pntk.training.simulate`; the stacked
  variable is a pytree with a leading agent axis, ``grad`` differentiates the network);
- the closed form on the coefficients :math:`a_q\in\mathbb R^{N\times C}` with
  :math:`\theta_q = \theta_0 + J^\top a_q` (:mod:`p2pntk.coefficients`,
  :func:`p2pntk.dynamics.linearized_outputs`): ``grad`` is :math:`D_q(K a_q + f_0 - y)`;
- the iteration matrix (:mod:`p2pntk.stability`): the linear part of the same step in
  the coordinates :math:`z = F^\top a` (:math:`K = FF^\top`), ``grad`` is :math:`G_q z_q`,
  :math:`G_q = F^\top D_q F`; for one-step methods its :math:`M - I` is the generator of
  the gradient flow (:func:`p2pntk.dynamics.linearized_flow_outputs`).

Adding a method is adding one definition (a test defines heavy-ball DGD this way).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Algorithm:
    r"""One peer-to-peer method: state variables, their initialisation and one step.

    Attributes:
        name: short name (the registry key of :data:`ALGORITHMS`).
        init: ``init(ops, x0) -> dict`` of stacked state variables; ``"x"`` is the iterate.
        step: ``step(ops, state, k) -> dict``, the state of iteration ``k + 1``.
        consensus: ``True`` if every agent always holds the same iterate (centralised GD):
            the iteration matrix is then restricted to the consensus subspace, where a
            stacked one would show spurious eigenvalues 1 on the disagreement directions.
        bound: optional sufficient stable step size of the linearised method,
            ``bound(W, c)`` with ``c.local`` :math:`= \max_q\lambda_{\max}(K_{qq})/N_q`
            and ``c.central`` :math:`= \lambda_{\max}(\bar D^{1/2} K \bar D^{1/2})`
            (:class:`p2pntk.stability.Curvatures`).
        equation: the update in words and symbols (for messages and tables).

    Example (heavy-ball DGD, two state variables):
        >>> hb = Algorithm("hb", lambda ops, x0: {"x": x0, "v": 0 * x0},
        ...                lambda ops, s, k: {"x": ops.mix(s["x"], k) - ops.lr * (0.9 * s["v"] + ops.grad(s["x"], k)),
        ...                                   "v": 0.9 * s["v"] + ops.grad(s["x"], k)})
        >>> hb.name
        'hb'
    """
    name: str
    init: Callable
    step: Callable
    consensus: bool = False
    bound: Callable | None = None
    equation: str = ""


def _iterate(ops, x0):
    return {"x": x0}


def _dgd(ops, s, k):
    x = s["x"]
    return {"x": ops.mix(x, k) - ops.lr * ops.grad(x, k)}


def _atc(ops, s, k):
    x = s["x"]
    return {"x": ops.mix(x - ops.lr * ops.grad(x, k), k)}


def _cta(ops, s, k):
    psi = ops.mix(s["x"], k)
    return {"x": psi - ops.lr * ops.grad(psi, k)}


def _centralized(ops, s, k):
    x = s["x"]
    return {"x": x - ops.lr * ops.average(ops.grad(x, k))}


def _dgd_bound(W, c):
    return float((1 + np.linalg.eigvalsh(W)[0]) / c.local)


DGD = Algorithm("dgd", _iterate, _dgd, bound=_dgd_bound,
                equation="θ_q⁺ = Σ_l W_ql θ_l − η ∇L_q(θ_q)  (Nedić & Ozdaglar, 2009)")
ATC = Algorithm("atc", _iterate, _atc, bound=lambda W, c: float(2.0 / c.local),
                equation="θ_q⁺ = Σ_l W_ql [θ_l − η ∇L_l(θ_l)]  (adapt then combine; Sayed, 2014)")
CTA = Algorithm("cta", _iterate, _cta, bound=lambda W, c: float(2.0 / c.local),
                equation="ψ_q = Σ_l W_ql θ_l, θ_q⁺ = ψ_q − η ∇L_q(ψ_q)  (combine then adapt)")
CENTRALIZED = Algorithm("centralized", _iterate, _centralized, consensus=True,
                        bound=lambda W, c: float(2.0 / c.central),
                        equation="θ⁺ = θ − η (1/Q) Σ_q ∇L_q(θ)  (centralised gradient descent)")

#: The registry: name -> definition.
REGISTRY = {a.name: a for a in (DGD, ATC, CTA, CENTRALIZED)}
#: Names of the algorithms the package defines.
ALGORITHMS = tuple(REGISTRY)


def get(algorithm) -> Algorithm:
    """The :class:`Algorithm` named ``algorithm`` (or ``algorithm`` itself if it is one).

    Raises ``ValueError`` naming the allowed values if the name is unknown.

    Example:
        >>> get("atc").name
        'atc'
        >>> get("adam")
        Traceback (most recent call last):
        ...
        ValueError: unknown algorithm='adam'; allowed: dgd, atc, cta, centralized (or an algorithms.Algorithm)
    """
    if isinstance(algorithm, Algorithm):
        return algorithm
    if algorithm not in REGISTRY:
        raise ValueError(f"unknown algorithm={algorithm!r}; allowed: {', '.join(ALGORITHMS)} "
                         "(or an algorithms.Algorithm)")
    return REGISTRY[algorithm]


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


@dataclass
class DynamicsResult(SimulationResult):
    r"""Predicted outputs, plus the coefficients ``coef`` (S, Q, N, C) with
    :math:`\theta_q = \theta_0 + J^\top a_q` (see :func:`p2pntk.training.parameters`)."""
    coef: np.ndarray | None = None
