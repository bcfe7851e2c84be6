"""Benchmark suite of p2pntk: ``python benchmarks/run.py [--quick] [--json PATH] [--only NAME ...]``.

Runs every module ``benchmarks/bench_*.py`` (each exposes ``run(quick: bool) -> list[dict]``),
prints one table and saves the rows with the machine description as JSON (default
``_build/benchmarks/benchmarks.json``). Every row has ``benchmark``, ``case``,
``baseline_s``, ``ours_s``, ``ratio`` (= baseline_s / ours_s, the speed-up of ours),
``target`` (minimum speed-up asked for, or null), ``meets`` and ``note``, plus the
numbers the benchmark measured. Both times of a row are measured in the same run.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
COLUMNS = ["benchmark", "case", "baseline_s", "ours_s", "ratio", "target", "meets"]


def modules() -> dict:
    """The benchmark modules, ``{name: path}`` for every ``bench_*.py`` next to this file."""
    return {p.stem[len("bench_"):]: p for p in sorted(HERE.glob("bench_*.py"))}


def load(name: str):
    """Import ``benchmarks/bench_<name>.py`` (with ``benchmarks/`` on ``sys.path`` for ``common``)."""
    available = modules()
    if name not in available:
        raise ValueError(f"unknown benchmark {name!r}; allowed: {', '.join(available)}")
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", available[name])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def machine() -> dict:
    """Cores, CPU model, library versions and date of this run."""
    from importlib.metadata import version

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    info = dict(date=datetime.datetime.now().isoformat(timespec="seconds"), platform=platform.platform(),
                python=platform.python_version(), cpu=cpu, cores=os.cpu_count(),
                cores_available=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                load_average=list(os.getloadavg()) if hasattr(os, "getloadavg") else None)
    for pkg in ("numpy", "scipy", "jax", "jaxlib", "neural-tangents"):
        info[pkg] = version(pkg)
    try:  # threadpoolctl comes with scikit-learn
        import numpy  # noqa: F401  (loads its BLAS, so that threadpoolctl sees it)
        from threadpoolctl import threadpool_info
    except ImportError:
        return info
    info["blas"] = [dict(library=b.get("internal_api"), version=b.get("version"), threads=b.get("num_threads"))
                    for b in threadpool_info() if b.get("user_api") == "blas"]
    return info


def run_all(quick: bool = True, only=None) -> list[dict]:
    """Run the selected benchmark modules (all by default); returns their rows, each with ``section_s``."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import common

    common.enable_x64()
    rows = []
    for name in only or modules():
        module = load(name)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # step sizes past the stability bound in the sweep
            out = module.run(quick)
        for r in out:
            r.setdefault("section_s", time.perf_counter() - t0)
        rows += out
    return rows


def table(rows):
    """The rows as a pandas DataFrame (main columns first)."""
    import pandas as pd

    df = pd.DataFrame(rows)
    return df[[c for c in COLUMNS if c in df] + ["note"]]


def save(rows, path, quick: bool) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(machine=machine(), quick=quick, rows=rows), indent=1, default=float))
    return path


def default_json() -> Path:
    from p2pntk.paths import build_dir

    return build_dir() / "benchmarks" / "benchmarks.json"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    ap.add_argument("--json", default=None, help="output file (default _build/benchmarks/benchmarks.json)")
    ap.add_argument("--only", nargs="+", choices=list(modules()), help="run only these benchmarks")
    args = ap.parse_args(argv)
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    rows = run_all(args.quick, args.only)
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_colwidth", 90, "display.float_format", "{:.4g}".format):
        print(table(rows).to_string(index=False))
    path = save(rows, args.json or default_json(), args.quick)
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
