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

All agents start from the common initialisation ``params0``.

Execution: by default the Q agents are stacked on a leading axis and vmapped on one
device, the mixing being :math:`(W\otimes I)\theta` (a ``tensordot``). With
``simulate(..., devices=n)`` the agent axis is sharded over a 1-D mesh (axis
``"agents"``, :func:`agent_mesh`) with ``shard_map``: device :math:`i` holds agents
:math:`ib..ib+b-1` (:math:`b = Q/n`) with their local data, and each iteration
communicates as follows — DGD: one mixing of :math:`\theta`; ATC: one mixing of the
locally updated :math:`\theta - \eta\nabla L`; CTA: one mixing of :math:`\theta`
before the gradient; centralised: one all-reduce (``psum``) of the gradients. A mixing
is neighbour exchange (``ppermute``) for sparse banded/circulant :math:`W` or
``all_gather`` for dense :math:`W` (:func:`mixing_plan`). The compiled iteration is
cached per (algorithm, ``apply_fn``, mesh and mixing plan), and by jit per shapes.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np

ALGORITHMS = ("dgd", "atc", "cta", "centralized")
#: Precisions in which actual networks may be trained (kernels and closed forms are float64).
TRAIN_DTYPES = ("float64", "float32")


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


def check_algorithm(algorithm: str) -> str:
    """Raise ``ValueError`` naming the allowed values if ``algorithm`` is unknown."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm={algorithm!r}; allowed: {', '.join(ALGORITHMS)}")
    return algorithm


def check_owner(owner, n_points: int, n_agents: int) -> np.ndarray:
    """Validate the assignment of training points to agents; return it as int array."""
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


def _local_data(x, y, owner, n_agents):
    """Pad each agent's points to the largest N_q; weights 1/N_q on real points, 0 on padding."""
    counts = np.bincount(owner, minlength=n_agents)
    n_max = counts.max()
    idx = np.zeros((n_agents, n_max), dtype=int)
    wts = np.zeros((n_agents, n_max))
    for q in range(n_agents):
        pts = np.flatnonzero(owner == q)
        idx[q, :len(pts)] = pts
        wts[q, :len(pts)] = 1.0 / len(pts)
    return x[idx], y[idx], jnp.asarray(wts, dtype=y.dtype)


def _mix(W, tree):
    """(W ⊗ I) applied to a pytree whose leaves have a leading agent axis."""
    return jax.tree.map(lambda p: jnp.tensordot(W, p, axes=1), tree)


def _step_fn(algorithm, apply_fn, lr, xl, yl, wl, mix, mean_grad):
    """One iteration ``params -> params`` on a stack of agents (all of them, or one device's block).

    ``mix(tree)`` applies :math:`W\\otimes I` (whatever the communication behind it) and
    ``mean_grad(g)`` the average of the gradients over all :math:`Q` agents (keepdims).
    """
    def local_loss(p, xq, yq, wq):
        r = apply_fn(p, xq) - yq
        return 0.5 * jnp.sum(wq[:, None] * r ** 2)

    grads = jax.vmap(jax.grad(local_loss))

    def step(_, params):
        if algorithm == "dgd":
            g = grads(params, xl, yl, wl)
            return jax.tree.map(lambda m, gg: m - lr * gg, mix(params), g)
        if algorithm == "atc":
            g = grads(params, xl, yl, wl)
            return mix(jax.tree.map(lambda p, gg: p - lr * gg, params, g))
        if algorithm == "cta":
            psi = mix(params)
            g = grads(psi, xl, yl, wl)
            return jax.tree.map(lambda p, gg: p - lr * gg, psi, g)
        g = grads(params, xl, yl, wl)  # centralised: every agent takes the step of the global loss
        return jax.tree.map(lambda p, gg: p - lr * mean_grad(gg), params, g)

    return step


#: How many (algorithm, apply_fn) pairs keep their compiled step (least recently used evicted).
#: Bounded because a closure such as ``kernels.linearize(apply_fn, params0)`` holds
#: :math:`\theta_0` and its executable embeds it: an unbounded cache would keep every one alive.
CACHE_SIZE = 16


