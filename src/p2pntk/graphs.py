r"""Communication graphs and mixing matrices for peer-to-peer learning.

Agents :math:`q = 1..Q` sit on the nodes of a connected undirected graph
:math:`G`. A mixing matrix :math:`W \in \mathbb{R}^{Q\times Q}` has
:math:`W_{ql} > 0` only for :math:`l = q` or :math:`(q, l)` an edge, and is
doubly stochastic, so that average consensus :math:`x(k+1) = W x(k)` preserves
the mean and converges to it at rate
:math:`\rho(W) = \max(|\lambda_2(W)|, |\lambda_Q(W)|)` (Xiao & Boyd, 2004).

Nodes of every graph returned here are the integers ``0..Q-1``.
"""
from __future__ import annotations

import math

import networkx as nx
import numpy as np

TOPOLOGIES = ("ring", "path", "star", "complete", "grid", "erdos_renyi", "geometric")
RULES = ("metropolis", "max_degree", "lazy_metropolis")

#: Random topologies are re-drawn with seeds ``seed, seed+1, ...`` until the
#: graph is connected, at most this many times; then a ``ValueError`` is raised.
MAX_REDRAWS = 100


def _grid_shape(n_agents: int, rows: int | None) -> tuple[int, int]:
    if rows is None:
        rows = max(r for r in range(1, math.isqrt(n_agents) + 1) if n_agents % r == 0)
    if rows < 1 or n_agents % rows:
        raise ValueError(f"grid: rows={rows} must divide n_agents={n_agents}")
    return rows, n_agents // rows


def topology(name: str, n_agents: int, *, seed: int = 0, **options) -> nx.Graph:
    r"""Build a connected communication graph on ``n_agents`` nodes.

    Args:
        name: one of ``"ring"``, ``"path"``, ``"star"`` (node 0 is the hub),
            ``"complete"``, ``"grid"`` (2-D torus; options ``rows`` — default the
            most square factorisation — and ``periodic=True``),
            ``"erdos_renyi"`` (option ``p``, default :math:`2\ln Q / Q` capped at 1),
            ``"geometric"`` (random geometric graph in the unit square, the
            wireless-edge case; option ``radius``, default
            :math:`\sqrt{2 \ln Q / (\pi Q)}`; node positions in attribute ``pos``).
        n_agents: number of agents :math:`Q \ge 2`.
        seed: seed of the random topologies. A disconnected draw is never used:
            it is re-drawn with seed ``seed + 1``, ``seed + 2``, ... (at most
            :data:`MAX_REDRAWS` times); the seed that was used is stored in
            ``graph.graph["seed"]``.

    Returns:
        A connected ``networkx.Graph`` with nodes ``0..n_agents-1`` and
        ``graph.graph["name"] = name``.

    Example:
        >>> g = topology("ring", 6)
        >>> sorted(d for _, d in g.degree())
        [2, 2, 2, 2, 2, 2]
        >>> topology("torus", 4)
        Traceback (most recent call last):
        ...
        ValueError: unknown topology name='torus'; allowed: ring, path, star, complete, grid, erdos_renyi, geometric
    """
    if name not in TOPOLOGIES:
        raise ValueError(f"unknown topology name={name!r}; allowed: {', '.join(TOPOLOGIES)}")
    if not isinstance(n_agents, (int, np.integer)) or n_agents < 2:
        raise ValueError(f"n_agents must be an integer >= 2, got {n_agents!r}")
    allowed = {"grid": {"rows", "periodic"}, "erdos_renyi": {"p"}, "geometric": {"radius"}}.get(name, set())
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"topology {name!r} takes options {sorted(allowed)}, got unknown {sorted(unknown)}")
    n = int(n_agents)
    used_seed = None
    if name == "ring":
        if n < 3:
            raise ValueError("ring needs n_agents >= 3")
        g = nx.cycle_graph(n)
    elif name == "path":
        g = nx.path_graph(n)
    elif name == "star":
        g = nx.star_graph(n - 1)
    elif name == "complete":
        g = nx.complete_graph(n)
    elif name == "grid":
        rows, cols = _grid_shape(n, options.get("rows"))
        g = nx.grid_2d_graph(rows, cols, periodic=options.get("periodic", True))
        g = nx.convert_node_labels_to_integers(g, ordering="sorted", label_attribute="cell")
        g = nx.Graph(g)  # periodic grids with a side of 2 would otherwise carry duplicate edges
    else:
        for attempt in range(MAX_REDRAWS):
            s = seed + attempt
            if name == "erdos_renyi":
                p = options.get("p", min(1.0, 2 * math.log(n) / n))
                g = nx.gnp_random_graph(n, p, seed=s)
            else:
                r = options.get("radius", math.sqrt(2 * math.log(n) / (math.pi * n)))
                g = nx.random_geometric_graph(n, r, seed=s)
            if nx.is_connected(g):
                used_seed = s
                break
        else:
            raise ValueError(
                f"{name}: no connected graph in {MAX_REDRAWS} draws (seeds {seed}..{seed + MAX_REDRAWS - 1}) "
                f"with options {options}; increase the edge probability / radius"
            )
    g.graph.update(name=name, seed=used_seed)
    return g


