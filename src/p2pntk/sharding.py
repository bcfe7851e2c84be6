r"""Agents sharded over devices: the mesh, the mixing plan and the collectives of :math:`W\otimes I`.

Device :math:`i` of a 1-D mesh (axis ``"agents"``) holds agents :math:`ib..ib+b-1`
(:math:`b = Q/n`) with their local data; a mixing is neighbour exchange
(``ppermute``) for sparse banded/circulant :math:`W` or ``all_gather`` for dense
:math:`W` (:func:`mixing_plan`). Used by :func:`p2pntk.training.simulate` (``devices=``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

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
        >>> import numpy as np
        >>> mixing_plan(graphs.mixing_matrix(graphs.topology("ring", 8)), 4)
        ('ppermute', (0, 1, 7))
        >>> mixing_plan(graphs.mixing_matrix(graphs.topology("complete", 8)), 4)
        ('all_gather',)
    """
    if mixing not in MIXINGS:
        raise ValueError(f"unknown mixing={mixing!r}; allowed: {', '.join(MIXINGS)}")
    W = np.asarray(W)
    W = W if W.ndim == 3 else W[None]          # a (T, Q, Q) schedule: the offsets of all its matrices
    Q = W.shape[1]
    if Q % n_dev:
        raise ValueError(f"devices: Q = {Q} agents cannot be split evenly over {n_dev} devices")
    rows = np.arange(Q)
    offsets = tuple(d for d in range(Q) if np.any(W[:, rows, (rows + d) % Q] != 0))
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


def sharded_mix(plan, coef, b, n, tree):
    r""":math:`(W\otimes I)` of a pytree whose leaves hold this device's b agents, inside ``shard_map``.

    ``coef`` is this device's rows of :func:`mixing_coefficients` for the current iteration.
    """
    if plan[0] == "all_gather":  # coef: (b, Q) local rows of W
        full = jax.lax.all_gather(tree, AXIS, tiled=True)
        return jax.tree.map(lambda p: jnp.tensordot(coef, p, axes=1), full)
    offsets = plan[1]  # coef: (b, |S|), coef[j, k] = W[q, (q + offsets[k]) % Q] for local agent q = i*b + j
    out = None
    for k, d in enumerate(offsets):
        sh = _shift(tree, d, b, n)
        term = jax.tree.map(lambda p: coef[:, k].reshape((b,) + (1,) * (p.ndim - 1)) * p, sh)
        out = term if out is None else jax.tree.map(jnp.add, out, term)
    return out


def mixing_coefficients(W, plan) -> np.ndarray:
    r"""The coefficients each device needs for its rows of :math:`W(k)\otimes I`, (T, Q, ·):
    the rows of W (``all_gather``) or ``coef[t, q, j] = W_t[q, (q + offsets[j]) % Q]`` (``ppermute``)."""
    W = np.asarray(W)
    if plan[0] == "all_gather":
        return W
    Q = W.shape[1]
    rows = np.arange(Q)
    return np.stack([W[:, rows, (rows + d) % Q] for d in plan[1]], axis=2)


def put_global(arr, sharding):
    """Global array from host data present (identically) in every process."""
    arr = np.asarray(arr)
    return jax.make_array_from_callback(arr.shape, sharding, lambda idx: arr[idx])


def to_host(tree):
    """NumPy copy of a pytree of (possibly multi-process) global arrays: leaves whose
    shards live in other processes are gathered with ``multihost_utils.process_allgather``."""
    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            from jax.experimental import multihost_utils
            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return np.asarray(a)
    return jax.tree.map(one, tree)
