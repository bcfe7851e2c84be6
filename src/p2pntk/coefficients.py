r"""The coefficient back end: linearised peer-to-peer training in Q·N·C coefficients.

With the linearised network :math:`f_{\rm lin}(x;\theta) = f_0(x) + J(x)(\theta-\theta_0)`,
the MSE losses and the common initialisation :math:`\theta_q(0)=\theta_0`, every
agent's displacement stays in the row space of the training Jacobian
:math:`J\in\mathbb R^{NC\times P}`:

.. math:: \theta_q(k) = \theta_0 + J^\top a_q(k), \qquad a_q(k)\in\mathbb R^{N\times C},

because each step of every algorithm of :mod:`p2pntk.algorithms` is a linear combination
of mixed iterates and local gradients, and the local gradient of the linearised loss is
:math:`\nabla L_q(\theta_q) = J^\top D_q r_q`, :math:`r_q = f_0 + K a_q - y`,
:math:`D_q = \mathrm{diag}(\mathbb 1[i\in q]/N_q)`. So the operations of an algorithm
act on the coefficients as

- *mix*: :math:`a \mapsto (W(k)\otimes I)\,a`;
- *local gradient*: :math:`a_q \mapsto D_q(f_0 + K a_q - y)`;
- *average*: :math:`a \mapsto \mathbf 1\otimes\tfrac1Q\sum_q a_q`,

and the outputs on any input are :math:`f_q(x) = f_0(x) + K(x, X)\,a_q`.

Kernel layouts: ``K`` of shape ``(N, N)`` is shared by the C outputs
(:math:`K\otimes I_C`, the outputs decouple); ``(N, C, N, C)`` is output-resolved.
All computations are float64 NumPy, independent of JAX's precision setting.
"""
from __future__ import annotations

import contextlib

import numpy as np
import scipy.sparse

from . import algorithms
from .checks import agent_weights, batch_weights, check_owner, check_steps
from .graphs import mixing_schedule


def traced_kernel(K) -> np.ndarray:
    r"""The shared (output-traced) kernel of an output-resolved one: :math:`\frac1C\sum_c K_{ic,jc}`.

    (N1, C, N2, C) -> (N1, N2), standing for :math:`\bar K\otimes I_C`; exact at infinite
    width, where the kernel is diagonal in the outputs.

    Example:
        >>> traced_kernel(np.ones((2, 3, 4, 3))).shape
        (2, 4)
    """
    K = np.asarray(K, dtype=np.float64)
    return np.einsum("icjc->ij", K) / K.shape[1]


class _Mixer:
    """:math:`W(k)\\otimes I` of one mixing schedule (T, Q, Q), CSR for sparse matrices
    (``nnz(W) <= Q²/10``: a ring of 64 agents mixes 4x faster; for small or dense W the
    dense BLAS product is faster)."""

    def __init__(self, W, n_iterations: int = 1):
        self.W = mixing_schedule(W, n_iterations)
        self.periodic = not callable(W)             # a callable is evaluated for n_iterations only
        Q = self.W.shape[1]
        self.ops = [scipy.sparse.csr_array(w) if np.count_nonzero(w) <= Q * Q / 10 else w for w in self.W]

    def __call__(self, A, k):
        Q = A.shape[0]
        return np.asarray(self.ops[k % len(self.ops)] @ A.reshape(Q, -1)).reshape(A.shape)


