r"""Tuning without training: rank peer-to-peer configurations by their closed-form prediction.

A *cell* of the grid is one configuration: method, topology, mixing rule, step size,
link-failure probability, local steps and width (:data:`AXES`). For each width the kernel of
the initial network is computed once (:func:`p2pntk.kernels.kernel`); every cell is then one
column of a batched closed-form recursion (:func:`p2pntk.dynamics.linearized_sweep`: the cells
that share method, width, failure probability and local steps are one recursion, one pass over
the kernel per iteration for all of them). No network is trained to rank them.

The step size of a cell is ``lr_factor`` times a reference step of its mixing matrix
(``step_reference``): the DGD sufficient bound :math:`2\min_q W_{qq}/\lambda_{\rm loc}`
(:func:`p2pntk.stability.dgd_step_size_bound`, cheap; the same for every method, so that the
methods are compared at equal :math:`\eta`) or the method's exact critical step size
(:func:`p2pntk.stability.critical_step_size`, a dense eigenvalue problem per cell, for small
problems). With failing links the reference is that of :math:`\mathbb E[W]`
(:func:`p2pntk.graphs.link_failures`); with :math:`\tau` local steps that of :math:`W`.

Objectives (lower is better), from the mean over agents of the test outputs:

- ``"error"``: test classification error after the budget;
- ``"loss"``: test loss :math:`\frac1Q\sum_q \frac1{2N_*}\sum_i\|f_q(x_i^*) - y_i^*\|^2` after the budget;
- ``"rounds"``: communication rounds until the test error first reaches ``target``, read on
  the recording grid (NaN, and ``reached`` false, where the budget does not reach it).

The budget counts iterations or communication rounds (``budget_unit``; with :math:`\tau`
local steps one round is :math:`\tau` iterations). The outputs are recorded at ``record`` + 1
evenly spaced iterations: the recording grid fixes the resolution of ``"rounds"`` (a round
count is the first recorded one at which the target is met), and each recorded step costs one
product with the test kernel block for all cells (about as much as a few iterations at the
book's largest size), so the grid is not every iteration. Of each recorded step only the
mean-over-agents test error and loss of every cell are kept (and, at the last step, the
training loss), never every agent's outputs: memory is the kernel (one copy: the points are
grouped by agent, :func:`p2pntk.problems.by_agent`) and a few recursion states of
:math:`Q N C` floats per cell.

A cell is *stable* when its prediction stayed bounded and its final predicted training loss
(:func:`p2pntk.metrics.mean_loss`, every agent's model on all N training points) is at most its
initial one (the test loss may rise on a stable run, by fitting label noise). Rank agreement and regret (:func:`tune` with ``verify``) are computed
over the trained stable cells only: a ranking that puts diverging cells last is trivially right.

Results are cached per recursion and per trained cell (:func:`p2pntk.results.cached`), so an
interrupted run resumes where it stopped.
"""
from __future__ import annotations

import itertools
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from . import algorithms, data, dynamics, graphs, kernels, problems, results, stability, training
from .metrics import error_rate, mean_loss, mse

#: The grid's axes, in the order of the result table's columns.
AXES = ("algorithm", "topology", "rule", "lr_factor", "failure", "local_steps", "width")
#: The grid of :func:`tune` where an axis is not given.
DEFAULT_GRID = dict(algorithm=["dgd"], topology=["ring"], rule=["metropolis"], lr_factor=[0.5], failure=[0.0],
                    local_steps=[1], width=[1024])
#: The problem of :func:`tune` where a key is not given (``dataset``: a name of
#: :data:`p2pntk.data.DATASETS` or the path of an ``.npz`` file, :func:`p2pntk.data.from_npz`).
PROBLEM = dict(dataset="digits", n_train=128, n_test=128, n_agents=8, depth=1, activation="relu", partition="iid",
               alpha=0.5, seed=0)