def _check_connected(graph: nx.Graph) -> None:
    if graph.number_of_nodes() == 0 or not nx.is_connected(graph):
        parts = [sorted(c) for c in nx.connected_components(graph)]
        raise ValueError(f"graph is disconnected ({len(parts)} components, e.g. nodes {parts[-1][:5]}): "
                         "average consensus cannot reach the network average; the graph must be connected")


def mixing_matrix(graph: nx.Graph, rule: str = "metropolis") -> np.ndarray:
    r"""Symmetric doubly stochastic mixing matrix of a connected graph.

    With degrees :math:`d_q` and :math:`d_{\max} = \max_q d_q`, for an edge
    :math:`(q, l)`:

    - ``"metropolis"`` (Metropolis–Hastings): :math:`W_{ql} = 1/(1 + \max(d_q, d_l))`;
    - ``"max_degree"``: :math:`W_{ql} = 1/(1 + d_{\max})`;
    - ``"lazy_metropolis"``: :math:`W = (I + W^{\mathrm{MH}})/2`;

    :math:`W_{ql} = 0` for non-neighbours and :math:`W_{qq} = 1 - \sum_{l\ne q} W_{ql}`
    (Xiao & Boyd, 2004; Boyd et al., 2004).

    Args:
        graph: connected undirected graph with nodes ``0..Q-1``.
        rule: ``"metropolis"``, ``"max_degree"`` or ``"lazy_metropolis"``.

    Returns:
        ``W`` as a (Q, Q) float64 array.

    Example:
        >>> W = mixing_matrix(topology("path", 3))
        >>> W.round(4)
        array([[0.6667, 0.3333, 0.    ],
               [0.3333, 0.3333, 0.3333],
               [0.    , 0.3333, 0.6667]])
    """
    if rule not in RULES:
        raise ValueError(f"unknown mixing rule={rule!r}; allowed: {', '.join(RULES)}")
    n = graph.number_of_nodes()
    if sorted(graph.nodes) != list(range(n)):
        raise ValueError("graph nodes must be the integers 0..Q-1")
    _check_connected(graph)
    deg = np.array([graph.degree(q) for q in range(n)], dtype=np.float64)
    W = np.zeros((n, n))
    for q, l in graph.edges:
        if q == l:
            continue
        if rule == "max_degree":
            W[q, l] = W[l, q] = 1.0 / (1.0 + deg.max())
        else:
            W[q, l] = W[l, q] = 1.0 / (1.0 + max(deg[q], deg[l]))
    W[np.diag_indices(n)] = 1.0 - W.sum(axis=1)
    if rule == "lazy_metropolis":
        W = 0.5 * (np.eye(n) + W)
    return W