class CoefficientSystem:
    r"""Kernel, data and agents of linearised training, and the coefficient operations.

    The state of a variable is (Q, n, L·m) with n = N, m = C (shared kernel) or n = N·C,
    m = 1 (output-resolved kernel), holding L configurations side by side (configuration
    l in columns ``l*m:(l+1)*m``; L = 1 for a single run). The T mixing schedules ``Ws``
    (each a matrix, a (T_j, Q, Q) stack or a callable ``k -> W(k)``, evaluated for
    ``n_iterations``) mix consecutive blocks of L/T configurations each
    (:func:`p2pntk.dynamics.linearized_sweep`); ``batches`` (a callable ``k -> `` Q index
    arrays, :func:`p2pntk.checks.batch_weights`) gives every configuration the same minibatches.

    One gradient needs only the rows of agent q's own points, :math:`D_q r_q =
    D_q(K_{q,:} a_q + f_{0,q} - y_q)`: the rows of :math:`K` are stored once,
    grouped by agent, and each agent's block multiplies its own state — one batched
    matmul when all agents hold the same number of rows, else one matmul per agent (no
    padding: a padded (Q, max N_q, n) stack can be Q times the kernel under label-skewed
    splits; measured single-threaded, the per-agent loop is within 2x of the batched
    matmul, e.g. 19 vs 10 µs at Q = 8, N = 128 and 17 vs 15 ms at Q = 256, N = 4096, C = 10).

    Cost per gradient: :math:`O(n^2 L m)` (:math:`N^2 C` shared, :math:`(NC)^2` resolved,
    independent of Q), one pass over the kernel for all L configurations; per mixing
    :math:`O(\mathrm{nnz}(W)\, n L m)`. Memory: the (n, n) kernel given (``Kmat``, a view) and a
    copy of its rows grouped by agent — no copy when the points are already grouped by agent
    (``owner`` sorted, :func:`p2pntk.problems.by_agent`) — plus a few (Q, n, L·m) states; no
    (Qn, Qn) matrix is formed.

    Example:
        >>> s = CoefficientSystem([np.full((2, 2), 0.5)], np.eye(2), [0, 1], np.zeros((2, 1)), np.ones((2, 1)))
        >>> s.grad(np.zeros((2, 2, 1)))[:, :, 0]
        array([[-1.,  0.],
               [ 0., -1.]])
    """

    def __init__(self, Ws, K, owner, f0, y, K_test=None, f0_test=None, *, batches=None, n_iterations: int = 1):
        self.mixers = [_Mixer(W, n_iterations) for W in Ws]
        Q = self.mixers[0].W.shape[1]
        if any(m.W.shape[1] != Q for m in self.mixers):
            raise ValueError(f"all mixing matrices must be ({Q}, {Q}), got {[m.W.shape[1:] for m in self.mixers]}")
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
        d = agent_weights(self.owner, Q)                                  # (Q, N): D_q
        if self.resolved:
            self.Kmat = K.reshape(N * C, N * C)
            self.d = np.repeat(d, C, axis=1)                               # (Q, NC)
            self.resid0 = (f0 - y).reshape(N * C, 1)
            self.f0 = f0.reshape(N * C, 1)
        else:
            self.Kmat = K
            self.d = d                                                     # (Q, N)
            self.resid0 = f0 - y
            self.f0 = f0
        # rows of the state grouped by agent: agent q owns _rows[_start[q]:_start[q+1]]
        order = np.argsort(self.owner, kind="stable")
        per = C if self.resolved else 1
        self._rows = (order[:, None] * per + np.arange(per)).ravel()
        self._agent = np.repeat(np.arange(Q), counts * per)
        self._start = np.concatenate([[0], np.cumsum(counts * per)])
        ordered = bool(np.array_equal(self._rows, np.arange(len(self._rows))))   # points already grouped by agent
        self._Kp = self.Kmat if ordered else self.Kmat[self._rows]         # (n, n), rows grouped by agent
        self._r0p = self.resid0[self._rows]
        self._wp = self.d[self._agent, self._rows][:, None]                 # 1/N_q of each grouped row
        self._equal = bool(np.all(counts == counts[0]))
        bw = batch_weights(batches, self.owner, Q, n_iterations)         # (k_max + 1, N): diagonals of D_q(k)
        self._wk = None if bw is None else bw[:, self._rows // per]       # in the grouped row order
        self.test = None
        if K_test is not None:
            K_test = np.asarray(K_test, dtype=np.float64)
            if f0_test is None:
                raise ValueError("f0_test is required with K_test: the initial outputs on the test points, "
                                 "shape (N_test, C) (zeros for centred networks)")
            f0_test = np.asarray(f0_test, dtype=np.float64)
            Nt = f0_test.shape[0] if f0_test.ndim == 2 else -1
            want = (Nt, C, N, C) if self.resolved else (Nt, N)
            if K_test.shape != want or f0_test.shape != (Nt, C):
                raise ValueError(f"K_test must have shape {want} to match K, and f0_test (N_test, C); "
                                 f"got {K_test.shape} and {f0_test.shape}")
            self.test = (K_test.reshape(Nt * C, N * C) if self.resolved else K_test,
                         f0_test.reshape(Nt * C, 1) if self.resolved else f0_test)

    @property
    def W(self) -> np.ndarray:
        """The (first) mixing matrix of the first schedule, (Q, Q)."""
        return self.mixers[0].W[0]

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
        test = self.outputs(A, test=True) if self.test is not None else None
        return self.outputs(A), test, self._configs(A)

    def record(self, A):
        """Train outputs, test outputs (or None) and coefficients of a single-configuration state (Q, n, m)."""
        return tuple(None if x is None else x[0] for x in self.record_all(A))

    # --- the operations of an algorithm -------------------------------------
    def local_grad(self, A, k: int = 0):
        r"""Nonzero rows of :math:`D_q(k) r_q` of all agents, (n, L·m) in the grouped row order
        (row ``j`` belongs to agent ``_agent[j]``, state row ``_rows[j]``); :math:`D_q(k) = D_q`
        without minibatches. Cost :math:`O(n^2 L m)`, one pass over the kernel rows for all L
        configurations."""
        Q, n, cols = A.shape
        if self._equal:
            KA = (self._Kp.reshape(Q, -1, n) @ A).reshape(n, cols)
        else:
            s = self._start
            KA = np.concatenate([self._Kp[s[q]:s[q + 1]] @ A[q] for q in range(Q)])
        m = self._r0p.shape[1]
        wp = self._wp if self._wk is None else self._wk[k][:, None]
        return wp * (KA.reshape(n, -1, m) + self._r0p[:, None]).reshape(n, cols)

    def grad(self, A, k: int = 0):
        r"""Local gradients :math:`D_q(k)(f_0 + K a_q - y)` of all agents, (Q, n, L·m), zero outside agent q's rows."""
        G = np.zeros_like(A)
        G[self._agent, self._rows] = self.local_grad(A, k)
        return G

    def mix(self, A, k: int = 0):
        r""":math:`(W(k)\otimes I)\,a`, each block of configurations with its own schedule."""
        if len(self.mixers) == 1:
            return self.mixers[0](A, k)
        out = np.empty_like(A)             # filled block by block: np.concatenate on axis 2 is 4x slower
        blocks = (np.split(X, len(self.mixers), axis=2) for X in (A, out))
        for mixer, B, O in zip(self.mixers, *blocks):
            O[...] = mixer(B, k)
        return out

    def ops(self, lr):
        """The operations of :mod:`p2pntk.algorithms` on this system's states, with step size(s) ``lr``."""
        return _Ops(self, lr)

    def outputs(self, A, test: bool = False):
        """Train (or test) outputs :math:`f_0 + K a_q` of every configuration of a state (Q, n, L·m), (L, Q, ·, C)."""
        L = A.shape[2] // self.resid0.shape[1]
        Kx, f0x = self.test if test else (self.Kmat, self.f0)
        return self._configs(self.apply(Kx, A) + np.tile(f0x, L)[None])

    def run(self, algorithm, lr, steps, *, stop_diverged: bool = False, record=None):
        r"""Iterate ``algorithm`` from :math:`a_q(0) = 0` with step sizes ``lr`` (one per state
        column, length L·m) and record at ``steps``: (steps, train, test or None, coef), each
        (S, L, Q, ·, C).

        ``record``, a function ``(A, s) -> tuple of arrays`` of the state (Q, n, L·m) at
        iteration ``s``, replaces :meth:`record_all` (e.g. summaries of :meth:`outputs`, far
        smaller than the outputs of every agent): then the recorded values are its arrays,
        stacked over ``steps``, in place of (train, test, coef).

        With ``stop_diverged``, a configuration whose state exceeds :data:`DIVERGED` in magnitude
        (or is no longer finite) is diverged: from that iteration its columns are NaN (NaN stays
        in its own columns: every product acts column by column), no overflow warning is
        issued, and the iteration stops once every configuration has diverged; the iteration
        at which each configuration diverged (-1: never), (L,), is returned as a fifth value.
        """
        alg = algorithms.get(algorithm)
        steps = check_steps(steps)
        n_max = min([len(m.W) for m in self.mixers if not m.periodic] + ([len(self._wk) - 1] if self._wk is not None else []),
                    default=None)
        if n_max is not None and steps[-1] > n_max:
            raise ValueError(f"steps go to {steps[-1]} but the mixing/batch schedule was evaluated for {n_max} "
                             "iterations (n_iterations)")
        ops = self.ops(np.asarray(lr, dtype=np.float64))
        m = self.resid0.shape[1]
        at = np.full(len(lr) // m, -1)
        state = alg.init(ops, np.zeros((self.Q, self.resid0.shape[0], len(lr))))
        k, recs = 0, []
        with np.errstate(over="ignore", invalid="ignore") if stop_diverged else contextlib.nullcontext():
            for s in steps:
                while k < int(s):
                    if stop_diverged and (at >= 0).all():         # all diverged: the state stays NaN
                        k = int(s)
                        break
                    state = (alg.first if k == 0 and alg.first is not None else alg.step)(ops, state, k)
                    k += 1
                    if stop_diverged:
                        state = _stop_diverged(state, at, k, m)
                recs.append(self.record_all(state["x"]) if record is None else tuple(record(state["x"], int(s))))
        values = tuple(None if x[0] is None else np.stack(x) for x in zip(*recs))
        return (steps, *values, at) if stop_diverged else (steps, *values)


#: Magnitude of a coefficient beyond which a configuration counts as diverged
#: (:meth:`CoefficientSystem.run`); far below float64 overflow (1.8e308), far above any convergent run.
DIVERGED = 1e100


def _stop_diverged(state, at, k, m):
    """Mark (in ``at``, with iteration ``k``) and set to NaN the configurations (blocks of ``m``
    columns) of ``state`` that exceed :data:`DIVERGED` or are not finite."""
    size = np.zeros(len(at))
    for v in state.values():
        mx = np.abs(v).max(axis=tuple(range(v.ndim - 1))).reshape(-1, m).max(axis=1)
        size = np.where(np.isnan(mx), np.inf, np.maximum(size, mx))
    new = (size > DIVERGED) & (at < 0)
    if not new.any():
        return state
    at[new] = k
    cols = np.repeat(at >= 0, m)
    return {name: np.where(cols, np.nan, v) for name, v in state.items()}


class _Ops:
    """The operations of :mod:`p2pntk.algorithms` on coefficient states (Q, n, L·m)."""

    def __init__(self, system, lr):
        self.system, self.lr = system, lr

    def mix(self, A, k):
        return self.system.mix(A, k)

    def grad(self, A, k):
        return self.system.grad(A, k)

    @staticmethod
    def average(A):
        return A.mean(axis=0, keepdims=True)