OBJECTIVES = ("error", "loss", "rounds")
BUDGET_UNITS = ("iterations", "rounds")
STEP_REFERENCES = ("dgd_bound", "critical")
KERNELS = ("resolved", "shared", "analytic")
_CHOICES = dict(algorithm=algorithms.ALGORITHMS, topology=graphs.TOPOLOGIES, rule=graphs.RULES)


def _number(axis, v, kind, ok, allowed):
    bad = isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating))
    if kind is int and not bad and float(v) != int(v):
        bad = True
    if bad or not ok(kind(v)):
        raise ValueError(f"grid axis {axis!r}: value {v!r} is not allowed; allowed: {allowed}")
    return kind(v)


def check_grid(grid: dict) -> dict:
    """The full grid: :data:`DEFAULT_GRID` updated by ``grid``, each axis a non-empty list of
    allowed values without repeats (else ``ValueError`` naming the axis and the allowed values).

    Example:
        >>> check_grid({"topology": ["ring", "star"], "lr_factor": [0.5, 1]})["lr_factor"]
        [0.5, 1.0]
        >>> check_grid({"topology": ["torus"]})
        Traceback (most recent call last):
        ...
        ValueError: grid axis 'topology': value 'torus' is not allowed; allowed: ring, path, star, complete, grid, erdos_renyi, geometric
    """
    if not isinstance(grid, dict):
        raise ValueError(f"grid must be a dict of axis -> list of values (axes: {', '.join(AXES)}), got {grid!r}")
    unknown = sorted(set(grid) - set(AXES))
    if unknown:
        raise ValueError(f"unknown grid axes {unknown}; axes: {', '.join(AXES)}")
    out = {}
    for axis in AXES:
        values = grid.get(axis, DEFAULT_GRID[axis])
        values = [values] if isinstance(values, (str, int, float)) else list(values)
        if not values:
            raise ValueError(f"grid axis {axis!r} is empty: give at least one value")
        if axis in _CHOICES:
            for v in values:
                if v not in _CHOICES[axis]:
                    raise ValueError(f"grid axis {axis!r}: value {v!r} is not allowed; allowed: "
                                     f"{', '.join(_CHOICES[axis])}")
        elif axis == "lr_factor":
            values = [_number(axis, v, float, lambda f: 0 < f < np.inf, "numbers > 0 (step size / reference step)")
                      for v in values]
        elif axis == "failure":
            values = [_number(axis, v, float, lambda p: 0 <= p < 1, "link-failure probabilities in [0, 1)")
                      for v in values]
        else:
            values = [_number(axis, v, int, lambda n: n >= 1, "whole numbers >= 1") for v in values]
        if len(set(values)) != len(values):
            raise ValueError(f"grid axis {axis!r} repeats a value: {values}")
        out[axis] = values
    return out


def check_problem(problem: dict) -> dict:
    """The full problem: :data:`PROBLEM` updated by ``problem`` (unknown keys rejected, naming the allowed ones)."""
    unknown = sorted(set(problem) - set(PROBLEM))
    if unknown:
        raise ValueError(f"unknown problem keys {unknown}; allowed: {', '.join(PROBLEM)}")
    out = {**PROBLEM, **problem}
    ds = str(out["dataset"])
    if ds not in data.DATASETS and not ds.endswith(".npz"):
        raise ValueError(f"unknown dataset={ds!r}; allowed: {', '.join(data.DATASETS)}, or the path of an .npz "
                         "file holding x, y (and optionally x_test, y_test)")
    return out


