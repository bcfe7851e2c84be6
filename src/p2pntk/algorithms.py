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
            (:class:`p2pntk.stability.Curvatures`); it returns ``None`` where the bound does
            not apply (e.g. a literature bound proved for symmetric W only).
        equation: the update in words and symbols (for messages and tables).
        first: optional step used at iteration ``k = 0`` instead of ``step`` (EXTRA, exact
            diffusion and NIDS start with a different update); the iteration matrix is
            that of ``step``, the recursion.
        momentum: the momentum :math:`\beta` of a momentum variant (:func:`get`), else 0.
        cached: pairs ``(g, x)`` of state variables where ``g`` always holds the local
            gradients at ``x`` (computed once per iteration and kept); the iteration matrix
            is built on the other variables only (``g`` is not a degree of freedom).

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
    first: Callable | None = None
    momentum: float = 0.0
    cached: tuple = ()


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


def _symmetric(W) -> bool:
    return bool(np.allclose(W, W.T, rtol=0, atol=1e-14))


def _dgd_bound(W, c):
    r"""Symmetric W: :math:`(1 + \lambda_{\min}(W))/L`; otherwise :math:`2\min_q W_{qq}/L` (both sufficient)."""
    if _symmetric(W):
        return float((1 + np.linalg.eigvalsh(W)[0]) / c.local)
    return float(2 * np.diag(W).min() / c.local)


DGD = Algorithm("dgd", _iterate, _dgd, bound=_dgd_bound,
                equation="θ_q⁺ = Σ_l W_ql θ_l − η ∇L_q(θ_q)  (Nedić & Ozdaglar, 2009)")
ATC = Algorithm("atc", _iterate, _atc, bound=lambda W, c: float(2.0 / c.local),
                equation="θ_q⁺ = Σ_l W_ql [θ_l − η ∇L_l(θ_l)]  (adapt then combine; Sayed, 2014)")
CTA = Algorithm("cta", _iterate, _cta, bound=lambda W, c: float(2.0 / c.local),
                equation="ψ_q = Σ_l W_ql θ_l, θ_q⁺ = ψ_q − η ∇L_q(ψ_q)  (combine then adapt)")
CENTRALIZED = Algorithm("centralized", _iterate, _centralized, consensus=True,
                        bound=lambda W, c: float(2.0 / c.central),
                        equation="θ⁺ = θ − η (1/Q) Σ_q ∇L_q(θ)  (centralised gradient descent)")


# --- exact-convergence methods: the state carries the current gradient g = ∇f(x), computed
# once per iteration (at iteration k with the data of iteration k), and what the recursion needs
# of the previous iterate ----------------------------------------------------------------------

def _tilde(ops, v, k):
    r""":math:`\tilde W v = \tfrac12 (v + W v)`."""
    return 0.5 * (v + ops.mix(v, k))


def _with_gradient(ops, x0):
    g = ops.grad(x0, 0)
    return {"x": x0, "x_prev": x0, "g": g, "g_prev": g}


def _advance(ops, s, x_new, k):
    return {"x": x_new, "x_prev": s["x"], "g": ops.grad(x_new, k + 1), "g_prev": s["g"]}


def _extra_first(ops, s, k):
    return _advance(ops, s, ops.mix(s["x"], k) - ops.lr * s["g"], k)


def _extra(ops, s, k):
    x, xp = s["x"], s["x_prev"]
    return _advance(ops, s, x + ops.mix(x, k) - _tilde(ops, xp, k) - ops.lr * (s["g"] - s["g_prev"]), k)


def _diffusion_first(ops, s, k):
    return _advance(ops, s, _tilde(ops, s["x"] - ops.lr * s["g"], k), k)


def _nids_first(ops, s, k):
    return _advance(ops, s, s["x"] - ops.lr * s["g"], k)


def _diffusion(ops, s, k):
    x = s["x"]
    return _advance(ops, s, _tilde(ops, 2 * x - s["x_prev"] - ops.lr * (s["g"] - s["g_prev"]), k), k)


def _tracking_init(ops, x0):
    g = ops.grad(x0, 0)
    return {"x": x0, "y": g, "g": g}