@lru_cache(maxsize=CACHE_SIZE)
def _compiled(algorithm, apply_fn):
    """Jitted ``advance(params, n, W, xl, yl, wl, lr)`` and ``outputs(params, x)`` of one
    (algorithm, apply_fn): a second :func:`simulate` with the same structure (other W,
    data values, lr or steps; same shapes and dtypes) reuses the executable instead of recompiling."""
    @partial(jax.jit, donate_argnums=0)
    def advance(params, n, W, xl, yl, wl, lr):
        step = _step_fn(algorithm, apply_fn, lr, xl, yl, wl, partial(_mix, W),
                        lambda g: jnp.mean(g, axis=0, keepdims=True))
        return jax.lax.fori_loop(0, n, step, params)

    outputs = jax.jit(jax.vmap(apply_fn, in_axes=(0, None)))
    return advance, outputs


# ---------------------------------------------------------------------------
# Agents sharded over devices
# ---------------------------------------------------------------------------

#: Name of the mesh axis that carries the agents.
AXIS = "agents"
MIXINGS = ("auto", "ppermute", "all_gather")


def agent_mesh(devices, n_agents: int):
    """The 1-D mesh (axis ``"agents"``) over which the ``n_agents`` agents are sharded.

    Args:
        devices: an int ``n`` (the first ``n`` of ``jax.devices()``, which in a
            multi-process run are the *global* devices), a sequence of devices, or a
            1-D ``jax.sharding.Mesh`` whose axis is named ``"agents"``.
        n_agents: :math:`Q`; it must be divisible by the number of devices.

    Raises:
        ValueError: naming ``devices`` and the allowed values.
    """
    from jax.sharding import Mesh

    n_avail = len(jax.devices())
    divisors = [k for k in range(1, n_agents + 1) if n_agents % k == 0 and k <= n_avail]
    allowed = (f"allowed: None, an int among {divisors} (divides Q = {n_agents}, at most "
               f"len(jax.devices()) = {n_avail}), a sequence of as many devices, or a 1-D "
               f"jax.sharding.Mesh with axis name {AXIS!r} and that many devices")
    if isinstance(devices, Mesh):
        mesh = devices
        if mesh.axis_names != (AXIS,):
            raise ValueError(f"devices: the mesh must be 1-D with axis name {AXIS!r}, got axes "
                             f"{mesh.axis_names}; {allowed}")
    elif isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if not 1 <= devices <= n_avail:
            raise ValueError(f"devices={devices} but {n_avail} device(s) are available; {allowed}")
        mesh = Mesh(np.array(jax.devices()[:int(devices)]), (AXIS,))
    else:
        try:
            devs = list(devices)
        except TypeError:
            raise ValueError(f"devices={devices!r} is not understood; {allowed}") from None
        if not devs or not all(isinstance(d, jax.Device) for d in devs):
            raise ValueError(f"devices={devices!r} is not understood; {allowed}")
        mesh = Mesh(np.array(devs), (AXIS,))
    n_dev = mesh.devices.size
    if n_agents % n_dev:
        raise ValueError(f"devices: Q = {n_agents} agents cannot be split evenly over {n_dev} devices; {allowed}")
    return mesh


def _offset_rows(d: int, b: int, n: int) -> int:
    """Agent rows a device receives from other devices to form the shift by ``d`` (block size ``b``)."""
    m, r = divmod(d, b)
    return (b - r) * (m % n != 0) + r * ((m + 1) % n != 0)


