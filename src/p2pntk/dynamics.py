r"""Closed-form dynamics of linearised peer-to-peer training, in Q·N·C coefficients.

With the linearised network :math:`f_{\rm lin}(x;\theta) = f_0(x) + J(x)(\theta-\theta_0)`,
the MSE losses and the common initialisation :math:`\theta_q(0)=\theta_0`, every
agent's displacement stays in the row space of the training Jacobian
:math:`J\in\mathbb R^{NC\times P}`:

.. math:: \theta_q(k) = \theta_0 + J^\top a_q(k), \qquad a_q(k)\in\mathbb R^{N\times C},

and the outputs on any input are :math:`f_q(x) = f_0(x) + K(x, X)\,a_q`. With
:math:`D_q = \mathrm{diag}(\mathbb 1[i\in q]/N_q)` and residual
:math:`r_q = f_0 + K a_q - y`, the four algorithms become

- DGD: :math:`a_q^+ = \sum_l W_{ql} a_l - \eta D_q r_q`;
- ATC: :math:`a_q^+ = \sum_l W_{ql} (a_l - \eta D_l r_l)`;
- CTA: :math:`b_q = \sum_l W_{ql} a_l`, :math:`a_q^+ = b_q - \eta D_q (f_0 + K b_q - y)`;
- centralised: :math:`a^+ = a - \eta \tfrac1Q\sum_q D_q r`.

These recursions are exact for the linearised model at any step size
(:func:`linearized_outputs`; :func:`linearized_sweep` runs a grid of step sizes ×
mixing matrices together, one pass over the kernel per iteration). Their gradient flows (``t`` counts iterations),
e.g. for DGD :math:`\dot a = -((I-W)\otimes I) a - \eta D(\tilde K a + c)`, are
solved in closed form by :func:`linearized_flow_outputs`.

Kernel layouts: ``K`` of shape ``(N, N)`` is shared by the C outputs
(:math:`K\otimes I_C`, the outputs decouple); ``(N, C, N, C)`` is output-resolved.
All computations are float64 NumPy/SciPy, independent of JAX's precision setting.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse

from .graphs import check_mixing_matrix
from .training import SimulationResult, check_algorithm, check_owner, check_steps


@dataclass
class DynamicsResult(SimulationResult):
    """Predicted outputs, plus the coefficients ``coef`` (S, Q, N, C) with
    :math:`\\theta_q = \\theta_0 + J^\\top a_q` (see :func:`parameters`)."""
    coef: np.ndarray | None = None


class _System:
    r"""The coefficient-space system: state (Q, n, m) with n = N, m = C (shared
    kernel) or n = N·C, m = 1 (output-resolved kernel).

    One step needs only the rows of agent q's own points, :math:`D_q r_q =
    D_q(K_{q,:} a_q + f_{0,q} - y_q)`: the rows of :math:`K` are stored once,
    grouped by agent (``_Kp``, rows in the order ``_rows``), and each agent's
    block multiplies its own state — one batched matmul when all agents hold
    the same number of rows, else one matmul per agent (no padding: a padded
    (Q, max N_q, n) stack can be Q times the kernel under label-skewed splits;
    measured single-threaded, the per-agent loop is within 2x of the batched
    matmul, e.g. 19 vs 10 µs at Q = 8, N = 128 and 17 vs 15 ms at Q = 256,
    N = 4096, C = 10). Mixing uses a CSR matrix when :math:`W` is sparse
    (``nnz(W) <= Q²/10``; a ring of 64 agents mixes 4x faster, while for small
    or dense W the dense BLAS product is faster).

    The state may hold L configurations side by side, (Q, n, L·m) with configuration l in
    columns ``l*m:(l+1)*m`` (:func:`linearized_sweep`): the step size is then one per column,
    and :class:`_Sweep` mixes each configuration's columns with its own W.

    Cost per step: :math:`O(n^2 m)` for the gradients (:math:`N^2 C` shared,
    :math:`(NC)^2` resolved, independent of Q) plus :math:`O(\mathrm{nnz}(W)\, n m)`
    for the mixing. Memory: two copies of the (n, n) kernel (``Kmat`` and its
    grouped rows) plus a few (Q, n, m) states; no (Qn, Qn) matrix is formed.
    """

    def __init__(self, algorithm, W, K, owner, f0, y, K_test=None, f0_test=None):
        self.algorithm = check_algorithm(algorithm)
        self._set_mixing(W)
        Q = self.W.shape[0]
        f0 = np.asarray(f0, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if f0.ndim != 2 or y.shape != f0.shape:
            raise ValueError(f"f0 and y must both have shape (N, C), got {f0.shape} and {y.shape}")
        N, C = f0.shape
        K = np.asarray(K, dtype=np.float64)
        self.resolved = K.ndim == 4
        if K.shape not in ((N, N), (N, C, N, C)):
            raise ValueError(f"K must have shape (N, N) = {(N, N)} (shared) or (N, C, N, C) = {(N, C, N, C)} "
                             f"(output-resolved), got {K.shape}")
        for name, arr in (("K", K), ("f0", f0), ("y", y)):
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} contains NaN or inf")
        self.owner = check_owner(owner, N, Q)
        self.Q, self.N, self.C = Q, N, C
        counts = np.bincount(self.owner, minlength=Q)
        d = (self.owner[None, :] == np.arange(Q)[:, None]) / counts[:, None]  # (Q, N): D_q
        if self.resolved:
            self.Kmat = K.reshape(N * C, N * C)
            self.d = np.repeat(d, C, axis=1)[:, :, None]       # (Q, NC, 1)
            self.resid0 = (f0 - y).reshape(N * C, 1)
            self.f0 = f0.reshape(N * C, 1)
        else:
            self.Kmat = K
            self.d = d[:, :, None]                              # (Q, N, 1)
            self.resid0 = f0 - y
            self.f0 = f0
        # rows of the state grouped by agent: agent q owns _rows[_start[q]:_start[q+1]]
        order = np.argsort(self.owner, kind="stable")
        per = C if self.resolved else 1
        self._rows = (order[:, None] * per + np.arange(per)).ravel()
        self._agent = np.repeat(np.arange(Q), counts * per)
        self._start = np.concatenate([[0], np.cumsum(counts * per)])
        self._Kp = self.Kmat[self._rows]                                    # (n, n), rows grouped by agent
        self._r0p = self.resid0[self._rows]
        self._wp = (1.0 / counts)[self._agent][:, None]                     # 1/N_q of each grouped row
        self._equal = bool(np.all(counts == counts[0]))
        self.shared = {}        # W-independent results (stability's local lambda_max), shared by with_mixing copies
        self.test = None
        if K_test is not None:
            K_test = np.asarray(K_test, dtype=np.float64)
            f0_test = np.asarray(f0_test, dtype=np.float64)
            Nt = f0_test.shape[0]
            want = (Nt, C, N, C) if self.resolved else (Nt, N)
            if K_test.shape != want or f0_test.shape != (Nt, C):
                raise ValueError(f"K_test must have shape {want} to match K, and f0_test (N_test, C); "
                                 f"got {K_test.shape} and {f0_test.shape}")
            self.test = (K_test.reshape(Nt * C, N * C) if self.resolved else K_test,
                         f0_test.reshape(Nt * C, 1) if self.resolved else f0_test)

    def _set_mixing(self, W):
        self.W = check_mixing_matrix(W)
        Q = self.W.shape[0]
        self._Wmix = scipy.sparse.csr_array(self.W) if np.count_nonzero(self.W) <= Q * Q / 10 else self.W

    def with_mixing(self, W):
        """The same system with mixing matrix ``W`` (same Q); the kernel arrays are shared, not copied."""
        new = copy.copy(self)
        new._set_mixing(W)
        if new.W.shape != self.W.shape:
            raise ValueError(f"all mixing matrices must be {self.W.shape}, got {new.W.shape}")
        return new

    # --- outputs of a state -------------------------------------------------
    @staticmethod
    def apply(Kx, A):
        """:math:`K_x a_q` for every agent as one matrix product: (n_x, n) @ (n, Q·m)."""
        Q, n, m = A.shape
        return (Kx @ A.transpose(1, 0, 2).reshape(n, Q * m)).reshape(-1, Q, m).transpose(1, 0, 2)

    def _configs(self, X):
        """(Q, n_x, L·m) -> (L, Q, N_x, C): the columns of each configuration as outputs."""
        Q, nx, cols = X.shape
        m = self.resid0.shape[1]
        return X.reshape(Q, nx, cols // m, m).transpose(2, 0, 1, 3).reshape(cols // m, Q, -1, self.C)

    def record_all(self, A):
        """Train outputs, test outputs (or None) and coefficients of every configuration
        of a state (Q, n, L·m), each (L, Q, ·, C); one matrix product per output set."""
        L = A.shape[2] // self.resid0.shape[1]
        out = lambda Kx, f0x: self._configs(self.apply(Kx, A) + np.tile(f0x, L)[None])
        test = out(*self.test) if self.test is not None else None
        return out(self.Kmat, self.f0), test, self._configs(A)

    def record(self, A):
        """Train outputs, test outputs (or None) and coefficients of a single-configuration state (Q, n, m)."""
        return tuple(None if x is None else x[0] for x in self.record_all(A))

    # --- one step of the exact recursion ------------------------------------
    def local_grad(self, A):
        r"""Nonzero rows of :math:`D_q r_q` of all agents, (n, L·m) in the grouped row order
        (row ``j`` belongs to agent ``_agent[j]``, state row ``_rows[j]``). Cost :math:`O(n^2 L m)`,
        one pass over the kernel rows for all L configurations."""
        Q, n, cols = A.shape
        if self._equal:
            KA = (self._Kp.reshape(Q, -1, n) @ A).reshape(n, cols)
        else:
            s = self._start
            KA = np.concatenate([self._Kp[s[q]:s[q + 1]] @ A[q] for q in range(Q)])
        m = self._r0p.shape[1]
        return self._wp * (KA.reshape(n, -1, m) + self._r0p[:, None]).reshape(n, cols)

    def grad(self, A):
        """Coefficient gradients :math:`D_q r_q` of all agents, (Q, n, m) (dense; zero outside agent q's rows)."""
        G = np.zeros_like(A)
        G[self._agent, self._rows] = self.local_grad(A)
        return G

    def _descend(self, A, B, lr):
        r""":math:`A - \eta\, D r(B)` without forming the dense gradient (A is overwritten;
        ``lr`` a scalar or one per column)."""
        A[self._agent, self._rows] -= lr * self.local_grad(B)
        return A

    def mix(self, A):
        Q = A.shape[0]
        return np.asarray(self._Wmix @ A.reshape(Q, -1)).reshape(A.shape)

    def step(self, A, lr):
        alg = self.algorithm
        if alg == "dgd":
            return self._descend(self.mix(A), A, lr)
        if alg == "atc":
            return self.mix(self._descend(A.copy(), A, lr))
        if alg == "cta":
            B = self.mix(A)
            return self._descend(B, B, lr)
        g = np.zeros(A.shape[1:])                      # centralised: every agent holds the same a
        g[self._rows] = self.local_grad(A)
        return A - lr / self.Q * g[None]


class _Sweep(_System):
    """L = T·I configurations of one system in one state (Q, n, L·m): configuration
    l = j·I + i (mixing matrix ``Ws[j]``, i-th step size) in columns ``l*m:(l+1)*m``,
    so the T column blocks of I·m columns are mixed by their own W. Shares the kernel
    (``W`` is ``Ws[0]``; the per-W systems, e.g. for stability checks, are ``systems``)."""

    def __init__(self, system, Ws):
        vars(self).update(vars(system))
        self.systems = [system.with_mixing(W) for W in Ws]

    def mix(self, A):
        out = np.empty_like(A)             # filled block by block: np.concatenate on axis 2 is 4x slower
        blocks = (np.split(X, len(self.systems), axis=2) for X in (A, out))
        for s, B, O in zip(self.systems, *blocks):
            O[...] = s.mix(B)
        return out


def _check_lr(system, lr, label=""):
    """Validate a step size; warn (naming the bound) if it exceeds ``system``'s stability bound."""
    if not np.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a positive finite step size, got {lr}")
    from .stability import warn_if_unstable

    warn_if_unstable(system, lr, label)


def _run(system, steps, lr):
    """Iterate from :math:`a_q(0) = 0` with step sizes ``lr`` (one per state column, length L·m)
    and record at ``steps``: (steps, train, test or None, coef), each (S, L, Q, ·, C)."""
    steps = check_steps(steps)
    A = np.zeros((system.Q, system.resid0.shape[0], len(lr)))
    done, recs = 0, []
    for s in steps:
        for _ in range(int(s) - done):
            A = system.step(A, lr)
        done = int(s)
        recs.append(system.record_all(A))
    train, test, coef = (None if x[0] is None else np.stack(x) for x in zip(*recs))
    return steps, train, test, coef


def _result(steps, recs):
    train, test, coef = zip(*recs)
    return DynamicsResult(np.asarray(steps), np.stack(train), None if test[0] is None else np.stack(test),
                          None, np.stack(coef))


def linearized_outputs(algorithm, W, K, owner, f0, y, lr, steps, *, K_test=None, f0_test=None) -> DynamicsResult:
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
        algorithm: ``"dgd"``, ``"atc"``, ``"cta"`` or ``"centralized"``.
        W: (Q, Q) symmetric doubly stochastic mixing matrix.
        K: NTK Gram matrix of the training points, (N, N) or (N, C, N, C).
        owner: (N,) agent of each training point.
        f0, y: (N, C) initial outputs and targets.
        lr: step size :math:`\eta`.
        steps: sorted iteration counts.
        K_test, f0_test: optional (N_test, N) or (N_test, C, N, C) and (N_test, C).

    Returns:
        :class:`DynamicsResult`: ``train`` (S, Q, N, C), ``test`` (S, Q, N_test, C),
        ``coef`` (S, Q, N, C).

    Example:
        >>> W = np.array([[0.5, 0.5], [0.5, 0.5]])
        >>> r = linearized_outputs("dgd", W, np.eye(2), [0, 1], np.zeros((2, 1)), np.ones((2, 1)), 0.5, [0, 1])
        >>> r.train[1, 0, :, 0]
        array([0.5, 0. ])
    """
    system = _System(algorithm, W, K, owner, f0, y, K_test, f0_test)
    _check_lr(system, lr)
    steps, train, test, coef = _run(system, steps, np.full(system.resid0.shape[1], float(lr)))
    one = lambda x: None if x is None else x[:, 0]                     # the single configuration
    return DynamicsResult(np.asarray(steps), one(train), one(test), None, one(coef))


def linearized_sweep(algorithm, Ws, K, owner, f0, y, lrs, steps, *, K_test=None, f0_test=None) -> DynamicsResult:
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

    A :class:`RuntimeWarning` naming the stability bound is issued for every configuration
    whose step size exceeds it (:func:`p2pntk.stability.warn_if_unstable`).

    Args:
        algorithm, K, owner, f0, y, steps, K_test, f0_test: as :func:`linearized_outputs`.
        Ws: T (Q, Q) mixing matrices (same Q).
        lrs: (I,) step sizes shared by every W, or (I, T), one per configuration.

    Returns:
        :class:`DynamicsResult` with ``train`` (I, T, S, Q, N, C), ``test``
        (I, T, S, Q, N_test, C) and ``coef`` (I, T, S, Q, N, C): index ``[i, j]`` is
        ``linearized_outputs(algorithm, Ws[j], ..., lrs[i] (or lrs[i, j]), steps)``.
    """
    T = len(Ws)
    lrs = np.asarray(lrs, dtype=np.float64)
    if T == 0 or lrs.ndim not in (1, 2) or lrs.shape[1:] not in ((), (T,)) or len(lrs) == 0:
        raise ValueError(f"lrs must have shape (I,) or (I, len(Ws)) = (I, {T}) with I >= 1, got {lrs.shape}")
    I = len(lrs)
    lrs = np.broadcast_to(lrs.reshape(I, -1), (I, T))
    system = _Sweep(_System(algorithm, Ws[0], K, owner, f0, y, K_test, f0_test), Ws)
    for j, s in enumerate(system.systems):
        for i in range(I):
            _check_lr(s, lrs[i, j], f"configuration (lr {i}, W {j}): ")
    steps, train, test, coef = _run(system, steps, np.repeat(lrs.T.ravel(), system.resid0.shape[1]))
    grid = lambda x: None if x is None else x.reshape((len(x), T, I) + x.shape[2:]).swapaxes(0, 2)  # (S, L) -> (I, T, S)
    return DynamicsResult(np.asarray(steps), grid(train), grid(test), None, grid(coef))


def _flow_generator(system, lr):
    """Return (H, b) with da/dt = -H a - b, a the (Q·n, m) stacked coefficients."""
    Q, n = system.Q, system.Kmat.shape[0]
    I_n = np.eye(n)
    Kt = np.kron(np.eye(Q), system.Kmat)
    D = np.diag(system.d[:, :, 0].reshape(-1))
    c = np.tile(system.resid0, (Q, 1))
    L = np.kron(np.eye(Q) - system.W, I_n)
    Wt = np.kron(system.W, I_n)
    if system.algorithm == "dgd":
        return L + lr * D @ Kt, lr * D @ c
    if system.algorithm == "atc":
        return L + lr * Wt @ D @ Kt, lr * Wt @ D @ c
    if system.algorithm == "cta":
        return L + lr * D @ Kt @ Wt, lr * D @ c
    raise AssertionError


def _phi(lam, t):
    r""":math:`\varphi_t(\lambda) = (1 - e^{-\lambda t})/\lambda`, :math:`= t` at :math:`\lambda = 0`."""
    lam = np.asarray(lam)
    small = np.abs(lam * t) < 1e-8
    safe = np.where(small, 1.0, lam)
    return np.where(small, t - lam * t * t / 2, -np.expm1(-lam * t) / safe)


def linearized_flow_outputs(algorithm, W, K, owner, f0, y, lr, times, *, K_test=None, f0_test=None) -> DynamicsResult:
    r"""Outputs of the gradient flow of linearised peer-to-peer training at ``times``.

    The flow (``t`` counts iterations, forward Euler with unit step gives the
    discrete algorithm), with :math:`\tilde K = I_Q\otimes K`,
    :math:`\mathcal L = (I - W)\otimes I` and :math:`c = \mathbf 1\otimes(f_0 - y)`:

    - DGD: :math:`\dot a = -\mathcal L a - \eta D(\tilde K a + c)`;
    - ATC: :math:`\dot a = -\mathcal L a - \eta (W\otimes I) D(\tilde K a + c)`;
    - CTA: :math:`\dot a = -\mathcal L a - \eta D(\tilde K (W\otimes I) a + c)`;
    - centralised: :math:`\dot a = -\eta \bar D(K a + f_0 - y)`, :math:`\bar D = \frac1Q\sum_q D_q`.

    Solution from :math:`a(0) = 0`: :math:`a(t) = -\int_0^t \Phi(t, s)\, b\, ds`,
    :math:`\Phi(t,s) = e^{-H (t-s)}`. DGD and centralised are symmetrisable:
    with :math:`u = \tilde K^{1/2} a`, :math:`H_s = \mathcal L + \eta\tilde K^{1/2} D
    \tilde K^{1/2} = V\Lambda V^\top` and
    :math:`u(t) = -\eta V \varphi_t(\Lambda) V^\top \tilde K^{1/2} D c`,
    :math:`\varphi_t(\lambda) = (1-e^{-\lambda t})/\lambda` — one symmetric
    eigendecomposition serves every ``t``; then :math:`a = \tilde K^{+1/2} u`
    (pseudo-inverse: null directions of :math:`K` do not change any output).
    Centralised GD (and every algorithm when :math:`Q = 1`) needs one
    eigendecomposition of an (n, n) matrix only, as neural-tangents does:
    with :math:`S = \bar D^{1/2}` and :math:`\eta S K S = V\Lambda V^\top`,
    :math:`a(t) = -\eta S V\varphi_t(\Lambda)V^\top S (f_0 - y)`, cost
    :math:`O(n^3)` once plus :math:`O(n^2 m)` per time. ATC
    and CTA flows are not symmetric in general; they are solved exactly by the
    matrix exponential of the augmented generator
    :math:`\begin{psmallmatrix}-H & -b\\ 0 & 0\end{psmallmatrix}` (Van Loan, 1978)
    at each time, cost :math:`O((QNC)^3)` per time.

    Arguments and result as :func:`linearized_outputs`, with ``times`` (sorted,
    non-negative, real) in place of ``steps``.
    """
    system = _System(algorithm, W, K, owner, f0, y, K_test, f0_test)
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or len(times) == 0 or times[0] < 0 or np.any(np.diff(times) < 0):
        raise ValueError("times must be a non-empty sorted 1-D sequence of non-negative numbers")
    if not np.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a positive finite step size, got {lr}")
    Q, (n, m) = system.Q, system.resid0.shape
    recs = []
    if system.algorithm == "centralized" or Q == 1:        # with Q = 1 every algorithm is centralised GD
        sq = np.sqrt(system.d[:, :, 0].mean(axis=0))[:, None]           # \bar D^{1/2}, (n, 1)
        lam, V = np.linalg.eigh(lr * sq * system.Kmat * sq.T)
        Vg = V.T @ (lr * sq * system.resid0)
        for t in times:
            a = -sq * (V @ (_phi(lam, t)[:, None] * Vg))
            recs.append(system.record(np.broadcast_to(a, (Q, n, m))))
    elif system.algorithm == "dgd":
        s, U = np.linalg.eigh(system.Kmat)
        s = np.clip(s, 0.0, None)
        keep = s > s.max() * n * np.finfo(float).eps
        Kh = (U * np.sqrt(s)) @ U.T
        Kih = (U[:, keep] / np.sqrt(s[keep])) @ U[:, keep].T
        D = system.d[:, :, 0]                                           # (Q, n)
        Hs = np.kron(np.eye(Q) - system.W, np.eye(n))
        for q in range(Q):
            Hs[q * n:(q + 1) * n, q * n:(q + 1) * n] += lr * (Kh * D[q]) @ Kh
        g = lr * np.concatenate([Kh @ (D[q][:, None] * system.resid0) for q in range(Q)])
        lam, V = np.linalg.eigh(Hs)
        Vg = V.T @ g
        for t in times:
            u = -(V @ (_phi(lam, t)[:, None] * Vg)).reshape(-1, n, m)
            recs.append(system.record(_System.apply(Kih, u)))
    else:
        H, b = _flow_generator(system, lr)
        big = np.zeros((Q * n + m, Q * n + m))
        big[:Q * n, :Q * n] = -H
        big[:Q * n, Q * n:] = -b
        for t in times:
            A = scipy.linalg.expm(t * big)[:Q * n, Q * n:].reshape(Q, n, m)
            recs.append(system.record(A))
    return _result(times, recs)


def parameters(apply_fn, params0, x, coef):
    r"""Recover agent parameters :math:`\theta_q = \theta_0 + J^\top a_q` by one vector–Jacobian product.

    Args:
        apply_fn, params0: the network and its initial parameters :math:`\theta_0`.
        x: (N, ...) training inputs (the rows of :math:`J`).
        coef: (N, C) coefficients :math:`a_q` of one agent (``result.coef[s, q]``),
            or (Q, N, C) for all agents (returns a pytree with a leading agent axis).
    """
    import jax
    import jax.numpy as jnp

    _, vjp = jax.vjp(lambda p: apply_fn(p, x), params0)
    coef = jnp.asarray(coef)

    def one(a):
        (delta,) = vjp(a.astype(jax.tree.leaves(params0)[0].dtype))
        return jax.tree.map(jnp.add, params0, delta)

    return one(coef) if coef.ndim == 2 else jax.vmap(one)(coef)