def check_mixing_matrix(W, graph: nx.Graph | None = None, *, atol: float = 1e-10, connected: bool = True) -> np.ndarray:
    r"""Validate a mixing matrix and return it as float64.

    A mixing matrix is doubly stochastic, :math:`W \ge 0`, :math:`W\mathbf 1 = \mathbf 1`,
    :math:`\mathbf 1^\top W = \mathbf 1^\top`, with a positive diagonal and the support of an
    undirected graph (:math:`W_{ql} > 0 \iff W_{lq} > 0`; the two weights of an edge may
    differ, so :math:`W` need not be symmetric), connected unless ``connected=False``
    (the mixing matrix of one iteration of a time-varying schedule, e.g. with failed links).
    If ``graph`` is given, the support of ``W`` must be exactly the graph's: ``graph``
    connected, :math:`W_{ql} = 0` for every non-edge and :math:`W_{ql} > 0` for every edge
    :math:`(q, l)`. An edge of zero weight is rejected: it is a link the algorithm never
    uses, so ``graph`` would not be the communication graph of ``W`` (and its connectivity
    would not imply :math:`\rho(W - \tfrac1Q\mathbf 1\mathbf 1^\top) < 1`); remove the edge
    instead. Each failure raises ``ValueError`` naming the parameter and what is required.

    Example:
        >>> check_mixing_matrix([[0.5, 0.5], [0.2, 0.8]])
        Traceback (most recent call last):
        ...
        ValueError: W must be doubly stochastic (rows and columns sum to 1): column sums are [0.7 1.3]
        >>> check_mixing_matrix(np.eye(3))
        Traceback (most recent call last):
        ...
        ValueError: the support of W is disconnected (3 components, e.g. agents [2]): consensus cannot ...
    """
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"W must be a square (Q, Q) matrix, got shape {W.shape}")
    if not np.all(np.isfinite(W)):
        raise ValueError("W contains NaN or inf")
    if np.any(W < -atol):
        raise ValueError("W must be non-negative")
    rows, cols = W.sum(axis=1), W.sum(axis=0)
    if not np.allclose(rows, 1, atol=atol):
        raise ValueError(f"W must be doubly stochastic (rows and columns sum to 1): row sums are {rows.round(6)}")
    if not np.allclose(cols, 1, atol=atol):
        raise ValueError(f"W must be doubly stochastic (rows and columns sum to 1): column sums are {cols.round(6)}")
    diag = np.diag(W)
    if np.any(diag <= atol):
        raise ValueError(f"W must have a positive diagonal (every agent keeps a weight on its own value): "
                         f"W[{int(np.argmin(diag))},{int(np.argmin(diag))}] = {diag.min():.3g}")
    support = W > atol
    if not np.array_equal(support, support.T):
        q, l = np.argwhere(support != support.T)[0]
        raise ValueError(f"the support of W must be an undirected graph (W[q,l] > 0 exactly when W[l,q] > 0): "
                         f"W[{q},{l}] = {W[q, l]:.3g} but W[{l},{q}] = {W[l, q]:.3g}")
    if graph is not None:
        Q = W.shape[0]
        if sorted(graph.nodes) != list(range(Q)):
            raise ValueError(f"W is {Q}x{Q}: the graph's nodes must be 0..{Q - 1}, got {graph.number_of_nodes()} "
                             f"nodes {sorted(graph.nodes)[:8]}")
        _check_connected(graph)
        edge = nx.to_numpy_array(graph, nodelist=range(Q)) > 0
        off = ~np.eye(Q, dtype=bool)
        bad = np.argwhere((np.abs(W) > atol) & ~edge & off)
        if len(bad):
            q, l = bad[0]
            raise ValueError(f"W[{q},{l}] = {W[q, l]:.3g} but ({q},{l}) is not an edge of the graph: "
                             "W must be zero outside the edges and the diagonal")
        bad = np.argwhere((np.abs(W) <= atol) & edge & off)
        if len(bad):
            q, l = bad[0]
            raise ValueError(f"W[{q},{l}] = 0 but ({q},{l}) is an edge of the graph: every edge needs a "
                             "positive weight (remove unused edges from the graph)")
    if connected and graph is None:          # with a graph: its support is the connected graph
        parts = list(nx.connected_components(nx.from_numpy_array(support.astype(float))))
        if len(parts) > 1:
            raise ValueError(f"the support of W is disconnected ({len(parts)} components, e.g. agents "
                             f"{sorted(parts[-1])[:5]}): consensus cannot reach the network average; a fixed W "
                             "needs a connected graph (a time-varying W(k) may be disconnected at some iterations)")
    return W


def _valid_stack(Ws, atol: float = 1e-10) -> bool:
    """Whether every matrix of a (T, Q, Q) stack passes :func:`check_mixing_matrix` with
    ``connected=False`` (one vectorised test)."""
    if not np.all(np.isfinite(Ws)):
        return False
    support = Ws > atol
    return bool(np.all(Ws >= -atol) and np.allclose(Ws.sum(axis=2), 1, atol=atol)
                and np.allclose(Ws.sum(axis=1), 1, atol=atol)
                and np.all(np.diagonal(Ws, axis1=1, axis2=2) > atol)
                and np.array_equal(support, support.transpose(0, 2, 1)))


