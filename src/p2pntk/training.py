r"""Actual peer-to-peer training of Q networks, all agents in one jitted step.

Agent :math:`q` holds the training points :math:`i` with ``owner[i] == q``
(:math:`N_q` of them) and the local loss
:math:`L_q(\theta) = \frac{1}{2N_q}\sum_{i\in q}\|f(x_i;\theta) - y_i\|^2`.
With mixing matrix :math:`W` and step size :math:`\eta`, iteration :math:`k`:

- DGD (Nedić & Ozdaglar, 2009): :math:`\theta_q^+ = \sum_l W_{ql}\theta_l - \eta\nabla L_q(\theta_q)`;
- ATC diffusion (Sayed, 2014): :math:`\theta_q^+ = \sum_l W_{ql}[\theta_l - \eta\nabla L_l(\theta_l)]`;
- CTA diffusion: :math:`\psi_q = \sum_l W_{ql}\theta_l`, :math:`\theta_q^+ = \psi_q - \eta\nabla L_q(\psi_q)`;
- centralised: :math:`\theta^+ = \theta - \eta\nabla L(\theta)`, :math:`L = \frac1Q\sum_q L_q`
  (every agent holds the same :math:`\theta`).

All agents start from the common initialisation ``params0``. Each algorithm is the
single definition of :mod:`p2pntk.algorithms`, run here on parameter pytrees: *mix* is
:math:`(W(k)\otimes I)\theta`, *local gradient* is every agent's ``jax.grad`` of its own
loss on its own points (vmapped over agents), *average* the mean over agents.

Execution: by default the Q agents are stacked on a leading axis and vmapped on one
device, the mixing being :math:`(W\otimes I)\theta` (a ``tensordot``). With
``simulate(..., devices=n)`` the agent axis is sharded over a 1-D mesh (axis
``"agents"``, :func:`p2pntk.sharding.agent_mesh`) with ``shard_map``: device :math:`i` holds agents
:math:`ib..ib+b-1` (:math:`b = Q/n`) with their local data, and each iteration
communicates as follows — DGD: one mixing of :math:`\theta`; ATC: one mixing of the
locally updated :math:`\theta - \eta\nabla L`; CTA: one mixing of :math:`\theta`
before the gradient; centralised: one all-reduce (``psum``) of the gradients. A mixing
is neighbour exchange (``ppermute``) for sparse banded/circulant :math:`W` or
``all_gather`` for dense :math:`W` (:func:`p2pntk.sharding.mixing_plan`). The compiled iteration is
cached per (algorithm, ``apply_fn``, mesh and mixing plan), and by jit per shapes.
"""
from __future__ import annotations

from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from . import algorithms
from .algorithms import SimulationResult
from .checks import agent_weights, batch_weights, check_lr, check_owner, check_steps
from .graphs import mixing_schedule
from .sharding import AXIS, MIXINGS, agent_mesh, mixing_coefficients, mixing_plan, put_global, sharded_mix, to_host

#: Precisions in which actual networks may be trained (kernels and closed forms are float64).
TRAIN_DTYPES = ("float64", "float32")


def train_dtype(dtype, params0=None) -> np.dtype:
    """The training precision of :func:`simulate`: ``dtype`` checked against :data:`TRAIN_DTYPES`,
    or (``None``) the dtype of the floating leaves of ``params0`` (float64 if there are none).

    Example:
        >>> train_dtype("float32"), train_dtype(None, {"w": np.zeros(2, np.float32)})
        (dtype('float32'), dtype('float32'))
        >>> train_dtype("float16")
        Traceback (most recent call last):
        ...
        ValueError: dtype must be None (the precision of params0) or one of 'float64', 'float32', got 'float16'
    """
    allowed = ", ".join(map(repr, TRAIN_DTYPES))
    if dtype is None:
        floats = [np.dtype(a.dtype) for a in jax.tree.leaves(params0)
                  if hasattr(a, "dtype") and np.issubdtype(np.dtype(a.dtype), np.floating)]
        out = np.result_type(*floats) if floats else np.dtype("float64")
        if out.name not in TRAIN_DTYPES:
            raise ValueError(f"dtype: params0 are {out.name}; pass dtype= one of {allowed}")
    else:
        try:
            out = np.dtype(dtype)
        except TypeError:
            out = None
        if out is None or out.name not in TRAIN_DTYPES or isinstance(dtype, bool):
            raise ValueError(f"dtype must be None (the precision of params0) or one of {allowed}, got {dtype!r}")
    if out == np.float64 and not jax.config.jax_enable_x64:
        raise ValueError("dtype float64 needs 64-bit JAX, which is off: call jax.config.update('jax_enable_x64', "
                         "True) before any JAX computation, or train with dtype='float32'")
    return out