def mixing_plan(W, n_dev: int, mixing: str = "auto"):
    r"""How :math:`W\otimes I` is computed when agents are sharded over ``n_dev`` devices.

    Agents are split into contiguous blocks of :math:`b = Q/n_{\rm dev}`; device
    :math:`i` holds agents :math:`ib, \dots, ib+b-1`. Write
    :math:`(W\theta)_q = \sum_{d\in S} W_{q,(q+d) \bmod Q}\,\theta_{(q+d) \bmod Q}`,
    with :math:`S` the *offsets* of :math:`W`: the :math:`d` for which some
    :math:`W_{q,(q+d)\bmod Q}\neq 0` (ring and path: :math:`\{0, 1, Q-1\}`;
    complete or star: all :math:`Q` of them).

    - ``"ppermute"``: for each :math:`d\in S` the rows :math:`\theta_{(q+d)\bmod Q}` of
      the local block are fetched from at most two other devices by
      ``jax.lax.ppermute`` (only the rows needed: for a ring, one agent from each
      neighbouring device), then summed with the local coefficients.
    - ``"all_gather"``: ``jax.lax.all_gather`` of every agent's parameters, then the
      device's :math:`b` rows of :math:`W` times the :math:`Q` gathered agents.

    Rule of ``"auto"`` (W's sparsity): ``"ppermute"`` when the agent rows it moves into
    each device, :math:`\sum_{d\in S}` (rows of the shift by :math:`d` held by other
    devices), are fewer than the :math:`Q - b` rows that ``all_gather`` moves; otherwise
    ``"all_gather"`` (ties go to ``all_gather``, one collective). So banded/circulant
    :math:`W` (ring, path, torus grid with few devices) use neighbour exchange and dense
    :math:`W` (complete, star) an all-gather; on one device both move nothing and
    ``all_gather`` (a local product with :math:`W`) is used.

    Returns:
        ``("all_gather",)`` or ``("ppermute", offsets)`` with ``offsets`` a tuple of ints.

    Example:
        >>> from p2pntk import graphs
        >>> mixing_plan(graphs.mixing_matrix(graphs.topology("ring", 8)), 4)
        ('ppermute', (0, 1, 7))
        >>> mixing_plan(graphs.mixing_matrix(graphs.topology("complete", 8)), 4)
        ('all_gather',)
    """
    if mixing not in MIXINGS:
        raise ValueError(f"unknown mixing={mixing!r}; allowed: {', '.join(MIXINGS)}")
    W = np.asarray(W)
    Q = W.shape[0]
    if Q % n_dev:
        raise ValueError(f"devices: Q = {Q} agents cannot be split evenly over {n_dev} devices")
    rows = np.arange(Q)
    offsets = tuple(d for d in range(Q) if np.any(W[rows, (rows + d) % Q] != 0))
    if mixing == "all_gather":
        return ("all_gather",)
    if mixing == "ppermute":
        return ("ppermute", offsets)
    b = Q // n_dev
    moved = sum(_offset_rows(d, b, n_dev) for d in offsets if d)
    return ("ppermute", offsets) if moved < Q - b else ("all_gather",)


def _shift(block, d: int, b: int, n: int):
    """On device i, rows ``(i*b + j + d) mod Q`` (j < b) of the global agent stack: inside shard_map.

    Rows ``j < b - r`` come from device ``i + m`` (local rows ``r..b-1``) and rows
    ``j >= b - r`` from device ``i + m + 1`` (local rows ``0..r-1``), ``m, r = divmod(d, b)``;
    each part is one ``ppermute`` unless it is on the device itself.
    """
    m, r = divmod(d, b)

    def fetch(tree, k):  # the same rows from device i + k
        if k % n == 0:
            return tree
        return jax.lax.ppermute(tree, AXIS, perm=[(s, (s - k) % n) for s in range(n)])

    parts = [fetch(jax.tree.map(lambda p: p[r:], block), m)]
    if r:
        parts.append(fetch(jax.tree.map(lambda p: p[:r], block), m + 1))
    return jax.tree.map(lambda *ps: jnp.concatenate(ps, axis=0), *parts) if r else parts[0]


def _sharded_mix(plan, coef, b, n, tree):
    if plan[0] == "all_gather":  # coef: (b, Q) local rows of W
        full = jax.lax.all_gather(tree, AXIS, tiled=True)
        return _mix(coef, full)
    offsets = plan[1]  # coef: (b, |S|), coef[j, k] = W[q, (q + offsets[k]) % Q] for local agent q = i*b + j
    out = None
    for k, d in enumerate(offsets):
        sh = _shift(tree, d, b, n)
        term = jax.tree.map(lambda p: coef[:, k].reshape((b,) + (1,) * (p.ndim - 1)) * p, sh)
        out = term if out is None else jax.tree.map(jnp.add, out, term)
    return out


