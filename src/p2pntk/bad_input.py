"""Bad input, tried on purpose: each misuse the package detects, and what it says.

Every :class:`Case` is one row of the book's appendix table (``book/bad_input.md``,
computed by :func:`table` when the book is built) and one test
(``tests/test_bad_input.py``): ``call()`` must raise, or warn, ``expected`` with a
message matching the regular expression ``match``. Cases that need files create
them in a temporary folder.
"""
from __future__ import annotations

import io
import re
import tempfile
import warnings
from contextlib import redirect_stderr
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import data, graphs


@dataclass(frozen=True)
class Case:
    """One bad input: what is wrong, the call (as text), the call itself, and the expected error."""
    row: str
    input: str
    call: Callable[[], object]
    expected: type
    match: str


def _tiny(**change):
    """A 4-point, 2-agent linearised problem (W, K, owner, f0, y), with some entries replaced."""
    p = dict(W=np.full((2, 2), 0.5), K=np.eye(4), owner=np.array([0, 0, 1, 1]), f0=np.zeros((4, 1)),
             y=np.ones((4, 1)))
    return {**p, **change}


def _predict(algorithm="dgd", lr=0.5, steps=(0, 1), momentum=0.0, batches=None, **change):
    from .dynamics import linearized_outputs

    p = _tiny(**change)
    return linearized_outputs(algorithm, p["W"], p["K"], p["owner"], p["f0"], p["y"], lr, list(steps), momentum=momentum,
                              batches=batches)


def _train(lr=0.5, steps=(0, 1), x=None):
    """Actual DGD training of two linear models f(x) = x θ on the tiny problem."""
    import jax.numpy as jnp

    from .training import simulate

    p = _tiny()
    x = np.eye(4) if x is None else x
    theta0 = jnp.zeros((4, 1))            # JAX's default precision (float32 unless x64 is on), as an init_fn gives
    return simulate("dgd", lambda theta, x: x @ theta, theta0, p["W"], x, p["y"], p["owner"], lr, list(steps))


def _flow(algorithm="dgd", **change):
    from .dynamics import linearized_flow_outputs

    p = _tiny(**change)
    return linearized_flow_outputs(algorithm, p["W"], p["K"], p["owner"], p["f0"], p["y"], 0.5, [1.0])


def _two_state():
    """Heavy-ball DGD defined inline: two state variables (x, v), so no gradient flow."""
    from .algorithms import Algorithm

    return Algorithm("heavy_ball", lambda ops, x0: {"x": x0, "v": 0 * x0},
                     lambda ops, s, k: {"x": ops.mix(s["x"], k) - ops.lr * s["v"], "v": 0.5 * s["v"] + ops.grad(s["x"], k)})


def _test_kernel_alone():
    from .dynamics import linearized_outputs

    p = _tiny()
    return linearized_outputs("dgd", p["W"], p["K"], p["owner"], p["f0"], p["y"], 0.5, [1], K_test=np.eye(4)[:2])


def _write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8 or float64) as an IDX file."""
    code, dtype = (0x08, ">u1") if array.dtype == np.uint8 else (0x0E, ">f8")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    path.write_bytes(header + array.astype(dtype).tobytes())


def _fashion_mnist_with_nan():
    with tempfile.TemporaryDirectory() as tmp:
        images = np.zeros((20, 2, 2))
        images[3, 0, 0] = np.nan
        for prefix in ("train", "t10k"):
            _write_idx(Path(tmp) / f"{prefix}-images-idx3-ubyte", images)
            _write_idx(Path(tmp) / f"{prefix}-labels-idx1-ubyte", np.arange(20, dtype=np.uint8) % 10)
        data.fashion_mnist(10, 10, folder=tmp)


def _fashion_mnist_missing():
    with tempfile.TemporaryDirectory() as tmp:
        data.fashion_mnist(10, 10, folder=tmp)


def _truncated_idx():
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train-labels-idx1-ubyte"
        _write_idx(path, np.arange(20, dtype=np.uint8))
        path.write_bytes(path.read_bytes()[:-5])
        data.read_idx(path)


def _corrupt_cache():
    """A truncated results file is detected, recomputed and never used."""
    from . import results

    calls = []

    def compute():
        calls.append(1)
        return {"v": np.full(3, float(len(calls)))}

    with tempfile.TemporaryDirectory() as tmp:
        results.cached("demo", {"n": 3}, compute, folder=tmp)
        (path,) = Path(tmp).glob("demo-*.npz")
        path.write_bytes(path.read_bytes()[:100])
        again = results.cached("demo", {"n": 3}, compute, folder=tmp)
        assert len(calls) == 2 and again["v"][0] == 2.0, "the corrupt file was used"
        results.load(path)  # rewritten intact


def _cli(*args):
    """Run the command line in process; its error message (stderr) becomes the SystemExit's."""
    from . import cli

    err = io.StringIO()
    with redirect_stderr(err):
        try:
            cli.main(list(args))
        except SystemExit as exc:
            raise SystemExit(f"exit status {exc.code}: {err.getvalue().strip()}") from None