def mixing_schedule(W, n_iterations: int = 1) -> np.ndarray:
    r"""Mixing matrices of every iteration as a checked (T, Q, Q) stack: iteration :math:`k` mixes with ``W[k % T]``.

    ``W`` is one (Q, Q) matrix (T = 1: a fixed graph), a (T, Q, Q) sequence (a periodic
    schedule if the run is longer than T), or a callable ``k -> (Q, Q)`` (e.g.
    :func:`link_failures`, :func:`local_steps`), evaluated at ``k = 0 .. n_iterations - 1``
    (T = ``n_iterations``, at least 1). Every matrix must pass :func:`check_mixing_matrix`
    (tested on the whole stack at once; connectivity only for a fixed W: one iteration of a
    schedule may be disconnected); an error names the first iteration k that fails.

    Example:
        >>> mixing_schedule(np.full((2, 2), 0.5)).shape, mixing_schedule(local_steps(np.full((2, 2), 0.5), 2), 4)[:, 0, 1].tolist()
        ((1, 2, 2), [0.0, 0.5, 0.0, 0.5])
    """
    if not callable(W) and np.ndim(W) == 2:
        return check_mixing_matrix(W)[None]
    if callable(W):
        Ws = [np.asarray(W(k), dtype=np.float64) for k in range(max(1, int(n_iterations)))]
        where = lambda k: f"W(k) at iteration k={k}"
    else:
        if np.ndim(W) != 3 or len(W) == 0:
            raise ValueError(f"W must be a (Q, Q) matrix, a (T, Q, Q) schedule with T >= 1 or a callable "
                             f"k -> W(k), got shape {np.shape(W)}")
        Ws = list(np.asarray(W, dtype=np.float64))
        where = lambda k: f"W[{k}] of the (T, Q, Q) schedule (iteration k={k})"
    Q = Ws[0].shape[0] if Ws[0].ndim == 2 else 0
    stack = np.stack(Ws) if all(w.shape == (Q, Q) for w in Ws) else None
    if stack is not None and _valid_stack(stack):
        return stack
    for k, w in enumerate(Ws):                     # locate the first matrix that fails, with its message
        try:
            check_mixing_matrix(w, connected=False)
            if w.shape != Ws[0].shape:
                raise ValueError(f"W must have the shape {Ws[0].shape} of W(0), got {w.shape}")
        except ValueError as err:
            raise ValueError(f"{where(k)}: {err}") from None
    raise AssertionError("unreachable: the stack check and check_mixing_matrix disagree")


def link_failures(W, p: float, *, seed: int = 0):
    r"""Mixing with links that fail: a callable ``k -> W(k)`` for :func:`mixing_schedule`.

    At every iteration each edge of the symmetric ``W`` fails independently with probability
    ``p`` (a draw of ``numpy.random.default_rng([seed, k])``, so ``W(k)`` is the same whenever it
    is asked for); a failed edge's weight moves to the diagonal of both its ends, surviving
    edges keep their weight. So every :math:`W(k)` is symmetric and doubly stochastic and

    .. math:: \mathbb E[W(k)] = I - (1 - p)(I - W)

    exactly (returned by the attribute ``expected``). The graph of :math:`W(k)` may be
    disconnected at some iterations.

    Example:
        >>> Wk = link_failures(mixing_matrix(topology("ring", 4)), 0.5, seed=1)
        >>> bool(np.allclose(Wk(3).sum(axis=0), 1)), round(float(Wk.expected[0, 1]), 6)
        (True, 0.166667)
    """
    W = check_mixing_matrix(W)
    if not np.allclose(W, W.T, atol=1e-12):
        raise ValueError("link_failures needs a symmetric W (a failed edge is removed in both directions)")
    if not (isinstance(p, (int, float, np.floating)) and 0 <= p < 1):
        raise ValueError(f"p must be a failure probability in [0, 1), got {p!r}")
    iu, ju = np.nonzero(np.triu(W, 1))
    Q = W.shape[0]

    def W_k(k: int) -> np.ndarray:
        fail = np.random.default_rng([seed, int(k)]).random(len(iu)) < p
        Wk = W.copy()
        i, j = iu[fail], ju[fail]
        Wk[i, j] = Wk[j, i] = 0.0
        np.add.at(Wk, (i, i), W[i, j])
        np.add.at(Wk, (j, j), W[i, j])
        return Wk

    W_k.expected = np.eye(Q) - (1 - p) * (np.eye(Q) - W)
    W_k.p, W_k.seed = p, seed
    return W_k


