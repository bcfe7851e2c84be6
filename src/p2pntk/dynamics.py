r"""Closed-form dynamics of linearised peer-to-peer training, in Q·N·C coefficients.

With the linearised network :math:`f_{\rm lin}(x;\theta) = f_0(x) + J(x)(\theta-\theta_0)`,
the MSE losses and the common initialisation :math:`\theta_q(0)=\theta_0`, every
agent's displacement stays in the row space of the training Jacobian
:math:`J\in\mathbb R^{NC\times P}`:

.. math:: \theta_q(k) = \theta_0 + J^\top a_q(k), \qquad a_q(k)\in\mathbb R^{N\times C},

and the outputs on any input are :math:`f_q(x) = f_0(x) + K(x, X)\,a_q`
(:mod:`p2pntk.coefficients`). With :math:`D_q = \mathrm{diag}(\mathbb 1[i\in q]/N_q)` and
residual :math:`r_q = f_0 + K a_q - y`, the algorithms of :mod:`p2pntk.algorithms` become, e.g.

- DGD: :math:`a_q^+ = \sum_l W_{ql} a_l - \eta D_q r_q`;
- ATC: :math:`a_q^+ = \sum_l W_{ql} (a_l - \eta D_l r_l)`;
- CTA: :math:`b_q = \sum_l W_{ql} a_l`, :math:`a_q^+ = b_q - \eta D_q (f_0 + K b_q - y)`;
- centralised: :math:`a^+ = a - \eta \tfrac1Q\sum_q D_q r`.

These recursions come from the algorithms' single definitions run on the coefficient
back end; they are exact for the linearised model at any step size
(:func:`linearized_outputs`; :func:`linearized_sweep` runs a grid of step sizes ×
mixing matrices together, one pass over the kernel per iteration). The gradient flows of
the one-step methods (``t`` counts iterations), generator :math:`M - I` of the iteration
matrix :math:`M` (:func:`p2pntk.stability.affine_map`), e.g. for DGD
:math:`\dot a = -((I-W)\otimes I) a - \eta D(\tilde K a + c)`, are solved in closed form
by :func:`linearized_flow_outputs`.

Kernel layouts: ``K`` of shape ``(N, N)`` is shared by the C outputs
(:math:`K\otimes I_C`, the outputs decouple); ``(N, C, N, C)`` is output-resolved.
All computations are float64 NumPy/SciPy, independent of JAX's precision setting.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from . import algorithms, stability
from .algorithms import DynamicsResult
from .checks import check_lr, check_steps
from .coefficients import CoefficientSystem
from .metrics import relative_error


@dataclass
class SweepResult(DynamicsResult):
    r"""The outputs of :func:`linearized_sweep`, (I, T, S, ...), and which configurations diverged.

    Attributes:
        diverged: (I, T) bool, configuration ``[i, j]`` diverged (a coefficient exceeded
            :data:`p2pntk.coefficients.DIVERGED` in magnitude): its outputs are NaN from the
            iteration ``diverged_at[i, j]`` on (-1: never diverged).
        recorded: with ``record``, its arrays, each (I, T, S, ...); else None.
    """
    diverged: np.ndarray | None = None
    diverged_at: np.ndarray | None = None
    recorded: tuple | None = None


def linearized_outputs(algorithm, W, K, owner, f0, y, lr, steps, *, K_test=None, f0_test=None, momentum: float = 0.0,
                       batches=None) -> DynamicsResult:
    r"""Exact outputs of linearised peer-to-peer training at iterations ``steps``.

    Iterates the coefficient recursion of the module docstring from
    :math:`a_q(0)=0`; exact for the linearised model at any step size.

    Cost: each iteration needs agent q's rows of :math:`K` only, :math:`K_{q,:} a_q`,
    so :math:`O(N^2 C)` (shared kernel) or :math:`O((NC)^2)` (resolved) for all Q agents
    together, plus :math:`O(\mathrm{nnz}(W)\, N C)` for the mixing (CSR when W is
    sparse); each recorded step adds one dense product for the outputs of all agents,
    :math:`O(Q (N + N_{\rm test}) N C)` shared or :math:`O(Q (N + N_{\rm test}) N C^2)`
    resolved. Total (shared) :math:`O(k_{\max} (N^2 C + \mathrm{nnz}(W) N C) + S\, Q (N + N_{\rm test}) N C)`.
    Memory: two (n, n) copies of the kernel, n = N (shared) or NC (resolved), plus
    :math:`O(Q N C)` per state and per recorded step; no :math:`QN\times QN` matrix
    (Q = 256, N = 4096, C = 10, shared: about 0.3 GB of kernel and 84 MB per state).

    Args:
        algorithm: a name of :data:`p2pntk.algorithms.ALGORITHMS` (``"dgd"``, ``"atc"``,
            ``"cta"``, ``"centralized"``) or an :class:`~p2pntk.algorithms.Algorithm`.
        W: (Q, Q) symmetric doubly stochastic mixing matrix, a (T, Q, Q) schedule
            (iteration k mixes with ``W[k % T]``) or a callable ``k -> W(k)``
            (:func:`p2pntk.graphs.mixing_schedule`, :func:`~p2pntk.graphs.link_failures`,
            :func:`~p2pntk.graphs.local_steps`).
        K: NTK Gram matrix of the training points, (N, N) or (N, C, N, C).
        owner: (N,) agent of each training point.
        f0, y: (N, C) initial outputs and targets.
        lr: step size :math:`\eta`.
        steps: sorted iteration counts.
        K_test, f0_test: optional (N_test, N) or (N_test, C, N, C) and (N_test, C).
        momentum: :math:`\beta \in [0, 1)` for dgd, atc, cta, centralized (:func:`p2pntk.algorithms.get`).
        batches: ``None`` (full batch) or a callable ``k -> `` Q index arrays, agent q's
            minibatch at iteration k (:func:`p2pntk.training.minibatches`; the same callable
            given to :func:`p2pntk.training.simulate` is predicted exactly).

    Returns:
        :class:`DynamicsResult`: ``train`` (S, Q, N, C), ``test`` (S, Q, N_test, C),
        ``coef`` (S, Q, N, C).

    Example:
        >>> W = np.array([[0.5, 0.5], [0.5, 0.5]])
        >>> r = linearized_outputs("dgd", W, np.eye(2), [0, 1], np.zeros((2, 1)), np.ones((2, 1)), 0.5, [0, 1])
        >>> r.train[1, 0, :, 0]
        array([0.5, 0. ])
    """
    alg = algorithms.get(algorithm, momentum)
    steps = check_steps(steps)
    n = int(steps[-1])
    system = CoefficientSystem([W], K, owner, f0, y, K_test, f0_test, batches=batches, n_iterations=n)
    check_lr(lr)
    if len(system.mixers[0].W) == 1 and batches is None:   # a fixed W, full batches: the stability bounds apply
        stability.warn_if_unstable(alg, system.W, system, lr)
    steps, train, test, coef = system.run(alg, np.full(system.resid0.shape[1], float(lr)), steps)
    one = lambda x: None if x is None else x[:, 0]                     # the single configuration
    return DynamicsResult(np.asarray(steps), one(train), one(test), None, one(coef))


def linearized_sweep(algorithm, Ws, K, owner, f0, y, lrs, steps, *, K_test=None, f0_test=None, momentum: float = 0.0,
                     batches=None, record=None) -> SweepResult:
    r"""Exact outputs of linearised peer-to-peer training for every step size × mixing matrix, together.

    The L = I·T configurations (:math:`\eta_i`, :math:`W_j`), I = ``len(lrs)``,
    T = ``len(Ws)``, share the kernel, the data and :math:`a_q(0) = 0`; each follows the
    recursion of :func:`linearized_outputs`, e.g. for DGD

    .. math:: a_q^{(ij)}(k+1) = \sum_l (W_j)_{ql}\, a_l^{(ij)}(k) - \eta_{ij} D_q\big(f_0 + K a_q^{(ij)}(k) - y\big).

    Their coefficients are the columns of one state :math:`[a_q^{(ij)}]_{ij}` (Q, n, L·m), so
    that every step computes :math:`K_{q,:}[a_q^{(ij)}]_{ij}` as one matrix–matrix product
    per agent — one pass over the kernel for all configurations, where L runs of
    :func:`linearized_outputs` read it L times in matrix–vector products (bound by memory
    bandwidth). The mixing applies :math:`W_j` to the columns of its configurations; the
    step size is a per-column vector. Equal to :func:`linearized_outputs` cell by cell up to
    round-off (the same operations, summed in another order by BLAS).

    Measured (one BLAS thread, resolved kernel, C = 10, Q = 8, L = 24, DGD): 1.6x faster
    than L runs of :func:`linearized_outputs` at N = 128 (12 MiB kernel, held in a 32 MiB L3
    cache, so each matrix–vector product is cheap), 4.9x at N = 256 (50 MiB) and 6x at
    N = 512 (200 MiB), where every run streams the kernel from memory.

    Cost per step: :math:`O(n^2 L m)` flops, i.e. :math:`N^2 C\, L` (shared kernel) or
    :math:`(NC)^2 L` (resolved), with one pass over the kernel, plus
    :math:`O(\sum_j \mathrm{nnz}(W_j)\, N C\, I)` for the mixing; each recorded step one
    product :math:`O(Q (N + N_{\rm test}) N C\, L)` (resolved: times C). Memory: the two
    (n, n) kernel copies once (shared by all configurations) plus a few states of
    :math:`Q N C L` floats, and the recorded outputs, :math:`S Q (N + N_{\rm test}) C L`.

    A :class:`RuntimeWarning` naming the sufficient bound is issued for every configuration
    whose step size exceeds it (:func:`p2pntk.stability.warn_if_unstable`; not for schedules).
    Diverged configurations are marked, not iterated to overflow: once a coefficient of
    configuration ``[i, j]`` exceeds :data:`p2pntk.coefficients.DIVERGED` (1e100) in magnitude,
    ``diverged[i, j]`` is set, its outputs are NaN from that iteration (``diverged_at[i, j]``)
    on, and no NumPy overflow warning is issued; the other configurations are unaffected
    (bit for bit: every product acts column by column). The recursion stops early when every
    configuration has diverged.

    Args:
        algorithm, K, owner, f0, y, steps, K_test, f0_test: as :func:`linearized_outputs`.
        Ws: T (Q, Q) mixing matrices (same Q), (T_j, Q, Q) schedules or callables ``k -> W(k)``
            (e.g. T realisations of :func:`p2pntk.graphs.link_failures`: many realisations
            predicted in one batched recursion).
        momentum, batches: as :func:`linearized_outputs` (shared by all configurations).
        lrs: (I,) step sizes shared by every W, or (I, T), one per configuration.
        record: optional ``(system, A, s) -> tuple of arrays`` with a leading axis of the L
            configurations, computed from the state ``A`` at each recorded iteration ``s``
            (e.g. ``system.outputs(A, test=True)`` reduced to a mean error), in place of every
            agent's outputs: memory :math:`S\,L` times its size instead of
            :math:`S Q (2N + N_{\rm test}) C L` floats (configuration ``l = j I + i``).

    Returns:
        :class:`SweepResult` with ``train`` (I, T, S, Q, N, C), ``test``
        (I, T, S, Q, N_test, C) and ``coef`` (I, T, S, Q, N, C): index ``[i, j]`` is
        ``linearized_outputs(algorithm, Ws[j], ..., lrs[i] (or lrs[i, j]), steps)`` (NaN
        once diverged), and the (I, T) ``diverged`` mask and ``diverged_at`` iterations.
        With ``record``: ``recorded``, the tuple of its arrays, each (I, T, S, ...), and
        ``train``, ``test``, ``coef`` None.
    """
    T = len(Ws)
    lrs = np.asarray(lrs, dtype=np.float64)
    if T == 0 or lrs.ndim not in (1, 2) or lrs.shape[1:] not in ((), (T,)) or len(lrs) == 0:
        raise ValueError(f"lrs must have shape (I,) or (I, len(Ws)) = (I, {T}) with I >= 1, got {lrs.shape}")
    I = len(lrs)
    lrs = np.broadcast_to(lrs.reshape(I, -1), (I, T))
    alg = algorithms.get(algorithm, momentum)
    steps = check_steps(steps)
    n = int(steps[-1])
    system = CoefficientSystem(Ws, K, owner, f0, y, K_test, f0_test, batches=batches, n_iterations=n)
    curv = stability.Curvatures(system)
    for j, mixer in enumerate(system.mixers):
        for i in range(I):
            check_lr(lrs[i, j])
            if len(mixer.W) == 1 and batches is None:
                stability.warn_if_unstable(alg, mixer.W[0], system, lrs[i, j], f"configuration (lr {i}, W {j}): ", curv)
    rec = None if record is None else (lambda A, s: record(system, A, s))
    steps, *values, at = system.run(alg, np.repeat(lrs.T.ravel(), system.resid0.shape[1]), steps,
                                    stop_diverged=True, record=rec)
    grid = lambda x: None if x is None else x.reshape((len(x), T, I) + x.shape[2:]).swapaxes(0, 2)  # (S, L) -> (I, T, S)
    at = at.reshape(T, I).T
    if record is not None:
        return SweepResult(np.asarray(steps), None, None, None, None, at >= 0, at, tuple(map(grid, values)))
    train, test, coef = values
    return SweepResult(np.asarray(steps), grid(train), grid(test), None, grid(coef), at >= 0, at)



def _phi(lam, t):
    r""":math:`\varphi_t(\lambda) = (1 - e^{-\lambda t})/\lambda`, :math:`= t` at :math:`\lambda = 0`."""
    lam = np.asarray(lam)
    small = np.abs(lam * t) < 1e-8
    safe = np.where(small, 1.0, lam)
    return np.where(small, t - lam * t * t / 2, -np.expm1(-lam * t) / safe)


def linearized_flow_outputs(algorithm, W, K, owner, f0, y, lr, times, *, K_test=None, f0_test=None) -> DynamicsResult:
    r"""Outputs of the gradient flow of linearised peer-to-peer training at ``times``.

    For a one-step method (one state variable) with iteration :math:`z^+ = M z + c` in
    row-space coordinates (:func:`p2pntk.stability.affine_map`, built from the
    algorithm's own step), the flow is :math:`\dot z = -(I - M) z + c` (``t`` counts
    iterations: forward Euler with unit step is the discrete algorithm). With
    :math:`\tilde K = I_Q\otimes K`, :math:`\mathcal L = (I - W)\otimes I` and
    :math:`c = \mathbf 1\otimes(f_0 - y)` it reads, on the coefficients,

    - DGD: :math:`\dot a = -\mathcal L a - \eta D(\tilde K a + c)`;
    - ATC: :math:`\dot a = -\mathcal L a - \eta (W\otimes I) D(\tilde K a + c)`;
    - CTA: :math:`\dot a = -\mathcal L a - \eta D(\tilde K (W\otimes I) a + c)`;
    - centralised: :math:`\dot a = -\eta \bar D(K a + f_0 - y)`, :math:`\bar D = \frac1Q\sum_q D_q`.

    Solution from :math:`z(0) = 0`: :math:`z(t) = \int_0^t e^{-H(t-s)} c\, ds`, :math:`H = I - M`.
    When :math:`H` is symmetric (DGD: :math:`H = \mathcal L + \eta\,\mathrm{blkdiag}(G_q)`;
    centralised: :math:`\eta\bar G`; every algorithm when :math:`Q = 1`), with
    :math:`H = V\Lambda V^\top`, :math:`z(t) = V \varphi_t(\Lambda) V^\top c`,
    :math:`\varphi_t(\lambda) = (1-e^{-\lambda t})/\lambda` — one symmetric
    eigendecomposition serves every ``t``. Otherwise (ATC, CTA) it is solved exactly by
    the matrix exponential of the augmented generator
    :math:`\begin{psmallmatrix}-H & c\\ 0 & 0\end{psmallmatrix}` (Van Loan, 1978) at each
    time. Then :math:`a_q = F^{+\top} z_q` (null directions of :math:`K` change no output).
    Cost: :math:`O((Qr)^3)`, :math:`r = \mathrm{rank}\,K` (:math:`O(r^3)` for centralised GD).

    Arguments and result as :func:`linearized_outputs`, with ``times`` (sorted,
    non-negative, real) in place of ``steps`` and a fixed (Q, Q) ``W``. Methods with two
    or more state variables (momentum, gradient tracking) have no such flow: ``ValueError``.
    """
    alg = algorithms.get(algorithm)
    system = CoefficientSystem([W], K, owner, f0, y, K_test, f0_test)
    if len(system.mixers[0].W) != 1:
        raise ValueError("W: the flow needs one fixed (Q, Q) mixing matrix, got a schedule")
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or len(times) == 0 or times[0] < 0 or np.any(np.diff(times) < 0):
        raise ValueError("times must be a non-empty sorted 1-D sequence of non-negative numbers")
    check_lr(lr)
    M, c, F, Finv, names, _ = stability.affine_map(alg, system.W, system, lr)
    if len(names) != 1 or alg.first is not None:
        raise ValueError(f"algorithm {alg.name!r} has {len(names)} state variables {names}"
                         f"{' and a different first update' if alg.first is not None else ''}: it has no gradient "
                         "flow (only one-step methods do); use linearized_outputs")
    H = np.eye(len(M)) - M
    Q, (n, m) = system.Q, system.resid0.shape
    if stability.is_symmetric(H):
        lam, V = np.linalg.eigh(H)
        Vc = V.T @ c
        zs = [V @ (_phi(lam, t)[:, None] * Vc) for t in times]
    else:
        big = np.zeros((len(M) + m, len(M) + m))
        big[:len(M), :len(M)] = -H
        big[:len(M), len(M):] = c
        zs = [scipy.linalg.expm(t * big)[:len(M), len(M):] for t in times]
    recs = []
    for z in zs:
        A = np.broadcast_to(Finv @ z, (Q, n, m)) if alg.consensus else np.einsum("nr,qrm->qnm", Finv, z.reshape(Q, -1, m))
        recs.append(system.record(A))
    train, test, coef = zip(*recs)
    return DynamicsResult(times, np.stack(train), None if test[0] is None else np.stack(test), None, np.stack(coef))


def lazy_limit_errors(algorithm, W, K, owner, f0, y, lr, t, alphas) -> np.ndarray:
    r"""Distance of lazy-mixing iterates from the DGD gradient flow at time ``t``.

    For each :math:`\alpha`, run ``algorithm`` with the lazy matrix
    :math:`W_\alpha = (1-\alpha) I + \alpha W` and step :math:`\alpha\eta` for
    :math:`k = t/\alpha` iterations (:func:`linearized_outputs`) and
    compare with the DGD flow :math:`\dot a = -((I-W)\otimes I)a - \eta D(\tilde K a + c)`
    at time :math:`t` (:func:`linearized_flow_outputs`):

    .. math:: e(\alpha) = \frac{\|f_\alpha(t/\alpha) - f_{\rm flow}(t)\|}{\|f_{\rm flow}(t) - f_0\|} .

    ``t/alpha`` must be an integer for every ``alpha`` (checked).
    """
    W = np.asarray(W, dtype=np.float64)
    flow = linearized_flow_outputs("dgd", W, K, owner, f0, y, lr, [t]).train[0]
    errs = []
    for a in alphas:
        k = t / a
        if abs(k - round(k)) > 1e-9:
            raise ValueError(f"t/alpha must be an integer, got t={t}, alpha={a}")
        Wa = (1 - a) * np.eye(W.shape[0]) + a * W
        disc = linearized_outputs(algorithm, Wa, K, owner, f0, y, a * lr, [int(round(k))]).train[0]
        errs.append(relative_error(disc - np.asarray(f0), flow - np.asarray(f0)))
    return np.asarray(errs)