@lru_cache(maxsize=CACHE_SIZE)
def _sharded_functions(algorithm, apply_fn, mesh, plan, n_agents):
    """Jitted shard_map'ed ``advance`` and ``outputs``, cached by structure like :func:`_compiled`."""
    from jax.experimental.shard_map import shard_map
    from jax.sharding import PartitionSpec as P

    n = mesh.devices.size
    b = n_agents // n

    def body(params, n_iter, coef, xl, yl, wl, lr):
        mix = partial(_sharded_mix, plan, coef, b, n)
        mean_grad = lambda g: jax.lax.psum(jnp.sum(g, axis=0, keepdims=True), AXIS) / n_agents
        step = _step_fn(algorithm, apply_fn, lr, xl, yl, wl, mix, mean_grad)
        return jax.lax.fori_loop(0, n_iter, step, params)

    A = P(AXIS)
    advance = jax.jit(shard_map(body, mesh, in_specs=(A, P(), A, A, A, A, P()), out_specs=A,
                                check_rep=False), donate_argnums=0)
    outputs = jax.jit(shard_map(lambda p, x: jax.vmap(apply_fn, in_axes=(0, None))(p, x), mesh,
                                in_specs=(A, P()), out_specs=A, check_rep=False))
    return advance, outputs


def _cached(builder, *key):
    """``builder(*key)`` through its LRU cache, or uncached if ``key`` is not hashable."""
    try:
        hash(key)
    except TypeError:
        return builder.__wrapped__(*key)
    return builder(*key)


def _put(arr, sharding):
    """Global array from host data present (identically) in every process."""
    arr = np.asarray(arr)
    return jax.make_array_from_callback(arr.shape, sharding, lambda idx: arr[idx])


def _to_host(tree):
    """NumPy copy of a pytree of (possibly multi-process) global arrays: leaves whose
    shards live in other processes are gathered with ``multihost_utils.process_allgather``."""
    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            from jax.experimental import multihost_utils
            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return np.asarray(a)
    return jax.tree.map(one, tree)


