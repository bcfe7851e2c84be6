"""Command-line interface: ``p2pntk chapters | run | reproduce | bench``.

- ``p2pntk chapters [--profile P]`` lists the chapters and their parameters
  (default, and the profile's value where it differs);
- ``p2pntk run CHAPTER [-p NAME=VALUE ...] [--profile P] [--html] [--wait]`` executes
  one chapter with overrides (papermill), writing its executed notebook to
  ``<build>/stage/book/`` and its figures to ``<build>/figures/`` (``<build>`` is
  ``_build``, or ``$P2PNTK_BUILD``), and prints the notebook's path;
- ``p2pntk reproduce [--profile P] [--force] [--wait]`` executes every chapter and
  builds the book;
- ``p2pntk bench [--quick] [--only NAME ...]`` runs the benchmark suite (``benchmarks/run.py``).

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
    if argv[:1] == ["bench"]:  # every option goes to benchmarks/run.py: --quick, --only NAME..., --json PATH
        import runpy

        root = project_root()
        if not (root / "benchmarks" / "run.py").is_file():
            _fail(parser, _no_sources_message(root, "the benchmark suite (benchmarks/run.py)"))
        bench = root / "benchmarks"
        sys.path.insert(0, str(bench))
        sys.exit(runpy.run_path(str(bench / "run.py"), run_name="p2pntk_bench")["main"](argv[1:]))
    args = parser.parse_args(argv)

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


if __name__ == "__main__":
    main(sys.argv[1:])