def _dig(ops, s, k):
    x = ops.mix(s["x"], k) - ops.lr * s["y"]
    g = ops.grad(x, k + 1)
    return {"x": x, "y": ops.mix(s["y"], k) + g - s["g"], "g": g}


def _next(ops, s, k):
    x = ops.mix(s["x"] - ops.lr * s["y"], k)
    g = ops.grad(x, k + 1)
    return {"x": x, "y": ops.mix(s["y"], k) + g - s["g"], "g": g}


def _aug_dgm(ops, s, k):
    x = ops.mix(s["x"] - ops.lr * s["y"], k)
    g = ops.grad(x, k + 1)
    return {"x": x, "y": ops.mix(s["y"] + g - s["g"], k), "g": g}


def _extra_bound(W, c):
    r""":math:`2\lambda_{\min}(\tilde W)/L = (1 + \lambda_{\min}(W))/L` (Shi et al., 2015, Theorem 3.5;
    a symmetric W: none otherwise)."""
    return float((1 + np.linalg.eigvalsh(W)[0]) / c.local) if _symmetric(W) else None


def _nids_bound(W, c):
    r""":math:`2/L` (Li, Shi, Yan, 2019, for a symmetric W: none otherwise)."""
    return float(2.0 / c.local) if _symmetric(W) else None


_GRADIENTS = (("g", "x"), ("g_prev", "x_prev"))
EXTRA = Algorithm("extra", _with_gradient, _extra, first=_extra_first, bound=_extra_bound, cached=_GRADIENTS,
                  equation="x¹ = W x⁰ − η∇f(x⁰); x^{k+1} = (I + W) x^k − W̃ x^{k−1} − η(∇f(x^k) − ∇f(x^{k−1})) "
                           "(Shi, Ling, Wu, Yin, 2015)")
EXACT_DIFFUSION = Algorithm("exact_diffusion", _with_gradient, _diffusion, first=_diffusion_first, cached=_GRADIENTS,
                            equation="x¹ = W̃(x⁰ − η∇f(x⁰)); x^{k+1} = W̃(2x^k − x^{k−1} − η(∇f(x^k) − ∇f(x^{k−1}))) "
                                     "(Yuan, Ying, Zhao, Sayed, 2019)")
NIDS = Algorithm("nids", _with_gradient, _diffusion, first=_nids_first, bound=_nids_bound,
                 cached=_GRADIENTS,
                 equation="x¹ = x⁰ − η∇f(x⁰); then as exact diffusion (Li, Shi, Yan, 2019)")
GRADIENT_TRACKING = Algorithm("gradient_tracking", _tracking_init, _dig, cached=(("g", "x"),),
                              equation="y⁰ = ∇f(x⁰); x^{k+1} = W x^k − η y^k; y^{k+1} = W y^k + ∇f(x^{k+1}) − ∇f(x^k) "
                                       "(DIGing; Nedić, Olshevsky, Shi, 2017)")
NEXT = Algorithm("next", _tracking_init, _next, cached=(("g", "x"),),
                 equation="y⁰ = ∇f(x⁰); x^{k+1} = W(x^k − η y^k); y^{k+1} = W y^k + ∇f(x^{k+1}) − ∇f(x^k) "
                          "(NEXT / SONATA; Di Lorenzo, Scutari, 2016)")
AUG_DGM = Algorithm("aug_dgm", _tracking_init, _aug_dgm, cached=(("g", "x"),),
                    equation="y⁰ = ∇f(x⁰); x^{k+1} = W(x^k − η y^k); y^{k+1} = W(y^k + ∇f(x^{k+1}) − ∇f(x^k)) "
                             "(Xu, Zhu, Soh, Xie, 2015)")


# --- momentum, in the buffer form of decentralised momentum SGD -----------------------------