def _padded_data(x, y, owner, n_agents, batch=None):
    """Pad each agent's points to the largest N_q (the layout of the sharded path, where every
    device must hold equal shapes); weights 1/N_q on real points (the nonzero entries of
    :func:`p2pntk.checks.agent_weights`), 0 on padding. With ``batch`` (the (k_max + 1, N)
    minibatch weights of :func:`p2pntk.checks.batch_weights`) the weights are one (Q, max N_q)
    array per iteration, (k_max + 1, Q, max N_q)."""
    counts = np.bincount(owner, minlength=n_agents)
    d = agent_weights(owner, n_agents)
    idx = np.zeros((n_agents, counts.max()), dtype=int)
    real = np.zeros(idx.shape, dtype=bool)
    wts = np.zeros(idx.shape)
    for q in range(n_agents):
        pts = np.flatnonzero(owner == q)
        idx[q, :len(pts)] = pts
        real[q, :len(pts)] = True
        wts[q, :len(pts)] = d[q, pts]
    if batch is not None:
        wts = np.where(real[None], batch[:, idx], 0.0)
    return x[idx], y[idx], jnp.asarray(wts, dtype=y.dtype)


#: At most this many groups of agents of equal size (:func:`agent_groups`): each group is one
#: vmapped gradient in the compiled step, so the compile time grows with the number of groups.
MAX_GROUPS = 16


def agent_groups(owner, n_agents: int, max_groups: int | None = None):
    r"""Agents grouped by their number of points :math:`N_q`, for gradients without padding.

    Agents with equal :math:`N_q` form one group, whose local losses are one vmapped gradient
    over (agents, points): an equal split is one group (all agents vmapped together), a
    label-skewed split several, and no point is padded. With more than ``max_groups``
    distinct sizes (default :data:`MAX_GROUPS`), sizes are merged into at most ``max_groups`` + 1 geometric buckets
    (ratio :math:`(\max_q N_q/\min_q N_q)^{1/	ext{max\_groups}}`) and an agent is padded to
    its bucket's largest size, so at most that ratio of redundant work, where padding every
    agent to :math:`\max_q N_q` costs :math:`Q\max_q N_q/N` (3.8 for a Dirichlet
    :math:`lpha = 0.3` split of 160 points over 10 agents).

    Returns:
        list of ``(agents, idx)``: agent indices (A,) in increasing order and their points
        (A, n), padded entries -1.

    Example:
        >>> [(a.tolist(), i.tolist()) for a, i in agent_groups([0, 1, 1, 2], 3)]
        [([0, 2], [[0], [3]]), ([1], [[1, 2]])]
    """
    max_groups = MAX_GROUPS if max_groups is None else max_groups
    owner = np.asarray(owner)
    counts = np.bincount(owner, minlength=n_agents)
    sizes = np.unique(counts)
    if len(sizes) <= max_groups:
        key = np.searchsorted(sizes, counts)
    else:
        ratio = (sizes[-1] / sizes[0]) ** (1.0 / max_groups)
        key = np.floor(np.log(counts / sizes[0]) / np.log(ratio) + 1e-9).astype(int)
    groups = []
    for g in np.unique(key):
        agents = np.flatnonzero(key == g)
        n = counts[agents].max()
        idx = np.full((len(agents), n), -1)
        for j, q in enumerate(agents):
            pts = np.flatnonzero(owner == q)
            idx[j, :len(pts)] = pts
        groups.append((agents, idx))
    return groups


