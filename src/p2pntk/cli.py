"""Command-line interface: ``p2pntk chapters | run | reproduce | bench``.

- ``p2pntk chapters [--profile P]`` lists the chapters and their parameters
  (default, and the profile's value where it differs);
- ``p2pntk run CHAPTER [-p NAME=VALUE ...] [--profile P] [--html] [--wait]`` executes
  one chapter with overrides (papermill), writing its executed notebook to
  ``<build>/stage/book/`` and its figures to ``<build>/figures/`` (``<build>`` is
  ``_build``, or ``$P2PNTK_BUILD``), and prints the notebook's path;
- ``p2pntk reproduce [--profile P] [--force] [--wait]`` executes every chapter and
  builds the book;
- ``p2pntk bench [--quick] [--only NAME ...]`` runs the benchmark suite (``benchmarks/run.py``);
- ``p2pntk tune [problem] [grid] [--objective ...] [--verify N] [--out DIR]`` ranks a grid of
  configurations by their closed-form prediction, without training them
  (:func:`p2pntk.tuning.tune`): a ranked table on the terminal, ``tune.csv``, ``tune.json``
  and the figure ``tune-ranking.png`` in ``DIR`` (default ``<build>/tune``).

Unknown chapters, parameters, profiles, values of the wrong type, and string
values outside their allowed set (``topology``, ``rule``, ``algorithm``,
``dataset``, ``partition``, ``activation`` and their lists, see
:data:`p2pntk.pipeline.CHOICES`) are rejected before anything runs, with the
valid choices listed (exit status 2). ``run`` and ``reproduce`` take the build
lock of :func:`p2pntk.pipeline.build`: while another build runs in the same build
folder they stop at once naming it (exit status 1), or wait for it with ``--wait``.
A chapter that fails keeps the last good executed notebook; the failed one goes to
``<chapter>.failed.ipynb`` beside it. ``p2pntk COMMAND --help`` describes each command.

The book's sources are found from any folder (:func:`p2pntk.paths.project_root`: the working
directory and its parents, then the source checkout of an editable install); otherwise, or
when ``$P2PNTK_ROOT`` points elsewhere, the command stops naming ``P2PNTK_ROOT`` (exit status 2).
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
from pathlib import Path

from . import pipeline
from .paths import has_book_sources, project_root


def _no_sources_message(root: Path, what: str = "the book's sources (_toc.yml, book/profiles.yml)") -> str:
    """Where ``what`` was looked for, and how to point at it (``P2PNTK_ROOT``)."""
    if os.environ.get("P2PNTK_ROOT"):
        return (f"P2PNTK_ROOT={os.environ['P2PNTK_ROOT']} does not hold {what}: set P2PNTK_ROOT to the "
                "repository's folder")
    return (f"{what} not found in {root}, its parents, or the source checkout of the installed package: run "
            "p2pntk inside the repository, or set P2PNTK_ROOT=/path/to/repository")


def _chapters(root: Path) -> dict:
    """Chapter name -> (doc, default parameters), in table-of-contents order."""
    import jupytext

    out = {}
    for doc in pipeline.toc_files(root):
        src = root / f"{doc}.md"
        if pipeline.is_notebook(src):
            out[Path(doc).name] = (doc, pipeline.chapter_parameters(jupytext.read(src)))
    return out


def _fail(parser, msg):
    parser.exit(2, f"p2pntk: error: {msg}\n")


#: What the override messages add to a type's name.
_HINTS = {int: "a whole number", float: "a number", bool: "True or False"}


def _kind(t: type) -> str:
    """A type's name with its article, for messages: ``_kind(int)`` is ``'an int'``, ``_kind(str)`` ``'a string'``."""
    name = {str: "string", type(None): "None"}.get(t, t.__name__)
    return name if t is type(None) else f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _parse_overrides(parser, chapter: str, defaults: dict, items: list[str]) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            _fail(parser, f"override {item!r} must look like NAME=VALUE")
        name, text = item.split("=", 1)
        if name not in defaults:
            _fail(parser, f"chapter {chapter!r} has no parameter {name!r}; its parameters: {', '.join(defaults)}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text  # a bare word is a string: -p dataset=digits
        want = type(defaults[name])
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            hint = f"{_HINTS[want]}; " if want in _HINTS else ""
            _fail(parser, f"parameter {name!r} of {chapter!r} takes {_kind(want)} ({hint}default {defaults[name]!r}), "
                          f"got {text}, {_kind(type(value))}")
        msg = pipeline.check_choices(chapter, {name: value})
        if msg:
            _fail(parser, msg)
        out[name] = value
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="p2pntk", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("chapters", help="list the chapters and their parameters",
                            description="List the chapters, their parameters (default, the profile's value "
                                        "where it differs, and the allowed values of string parameters).")
    p_list.add_argument("--profile", default="ci", help="show this profile's values (default: ci)")
    p_run = sub.add_parser("run", help="execute one chapter with parameter overrides",
                           description="Execute one chapter with papermill, with the profile's parameters and "
                                       "the overrides -p NAME=VALUE (checked before anything runs), e.g. "
                                       "`p2pntk run consensus -p n_agents=9 -p rule=max_degree`.")
    p_run.add_argument("chapter", help="chapter name (see `p2pntk chapters`)")
    p_run.add_argument("-p", "--param", action="append", metavar="NAME=VALUE",
                       help="override a parameter (Python literal; repeatable)")
    p_run.add_argument("--profile", default="ci", help="profile the overrides apply on top of (default: ci)")
    p_run.add_argument("--html", action="store_true", help="also rebuild the HTML book")
    p_run.add_argument("--wait", action="store_true", help=pipeline.WAIT_HELP)
    p_rep = sub.add_parser("reproduce", help="execute every chapter of a profile and build the book",
                           description="Execute every chapter of a profile (chapters whose cache key is "
                                       "unchanged are reused) and build the HTML book into _build/html.")
    p_rep.add_argument("--profile", default="ci", help="ci (minutes) or paper (full size, hours)")
    p_rep.add_argument("--force", action="store_true", help="re-execute chapters whose cache key is unchanged")
    p_rep.add_argument("--wait", action="store_true", help=pipeline.WAIT_HELP)
    sub.add_parser("bench", help="run the benchmark suite (benchmarks/run.py; `p2pntk bench --help`)",
                   add_help=False)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["tune"]:   # its options come from p2pntk.tuning, which imports JAX: only when asked for
        _tune_parser(sub)
    else:
        sub.add_parser("tune", help=_TUNE_HELP)
    if argv[:1] == ["bench"]:  # every option goes to benchmarks/run.py: --quick, --only NAME..., --json PATH
        import runpy

        root = project_root()
        if not (root / "benchmarks" / "run.py").is_file():
            _fail(parser, _no_sources_message(root, "the benchmark suite (benchmarks/run.py)"))
        bench = root / "benchmarks"
        sys.path.insert(0, str(bench))
        sys.exit(runpy.run_path(str(bench / "run.py"), run_name="p2pntk_bench")["main"](argv[1:]))
    args = parser.parse_args(argv)
    if args.command == "tune":
        return _tune(parser, args)

    root = project_root()
    if not has_book_sources(root):
        _fail(parser, _no_sources_message(root))
    profiles = pipeline.read_profiles(root)
    if args.profile not in profiles:
        _fail(parser, f"unknown profile {args.profile!r}; profiles: {', '.join(profiles)}")
    chapters = _chapters(root)

    if args.command == "chapters":
        prof = profiles[args.profile]
        for name, (doc, defaults) in chapters.items():
            print(f"{name}  ({doc}.md)")
            for k, v in defaults.items():
                note = f"   [{args.profile}: {prof[name][k]!r}]" if k in prof.get(name, {}) else ""
                allowed = pipeline.allowed_values(k)
                note += f"   (values: {', '.join(allowed)})" if allowed else ""
                print(f"    {k} = {v!r}{note}")
        return
    if args.command == "run":
        if args.chapter not in chapters:
            _fail(parser, f"unknown chapter {args.chapter!r}; chapters: {', '.join(chapters)}")
        overrides = _parse_overrides(parser, args.chapter, chapters[args.chapter][1], args.param)
        pipeline.build(args.profile, [args.chapter], html=args.html, extra={args.chapter: overrides},
                       wait=args.wait)
        print(f"executed notebook: {pipeline.executed_notebook(chapters[args.chapter][0])}")
        return
    pipeline.build(args.profile, force=args.force, wait=args.wait)


_TUNE_HELP = "rank configurations by their closed-form prediction, without training them (`p2pntk tune --help`)"
#: The command-line options of ``p2pntk tune`` for the problem, and their types.
_TUNE_PROBLEM = dict(dataset=str, n_train=int, n_test=int, n_agents=int, depth=int, activation=str, partition=str,
                     alpha=float, seed=int)


def _tune_parser(sub):
    from . import tuning

    p = sub.add_parser(
        "tune", help=_TUNE_HELP,
        description="Rank every cell of a grid (method x topology x mixing rule x step size x link-failure "
                    "probability x local steps x width) on a problem by the closed-form prediction of its "
                    "linearised training (one kernel per width, one batched recursion per method, width, failure "
                    "probability and local steps), print the ranked table and write tune.csv, tune.json and "
                    "tune-ranking.png. With --verify N, the predicted best N and N random other stable cells are trained "
                    "and the rank agreement (Spearman), the regret and both costs are reported. Results are "
                    "cached, so an interrupted run resumes.",
        epilog="Example: p2pntk tune --algorithm dgd exact_diffusion --topology ring complete "
               "--lr-factor 0.25 0.5 1 --objective rounds --target 0.1 --budget 200 --verify 2")
    g = p.add_argument_group("problem")
    g.add_argument("--dataset", default=tuning.PROBLEM["dataset"],
                   help="digits, fashion_mnist, or the path of an .npz file with x, y (integer labels) and "
                        "optionally x_test, y_test (default: %(default)s)")
    for name, typ in _TUNE_PROBLEM.items():
        if name != "dataset":
            g.add_argument(f"--{name.replace('_', '-')}", type=typ, default=tuning.PROBLEM[name],
                           help=f"(default: %(default)s)")
    g = p.add_argument_group("grid (each takes one or more values)")
    help_axis = dict(algorithm=f"methods: {', '.join(tuning._CHOICES['algorithm'])}",
                     topology=f"graphs: {', '.join(tuning._CHOICES['topology'])}",
                     rule=f"mixing rules: {', '.join(tuning._CHOICES['rule'])}",
                     lr_factor="step size / reference step (> 0)", failure="link-failure probabilities in [0, 1)",
                     local_steps="local steps per communication round (>= 1)", width="hidden-layer widths")
    for axis in tuning.AXES:
        g.add_argument(f"--{axis.replace('_', '-')}", nargs="+", metavar="V",
                       default=tuning.DEFAULT_GRID[axis],
                       help=f"{help_axis[axis]} (default: {' '.join(map(str, tuning.DEFAULT_GRID[axis]))})")
    g = p.add_argument_group("objective and run")
    g.add_argument("--objective", default="error", help=f"{', '.join(tuning.OBJECTIVES)} (default: %(default)s)")
    g.add_argument("--target", type=float, help="test error to reach, for --objective rounds")
    g.add_argument("--budget", type=int, default=200, help="iterations or rounds per cell (default: %(default)s)")
    g.add_argument("--budget-unit", default="iterations", help=f"{', '.join(tuning.BUDGET_UNITS)} "
                                                               "(default: %(default)s)")
    g.add_argument("--record", type=int, default=20,
                   help="recorded steps per cell, evenly spaced: the resolution of --objective rounds "
                        "(default: %(default)s)")
    g.add_argument("--step-reference", default="dgd_bound",
                   help="dgd_bound (the DGD sufficient bound of each mixing matrix) or critical (each method's "
                        "exact critical step size: dense eigenvalue problems, small problems only) "
                        "(default: %(default)s)")
    g.add_argument("--kernel", default="resolved", help=f"{', '.join(tuning.KERNELS)} (default: %(default)s)")
    g.add_argument("--verify", type=int, default=0, help="train the predicted best N and N random stable cells")
    g.add_argument("--train-dtype", default="float64", help="precision of the verified training (default: %(default)s)")
    g.add_argument("--out", help="folder of tune.csv, tune.json, tune-ranking.png (default: <build>/tune)")
    g.add_argument("--top", type=int, default=20, help="rows of the ranked table printed (default: %(default)s)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _tune_grid_value(axis, text):
    if axis in ("algorithm", "topology", "rule"):
        return text
    try:
        return ast.literal_eval(text) if isinstance(text, str) else text
    except (ValueError, SyntaxError):
        return text


def _tune(parser, args):
    import jax

    jax.config.update("jax_enable_x64", True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from . import plotting, tuning
    from .paths import build_dir

    problem = {k: getattr(args, k) for k in _TUNE_PROBLEM}
    grid = {a: [_tune_grid_value(a, v) for v in getattr(args, a)] for a in tuning.AXES}
    options = dict(budget=args.budget, budget_unit=args.budget_unit, objective=args.objective, target=args.target,
                   record=args.record, step_reference=args.step_reference, kernel=args.kernel, verify=args.verify,
                   train_dtype=args.train_dtype)
    try:
        tuning.check_problem(problem)
        tuning.check_grid(grid)
        result = tuning.tune(problem, grid, progress=not args.no_progress, **options)
    except (ValueError, FileNotFoundError) as err:
        _fail(parser, str(err))
    out = Path(args.out) if args.out else build_dir() / "tune"
    paths = result.save(out)
    plotting.use_style()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    plotting.tune_ranking(ax, result)
    paths += plotting.save(fig, "tune-ranking", folder=out)[:1]
    t = result.table
    cols = ["rank", *tuning.AXES, "lr", "predicted", "stable"] + (["actual"] if args.verify else [])
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(t[cols].head(args.top).to_string(index=False, float_format="{:.4g}".format))
    s = result.summary
    unreached = int((t["stable"] & ~t["reached"]).sum())
    print(f"\n{s['n_cells']} cells, {s['n_stable']} stable; closed form {s['seconds_predict']:.1f} s "
          f"(kernel {s['seconds_kernel']:.1f} s), {s['seconds_predict_per_cell']:.3g} s per cell")
    if unreached and args.objective == "rounds":
        print(f"{unreached} stable cells do not reach test error {args.target} within {args.budget} {args.budget_unit} "
              "(objective NaN, ranked last)")
    if args.verify:
        v = s["verified"]
        print(f"verified on {s['n_trained']} trained cells ({v['n']} stable with a value): Spearman "
              f"{v['spearman']:.3f}, regret {v['regret']:.4g} (actual spread {v['spread']:.4g}); training "
              f"{s['seconds_train_per_cell']:.3g} s per cell, {s['speedup_per_cell']:.1f}x the closed form's per-cell cost")
    print("wrote " + ", ".join(map(str, paths)))


if __name__ == "__main__":
    main(sys.argv[1:])
