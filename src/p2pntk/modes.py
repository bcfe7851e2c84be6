r"""Error dynamics in closed form: the modes of the iteration matrix, the slow modes, DGD's threshold.

A one-step method (DGD, ATC, CTA, centralised GD) is, in the row-space coordinates
:math:`z_q = F^\top a_q` of :mod:`p2pntk.stability` (:math:`K = FF^\top`), the affine map
:math:`z_{k+1} = M z_k + c`, :math:`z_0 = 0` (:func:`p2pntk.stability.affine_map`, built from
the algorithm's one definition). With the fixed point :math:`z^* = (I - M)^{-1} c` and the
eigendecomposition :math:`M v_i = \mu_i v_i`, the error is a sum over the modes

.. math:: e_k = z_k - z^* = M^k e_0 = \sum_i c_i\, \mu_i^k\, v_i, \qquad e_0 = -z^* = \sum_i c_i v_i ,

(:func:`mode_expansion`; :math:`c_i\in\mathbb R^m` or :math:`\mathbb C^m`, one entry per
column of the state). For DGD with a symmetric :math:`W` and for centralised GD, :math:`M`
is symmetric in these coordinates — they are the symmetrised system, the conjugation of the
coefficient recursion by :math:`I\otimes K^{1/2}` restricted to the range of :math:`K` —
so the :math:`v_i` are orthonormal and :math:`c_i = v_i^\top e_0` (``eigh``); otherwise
(ATC, CTA, a non-symmetric W) the general eigendecomposition, :math:`c = V^{-1} e_0`.

Agent q's outputs on a set of points are :math:`f_q = f_{0} + B z_q` (:math:`B = F` on the
training points, :math:`B = K_{\rm test} F^{+\top}` on test points), so its loss
:math:`L_q = \tfrac12\sum_{\rm rows} w_q\,(f_q - y)^2` (weights :math:`w_q = 1/n` for the
loss on all n points, :math:`D_q` for its own local loss) is a double sum over the modes

.. math:: L_q(k) = L_q^* + \sum_i \ell_{q,i}\,\mu_i^k + \sum_{i,j} \Gamma_{q,ij}\,\mu_i^k\mu_j^k,

with :math:`R_q^* = f_0 + B z_q^* - y`, :math:`P_{q,i} = B v_{i,q}` (:math:`v_{i,q}` the q-th
block of :math:`v_i`), :math:`L_q^* = \tfrac12\|R_q^*\|_{w_q}^2`,
:math:`\ell_{q,i} = \langle P_{q,i} c_i^\top, R_q^*\rangle_{w_q}` and
:math:`\Gamma_{q,ij} = \tfrac12\langle P_{q,i}c_i^\top, P_{q,j}c_j^\top\rangle_{w_q}`
(bilinear, not Hermitian: the error is real, complex modes come in conjugate pairs)
(:meth:`ModeExpansion.losses`). Hence the asymptotic rate of the loss gap
:math:`L_q(k) - L_q^*` is the largest :math:`|\mu_i|` with :math:`\ell_{q,i}\ne0`, or the
largest :math:`|\mu_i|^2` with :math:`\Gamma_{q,ii}\ne0`, whichever is larger
(:meth:`ModeExpansion.loss_rate`): :math:`\rho^2` for the training loss when the fixed point
interpolates (:math:`R^* = 0`), :math:`\rho` for the test loss.

The slow modes of DGD (:func:`dgd_slow_modes`) and an upper bound on DGD's exact threshold
(:func:`dgd_threshold_upper_bound`) are the two theorems of chapter *Modes*.
NumPy/SciPy only.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from . import algorithms, stability
from .coefficients import CoefficientSystem

#: Relative size (to the agent's initial loss, or to the initial error) below which a term of
#: the mode sum counts as not excited (round-off of an absent term is about 1e-15 of it).
EXCITED = 1e-10


@dataclass
class ModeExpansion:
    r"""The error :math:`e_k = z_k - z^* = \sum_i c_i\mu_i^k v_i` of a one-step method (:func:`mode_expansion`).

    Attributes:
        algorithm, lr: the method and its step size.
        mu: (S,) eigenvalues of the iteration matrix :math:`M`, by decreasing modulus.
        V: (S, S) the eigenvectors :math:`v_i` as columns (orthonormal when ``symmetric``).
        coef: (S, m) the :math:`c_i` (rows), :math:`e_0 = V c`.
        z_star: (S, m) the fixed point :math:`z^* = (I - M)^{-1}c`.
        symmetric: whether :math:`M` is symmetric (the ``eigh`` path).
        system: the :class:`~p2pntk.coefficients.CoefficientSystem` (kernel, agents, data).
        blocks: ``(G, F, F_pinv_T)`` of :func:`p2pntk.stability.local_blocks`.
        y_test: test targets (N_test, C) or ``None``.
    """
    algorithm: str
    lr: float
    mu: np.ndarray
    V: np.ndarray
    coef: np.ndarray
    z_star: np.ndarray
    symmetric: bool
    consensus: bool
    system: CoefficientSystem = field(repr=False)
    blocks: tuple = field(repr=False)
    y_test: np.ndarray | None = field(default=None, repr=False)
    _terms: dict = field(default_factory=dict, repr=False)

    @property
    def Q(self) -> int:
        return self.system.Q

    @property
    def r(self) -> int:
        return self.blocks[1].shape[1]

    def agent_blocks(self, X):
        r"""(S, ...) stacked (or, for a consensus method, one agent's) vectors -> (Q, r, ...) per agent."""
        if self.consensus:
            return np.broadcast_to(X, (self.Q,) + X.shape)
        return X.reshape((self.Q, self.r) + X.shape[1:])

    def errors(self, steps) -> np.ndarray:
        r""":math:`e_k = \sum_i c_i \mu_i^k v_i` at ``steps``, (len(steps), Q, r, m), real."""
        pw = self.mu[None, :] ** np.asarray(steps, dtype=np.float64)[:, None]       # (T, S)
        e = np.einsum("si,ti,im->tsm", self.V, pw, self.coef)
        return np.stack([self.agent_blocks(x) for x in e.real])

    def iterates(self, steps) -> np.ndarray:
        r""":math:`z_k = z^* + e_k` at ``steps``, (len(steps), Q, r, m)."""
        return self.agent_blocks(self.z_star)[None] + self.errors(steps)

    # --- read-outs: outputs of agent q on a set of points are f0x + B z_q ---------------------
    @functools.cached_property
    def _readouts(self):
        s = self.system
        F, Finv = self.blocks[1], self.blocks[2]
        y = s.f0 - s.resid0                                     # targets in the state's layout
        n_pts = s.N
        out = {"train": (F, s.f0, y, np.full((s.Q, len(F)), 1.0 / n_pts)),
               "local": (F, s.f0, y, s.d)}
        if s.test is not None:
            Kt, f0t = s.test
            if self.y_test is None:
                raise ValueError("y_test is required for the test loss")
            yt = np.asarray(self.y_test, dtype=np.float64).reshape(f0t.shape)
            out["test"] = (Kt @ Finv, f0t, yt, np.full((s.Q, len(Kt)), s.C / len(Kt) if s.resolved else 1.0 / len(Kt)))
        return out

    def _readout(self, split):
        if split not in self._readouts:
            raise ValueError(f"split must be one of {sorted(self._readouts)}, got {split!r}"
                             + (" (pass K_test, f0_test and y_test for 'test')" if split == "test" else ""))
        return self._readouts[split]

    def outputs(self, steps, split: str = "train") -> np.ndarray:
        r"""Every agent's outputs :math:`f_0 + B z_q(k)` from the modes, (len(steps), Q, n, C)."""
        B, f0x, _, _ = self._readout(split)
        z = self.iterates(steps)
        f = f0x[None, None] + np.einsum("nr,tqrm->tqnm", B, z)
        return f.reshape(f.shape[:2] + (-1, self.system.C))

    def loss_terms(self, split: str = "train"):
        r"""The terms of the double sum of agent q's loss: ``(L_star (Q,), ell (Q, S), Gamma (Q, S, S))``.

        .. math:: L_q(k) = L_q^* + \sum_i \ell_{q,i}\mu_i^k + \sum_{i,j}\Gamma_{q,ij}\mu_i^k\mu_j^k

        (module docstring), for ``split`` ``"train"`` (all N training points), ``"local"``
        (agent q's own points, weights :math:`D_q`) or ``"test"``.
        """
        if split in self._terms:
            return self._terms[split]
        B, f0x, yx, w = self._readout(split)
        Vq = self.agent_blocks(self.V)                                    # (Q, r, S)
        P = np.einsum("nr,qri->qni", B, Vq)                                 # (Q, n, S): B v_{i,q}
        Rstar = f0x[None] + np.einsum("nr,qrm->qnm", B, self.agent_blocks(self.z_star)) - yx[None]   # (Q, n, m)
        L_star = 0.5 * np.einsum("qn,qnm->q", w, Rstar ** 2)
        ell = np.einsum("qn,qni,im,qnm->qi", w, P, self.coef, Rstar)
        gram = np.swapaxes(w[:, :, None] * P, 1, 2) @ P                   # (Q, S, S): P_q^T diag(w_q) P_q
        Gamma = 0.5 * gram * (self.coef @ self.coef.T)[None]
        self._terms[split] = (L_star, ell, Gamma)
        return self._terms[split]

    def losses(self, steps, split: str = "train") -> np.ndarray:
        r"""Every agent's loss at ``steps`` as the double sum over the modes, (len(steps), Q), real.

        Example:
            >>> W = np.full((2, 2), 0.5)
            >>> m = mode_expansion("dgd", W, np.ones((2, 2)), [0, 1], np.zeros((2, 1)), np.ones((2, 1)), 0.25)
            >>> np.round(m.losses([0, 1, 2], "local"), 8)        # 0.5 * 0.75 ** (2 k): the rate mu_1 ** 2
            array([[0.5       , 0.5       ],
                   [0.28125   , 0.28125   ],
                   [0.15820312, 0.15820312]])
            >>> m.loss_rate("local")
            0.5625
        """
        L_star, ell, Gamma = self.loss_terms(split)
        pw = self.mu[None, :] ** np.asarray(steps, dtype=np.float64)[:, None]          # (T, S)
        lin = np.einsum("qi,ti->tq", ell, pw)
        quad = np.einsum("qij,ti,tj->tq", Gamma, pw, pw)
        return (L_star[None] + lin + quad).real

    def rate(self, tol: float = EXCITED) -> float:
        r"""Predicted asymptotic rate of :math:`\|e_k\|`: the largest :math:`|\mu_i|` among the excited modes
        (:math:`\|c_i\|\,\|v_i\| > \mathrm{tol}\,\|e_0\|`) that are not unit eigenvalues."""
        size = np.linalg.norm(self.coef, axis=1) * np.linalg.norm(self.V, axis=0)
        keep = (size > tol * max(np.linalg.norm(self.z_star), 1e-300)) & (np.abs(self.mu - 1) > 1e-12)
        return float(np.abs(self.mu[keep]).max(initial=0.0))

    def loss_rate(self, split: str = "train", tol: float = EXCITED) -> float:
        r"""Predicted asymptotic rate of every agent's loss gap :math:`L_q(k) - L_q^*` (the largest over agents):
        :math:`\max(\max\{|\mu_i| : \ell_{q,i}\ne0\},\ \max\{|\mu_i|^2 : P_{q,i}c_i^\top\ne0\})`, a term
        counting as present when it exceeds ``tol`` times the agent's initial loss. By Cauchy–Schwarz
        :math:`|\Gamma_{q,ij}| \le \tfrac12\|P_{q,i}c_i^\top\|_{w}\|P_{q,j}c_j^\top\|_{w}`, so no cross term decays slower."""
        L_star, ell, Gamma = self.loss_terms(split)
        L0 = self.losses([0], split)[0]                                     # (Q,)
        a = np.abs(self.mu)
        B, _, _, w = self._readout(split)
        P = np.einsum("nr,qri->qni", B, self.agent_blocks(self.V))
        # the size of mode i's term, 1/2 ||P_{q,i} c_i^T||_w^2 (Hermitian: |Gamma_ij| <= sqrt of the two, Cauchy-Schwarz)
        diag = 0.5 * np.einsum("qn,qni->qi", w, np.abs(P) ** 2) * np.sum(np.abs(self.coef) ** 2, axis=1)[None]
        lin = np.abs(ell) > tol * L0[:, None]
        quad = diag > tol * L0[:, None]
        return float(max((a[None] * lin).max(), ((a ** 2)[None] * quad).max()))


def mode_expansion(algorithm, W, K, owner, f0, y, lr, *, K_test=None, f0_test=None, y_test=None) -> ModeExpansion:
    r"""The modes of a one-step method: :math:`e_k = z_k - z^* = \sum_i c_i\mu_i^k v_i` (module docstring).

    :math:`M` and :math:`c` are :func:`p2pntk.stability.affine_map` of the algorithm's own
    definition; :math:`z^* = (I - M)^{-1}c`, :math:`e_0 = -z^*` (all agents start at
    :math:`\theta_0`, :math:`z_0 = 0`); ``eigh`` when :math:`M` is symmetric (DGD with a
    symmetric W, centralised GD), ``eig`` otherwise. Cost :math:`O(S^3)`, S = Q·rank K (rank K
    for centralised GD).

    Args:
        algorithm: ``"dgd"``, ``"atc"``, ``"cta"``, ``"centralized"`` or another one-step
            :class:`~p2pntk.algorithms.Algorithm` (one state variable, no different first update).
        W, K, owner, f0, y, lr, K_test, f0_test: as :func:`p2pntk.dynamics.linearized_outputs`
            (a fixed (Q, Q) W); y_test: (N_test, C) test targets, for the test loss.

    Returns:
        :class:`ModeExpansion`.

    Example:
        >>> W = np.full((2, 2), 0.5)
        >>> m = mode_expansion("dgd", W, np.ones((2, 2)), [0, 1], np.zeros((2, 1)), np.ones((2, 1)), 0.25)
        >>> np.round(m.mu, 12), m.symmetric
        (array([ 0.75, -0.25]), True)
    """
    alg = algorithms.get(algorithm)
    system = CoefficientSystem([W], K, owner, f0, y, K_test, f0_test)
    if len(system.mixers[0].W) != 1:
        raise ValueError("W: the modes need one fixed (Q, Q) mixing matrix, got a schedule")
    blocks = stability.local_blocks(system)
    amap = stability.affine_map(alg, system.W, system, lr, blocks=blocks)
    if len(amap.names) != 1 or alg.first is not None:
        raise ValueError(f"algorithm {alg.name!r} has state variables {amap.names}"
                         f"{' and a different first update' if alg.first is not None else ''}: mode_expansion "
                         "is for one-step methods (dgd, atc, cta, centralized)")
    M, c = amap.M, amap.c
    z_star = np.linalg.solve(np.eye(len(M)) - M, c)
    e0 = -z_star
    symmetric = stability.is_symmetric(M)
    if symmetric:
        mu, V = np.linalg.eigh(0.5 * (M + M.T))
        coef = V.T @ e0
    else:
        mu, V = np.linalg.eig(M)
        coef = np.linalg.solve(V, e0)
    order = np.argsort(-np.abs(mu), kind="stable")
    return ModeExpansion(alg.name, float(lr), mu[order], V[:, order], coef[order], z_star, symmetric,
                         alg.consensus, system, blocks, y_test)


def name_modes(expansion: ModeExpansion, n: int = 8) -> dict:
    r"""Name the ``n`` slowest modes by the graph and the kernel spectrum (symmetric W).

    For mode i, with blocks :math:`v_{i,q}` and :math:`W = \sum_j \lambda_j w_j w_j^\top`:
    the share of :math:`\|v_i\|^2` on each graph eigenvector, :math:`\omega_{ij} = \|(w_j^\top\otimes I)v_i\|^2`
    (:math:`j = 1`, :math:`w_1 = \one/\sqrt Q`: the consensus fraction), the graph eigenvalue
    :math:`\lambda_{j^*}` of the largest share, and the Rayleigh quotient
    :math:`\gamma_i = u_i^\top G^{(j^*)} u_i/u_i^\top u_i` of its kernel part
    :math:`u_i = (w_{j^*}^\top\otimes I)v_i` on :math:`G^{(j)} = \sum_q w_{j,q}^2 G_q` — so that
    :math:`\mu_i \approx \lambda_{j^*} - \eta\gamma_i` (exact for homogeneous agents, :math:`G_q = \bar G`).

    Returns:
        dict of (n,) arrays: ``mu``, ``excitation`` (:math:`\|c_i\|\,\|v_i\|`), ``consensus``
        (:math:`\omega_{i1}`), ``graph_eigenvalue``, ``share`` (:math:`\omega_{ij^*}`), ``gamma``,
        ``named`` (:math:`\lambda_{j^*} - \eta\gamma_i`).

    Example (two agents holding the same point: homogeneous, the names are exact):
        >>> m = mode_expansion("dgd", np.full((2, 2), 0.5), np.ones((2, 2)), [0, 1], np.zeros((2, 1)), np.ones((2, 1)), 0.25)
        >>> {k: np.round(v, 12).tolist() for k, v in name_modes(m).items() if k in ("mu", "consensus", "named")}
        {'mu': [0.75, -0.25], 'consensus': [1.0, 0.0], 'named': [0.75, -0.25]}
    """
    if expansion.consensus:
        raise ValueError("name_modes: a consensus method has no graph modes")
    W = expansion.system.W
    if not stability.is_symmetric(W):
        raise ValueError("name_modes: W must be symmetric (its eigenvectors name the modes)")
    lam, U = np.linalg.eigh(W)
    lam, U = lam[::-1], U[:, ::-1]                                 # lambda_1 = 1 first
    U[:, 0] = np.abs(U[:, 0])
    G = expansion.blocks[0]
    out = {k: [] for k in ("mu", "excitation", "consensus", "graph_eigenvalue", "share", "gamma", "named")}
    for i in range(min(n, len(expansion.mu))):
        v = expansion.agent_blocks(expansion.V[:, i])              # (Q, r)
        proj = U.T @ v                                             # (Q graph modes, r)
        share = np.sum(np.abs(proj) ** 2, axis=1) / np.sum(np.abs(v) ** 2)
        j = int(np.argmax(share))
        u = proj[j]
        Gj = np.einsum("q,qab->ab", U[:, j] ** 2, G)
        gamma = float(np.real(np.conj(u) @ Gj @ u) / np.real(np.conj(u) @ u))
        for k, val in (("mu", expansion.mu[i]), ("excitation", np.linalg.norm(expansion.coef[i]) * np.linalg.norm(v)),
                       ("consensus", share[0]), ("graph_eigenvalue", lam[j]), ("share", share[j]), ("gamma", gamma),
                       ("named", lam[j] - expansion.lr * gamma)):
            out[k].append(val)
    return {k: np.array(v) for k, v in out.items()}


def tail_rate(steps, values) -> float:
    r"""Geometric rate :math:`\hat\rho` of a least-squares fit :math:`\log v_k = k\log\hat\rho + b` (log-linear).

    Example:
        >>> round(tail_rate([10, 20, 30], [0.9 ** 10, 0.9 ** 20, 0.9 ** 30]), 12)
        0.9
    """
    k = np.asarray(steps, dtype=np.float64)
    slope = np.polyfit(k, np.log(np.asarray(values, dtype=np.float64)), 1)[0]
    return float(np.exp(slope))


class SlowModes(NamedTuple):
    r"""The slowest mode of linearised DGD and its bracket (:func:`dgd_slow_modes`)."""
    mu_max: float           # largest eigenvalue of M
    mu_min: float           # smallest eigenvalue of M
    kernel: float           # 1 - eta gamma_1(G-bar): the consensus mode of the smallest centralised curvature
    graph: float            # lambda_2(W) - eta gamma_1(G^(2)): the disagreement mode along W's 2nd eigenvector
    upper: float            # lambda_max [[1 - eta gamma_1, eta h], [eta h, lambda_2]]
    gamma_1: float          # smallest eigenvalue of G-bar
    lambda_2: float         # second eigenvalue of W
    h: float                # heterogeneity ||P_D G P_C||
    consensus_fraction: float   # ||P_C v_1||^2 of the slowest mode's eigenvector
    binding: str            # the larger lower bound: "kernel" if 1 - eta gamma_1 >= the graph bound, else "graph"


def dgd_slow_modes(W, K, owner, lr) -> SlowModes:
    r"""The slowest mode of linearised DGD, named by the kernel and the graph spectrum.

    With :math:`M = W\otimes I_r - \eta G` (symmetric W), :math:`\bar G = \frac1Q\sum_q G_q`
    (smallest eigenvalue :math:`\gamma_1`), :math:`\lambda_2` the second eigenvalue of W with
    unit eigenvector :math:`w_2`, :math:`G^{(2)} = \sum_q w_{2,q}^2 G_q` and the heterogeneity
    :math:`h^2 = \lambda_{\max}\big(\frac1Q\sum_q (G_q - \bar G)^2\big)`:

    .. math:: \max\big(1 - \eta\gamma_1,\ \lambda_2 - \eta\lambda_{\min}(G^{(2)})\big)
              \le \mu_{\max}(M) \le
              \lambda_{\max}\begin{pmatrix}1 - \eta\gamma_1 & \eta h\\ \eta h & \lambda_2\end{pmatrix}

    (chapter *Modes*, theorem thm-slow-modes). Cost: one symmetric eigenvalue problem of size Q·rank K.

    Example:
        >>> s = dgd_slow_modes(np.full((2, 2), 0.5), np.ones((2, 2)), [0, 1], 0.25)   # two copies of one point
        >>> round(s.mu_max, 12), round(s.kernel, 12), round(s.upper, 12), s.binding
        (0.75, 0.75, 0.75, 'kernel')
    """
    system = _system(W, K, owner, "dgd_slow_modes")
    blocks = stability.local_blocks(system)
    G = blocks[0]
    Q, r = G.shape[:2]
    M = stability.affine_map("dgd", system.W, system, lr, offset=False, blocks=blocks).M
    ev, vec = np.linalg.eigh(0.5 * (M + M.T))
    lam, U = np.linalg.eigh(system.W)
    Gbar = G.mean(axis=0)
    gamma_1 = float(np.linalg.eigvalsh(Gbar)[0])
    w2 = U[:, -2]
    G2 = np.einsum("q,qij->ij", w2 ** 2, G)
    dev = G - Gbar
    h = float(np.sqrt(max(np.linalg.eigvalsh(np.einsum("qij,qjk->ik", dev, dev) / Q)[-1], 0.0)))
    kernel, graph = 1 - lr * gamma_1, float(lam[-2] - lr * np.linalg.eigvalsh(G2)[0])
    upper = float(np.linalg.eigvalsh(np.array([[kernel, lr * h], [lr * h, lam[-2]]]))[-1])
    v1 = vec[:, -1].reshape(Q, r)
    frac = float(Q * np.sum(v1.mean(axis=0) ** 2))
    return SlowModes(float(ev[-1]), float(ev[0]), float(kernel), graph, upper, gamma_1, float(lam[-2]), h, frac,
                     "kernel" if kernel >= graph else "graph")


def local_curvatures(K, owner) -> np.ndarray:
    r"""Every agent's local curvature :math:`\lambda_q = \lambda_{\max}(K_{qq})/N_q` (Q,); their maximum is
    :math:`\lambda_{\rm loc}` (:func:`p2pntk.stability.local_curvature`).

    Example:
        >>> local_curvatures(np.diag([1.0, 1.0, 4.0, 0.0]), [0, 0, 1, 1]).tolist()
        [0.5, 2.0]
    """
    system = _system(np.full((np.max(owner) + 1,) * 2, 1.0 / (np.max(owner) + 1)), K, owner)
    out = []
    for q in range(system.Q):
        idx = np.flatnonzero(system.d[q])
        out.append(np.linalg.eigvalsh(system.Kmat[np.ix_(idx, idx)])[-1] * system.d[q, idx[0]])
    return np.array(out)


def _system(W, K, owner, symmetric_for: str = ""):
    """A :class:`CoefficientSystem` of ``W``, ``K``, ``owner`` with zero data; ``symmetric_for``: the caller that needs a symmetric W."""
    W = np.asarray(W, dtype=np.float64)
    if symmetric_for and not stability.is_symmetric(W):
        raise ValueError(f"{symmetric_for}: W must be symmetric (proved for a symmetric W only)")
    C = np.shape(K)[1] if np.ndim(K) == 4 else 1
    zero = np.zeros((len(owner), C))
    return CoefficientSystem([W], K, owner, zero, zero)


def dgd_threshold_upper_bound(W, K, owner, *, per_agent: bool = False):
    r"""Upper bound on DGD's exact threshold: :math:`\eta^*_{\rm DGD} \le \min_q \frac{1 + W_{qq}}{\lambda_q}`,
    :math:`\lambda_q = \lambda_{\max}(K_{qq})/N_q` (symmetric W; chapter *Modes*, theorem thm-dgd-below-atc).

    Below ATC/CTA's sufficient bound :math:`2/\lambda_{\rm loc}`: at the agent of largest local
    curvature, :math:`(1 + W_{qq})/\lambda_{\rm loc} < 2/\lambda_{\rm loc}` as :math:`W_{qq} < 1`.
    ``per_agent=True`` returns the (Q,) values :math:`(1 + W_{qq})/\lambda_q`.

    Example:
        >>> W = np.array([[0.5, 0.5], [0.5, 0.5]])
        >>> dgd_threshold_upper_bound(W, np.eye(4), [0, 0, 1, 1])
        3.0
    """
    system = _system(W, K, owner, "dgd_threshold_upper_bound")
    vals = (1 + np.diag(system.W)) / local_curvatures(K, owner)
    return vals if per_agent else float(vals.min())