def _grouped_data(x, y, owner, n_agents, batch, dtype):
    """Per group of :func:`agent_groups`: (agents, x (A, n, ...), y (A, n, C), weights (A, n) or
    (k_max + 1, A, n)), weights :math:`1/N_q` (or the minibatch's) on real points, 0 on padding;
    and the position of each agent in the concatenated groups (``None`` for one group)."""
    groups = agent_groups(owner, n_agents)
    d = agent_weights(owner, n_agents)
    out = []
    for agents, idx in groups:
        real, safe = idx >= 0, np.where(idx >= 0, idx, idx.max(initial=0))
        w = np.where(real, d[agents[:, None], safe], 0.0) if batch is None else np.where(real[None], batch[:, safe], 0.0)
        out.append((jnp.asarray(agents), x[safe], y[safe], jnp.asarray(w, dtype=dtype)))
    order = np.concatenate([a for a, _ in groups])
    return tuple(out), None if len(groups) == 1 else jnp.asarray(np.argsort(order))


class _Tree:
    """A stacked parameter pytree with the linear combinations of :mod:`p2pntk.algorithms`."""
    __slots__ = ("tree",)

    def __init__(self, tree):
        self.tree = tree

    def __add__(self, other):
        return _Tree(jax.tree.map(jnp.add, self.tree, other.tree))

    def __sub__(self, other):
        return _Tree(jax.tree.map(jnp.subtract, self.tree, other.tree))

    def __mul__(self, c):
        return _Tree(jax.tree.map(lambda a: c * a, self.tree))

    __rmul__ = __mul__

    def __neg__(self):
        return _Tree(jax.tree.map(jnp.negative, self.tree))


def _local_loss(apply_fn):
    def local_loss(p, xq, yq, wq):
        r = apply_fn(p, xq) - yq
        return 0.5 * jnp.sum(wq[:, None] * r ** 2)
    return local_loss


def _padded_grads(apply_fn, xl, yl, wl):
    """``grads(tree, k)``: every agent's local gradient, one vmap over agents padded to the largest."""
    g = jax.vmap(jax.grad(_local_loss(apply_fn)))
    return lambda tree, k: g(tree, xl, yl, wl if wl.ndim == 2 else wl[k])   # wl[k]: minibatch of iteration k


def _grouped_grads(apply_fn, groups, pos):
    """``grads(tree, k)``: every agent's local gradient, one vmap per group of :func:`agent_groups`
    (no padding), reassembled in agent order."""
    g = jax.vmap(jax.grad(_local_loss(apply_fn)))
    pick = lambda w, k: w if w.ndim == 2 else w[k]                          # w[k]: minibatch of iteration k

    def grads(tree, k):
        if pos is None:                                                     # one group: all agents, in order
            _, xg, yg, wg = groups[0]
            return g(tree, xg, yg, pick(wg, k))
        parts = [g(jax.tree.map(lambda p: p[agents], tree), xg, yg, pick(wg, k)) for agents, xg, yg, wg in groups]
        return jax.tree.map(lambda *ps: jnp.concatenate(ps, axis=0)[pos], *parts)
    return grads


class _Ops:
    r"""The operations of :mod:`p2pntk.algorithms` on stacked parameter pytrees (one device's
    agents or all of them): ``grads(tree, k)`` the local gradients, ``mix_fn(tree, k)`` applies
    :math:`W(k)\otimes I` (whatever the communication behind it), ``mean_fn(leaf)`` averages
    over all Q agents (keepdims)."""

    def __init__(self, lr, grads, mix_fn, mean_fn):
        self.lr, self._grads, self._mix, self._mean = lr, grads, mix_fn, mean_fn

    def mix(self, v, k):
        return _Tree(self._mix(v.tree, k))

    def grad(self, x, k):
        return _Tree(self._grads(x.tree, k))

    def average(self, v):
        return _Tree(jax.tree.map(self._mean, v.tree))


