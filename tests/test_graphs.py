"""Topologies and mixing matrices: the API contract and the consensus theorem."""
import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from p2pntk import graphs

# Eigen-decompositions and sums of at most a few hundred float64 terms: 1e-12 is
# a few hundred ulps, far above round-off and far below any modelling error.
TOL = 1e-12


def random_connected_graph(n, p, seed):
    g = nx.gnp_random_graph(n, p, seed=seed)
    # join the components along a path so that the graph is connected but irregular
    comps = [sorted(c)[0] for c in nx.connected_components(g)]
    g.add_edges_from(zip(comps, comps[1:]))
    return g


graph_cases = st.builds(random_connected_graph, st.integers(2, 40), st.floats(0.0, 1.0), st.integers(0, 10**6))


@settings(max_examples=60, deadline=None)
@given(graph=graph_cases, rule=st.sampled_from(graphs.RULES))
def test_mixing_matrix_is_symmetric_doubly_stochastic_on_graph(graph, rule):
    W = graphs.mixing_matrix(graph, rule)
    n = graph.number_of_nodes()
    assert W.shape == (n, n) and W.dtype == np.float64
    np.testing.assert_allclose(W.sum(axis=0), 1, atol=TOL)
    np.testing.assert_allclose(W.sum(axis=1), 1, atol=TOL)
    np.testing.assert_array_equal(W, W.T)
    assert (W >= 0).all() and (np.diag(W) > 0).all()
    adj = nx.to_numpy_array(graph, nodelist=range(n)) > 0
    offdiag = ~np.eye(n, dtype=bool)
    np.testing.assert_array_equal((W > 0) & offdiag, adj & offdiag)  # sparsity = the graph's edges
    graphs.check_mixing_matrix(W, graph)


@settings(max_examples=40, deadline=None)
@given(graph=graph_cases, rule=st.sampled_from(graphs.RULES), seed=st.integers(0, 2**31))
def test_consensus_converges_at_rate_rho(graph, rule, seed):
    W = graphs.mixing_matrix(graph, rule)
    rho = graphs.consensus_rate(W)
    assert rho < 1 - 1e-12 or graph.number_of_nodes() == 1
    x0 = np.random.default_rng(seed).standard_normal(graph.number_of_nodes())
    e = graphs.consensus_errors(W, x0, 30)
    k = np.arange(31)
    assert np.all(e <= rho**k * e[0] * (1 + 1e-9) + 1e-12)
    # rate is attained: starting along the slowest eigenvector, the bound is an equality
    lam, U = np.linalg.eigh(W)
    i = int(np.argmax(np.where(np.isclose(lam, 1) & (np.arange(len(lam)) == len(lam) - 1), -1, np.abs(lam))))
    e_slow = graphs.consensus_errors(W, U[:, i], 10)
    np.testing.assert_allclose(e_slow, rho ** np.arange(11) * e_slow[0], rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("name", graphs.TOPOLOGIES)
@pytest.mark.parametrize("n", [4, 9, 16, 30])
def test_topologies_connected_with_integer_nodes(name, n):
    g = graphs.topology(name, n, seed=3)
    assert sorted(g.nodes) == list(range(n))
    assert nx.is_connected(g)
    assert g.graph["name"] == name


def test_known_topologies():
    assert graphs.topology("grid", 16).number_of_edges() == 32  # 4x4 torus: every node degree 4
    assert dict(graphs.topology("star", 5).degree())[0] == 4
    W = graphs.mixing_matrix(graphs.topology("complete", 7))
    np.testing.assert_allclose(W, np.full((7, 7), 1 / 7), atol=TOL)
    # ring with Metropolis weights: eigenvalues (1 + 2 cos(2 pi j / Q)) / 3
    Q = 10
    rho = graphs.consensus_rate(graphs.mixing_matrix(graphs.topology("ring", Q)))
    lam = (1 + 2 * np.cos(2 * np.pi * np.arange(Q) / Q)) / 3
    assert rho == pytest.approx(np.sort(np.abs(lam))[-2], abs=TOL)


def test_random_topologies_deterministic_and_redrawn():
    a = graphs.topology("erdos_renyi", 20, seed=5)
    b = graphs.topology("erdos_renyi", 20, seed=5)
    assert sorted(a.edges) == sorted(b.edges)
    # a sparse geometric graph is disconnected for most seeds: it must be redrawn, never returned
    g = graphs.topology("geometric", 30, seed=0, radius=0.25)
    assert nx.is_connected(g) and g.graph["seed"] >= 0
    with pytest.raises(ValueError, match="no connected graph"):
        graphs.topology("erdos_renyi", 30, p=0.0)


def test_bad_input_messages():
    with pytest.raises(ValueError, match="allowed: ring, path, star, complete, grid, erdos_renyi, geometric"):
        graphs.topology("hypercube", 8)
    with pytest.raises(ValueError, match="allowed: metropolis, max_degree, lazy_metropolis"):
        graphs.mixing_matrix(graphs.topology("ring", 5), rule="uniform")
    with pytest.raises(ValueError, match="disconnected"):
        graphs.mixing_matrix(nx.empty_graph(4))
    with pytest.raises(ValueError, match="unknown"):
        graphs.topology("ring", 5, p=0.3)
    with pytest.raises(ValueError, match="square"):
        graphs.check_mixing_matrix(np.ones((2, 3)) / 3)
    with pytest.raises(ValueError, match="doubly stochastic"):
        graphs.check_mixing_matrix([[0.5, 0.5], [0.2, 0.8]])
    with pytest.raises(ValueError, match="not an edge"):
        graphs.check_mixing_matrix(np.full((3, 3), 1 / 3), graphs.topology("path", 3))