def local_steps(W, tau: int):
    r"""τ local gradient steps per communication round: ``k -> W`` at iterations
    :math:`k \equiv \tau - 1 \pmod \tau`, the identity otherwise (for :func:`mixing_schedule`).

    ``W`` may itself be a callable ``k -> W(k)`` (e.g. :func:`link_failures`): the communication
    iterations then mix with ``W(k)``.

    Example:
        >>> [float(local_steps(np.full((2, 2), 0.5), 3)(k)[0, 1]) for k in range(6)]
        [0.0, 0.0, 0.5, 0.0, 0.0, 0.5]
    """
    if isinstance(tau, bool) or not isinstance(tau, (int, np.integer)) or tau < 1:
        raise ValueError(f"tau must be a positive integer (local steps per communication round), got {tau!r}")
    mix = W if callable(W) else (lambda k, W=check_mixing_matrix(W): W)
    eye = np.eye(np.shape(mix(tau - 1))[0])

    def W_k(k: int) -> np.ndarray:
        return mix(int(k)) if int(k) % tau == tau - 1 else eye

    W_k.tau = int(tau)
    return W_k


def consensus_rate(W, *, asymptotic: bool = False) -> float:
    r"""Rate of average consensus :math:`x(k+1) = W x(k)`.

    By default the contraction factor per iteration,
    :math:`\sigma(W) = \|W - \tfrac1Q \mathbf 1\mathbf 1^\top\|_2`, so that
    :math:`\|x(k) - \bar x\mathbf 1\| \le \sigma^k \|x(0) - \bar x\mathbf 1\|` for every
    doubly stochastic ``W``; with ``asymptotic=True`` the spectral radius
    :math:`\rho(W - \tfrac1Q \mathbf 1\mathbf 1^\top)`, the rate of the slowest mode
    (:math:`\rho \le \sigma`). For a symmetric ``W`` both equal
    :math:`\max(|\lambda_2|, |\lambda_Q|)`.

    Example:
        >>> round(consensus_rate(mixing_matrix(topology("complete", 5))), 12)
        0.0
        >>> W = np.array([[0.5, 0.3, 0.2], [0.4, 0.4, 0.2], [0.1, 0.3, 0.6]])   # doubly stochastic, not symmetric
        >>> round(consensus_rate(W), 6), round(consensus_rate(W, asymptotic=True), 6)
        (0.43778, 0.4)
    """
    W = np.asarray(W, dtype=np.float64)
    if np.allclose(W, W.T, rtol=0, atol=1e-14):
        lam = np.linalg.eigvalsh(W)                                        # ascending; lam[-1] = 1
        return float(max(abs(lam[0]), abs(lam[-2]))) if len(W) > 1 else 0.0
    E = W - np.full_like(W, 1.0 / len(W))
    if asymptotic:
        return float(np.abs(np.linalg.eigvals(E)).max())
    return float(np.linalg.norm(E, 2))


def spectral_gap(W) -> float:
    r"""Spectral gap :math:`1 - \sigma(W)` (see :func:`consensus_rate`)."""
    return 1.0 - consensus_rate(W)


def consensus_errors(W, x0, iterations: int) -> np.ndarray:
    r"""Consensus error :math:`\|x(k) - \bar x \mathbf 1\|_2` of :math:`x(k+1) = W x(k)`.

    Args:
        W: (Q, Q) mixing matrix.
        x0: (Q,) or (Q, d) initial values.
        iterations: number of iterations ``K``.

    Returns:
        (K + 1,) array of errors for ``k = 0..K``.
    """
    W = np.asarray(W, dtype=np.float64)
    x = np.asarray(x0, dtype=np.float64)
    mean = x.mean(axis=0, keepdims=True)
    errs = np.empty(iterations + 1)
    for k in range(iterations + 1):
        errs[k] = np.linalg.norm(x - mean)
        x = W @ x
    return errs