def simulate(algorithm, apply_fn, params0, W, x, y, owner, lr, steps, *, x_test=None, record_params=False,
             devices=None, mixing="auto"):
    r"""Train Q copies of a network peer to peer and record their outputs.

    Args:
        algorithm: ``"dgd"``, ``"atc"``, ``"cta"`` or ``"centralized"``.
        apply_fn: ``apply_fn(params, x) -> (n, C)``, any JAX model (the
            nonlinear network, or its linearisation :func:`p2pntk.kernels.linearize`).
        params0: common initial parameters :math:`\theta_0` (a pytree).
        W: (Q, Q) mixing matrix (checked: symmetric, doubly stochastic).
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
            ``"agents"`` (see :func:`agent_mesh`: an int ``n`` for the first ``n``
            devices of ``jax.devices()``, a sequence of devices, or a ``Mesh``) with
            ``shard_map``; each device holds :math:`Q/n` agents, their parameters and
            their local data. Communication per iteration: DGD mixes
            :math:`\theta` then adds local gradients (one mixing); ATC takes local
            gradient steps then mixes them (one mixing); CTA mixes then evaluates the
            gradient at the mixed iterate (one mixing); centralised all-reduces
            (``psum``) the gradients, no mixing. A mixing is neighbour exchange
            (``ppermute``) or ``all_gather`` according to :func:`mixing_plan`.
            Results equal those of ``devices=None`` to float round-off (summation
            order of the mixing). In a multi-process run (``jax.distributed``), every
            process calls ``simulate`` with the same arguments and receives the full
            results (gathered with ``process_allgather``).
        mixing: ``"auto"`` (rule of :func:`mixing_plan`), ``"ppermute"`` or
            ``"all_gather"``; used only when ``devices`` is given.

    Returns:
        :class:`SimulationResult` with ``train`` (S, Q, N, C) and ``test`` (S, Q, N_test, C).

    Raises:
        FloatingPointError: if outputs become NaN or inf (training diverged);
            the message gives the iteration and the step size.
        ValueError: on invalid inputs, including ``devices`` that do not divide Q.

    The compiled iteration is cached across calls: a second call with the same
    algorithm, ``apply_fn`` object (and mesh/mixing plan), shapes and dtypes does not recompile.
    """
    from .graphs import check_mixing_matrix

    check_algorithm(algorithm)
    W = check_mixing_matrix(W)
    Q = W.shape[0]
    if mixing not in MIXINGS:
        raise ValueError(f"unknown mixing={mixing!r}; allowed: {', '.join(MIXINGS)}")
    mesh = None if devices is None else agent_mesh(devices, Q)
    x, y = jnp.asarray(x), jnp.asarray(y)
    if y.ndim != 2 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must have shape (N, C) with N = {x.shape[0]}, got {y.shape}")
    for name, arr in (("x", x), ("y", y)):
        if not bool(jnp.all(jnp.isfinite(arr))):
            raise ValueError(f"{name} contains NaN or inf")
    owner = check_owner(owner, x.shape[0], Q)
    steps = check_steps(steps)
    if not np.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a positive finite step size, got {lr}")
    dtype = y.dtype
    xl, yl, wl = _local_data(x, y, owner, Q)
    stacked = lambda p: jnp.broadcast_to(p, (Q,) + p.shape).astype(p.dtype)

    if mesh is None:
        Wj = jnp.asarray(W, dtype=dtype)
        adv, outputs = _cached(_compiled, algorithm, apply_fn)
        advance = lambda params, n: adv(params, n, Wj, xl, yl, wl, lr)
        params = jax.tree.map(lambda p: jnp.array(stacked(p)), params0)  # own copy (advance donates its input)
        x_eval = x
        x_test_eval = None if x_test is None else jnp.asarray(x_test)
        to_host = lambda t: jax.tree.map(np.asarray, t)
    else:
        from jax.sharding import NamedSharding, PartitionSpec as P

        plan = mixing_plan(W, mesh.devices.size, mixing)
        if plan[0] == "all_gather":
            coef = W
        else:
            rows = np.arange(Q)
            coef = np.stack([W[rows, (rows + d) % Q] for d in plan[1]], axis=1)
        agents, repl = NamedSharding(mesh, P(AXIS)), NamedSharding(mesh, P())
        adv, out = _cached(_sharded_functions, algorithm, apply_fn, mesh, plan, Q)
        coef, xl, yl, wl = (_put(a, agents) for a in (np.asarray(coef, dtype=dtype), xl, yl, wl))
        advance = lambda params, n: adv(params, n, coef, xl, yl, wl, lr)
        outputs = out
        params = jax.tree.map(lambda p: _put(stacked(p), agents), params0)
        x_eval = _put(x, repl)
        x_test_eval = None if x_test is None else _put(np.asarray(x_test), repl)
        to_host = _to_host

    train, test, recorded = [], [], []
    done = 0
    for s in steps:
        params = advance(params, int(s - done))
        done = int(s)
        f = outputs(params, x_eval)
        if mesh is not None:
            f = to_host(f)
        if not bool(jnp.all(jnp.isfinite(f))):
            raise FloatingPointError(
                f"{algorithm} training diverged: outputs are NaN/inf at iteration {done} with lr={lr}; "
                "reduce the step size below the stability bound (p2pntk.stability)")
        train.append(np.asarray(f))
        if x_test is not None:
            test.append(to_host(outputs(params, x_test_eval)))
        if record_params:
            kept = record_params(params) if callable(record_params) else params
            recorded.append(to_host(kept))
    return SimulationResult(steps, np.stack(train), np.stack(test) if x_test is not None else None,
                            recorded if record_params else None)