def _momentum_variant(base: Algorithm, beta: float) -> Algorithm:
    r"""``base`` (dgd, atc, cta or centralized) with the momentum buffer
    :math:`v^{k+1} = \beta v^k + g^k` (:math:`g^k` the local gradient the method uses at step
    :math:`k`, :math:`v^0 = 0`) in place of :math:`g^k` in its gradient step."""
    def init(ops, x0):
        return {"x": x0, "v": 0 * x0}

    def step(ops, s, k):
        x = s["x"]
        if base.name == "cta":
            psi = ops.mix(x, k)
            v = beta * s["v"] + ops.grad(psi, k)
            return {"x": psi - ops.lr * v, "v": v}
        g = ops.grad(x, k)
        v = beta * s["v"] + (ops.average(g) if base.name == "centralized" else g)
        if base.name == "dgd":
            return {"x": ops.mix(x, k) - ops.lr * v, "v": v}
        if base.name == "atc":
            return {"x": ops.mix(x - ops.lr * v, k), "v": v}
        return {"x": x - ops.lr * v, "v": v}

    return Algorithm(base.name, init, step, consensus=base.consensus, momentum=float(beta),
                     equation=f"{base.equation}, with momentum v⁺ = {beta:g} v + g in place of g")



#: The registry: name -> definition.
REGISTRY = {a.name: a for a in (DGD, ATC, CTA, CENTRALIZED, EXTRA, EXACT_DIFFUSION, NIDS, GRADIENT_TRACKING, NEXT,
                                 AUG_DGM)}
#: Names of the algorithms the package defines.
ALGORITHMS = tuple(REGISTRY)
#: The paper's three methods and centralised gradient descent (the one-step methods with a flow).
PAPER_ALGORITHMS = ("dgd", "atc", "cta", "centralized")
#: The methods that take ``momentum=β`` (:func:`get`).
MOMENTUM_ALGORITHMS = ("dgd", "atc", "cta", "centralized")
_VARIANTS: dict = {}


def get(algorithm, momentum: float = 0.0) -> Algorithm:
    """The :class:`Algorithm` named ``algorithm`` (or ``algorithm`` itself if it is one), with momentum.

    ``momentum=β`` (0 <= β < 1) gives the momentum variant of dgd, atc, cta or centralized
    (:data:`MOMENTUM_ALGORITHMS`); ``0`` is the method itself. Raises ``ValueError`` naming
    the allowed values if the name is unknown or the momentum is not allowed.

    Example:
        >>> get("atc").name, get("dgd", momentum=0.5).momentum
        ('atc', 0.5)
        >>> get("adam")
        Traceback (most recent call last):
        ...
        ValueError: unknown algorithm='adam'; allowed: dgd, atc, cta, centralized, extra, exact_diffusion, nids, gradient_tracking, next, aug_dgm (or an algorithms.Algorithm)
    """
    if isinstance(algorithm, Algorithm):
        alg = algorithm
    elif algorithm not in REGISTRY:
        raise ValueError(f"unknown algorithm={algorithm!r}; allowed: {', '.join(ALGORITHMS)} "
                         "(or an algorithms.Algorithm)")
    else:
        alg = REGISTRY[algorithm]
    try:
        beta = float(momentum)
    except (TypeError, ValueError):
        raise ValueError(f"momentum must be a number in [0, 1), got {momentum!r}") from None
    if not 0 <= beta < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    if beta == 0:
        return alg
    if alg.name not in MOMENTUM_ALGORITHMS or REGISTRY.get(alg.name) is not alg:
        raise ValueError(f"momentum={beta:g} is defined for {', '.join(MOMENTUM_ALGORITHMS)}, not for "
                         f"algorithm={alg.name!r}")
    key = (alg.name, beta)
    if key not in _VARIANTS:
        _VARIANTS[key] = _momentum_variant(alg, beta)
    return _VARIANTS[key]


class _Probe:
    """Operations that only let :func:`state_variables` see which variables ``init`` creates."""
    lr = 0.0

    def mix(self, v, k):
        return v

    def grad(self, x, k):
        return x

    @staticmethod
    def average(v):
        return v


def state_variables(algorithm, momentum: float = 0.0) -> list:
    """Names of the state variables of a method, in the order ``init`` creates them.

    Example:
        >>> state_variables("gradient_tracking"), state_variables("dgd", momentum=0.9)
        (['x', 'y', 'g'], ['x', 'v'])
    """
    return list(get(algorithm, momentum).init(_Probe(), 0.0))


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