def _loop(alg, ops):
    """``start(params)`` (initial state) and ``advance(state, k0, k1)`` (iterations k0..k1-1) of ``alg``."""
    wrap = lambda state: {k: _Tree(v) for k, v in state.items()}
    unwrap = lambda state: {k: v.tree for k, v in state.items()}
    start = lambda params: unwrap(alg.init(ops, _Tree(params)))
    step = lambda k, s: unwrap(alg.step(ops, wrap(s), k))
    if alg.first is not None:                   # a different first update (EXTRA, exact diffusion, NIDS)
        body = lambda k, s: jax.lax.cond(k == 0, lambda t: unwrap(alg.first(ops, wrap(t), k)), lambda t: step(k, t), s)
    else:
        body = step
    advance = lambda state, k0, k1: jax.lax.fori_loop(k0, k1, body, state)
    return start, advance


def _mixer(W):
    r"""``mix(tree, k)`` = :math:`(W(k)\otimes I)` tree for a (T, Q, Q) schedule (a tensordot)."""
    def mix(tree, k):
        Wk = W[0] if W.shape[0] == 1 else W[k % W.shape[0]]
        return jax.tree.map(lambda p: jnp.tensordot(Wk, p, axes=1), tree)
    return mix


#: How many (algorithm, apply_fn) pairs keep their compiled step (least recently used evicted).
#: Bounded because a closure such as ``kernels.linearize(apply_fn, params0)`` holds
#: :math:`\theta_0` and its executable embeds it: an unbounded cache would keep every one alive.
CACHE_SIZE = 16


@lru_cache(maxsize=CACHE_SIZE)
def _compiled(alg, apply_fn):
    """Jitted ``start(params, W, groups, pos, lr)``, ``advance(state, k0, k1, W, groups, pos, lr)`` and
    ``outputs(params, x)`` of one (algorithm, apply_fn), the data laid out by :func:`_grouped_data`:
    a second :func:`simulate` with the same structure (other W, data values, lr or steps; same
    shapes, groups and dtypes) reuses the executables."""
    def loop(W, groups, pos, lr):
        ops = _Ops(lr, _grouped_grads(apply_fn, groups, pos), _mixer(W), lambda g: jnp.mean(g, axis=0, keepdims=True))
        return _loop(alg, ops)

    start = jax.jit(lambda params, *a: loop(*a)[0](params))
    advance = jax.jit(lambda state, k0, k1, *a: loop(*a)[1](state, k0, k1), donate_argnums=0)
    outputs = jax.jit(jax.vmap(apply_fn, in_axes=(0, None)))
    return start, advance, outputs


@lru_cache(maxsize=CACHE_SIZE)
def _sharded_functions(alg, apply_fn, mesh, plan, n_agents, batched=False):
    """Jitted shard_map'ed ``start``, ``advance`` and ``outputs``, cached by structure like :func:`_compiled`."""
    from jax.experimental.shard_map import shard_map
    from jax.sharding import PartitionSpec as P

    n = mesh.devices.size
    b = n_agents // n

    def loop(coef, xl, yl, wl, lr):   # coef: (T, b, .) this device's mixing coefficients
        mix = lambda tree, k: sharded_mix(plan, coef[0] if coef.shape[0] == 1 else coef[k % coef.shape[0]], b, n, tree)
        mean = lambda g: jax.lax.psum(jnp.sum(g, axis=0, keepdims=True), AXIS) / n_agents
        return _loop(alg, _Ops(lr, _padded_grads(apply_fn, xl, yl, wl), mix, mean))

    A, C, R = P(AXIS), P(None, AXIS), P()
    data = (C, A, A, C if batched else A, R)
    start = jax.jit(shard_map(lambda params, *a: loop(*a)[0](params), mesh, in_specs=(A,) + data, out_specs=A,
                              check_rep=False))
    advance = jax.jit(shard_map(lambda state, k0, k1, *a: loop(*a)[1](state, k0, k1), mesh,
                                in_specs=(A, R, R) + data, out_specs=A, check_rep=False), donate_argnums=0)
    outputs = jax.jit(shard_map(lambda p, x: jax.vmap(apply_fn, in_axes=(0, None))(p, x), mesh,
                                in_specs=(A, R), out_specs=A, check_rep=False))
    return start, advance, outputs