def _profile(name):
    from .paths import project_root
    from .pipeline import load_profile

    load_profile(project_root(), name)


def _two_edges():
    g = graphs.nx.Graph([(0, 1), (2, 3)])
    return graphs.mixing_matrix(g)


_RING4 = graphs.topology("ring", 4)
_PAIRS = np.kron(np.eye(2), np.full((2, 2), 0.5))  # doubly stochastic, but uses only edges (0,1), (2,3)

CASES = [
    Case("W not square", "linearized_outputs('dgd', W=np.ones((2, 3)) / 3, ...)",
         lambda: _predict(W=np.ones((2, 3)) / 3), ValueError, r"W must be a square \(Q, Q\) matrix, got shape \(2, 3\)"),
    Case("W not doubly stochastic", "linearized_outputs('dgd', W=[[0.5, 0.5], [0.2, 0.8]], ...)",
         lambda: _predict(W=np.array([[0.5, 0.5], [0.2, 0.8]])), ValueError,
         r"W must be doubly stochastic \(rows and columns sum to 1\): column sums are \[0.7 1.3\]"),
    Case("W non-zero off the graph", "check_mixing_matrix(np.full((3, 3), 1/3), graph=topology('path', 3))",
         lambda: graphs.check_mixing_matrix(np.full((3, 3), 1 / 3), graphs.topology("path", 3)), ValueError,
         r"W\[0,2\] = 0.333 but \(0,2\) is not an edge of the graph"),
    Case("W zero on an edge of the graph", "check_mixing_matrix(blkdiag(J/2, J/2), graph=topology('ring', 4))",
         lambda: graphs.check_mixing_matrix(_PAIRS, _RING4), ValueError,
         r"W\[0,3\] = 0 but \(0,3\) is an edge of the graph: every edge needs a positive weight"),
    Case("W with a zero diagonal", "linearized_outputs('dgd', W=[[0, 1], [1, 0]], ...)",
         lambda: _predict(W=np.array([[0.0, 1.0], [1.0, 0.0]])), ValueError,
         r"W must have a positive diagonal \(every agent keeps a weight on its own value\): W\[0,0\] = 0"),
    Case("W on a directed graph", "check_mixing_matrix(a I + b P with P the cyclic shift)",
         lambda: graphs.check_mixing_matrix(0.5 * np.eye(3) + 0.5 * np.roll(np.eye(3), 1, axis=1)), ValueError,
         r"the support of W must be an undirected graph \(W\[q,l\] > 0 exactly when W\[l,q\] > 0\): "
         r"W\[0,1\] = 0.5 but W\[1,0\] = 0"),
    Case("fixed W with a disconnected support", "linearized_outputs('dgd', W=np.eye(2), ...)",
         lambda: _predict(W=np.eye(2)), ValueError,
         r"the support of W is disconnected \(2 components, e.g. agents \[1\]\): consensus cannot reach"),
    Case("disconnected graph", "mixing_matrix(nx.Graph([(0, 1), (2, 3)]))", _two_edges, ValueError,
         r"graph is disconnected \(2 components.*the graph must be connected"),
    Case("random graph never connected", "topology('erdos_renyi', 20, p=0.01)",
         lambda: graphs.topology("erdos_renyi", 20, p=0.01), ValueError,
         r"erdos_renyi: no connected graph in 100 draws .*increase the edge probability"),
    Case("more agents than training points", "partition(labels of N=5 points, n_agents=8)",
         lambda: data.partition(np.arange(5), 8), ValueError,
         r"n_agents=8 exceeds the number of training points N=5.*at most 5"),
    Case("an agent without data", "linearized_outputs(..., owner=[0, 0, 0, 0]) with Q = 2",
         lambda: _predict(owner=np.zeros(4, dtype=int)), ValueError,
         r"every agent needs at least one training point; agents \[1\] have none"),
    Case("unknown algorithm", "linearized_outputs('gossip', ...)", lambda: _predict("gossip"), ValueError,
         r"unknown algorithm='gossip'; allowed: dgd, atc, cta, centralized, extra, exact_diffusion, nids, "
         r"gradient_tracking, next, aug_dgm"),
    Case("empty mixing schedule", "linearized_outputs('dgd', W=np.zeros((0, 2, 2)), ...)",
         lambda: _predict(W=np.zeros((0, 2, 2))), ValueError,
         r"W must be a \(Q, Q\) matrix, a \(T, Q, Q\) schedule with T >= 1 or a callable k -> W\(k\), got shape \(0, 2, 2\)"),
    Case("flow of a two-state method", "linearized_flow_outputs(Algorithm with state x, v, ...)",
         lambda: _flow(_two_state()), ValueError,
         r"algorithm 'heavy_ball' has 2 state variables \['x', 'v'\]: it has no gradient flow"),
    Case("flow with a mixing schedule", "linearized_flow_outputs('dgd', W=(3, 2, 2) schedule, ...)",
         lambda: _flow(W=np.full((3, 2, 2), 0.5)), ValueError, r"W: the flow needs one fixed \(Q, Q\) mixing matrix"),
    Case("test kernel without its initial outputs", "linearized_outputs(..., K_test=K_t) without f0_test",
         _test_kernel_alone, ValueError, r"f0_test is required with K_test"),
    Case("momentum outside [0, 1)", "linearized_outputs('dgd', ..., momentum=1.0)",
         lambda: _predict(momentum=1.0), ValueError, r"momentum must be in \[0, 1\), got 1.0"),
    Case("momentum for a method without it", "linearized_outputs('extra', ..., momentum=0.5)",
         lambda: _predict("extra", momentum=0.5), ValueError,
         r"momentum=0.5 is defined for dgd, atc, cta, centralized, not for algorithm='extra'"),
    Case("link-failure probability outside [0, 1)", "link_failures(W, p=1.0)",
         lambda: graphs.link_failures(_tiny()["W"], 1.0), ValueError, r"p must be a failure probability in \[0, 1\), got 1.0"),
    Case("local steps not a positive integer", "local_steps(W, tau=0)", lambda: graphs.local_steps(_tiny()["W"], 0),
         ValueError, r"tau must be a positive integer \(local steps per communication round\), got 0"),
    Case("W(k) not doubly stochastic", "linearized_outputs(..., W=lambda k: [[0.5, 0.5], [0.2, 0.8]] if k == 1 else W)",
         lambda: _predict(W=lambda k: np.array([[0.5, 0.5], [0.2, 0.8]]) if k == 1 else np.full((2, 2), 0.5),
                          steps=[0, 3]), ValueError, r"W\(k\) at iteration k=1: W must be doubly stochastic"),
    Case("W(k) of the wrong shape", "linearized_outputs(..., W=lambda k: a (2, 3) matrix from k = 2)",
         lambda: _predict(W=lambda k: np.full((2, 2), 0.5) if k < 2 else np.ones((2, 3)) / 3, steps=[0, 3]),
         ValueError, r"W\(k\) at iteration k=2: W must be a square \(Q, Q\) matrix, got shape \(2, 3\)"),
    Case("a batch outside the agent's points", "linearized_outputs(..., batches=lambda k: [[0], [1]])",
         lambda: _predict(batches=lambda k: [[0], [1]]), ValueError,
         r"batches\(0\): the batch of agent 1 must be distinct indices of agent 1's own training points \[2, 3\]"),
    Case("an empty batch", "linearized_outputs(..., batches=lambda k: [[0], []] if k == 1 else None)",
         lambda: _predict(batches=lambda k: [[0], []] if k == 1 else None), ValueError,
         r"batches\(1\): the batch of agent 1 is empty"),
    Case("batch size outside 1..N_q", "training.minibatches(owner, batch_size=3) with N_q = 2",
         lambda: __import__("p2pntk.training").training.minibatches(_tiny()["owner"], 3), ValueError,
         r"batch_size must be an integer in 1..2 \(the smallest agent's number of points\), got 3"),
    Case("unknown topology", "topology('torus', 4)", lambda: graphs.topology("torus", 4), ValueError,
         r"unknown topology name='torus'; allowed: ring, path, star, complete, grid, erdos_renyi, geometric"),
    Case("unknown mixing rule", "mixing_matrix(ring, rule='uniform')",
         lambda: graphs.mixing_matrix(_RING4, "uniform"), ValueError,
         r"unknown mixing rule='uniform'; allowed: metropolis, max_degree, lazy_metropolis"),
    Case("unknown data set", "data.load('mnist', 10, 10)", lambda: data.load("mnist", 10, 10), ValueError,
         r"unknown data set name='mnist'; allowed: digits, fashion_mnist"),
    Case("unknown partition scheme", "partition(labels, 2, scheme='random')",
         lambda: data.partition(np.arange(10), 2, "random"), ValueError,
         r"unknown partition scheme='random'; allowed: iid, dirichlet, by_class"),
    Case("unknown activation", "kernels.mlp(8, activation='tanh')",
         lambda: __import__("p2pntk.kernels").kernels.mlp(8, activation="tanh"), ValueError,
         r"unknown activation='tanh'; allowed: relu, erf"),
    Case("unknown profile", "pipeline.load_profile(root, 'huge')", lambda: _profile("huge"), SystemExit,
         r"unknown profile='huge'; allowed: ci, paper"),
    Case("unknown value of a chapter parameter", "p2pntk run p2p_methods -p topology=rnig",
         lambda: _cli("run", "p2p_methods", "-p", "topology=rnig"), SystemExit,
         r"exit status 2: .*parameter 'topology' of 'p2p_methods': unknown value 'rnig'; allowed: ring, path"),
    Case("unknown value in a list parameter", "p2pntk run reproduction -p algorithms=['dgd','sgd']",
         lambda: _cli("run", "reproduction", "-p", "algorithms=['dgd','sgd']"), SystemExit,
         r"parameter 'algorithms' of 'reproduction': unknown value 'sgd'; allowed: dgd, atc, cta, centralized, extra"),
    Case("NaN in the targets (prediction)", "linearized_outputs(..., y with a NaN)",
         lambda: _predict(y=np.array([[1.0], [np.nan], [1.0], [1.0]])), ValueError, r"y contains NaN or inf"),
    Case("inf in the inputs (training)", "simulate(..., x with an inf)",
         lambda: _train(x=np.diag([1.0, np.inf, 1.0, 1.0])), ValueError, r"x contains NaN or inf"),
    Case("NaN in the data files", "fashion_mnist(folder with a NaN pixel)", _fashion_mnist_with_nan, ValueError,
         r"Fashion-MNIST training images contain NaN or inf"),
    Case("step size not positive", "linearized_outputs(..., lr=-1)", lambda: _predict(lr=-1.0), ValueError,
         r"lr must be a positive finite step size, got -1"),
    Case("step size beyond the sufficient bound", "linearized_outputs('dgd', ..., lr=10) (bound 2)",
         lambda: _predict(lr=10.0), RuntimeWarning,
         r"lr=10 exceeds the sufficient stable step size 2 of linearised dgd; spectral radius 4\.5\d+: "
         r"predicted divergence, errors grow like 4\.5\d\^k"),
    Case("training diverges", "simulate('dgd', ..., lr=1000, steps=[0, 10, 400])",
         lambda: _train(lr=1000.0, steps=(0, 10, 400)), FloatingPointError,
         r"dgd training diverged: outputs are NaN/inf at iteration 400 with lr=1000.0; reduce the step size"),
    Case("Fashion-MNIST not installed", "fashion_mnist(folder without the IDX files)", _fashion_mnist_missing,
         FileNotFoundError, r"not found\. Fashion-MNIST is read from Debian's package dataset-fashion-mnist: "
                            r"run `sudo apt-get install dataset-fashion-mnist`"),
    Case("truncated data file", "read_idx(IDX file missing its last 5 bytes)", _truncated_idx, ValueError,
         r"truncated or corrupt IDX file \(15 data bytes, 20 expected for shape \(20,\)\)"),
    Case("corrupt cache file", "results.cached(...) on a truncated .npz", _corrupt_cache, RuntimeWarning,
         r"results file .*demo-.*\.npz is corrupt .*: recomputing it \(a corrupt file is never used\)"),
    Case("training precision not float64 or float32", "simulate(..., dtype='float16')",
         lambda: __import__("p2pntk.training").training.simulate(
             "dgd", lambda theta, x: x @ theta, np.zeros((4, 1)), _tiny()["W"], np.eye(4), _tiny()["y"],
             _tiny()["owner"], 0.5, [0, 1], dtype="float16"), ValueError,
         r"dtype must be None \(the precision of params0\) or one of 'float64', 'float32', got 'float16'"),
    Case("unknown kernel kind", "predict(..., kernel='ntk')", lambda: _predict_own(kernel="ntk"), ValueError,
         r"unknown kernel='ntk'; allowed: empirical, shared, analytic, or a precomputed \(K, K_test\) tuple"),
    Case("analytic kernel without kernel_fn", "predict(..., kernel='analytic')",
         lambda: _predict_own(kernel="analytic"), ValueError, r"kernel='analytic' needs kernel_fn"),
    Case("precomputed kernel of the wrong shape", "predict(..., kernel=np.eye(3)) with N = 4",
         lambda: _predict_own(kernel=np.eye(3)), ValueError,
         r"kernel: K must have shape \(N, N\) = \(4, 4\) \(shared\) or \(N, C, N, C\) = \(4, 1, 4, 1\) "
         r"\(output-resolved\), got \(3, 3\)"),
    Case("precomputed test kernel of the wrong shape", "predict(..., x_test=x[:2], kernel=(K, np.eye(4)))",
         lambda: _predict_own(x_test=np.eye(4)[:2], kernel=(np.eye(4), np.eye(4))), ValueError,
         r"kernel: K_test must have shape \(2, 4\) \(N_test = 2, shared like K\), got \(4, 4\)"),
    Case("unknown value on a tuning grid axis", "tune(grid={'algorithm': ['dgd', 'adam']})",
         lambda: _tune({"algorithm": ["dgd", "adam"]}), ValueError,
         r"grid axis 'algorithm': value 'adam' is not allowed; allowed: dgd, atc, cta, centralized, extra"),
    Case("unknown tuning grid axis", "tune(grid={'momentum': [0.9]})", lambda: _tune({"momentum": [0.9]}),
         ValueError, r"unknown grid axes \['momentum'\]; axes: algorithm, topology, rule, lr_factor, failure"),
    Case("empty tuning grid axis", "tune(grid={'topology': []})", lambda: _tune({"topology": []}), ValueError,
         r"grid axis 'topology' is empty: give at least one value"),
    Case("step size factor not positive (tuning)", "p2pntk tune --lr-factor 0.5 -1",
         lambda: _cli("tune", "--lr-factor", "0.5", "-1"), SystemExit,
         r"exit status 2: .*grid axis 'lr_factor': value -1 is not allowed; allowed: numbers > 0"),
    Case("rounds objective without a target", "tune(objective='rounds')", lambda: _tune(objective="rounds"),
         ValueError, r"objective='rounds' needs target, a test error in \(0, 1\) to reach, got target=None"),
    Case("target not reached within the budget", "tune(objective='rounds', target=0.01, budget=2)",
         lambda: _tune(objective="rounds", target=0.01, budget=2, record=2), RuntimeWarning,
         r"1 of 1 stable cells do not reach test error 0.01 within 2 iterations: their objective is NaN, ranked last"),
    Case("an .npz data set without y", "from_npz(file with x only)", lambda: _npz(x=_X), ValueError,
         r"mine.npz: an .npz data set needs arrays x and y .*; it has x"),
    Case("an .npz data set with lengths that differ", "from_npz(file with 6 rows of x, 5 labels)",
         lambda: _npz(x=_X, y=_LABELS[:5]), ValueError,
         r"y must be a vector of one label per row of x: x has shape \(6, 6\), y has shape \(5,\)"),
    Case("an .npz data set with NaN inputs", "from_npz(file whose x has a NaN)",
         lambda: _npz(x=np.where(np.eye(6) == 1, np.nan, 0.0), y=_LABELS), ValueError,
         r"x contains NaN or inf \(row 0\); inputs must be finite"),
    Case("an .npz data set with non-integer labels", "from_npz(file with y = 0.5, 1.5, ...)",
         lambda: _npz(x=_X, y=_LABELS + 0.5), ValueError, r"y must hold integer class labels 0..C-1, got dtype float64"),
    Case("kernel batch size not a positive integer", "predict(..., batch_size=0)",
         lambda: _predict_own(batch_size=0), ValueError,
         r"batch_size must be a positive integer \(points per kernel block\) or None .*got 0"),
]