def _check_options(objective, target, budget, budget_unit, record, verify, step_reference, kernel):
    for name, value, allowed in (("objective", objective, OBJECTIVES), ("budget_unit", budget_unit, BUDGET_UNITS),
                                 ("step_reference", step_reference, STEP_REFERENCES), ("kernel", kernel, KERNELS)):
        if value not in allowed:
            raise ValueError(f"unknown {name}={value!r}; allowed: {', '.join(allowed)}")
    for name, value, low in (("budget", budget, 1), ("record", record, 1), ("verify", verify, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")
    if objective == "rounds" and not (isinstance(target, (int, float)) and 0 < target < 1):
        raise ValueError(f"objective='rounds' needs target, a test error in (0, 1) to reach, got target={target!r}")


#: The order in which cells are numbered (the last fastest): one recursion per (width, algorithm,
#: failure, local_steps), within it step factor × topology × rule.
CELL_ORDER = ("width", "algorithm", "failure", "local_steps", "lr_factor", "topology", "rule")


def cells(grid: dict) -> list:
    """The cells of ``grid`` (checked, :func:`check_grid`) as dicts, in the order of their index
    (the ``cell`` column of :attr:`TuneResult.table`): :data:`CELL_ORDER`, the last fastest.

    Example:
        >>> [(c["lr_factor"], c["topology"]) for c in cells({"lr_factor": [0.5, 1], "topology": ["ring", "star"]})]
        [(0.5, 'ring'), (0.5, 'star'), (1.0, 'ring'), (1.0, 'star')]
    """
    g = check_grid(grid)
    return [dict(zip(CELL_ORDER, v)) for v in itertools.product(*(g[a] for a in CELL_ORDER))]


def recording_steps(n_iterations: int, record: int) -> np.ndarray:
    """The recorded iterations: ``record`` + 1 evenly spaced from 0 to ``n_iterations`` (rounded, unique).

    Example:
        >>> recording_steps(100, 4).tolist()
        [0, 25, 50, 75, 100]
    """
    return np.unique(np.round(np.linspace(0, n_iterations, int(record) + 1)).astype(int))


def mixing(W, failure: float, local_steps: int, seed: int):
    r"""The mixing of a cell: ``W``; with link-failure probability ``failure`` the callable
    :func:`p2pntk.graphs.link_failures` (seed ``seed``); with :math:`\tau` = ``local_steps`` > 1
    :func:`p2pntk.graphs.local_steps` around either (mixing at every :math:`\tau`-th iteration)."""
    Wk = graphs.link_failures(W, failure, seed=seed) if failure > 0 else W
    return graphs.local_steps(Wk, local_steps) if local_steps > 1 else Wk


def objective_value(error, loss, steps, local_steps: int, objective: str, target=None) -> float:
    r"""The objective of one cell from its mean-over-agents test error and loss curves at ``steps``.

    ``"error"`` and ``"loss"``: the last value; ``"rounds"``: :math:`\lfloor k/\tau\rfloor` at the
    first recorded iteration :math:`k` whose error is at most ``target`` (NaN if there is none).

    Example:
        >>> objective_value([0.5, 0.2, 0.1], [1.0, 0.5, 0.3], [0, 10, 20], 2, "rounds", target=0.2)
        5.0
    """
    if objective == "error":
        return float(np.asarray(error)[-1])
    if objective == "loss":
        return float(np.asarray(loss)[-1])
    hit = np.flatnonzero(np.asarray(error) <= target)
    return float(np.asarray(steps)[hit[0]] // local_steps) if hit.size else np.nan


@dataclass
class TuneResult:
    r"""The ranked grid of :func:`tune`.

    Attributes:
        table: one row per cell (a ``pandas.DataFrame``, best first): the axes, the step size
            ``lr`` and its reference ``lr_reference``, ``predicted`` (the objective),
            ``stable``, ``diverged`` (and ``diverged_at``, the iteration; -1 if not), ``reached``
            (the objective is a number: for ``"rounds"``, the target was met within the budget),
            ``rank`` (1 = best predicted; unstable and unreached cells last), ``trained``,
            ``actual`` (the trained network's objective; NaN where not trained),
            ``actual_diverged``, and the predicted and actual final test errors and losses.
        curves: cell index -> dict of ``steps``, ``rounds``, ``pred_error``, ``pred_loss``
            (and ``actual_error``, ``actual_loss`` for trained cells), the mean-over-agents curves.
        summary: the options, the objective's spread over the stable cells, and with ``verify``
            the rank agreement (Spearman), the regret and both costs (:func:`verification`).
    """
    table: object
    curves: dict
    summary: dict = field(default_factory=dict)

    def save(self, folder, name: str = "tune") -> list:
        """Write ``<name>.csv`` (the table) and ``<name>.json`` (summary and table); returns the paths."""
        import json
        from pathlib import Path

        from .paths import atomic_write

        folder = Path(folder)
        csv = atomic_write(folder / f"{name}.csv", self.table.to_csv(index=False))
        doc = dict(summary=self.summary, table=json.loads(self.table.to_json(orient="records")))
        js = atomic_write(folder / f"{name}.json", json.dumps(doc, indent=1, default=_jsonable))
        return [csv, js]


def _jsonable(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def _reference_steps(step_reference, algorithm, Ws, K, owner):
    """The reference step of each mixing matrix (:func:`mixing` of failure 0, or E[W])."""
    if step_reference == "dgd_bound":
        return np.array([stability.dgd_step_size_bound(W, K, owner) for W in Ws])
    return np.array([stability.critical_step_size(algorithm, W, K, owner) for W in Ws])


class _Widths:
    """The problem at each width, built once, and its kernel blocks, computed on first use (timed)."""

    def __init__(self, problem: dict, kernel: str):
        self.problem, self.kernel, self.nets, self.blocks, self.seconds = problem, kernel, {}, {}, {}

    def net(self, width):
        if width not in self.nets:
            p = self.problem
            self.nets[width] = problems.by_agent(problems.problem(
                p["dataset"], p["n_train"], p["n_test"], p["n_agents"], width, depth=p["depth"],
                partition=p["partition"], alpha=p["alpha"], seed=p["seed"], activation=p["activation"],
                with_kernel=False))   # grouped by agent: the recursion keeps one copy of the kernel
        return self.nets[width]

    def kernels(self, width):
        if width not in self.blocks:
            pb = self.net(width)
            t0 = time.perf_counter()
            if self.kernel == "analytic":
                self.blocks[width] = kernels.analytic_ntk_train_test(pb.kernel_fn, pb.x, pb.x_test)
            else:
                self.blocks[width] = kernels.kernel(pb.apply_fn, pb.params0, pb.x, pb.x_test,
                                                    resolved=self.kernel == "resolved")
            self.seconds[width] = time.perf_counter() - t0
        return self.blocks[width]


def _summaries(pb, last):
    """The ``record`` of :func:`~p2pntk.dynamics.linearized_sweep` for tuning: per configuration the
    mean-over-agents test error and loss at every recorded step, and the training loss
    (:func:`~p2pntk.metrics.mean_loss`) at the last one (NaN before): L·3 numbers per step in place
    of every agent's outputs, :math:`Q (2N + N_*) C` per configuration."""
    def record(system, A, s):
        test = system.outputs(A, test=True)                                       # (L, Q, N_*, C)
        loss = mse(test, pb.y_test).mean(axis=-1)
        err = np.where(np.isfinite(loss), error_rate(test, pb.labels_test).mean(axis=-1), np.nan)
        train = mean_loss(system.outputs(A), pb.y) if s == last else np.full(len(loss), np.nan)
        return err, loss, train
    return record


def _predict_group(widths, key, mixes, lr_factors, n_iter, record, step_reference):
    """One batched closed-form recursion: every (lr_factor, topology × rule) cell of a
    (width, algorithm, failure, local_steps) group; ``mixes`` the (topology, rule) -> W of the
    grid. Returns the arrays cached for it."""
    width, algorithm, failure, tau = key
    pb = widths.net(width)
    seed = widths.problem["seed"]
    K, Kt = widths.kernels(width)
    t0 = time.perf_counter()
    Ws = list(mixes.values())
    refW = [mixing(W, failure, 1, seed).expected if failure > 0 else W for W in Ws]
    ref = _reference_steps(step_reference, algorithm, refW, K, pb.owner)
    lrs = np.asarray(lr_factors)[:, None] * ref[None, :]
    steps = recording_steps(n_iter, record)
    with warnings.catch_warnings():   # beyond-bound steps: on the grid on purpose
        warnings.simplefilter("ignore", RuntimeWarning)
        r = dynamics.linearized_sweep(algorithm, [mixing(W, failure, tau, seed) for W in Ws], K, pb.owner, pb.f0,
                                      pb.y, lrs, steps, K_test=Kt, f0_test=pb.f0_test,
                                      record=_summaries(pb, int(steps[-1])))
    err, loss, train = r.recorded
    return dict(steps=steps, lr=lrs, lr_reference=ref, error=err, loss=loss, train_loss=train[:, :, -1],
                train_loss0=np.asarray(mean_loss(pb.f0[None], pb.y)), diverged=r.diverged, diverged_at=r.diverged_at,
                seconds_predict=np.asarray(time.perf_counter() - t0),
                seconds_kernel=np.asarray(widths.seconds.pop(width, 0.0)))


def _train_cell(widths, cell, W, lr, steps, train_dtype):
    """Train the actual networks of one cell (mixing matrix ``W``): mean-over-agents test error and loss curves."""
    pb = widths.net(cell["width"])
    p = widths.problem
    t0 = time.perf_counter()
    try:
        act = training.simulate(cell["algorithm"], pb.apply_fn, pb.params0,
                                mixing(W, cell["failure"], cell["local_steps"], p["seed"]), pb.x, pb.y, pb.owner, lr,
                                steps, x_test=pb.x_test, dtype=train_dtype)
    except FloatingPointError:           # the trained network diverged: marked, no number
        nan = np.full(len(steps), np.nan)
        return dict(error=nan, loss=nan, diverged=np.asarray(True), seconds_train=np.asarray(time.perf_counter() - t0))
    test = np.asarray(act.test, np.float64)
    return dict(error=error_rate(test, pb.labels_test).mean(axis=-1), loss=mse(test, pb.y_test).mean(axis=-1),
                diverged=np.asarray(False), seconds_train=np.asarray(time.perf_counter() - t0))


def verification(predicted, actual) -> dict:
    r"""Rank agreement and regret of a prediction over trained cells (NaN-free pairs only).

    ``spearman``: Spearman's rank correlation of predicted and actual objectives;
    ``regret``: the actual objective of the cell predicted best minus the best actual objective
    among them (0 when the prediction picks the best of the trained cells);
    ``spread``: the actual objective's range (max − min) over them, beside which the regret is read.

    Example:
        >>> v = verification([0.1, 0.2, 0.3], [0.12, 0.25, 0.2])
        >>> round(v["spearman"], 3), round(v["regret"], 3), round(v["spread"], 3)
        (0.5, 0.0, 0.13)
    """
    from scipy.stats import spearmanr

    pred, act = np.asarray(predicted, float), np.asarray(actual, float)
    ok = np.isfinite(pred) & np.isfinite(act)
    pred, act = pred[ok], act[ok]
    if len(pred) < 2:
        return dict(n=int(len(pred)), spearman=np.nan, regret=np.nan, spread=np.nan)
    rho = float(spearmanr(pred, act).statistic) if np.ptp(pred) > 0 and np.ptp(act) > 0 else np.nan
    return dict(n=int(len(pred)), spearman=rho, regret=float(act[np.argmin(pred)] - act.min()),
                spread=float(np.ptp(act)))


def tune(problem: dict | None = None, grid: dict | None = None, *, budget: int = 200, budget_unit: str = "iterations",
         objective: str = "error", target: float | None = None, record: int = 20, step_reference: str = "dgd_bound",
         kernel: str = "resolved", verify: int = 0, train=(), train_dtype: str = "float64", seed: int = 0,
         folder=None, progress: bool = True) -> TuneResult:
    r"""Rank every cell of ``grid`` on ``problem`` by its closed-form prediction; optionally verify.

    Args:
        problem: keys of :data:`PROBLEM` (data set or ``.npz`` path, N, N_*, Q, depth,
            activation, partition, Dirichlet alpha, seed).
        grid: axis -> list of values (:data:`AXES`; :func:`check_grid`).
        budget: iterations, or communication rounds (``budget_unit="rounds"``), per cell.
        objective: ``"error"``, ``"loss"`` or ``"rounds"`` (to reach test error ``target``).
        record: recorded steps per cell beyond step 0 (:func:`recording_steps`).
        step_reference: ``"dgd_bound"`` or ``"critical"`` (module docstring).
        kernel: ``"resolved"`` (empirical, output-resolved), ``"shared"`` (empirical, shared by the
            outputs: C² times less memory) or ``"analytic"`` (infinite width).
        verify: train the predicted best ``verify`` stable cells and ``verify`` random other stable
            cells (seed ``seed``), in ``train_dtype``, and report :func:`verification` and both costs.
        train: indices of further cells to train (the ``cell`` column; :func:`cells` lists them in order).
        folder: results cache folder (default ``<build>/results``).
        progress: show a progress bar (tqdm) over the recursions and the trained cells.

    Cost: one kernel per width; per (width, method, failure, local steps) one
    :func:`~p2pntk.dynamics.linearized_sweep` of ``budget`` (× τ) iterations for all its
    step sizes × topologies × rules. Every validation happens before anything is computed.
    """
    import pandas as pd
    from tqdm import tqdm

    prob = check_problem(problem or {})
    g = check_grid(grid or {})
    _check_options(objective, target, budget, budget_unit, record, verify, step_reference, kernel)
    if train_dtype not in training.TRAIN_DTYPES:
        raise ValueError(f"unknown train_dtype={train_dtype!r}; allowed: {', '.join(training.TRAIN_DTYPES)}")
    if prob["dataset"] not in data.DATASETS:
        data.load(prob["dataset"], prob["n_train"], prob["n_test"], seed=prob["seed"])   # a bad .npz stops here
    n_cells = int(np.prod([len(v) for v in g.values()]))
    train = [int(n) for n in train]
    bad = [n for n in train if not 0 <= n < n_cells]
    if bad:
        raise ValueError(f"train: cells {bad} are outside the grid of {n_cells} cells (indices 0..{n_cells - 1})")
    widths = _Widths(prob, kernel)
    # every mixing matrix once; a graph that cannot be built for Q agents stops here, before any kernel
    mixes = {(top, rule): graphs.mixing_matrix(graphs.topology(top, prob["n_agents"], seed=prob["seed"]), rule)
             for top, rule in itertools.product(g["topology"], g["rule"])}
    groups = list(itertools.product(*(g[a] for a in CELL_ORDER[:4])))    # one recursion each
    preds = {}
    for key in tqdm(groups, desc="closed form", unit="recursion", disable=not progress):
        n_iter = budget * (key[3] if budget_unit == "rounds" else 1)
        params = dict(problem=prob, key=list(key), mix=[list(m) for m in mixes], lr_factor=g["lr_factor"],
                      n_iterations=n_iter, record=record, step_reference=step_reference, kernel=kernel)
        preds[key] = results.cached("tune", params, lambda: _predict_group(widths, key, mixes, g["lr_factor"],
                                                                           n_iter, record, step_reference),
                                    folder=folder)
    rows, curves, mix_index = [], {}, {m: j for j, m in enumerate(mixes)}
    for n, c in enumerate(cells(g)):          # the rows in cell order: one definition of the order
        res = preds[tuple(c[a] for a in CELL_ORDER[:4])]
        i, j = g["lr_factor"].index(c["lr_factor"]), mix_index[c["topology"], c["rule"]]
        err, loss = res["error"][i, j], res["loss"][i, j]
        value = objective_value(err, loss, res["steps"], c["local_steps"], objective, target)
        tl = res["train_loss"][i, j]
        stable = bool(not res["diverged"][i, j] and np.isfinite(tl) and tl <= res["train_loss0"])
        rows.append(dict(**{a: c[a] for a in AXES}, lr=float(res["lr"][i, j]), lr_reference=float(res["lr_reference"][j]),
                         predicted=float(value), stable=stable, diverged=bool(res["diverged"][i, j]),
                         diverged_at=int(res["diverged_at"][i, j]),
                         reached=bool(np.isfinite(value)), pred_error=float(err[-1]), pred_loss=float(loss[-1])))
        curves[n] = dict(steps=res["steps"], rounds=res["steps"] // c["local_steps"], pred_error=err, pred_loss=loss)
    table = pd.DataFrame(rows)
    unreached = int((table["stable"] & ~table["reached"]).sum())
    if unreached and objective == "rounds":
        warnings.warn(f"{unreached} of {int(table['stable'].sum())} stable cells do not reach test error {target} within {budget} "
                      f"{budget_unit}: their objective is NaN, ranked last (column 'reached')", RuntimeWarning,
                      stacklevel=2)
    usable = table["stable"] & table["reached"]
    order = np.lexsort((table["predicted"].fillna(np.inf).to_numpy(), ~usable.to_numpy()))
    table["rank"] = 0
    table.loc[table.index[order], "rank"] = np.arange(1, len(table) + 1)
    for col, v in (("trained", False), ("actual", np.nan), ("actual_diverged", False), ("actual_error", np.nan),
                   ("actual_loss", np.nan)):
        table[col] = v
    t_kernel = float(sum(float(r["seconds_kernel"]) for r in preds.values()))
    t_pred = float(sum(float(r["seconds_predict"]) for r in preds.values()))
    stable_pred = table.loc[usable, "predicted"]
    summary = dict(problem=prob, grid=g, budget=budget, budget_unit=budget_unit, objective=objective, target=target,
                   record=record, step_reference=step_reference, kernel=kernel, n_cells=len(table),
                   n_stable=int(table["stable"].sum()), n_reached=int(table["reached"].sum()),
                   predicted_spread=float(np.ptp(stable_pred)) if len(stable_pred) else np.nan,
                   seconds_kernel=t_kernel, seconds_predict=t_kernel + t_pred,
                   seconds_predict_per_cell=(t_kernel + t_pred) / len(table))
    picks = []
    if verify:
        rng = np.random.default_rng(seed)
        ranked = list(table.index[order][: int(usable.sum())])
        rest = ranked[verify:]
        picks = ranked[:verify] + [rest[i] for i in sorted(rng.choice(len(rest), min(verify, len(rest)), replace=False))]
    to_train = picks + [n for n in train if n not in picks]
    t_train = 0.0
    for n in tqdm(to_train, desc="train", unit="cell", disable=not progress):
        cell = {k: (v.item() if hasattr(v, "item") else v) for k, v in table.loc[n, list(AXES)].to_dict().items()}
        steps, lr = curves[n]["steps"], float(table.loc[n, "lr"])
        params = dict(problem=prob, cell=cell, lr=lr, steps=steps.tolist(), train_dtype=train_dtype)
        W = mixes[cell["topology"], cell["rule"]]
        act = results.cached("tune-train", params, lambda: _train_cell(widths, cell, W, lr, steps, train_dtype),
                             folder=folder)
        t_train += float(act["seconds_train"])
        value = objective_value(act["error"], act["loss"], steps, int(cell["local_steps"]), objective, target)
        table.loc[n, ["trained", "actual", "actual_diverged", "actual_error", "actual_loss"]] = [
            True, float(value), bool(act["diverged"]), float(act["error"][-1]), float(act["loss"][-1])]
        curves[n].update(actual_error=act["error"], actual_loss=act["loss"])
    if to_train:
        summary.update(n_trained=len(to_train), seconds_train=t_train, seconds_train_per_cell=t_train / len(to_train),
                       speedup_per_cell=(t_train / len(to_train)) / summary["seconds_predict_per_cell"])
    if verify:
        summary["verified"] = verification(table.loc[picks, "predicted"], table.loc[picks, "actual"])
    table = table.sort_values("rank").reset_index(drop=False).rename(columns={"index": "cell"})
    return TuneResult(table, curves, summary)