def _cached(builder, *key):
    """``builder(*key)`` through its LRU cache, or uncached if ``key`` is not hashable."""
    try:
        hash(key)
    except TypeError:
        return builder.__wrapped__(*key)
    return builder(*key)



def simulate(algorithm, apply_fn, params0, W, x, y, owner, lr, steps, *, x_test=None, record_params=False,
             devices=None, mixing="auto", momentum: float = 0.0, batches=None, dtype=None):
    r"""Train Q copies of a network peer to peer and record their outputs.

    Args:
        algorithm: a name of :data:`p2pntk.algorithms.ALGORITHMS` or an
            :class:`~p2pntk.algorithms.Algorithm` (its single definition is what runs).
        apply_fn: ``apply_fn(params, x) -> (n, C)``, any JAX model (the
            nonlinear network, or its linearisation :func:`p2pntk.kernels.linearize`).
        params0: common initial parameters :math:`\theta_0` (a pytree).
        W: (Q, Q) mixing matrix (checked: symmetric, doubly stochastic), a (T, Q, Q)
            schedule (iteration k mixes with ``W[k % T]``) or a callable ``k -> W(k)``
            (:func:`p2pntk.graphs.mixing_schedule`, :func:`~p2pntk.graphs.link_failures`,
            :func:`~p2pntk.graphs.local_steps`), turned into an array before the jitted loop.
        x, y: training inputs (N, ...) and targets (N, C).
        owner: (N,) agent holding each training point.
        lr: step size :math:`\eta`.
        steps: sorted iteration counts at which to record (0 allowed).
        x_test: optional test inputs.
        record_params: ``True`` records every agent's parameters; a function
            ``select(stacked_params)`` records only what it returns (e.g. a few
            weights — full parameters of wide networks do not fit in memory).
        devices: ``None`` (default): all agents vmapped on the default device.
            Otherwise the agent axis is sharded over a 1-D mesh with axis
            ``"agents"`` (see :func:`p2pntk.sharding.agent_mesh`: an int ``n`` for the first ``n``
            devices of ``jax.devices()``, a sequence of devices, or a ``Mesh``) with
            ``shard_map``; each device holds :math:`Q/n` agents, their parameters and
            their local data. Communication per iteration: DGD mixes
            :math:`\theta` then adds local gradients (one mixing); ATC takes local
            gradient steps then mixes them (one mixing); CTA mixes then evaluates the
            gradient at the mixed iterate (one mixing); centralised all-reduces
            (``psum``) the gradients, no mixing. A mixing is neighbour exchange
            (``ppermute``) or ``all_gather`` according to :func:`p2pntk.sharding.mixing_plan`.
            Results equal those of ``devices=None`` to float round-off (summation
            order of the mixing). In a multi-process run (``jax.distributed``), every
            process calls ``simulate`` with the same arguments and receives the full
            results (gathered with ``process_allgather``).
        mixing: ``"auto"`` (rule of :func:`p2pntk.sharding.mixing_plan`), ``"ppermute"`` or
            ``"all_gather"``; used only when ``devices`` is given.
        momentum: :math:`\beta\in[0, 1)` for dgd, atc, cta, centralized (:func:`p2pntk.algorithms.get`).
        batches: ``None`` (full batch) or a callable ``k -> `` Q index arrays, agent q's minibatch
            at iteration k (:func:`minibatches`); every iteration computes one stochastic gradient
            per agent, used wherever the method's equation says :math:`\nabla f(x^k)`.
        dtype: the training precision, ``None`` (default: that of ``params0``'s floating
            leaves) or one of :data:`TRAIN_DTYPES` (``"float64"``, ``"float32"``, or the
            NumPy/JAX type); the floating leaves of ``params0`` and ``x``, ``y``, ``x_test``
            and ``W`` are all cast to it (:func:`train_dtype`). ``"float64"`` needs
            ``jax.config.update("jax_enable_x64", True)`` (else ``ValueError``, never a
            silent float32).

    Returns:
        :class:`SimulationResult` with ``train`` (S, Q, N, C) and ``test`` (S, Q, N_test, C).

    Raises:
        FloatingPointError: if outputs become NaN or inf (training diverged);
            the message gives the iteration and the step size.
        ValueError: on invalid inputs, including ``devices`` that do not divide Q and a
            ``dtype`` outside :data:`TRAIN_DTYPES`.

    Layout: without ``devices``, the local losses of agents with equal :math:`N_q` are one
    vmapped gradient (:func:`agent_groups`; one group for an equal split), so agents of
    unequal sizes are computed without padding them to the largest (measured:
    ``benchmarks/bench_padding.py``). With ``devices`` every agent is padded to
    :math:`\max_q N_q` (a device's block must have the same shape on every device; padded
    points have weight 0).

    The compiled iteration is cached across calls: a second call with the same
    algorithm, ``apply_fn`` object (and mesh/mixing plan), shapes and dtypes does not recompile.
    """
    alg = algorithms.get(algorithm, momentum)
    steps = check_steps(steps)
    W = mixing_schedule(W, int(steps[-1]))
    Q = W.shape[1]
    if mixing not in MIXINGS:
        raise ValueError(f"unknown mixing={mixing!r}; allowed: {', '.join(MIXINGS)}")
    mesh = None if devices is None else agent_mesh(devices, Q)
    dtype = train_dtype(dtype, params0)
    cast = lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a
    params0 = jax.tree.map(lambda a: cast(jnp.asarray(a)), params0)
    x, y = cast(jnp.asarray(x)), cast(jnp.asarray(y))
    x_test = None if x_test is None else cast(jnp.asarray(x_test))
    if y.ndim != 2 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must have shape (N, C) with N = {x.shape[0]}, got {y.shape}")
    for name, arr in (("x", x), ("y", y)):
        if not bool(jnp.all(jnp.isfinite(arr))):
            raise ValueError(f"{name} contains NaN or inf")
    owner = check_owner(owner, x.shape[0], Q)
    check_lr(lr)
    batch = batch_weights(batches, owner, Q, int(steps[-1]))
    stacked = lambda p: jnp.broadcast_to(p, (Q,) + p.shape).astype(p.dtype)

    if mesh is None:
        Wj = jnp.asarray(W, dtype=dtype)
        groups, pos = _grouped_data(x, y, owner, Q, batch, dtype)
        st, adv, outputs = _cached(_compiled, alg, apply_fn)
        start = lambda params: st(params, Wj, groups, pos, lr)
        advance = lambda state, k0, k1: adv(state, k0, k1, Wj, groups, pos, lr)
        params = jax.tree.map(lambda p: jnp.array(stacked(p)), params0)  # own copy (advance donates its input)
        x_eval = x
        x_test_eval = x_test
        host = lambda t: jax.tree.map(np.asarray, t)
    else:
        from jax.sharding import NamedSharding, PartitionSpec as P

        xl, yl, wl = _padded_data(x, y, owner, Q, batch)
        plan = mixing_plan(W, mesh.devices.size, mixing)
        coef = mixing_coefficients(W, plan)
        agents, repl = NamedSharding(mesh, P(AXIS)), NamedSharding(mesh, P())
        st, adv, outputs = _cached(_sharded_functions, alg, apply_fn, mesh, plan, Q, wl.ndim == 3)
        coef = put_global(np.asarray(coef, dtype=dtype), NamedSharding(mesh, P(None, AXIS)))
        xl, yl = (put_global(a, agents) for a in (xl, yl))
        wl = put_global(wl, NamedSharding(mesh, P(None, AXIS)) if wl.ndim == 3 else agents)
        start = lambda params: st(params, coef, xl, yl, wl, lr)
        advance = lambda state, k0, k1: adv(state, k0, k1, coef, xl, yl, wl, lr)
        params = jax.tree.map(lambda p: put_global(stacked(p), agents), params0)
        x_eval = put_global(x, repl)
        x_test_eval = None if x_test is None else put_global(np.asarray(x_test), repl)
        host = to_host

    state = start(params)
    train, test, recorded = [], [], []
    done = 0
    for s in steps:
        state = advance(state, done, int(s))
        done = int(s)
        f = outputs(state["x"], x_eval)
        if mesh is not None:
            f = host(f)
        if not bool(jnp.all(jnp.isfinite(f))):
            raise FloatingPointError(
                f"{alg.name} training diverged: outputs are NaN/inf at iteration {done} with lr={lr}; "
                "reduce the step size below its critical step size (p2pntk.stability.critical_step_size)")
        train.append(np.asarray(f))
        if x_test is not None:
            test.append(host(outputs(state["x"], x_test_eval)))
        if record_params:
            kept = record_params(state["x"]) if callable(record_params) else state["x"]
            recorded.append(host(kept))
    return SimulationResult(steps, np.stack(train), np.stack(test) if x_test is not None else None,
                            recorded if record_params else None)