def attempt(case: Case) -> tuple[str, str]:
    """Run ``case.call()``; return the name and message of what it raised, else of the first warning
    of the expected kind (``("nothing", "")`` if neither happened)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            case.call()
        except (Exception, SystemExit) as exc:
            return type(exc).__name__, str(exc)
    for w in caught:
        if issubclass(w.category, case.expected):
            return w.category.__name__, str(w.message)
    return "nothing", ""


def table(only: str = ""):
    """Try every case whose row contains ``only``; a DataFrame (rows numbered from 1) with the
    bad input, the call, what it raised, its message (temporary folders shown as ``<tmp>``),
    and whether both are the expected ones."""
    import pandas as pd

    rows = []
    for case in CASES:
        if only not in case.row:
            continue
        kind, message = attempt(case)
        ok = kind == case.expected.__name__ and re.search(case.match, message) is not None
        message = re.sub(re.escape(tempfile.gettempdir()) + r"/tmp\w+", "<tmp>", message)
        rows.append({"bad input": case.row, "call": case.input, "raises": kind, "message": message,
                     "as expected": "yes" if ok else "NO"})
    return pd.DataFrame(rows, index=range(1, len(rows) + 1))


def _tune(grid=None, **options):
    """:func:`p2pntk.tuning.tune` on a tiny problem (digits, N = 20, Q = 3 on a ring, width 16), no progress bar."""
    from .tuning import tune

    folder = tempfile.mkdtemp()
    return tune(dict(n_train=20, n_test=10, n_agents=3), {"width": [16], **(grid or {})}, folder=folder,
                progress=False, **options)


def _npz(**arrays):
    """:func:`p2pntk.data.from_npz` of an .npz file holding ``arrays`` (in a temporary folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mine.npz"
        np.savez(path, **arrays)
        return data.from_npz(path, n_test=2)


_X, _LABELS = np.eye(6), np.arange(6) % 2


def _predict_own(**options):
    """:func:`p2pntk.prediction.predict` of DGD on the tiny problem with a linear model f(x) = x θ."""
    from .prediction import predict

    p = _tiny()
    return predict("dgd", lambda theta, x: x @ theta, np.zeros((4, 1)), p["W"], np.eye(4), p["y"], p["owner"], 0.5,
                   [0, 1], **options)