def parameters(apply_fn, params0, x, coef):
    r"""Recover agent parameters :math:`\theta_q = \theta_0 + J^\top a_q` by one vector–Jacobian product.

    Args:
        apply_fn, params0: the network and its initial parameters :math:`\theta_0`.
        x: (N, ...) training inputs (the rows of :math:`J`).
        coef: (N, C) coefficients :math:`a_q` of one agent (``result.coef[s, q]``),
            or (Q, N, C) for all agents (returns a pytree with a leading agent axis).
    """
    _, vjp = jax.vjp(lambda p: apply_fn(p, x), params0)
    coef = jnp.asarray(coef)

    def one(a):
        (delta,) = vjp(a.astype(jax.tree.leaves(params0)[0].dtype))
        return jax.tree.map(jnp.add, params0, delta)

    return one(coef) if coef.ndim == 2 else jax.vmap(one)(coef)


def flatten_agents(stacked_params) -> np.ndarray:
    r"""All parameters of every agent as one (Q, P) array, from a pytree with leading agent axis.

    Example:
        >>> flatten_agents([np.zeros((2, 3)), np.ones((2, 2, 2))]).shape
        (2, 7)
    """
    leaves = jax.tree.leaves(stacked_params)
    Q = np.shape(leaves[0])[0]
    return np.concatenate([np.asarray(v, dtype=np.float64).reshape(Q, -1) for v in leaves], axis=1)


def minibatches(owner, batch_size: int, *, seed: int = 0):
    r"""Minibatches for ``batches=``: at each iteration k, ``batch_size`` of each agent's points,
    drawn without replacement by ``numpy.random.default_rng([seed, k])`` (the same batches
    whenever iteration k is asked for, so training and the closed form see the same ones).

    Example:
        >>> b = minibatches([0, 0, 0, 1, 1], 2, seed=3)
        >>> [len(i) for i in b(7)], np.array_equal(b(7)[1], b(7)[1])
        ([2, 2], True)
    """
    owner = np.asarray(owner)
    points = [np.flatnonzero(owner == q) for q in range(owner.max() + 1)]
    smallest = min(len(p) for p in points)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or not 1 <= batch_size <= smallest:
        raise ValueError(f"batch_size must be an integer in 1..{smallest} (the smallest agent's number of points), "
                         f"got {batch_size!r}")

    def batches(k: int):
        rng = np.random.default_rng([seed, int(k)])
        return [np.sort(rng.choice(p, batch_size, replace=False)) for p in points]

    batches.batch_size, batches.seed = int(batch_size), seed
    return batches
