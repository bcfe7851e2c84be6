"""Builds don't corrupt each other: the build lock, atomic notebooks and figures, the printed stage path.

The builds here run on a throwaway project (one tiny chapter that writes its two
figure files without matplotlib, and raises on a bad parameter after saving
them) in temporary folders: each papermill run takes a few seconds.
"""
import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path

import pytest

from p2pntk import cli, paths, pipeline

def tiny_chapter(parameters: str, figure: str, code: str) -> str:
    """A MyST chapter ``# Tiny``: a parameters cell (``parameters``) and one cell (``code``) of the
    figure ``fig-tiny`` (``figure``: more lines of its ``mystnb.figure`` options, e.g. a caption)."""
    fence = "`" * 3
    return ("---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n"
            "    format_version: 0.13\nkernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n"
            "---\n\n# Tiny\n\n"
            f"{fence}{{code-cell}} ipython3\n:tags: [parameters]\n\n{parameters}{fence}\n\n"
            f"{fence}{{code-cell}} ipython3\n---\nmystnb:\n  figure:\n    name: fig-tiny\n{figure}---\n{code}{fence}\n")


TINY = tiny_chapter("n = 3\nsave = True\nuse_jax = False\n", "", """\
from p2pntk.paths import figures_dir

if use_jax:
    import jax
if save:  # written before the check below: a failed run must not replace the good figures
    for ext in ("png", "pdf"):
        (figures_dir() / f"fig-tiny.{ext}").write_text(f"figure of n = {n}")
if n <= 0:
    raise ValueError(f"parameter 'n' must be positive, got {n}")
print("n is", n)
""")

HOLDER = textwrap.dedent("""
    import sys, time
    from p2pntk import cli, paths, pipeline
    with pipeline.build_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
    print("released", time.time(), flush=True)
""")


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A project with one chapter, ``book/tiny``; returns (root, build folder)."""
    root, build = tmp_path / "project", tmp_path / "build"
    (root / "book").mkdir(parents=True)
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/tiny\n")
    (root / "_config.yml").write_text("title: tiny\n")
    (root / "references.bib").write_text("")
    (root / "book" / "profiles.yml").write_text("ci:\n  tiny:\n    n: 3\npaper:\n")
    (root / "book" / "intro.md").write_text("# Intro\n")
    (root / "book" / "tiny.md").write_text(TINY)
    monkeypatch.setenv("P2PNTK_ROOT", str(root))
    monkeypatch.setenv("P2PNTK_BUILD", str(build))
    monkeypatch.setenv("P2PNTK_FIG_DIR", str(build / "figures"))  # build() sets it; restored after the test
    return root, build


def hold_lock(build: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(build), str(seconds)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def figures(build: Path) -> dict:
    return {f.name: f.read_text() for f in sorted((build / "figures").glob("fig-tiny.*"))}


def leftovers(build: Path) -> list:
    """Temporary files of an execution (hidden files) left in the stage or the figures folder."""
    return [p.name for d in (build / "stage" / "book", build / "figures") for p in d.glob(".*")]


def test_atomic_write_bytes_text_and_error(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "f.txt"
    assert paths.atomic_write(target, "héllo") == target and target.read_text(encoding="utf-8") == "héllo"
    paths.atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    with pytest.raises(TypeError, match="data must be bytes or str, got int"):
        paths.atomic_write(target, 3)

    def full_disk(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="disk full"):
        paths.atomic_write(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"\x00\x01"  # untouched
    assert [p.name for p in target.parent.iterdir()] == ["f.txt"]  # temporary file removed


def test_keep_results_copies_only_long_results_and_builds_read_them(tmp_path, monkeypatch):
    """``--keep-results`` copies a result that took >= KEEP_SECONDS to the store (a quick one,
    as the ci profile's, stays out: CI must compute it), never overwrites, and a build on a
    fresh machine (empty build folder) then reads the kept one instead of computing it."""
    import numpy as np

    from p2pntk import results

    build, store = tmp_path / "build", tmp_path / "store"
    monkeypatch.setenv("P2PNTK_BUILD", str(build))
    monkeypatch.setenv("P2PNTK_STORE", str(store))
    calls = []

    def compute(seconds):
        def run():
            calls.append(seconds)
            return {"v": np.arange(3.0), "seconds_train": np.asarray([seconds / 2, seconds / 2])}
        return run

    results.cached("demo", {"long": True}, compute(pipeline.KEEP_SECONDS))
    results.cached("demo", {"long": False}, compute(pipeline.KEEP_SECONDS - 1))
    kept = pipeline.keep_results()
    assert len(kept) == 1 and results.load(kept[0])[1] == {"long": True}
    assert kept[0].with_suffix(".timings.json").is_file()
    assert pipeline.keep_results() == []                       # already kept: nothing copied again
    for f in (build / "results").iterdir():
        f.unlink()                                             # a fresh machine
    results.cached("demo", {"long": True}, compute(0.0))
    assert len(calls) == 2                                     # read from the store
    results.cached("demo", {"long": False}, compute(0.0))
    assert len(calls) == 3                                     # not kept: computed again
    pipeline.main(["--keep-results"])                          # the command line: same rule
    assert sorted(f.name for f in store.glob("*.npz")) == [kept[0].name]
    monkeypatch.setenv("P2PNTK_STORE", "")                     # store turned off: nowhere to keep
    with pytest.raises(SystemExit, match="P2PNTK_STORE is set and empty"):
        pipeline.keep_results()


def test_stage_dir_follows_the_build_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("P2PNTK_ROOT", str(tmp_path / "root"))
    monkeypatch.delenv("P2PNTK_BUILD", raising=False)
    assert paths.stage_dir() == (tmp_path / "root").resolve() / "_build" / "stage"
    monkeypatch.setenv("P2PNTK_BUILD", str(tmp_path / "elsewhere"))
    assert paths.stage_dir() == (tmp_path / "elsewhere").resolve() / "stage"
    assert pipeline.executed_notebook("book/x") == (tmp_path / "elsewhere").resolve() / "stage" / "book" / "x.ipynb"


def test_run_prints_the_stage_path_the_pipeline_writes(tiny, monkeypatch, capsys):
    root, build = tiny
    calls = []
    monkeypatch.setattr(pipeline, "build", lambda *a, **k: calls.append((a, k)))
    cli.main(["run", "tiny", "-p", "n=5"])
    assert calls == [(("ci", ["tiny"]), {"html": False, "extra": {"tiny": {"n": 5}}, "wait": False})]
    assert capsys.readouterr().out.strip() == f"executed notebook: {build.resolve() / 'stage' / 'book' / 'tiny.ipynb'}"
    monkeypatch.delenv("P2PNTK_BUILD")
    cli.main(["run", "tiny", "--wait"])
    assert calls[-1][1]["wait"] is True
    assert capsys.readouterr().out.strip() == f"executed notebook: {root.resolve() / '_build' / 'stage' / 'book' / 'tiny.ipynb'}"
    cli.main(["reproduce", "--wait"])
    assert calls[-1] == (("ci",), {"force": False, "wait": True})


def test_profiles_read_in_one_place(tiny):
    root, _ = tiny
    assert pipeline.read_profiles(root) == {"ci": {"tiny": {"n": 3}}, "paper": {}}
    assert pipeline.load_profile(root, "paper") == {}
    (root / "book" / "profiles.yml").write_text("- ci\n")
    with pytest.raises(SystemExit, match="profiles.yml: must map each profile name to chapters"):
        pipeline.read_profiles(root)


def test_build_lock_records_the_holder_and_is_released(tiny):
    _, build = tiny
    with pipeline.build_lock(build) as lock:
        info = json.loads(lock.read_text())
        assert info["pid"] == os.getpid() and info["started"].startswith("20") and info["command"]
    assert lock.read_text() == ""
    with pytest.raises(RuntimeError):
        with pipeline.build_lock(build):
            raise RuntimeError("a failing build")
    with pipeline.build_lock(build):  # released on the error: taken again at once
        pass


def test_second_build_stops_at_once_naming_the_running_one(tiny):
    root, build = tiny
    holder = hold_lock(build, 60)
    try:
        t0 = time.monotonic()
        with pytest.raises(SystemExit) as err:
            pipeline.build("ci", html=False)
        assert time.monotonic() - t0 < 5
        msg = str(err.value)
        assert f"another build is running in {build.resolve()}" in msg
        assert f"pid {holder.pid}, started 20" in msg and f"command: {sys.executable} -c" in msg
        assert "--wait" in msg and "P2PNTK_BUILD=<another folder>" in msg
        assert not (build / "stage").exists()  # nothing staged, nothing executed
        out = subprocess.run([sys.executable, "-m", "p2pntk.cli", "run", "tiny"], capture_output=True, text=True,
                             env={**os.environ}, timeout=120)
        assert out.returncode == 1 and f"pid {holder.pid}" in out.stderr, out.stderr[-2000:]
    finally:
        holder.kill()
        holder.wait()


def test_wait_flag_waits_for_the_running_build(tiny):
    _, build = tiny
    holder = hold_lock(build, 3)
    try:
        out = subprocess.run([sys.executable, "-m", "p2pntk.pipeline", "--no-html", "--wait"], capture_output=True,
                             text=True, env={**os.environ}, timeout=300)
        released = float(holder.stdout.readline().split()[1])
    finally:
        holder.kill()
        holder.wait()
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"waiting for the build running in {build.resolve()} (pid {holder.pid}" in out.stdout
    text = (build / "stage" / "book" / "tiny.ipynb").read_text()
    started = datetime.fromisoformat(json.loads(text)["metadata"]["papermill"]["start_time"]).timestamp()
    assert started >= released  # executed only once the running build had released the lock
    assert "n is 3" in text


def test_failed_chapter_never_replaces_the_last_good_notebook_or_figures(tiny, capsys):
    _, build = tiny
    out = build / "stage" / "book" / "tiny.ipynb"
    failed = out.with_name("tiny.failed.ipynb")
    pipeline.build("ci", html=False)
    good, good_figures = out.read_bytes(), figures(build)
    assert b"n is 3" in good and good_figures == {"fig-tiny.pdf": "figure of n = 3", "fig-tiny.png": "figure of n = 3"}

    with pytest.raises(SystemExit) as err:
        pipeline.build("ci", html=False, extra={"tiny": {"n": 0}})
    msg = str(err.value)
    assert "book/tiny FAILED" in msg and "ValueError: parameter 'n' must be positive, got 0" in msg
    assert f"executed notebook of the failed run, with the full traceback: {failed}" in msg
    assert "\x1b[" not in msg and "\x1b[" not in capsys.readouterr().err  # pytest's stderr is no terminal
    assert out.read_bytes() == good and figures(build) == good_figures
    assert "parameter 'n' must be positive" in failed.read_text()  # the traceback is in the failed notebook
    assert "\\u001b[" in failed.read_text()  # with its colour codes: those of the message were stripped
    assert leftovers(build) == []

    with pytest.raises(SystemExit, match=r"figures missing or empty after execution: \['fig-tiny.png', 'fig-tiny.pdf'\]"):
        pipeline.build("ci", html=False, extra={"tiny": {"n": 7, "save": False}})
    assert out.read_bytes() == good and "n is 7" in failed.read_text()

    with pipeline.build_lock(build):  # released after the failures
        pass
    pipeline.build("ci", html=False, extra={"tiny": {"n": 4}})
    assert "n is 4" in out.read_text() and figures(build)["fig-tiny.png"] == "figure of n = 4"
    assert not failed.exists()  # the stale failure is removed
    assert leftovers(build) == []
    capsys.readouterr()


def test_figure_save_is_atomic(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from p2pntk import plotting

    monkeypatch.setenv("P2PNTK_FIG_DIR", str(tmp_path))
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    png, pdf, csv = plotting.save(fig, "fig-x")
    assert csv.read_text().splitlines()[1:] == ["0,,,,line,,0,0,1,,", "0,,,,line,,0,1,0,,"]
    assert png.read_bytes().startswith(b"\x89PNG") and pdf.read_bytes().startswith(b"%PDF")
    old = png.read_bytes()
    real = fig.savefig

    def interrupted(buf, **kw):  # half a file, then an error (disk full, Ctrl-C, ...)
        real(buf, **kw)
        buf.truncate(buf.tell() // 2)
        raise OSError("interrupted")

    monkeypatch.setattr(fig, "savefig", interrupted)
    with pytest.raises(OSError, match="interrupted"):
        plotting.save(fig, "fig-x")
    assert png.read_bytes() == old and sorted(p.name for p in tmp_path.iterdir()) == ["fig-x.csv", "fig-x.pdf", "fig-x.png"]
    plt.close(fig)


def test_provenance_records_the_device_each_chapter_ran_on(tiny):
    _, build = tiny
    pipeline.build("ci", html=False)
    device = json.loads((build / "provenance.json").read_text())["chapters"]["book/tiny"]["device"]
    assert device["platform"] == "cpu" and device["jax"] is False and device["device_kind"]
    pipeline.build("ci", html=False, extra={"tiny": {"use_jax": True}})
    device = json.loads((build / "provenance.json").read_text())["chapters"]["book/tiny"]["device"]
    import jax

    assert device == {"platform": jax.devices()[0].platform, "jax": True, "device_kind": jax.devices()[0].device_kind,
                      "device_count": len(jax.devices())}
    nb = (build / "stage" / "book" / "tiny.ipynb").read_text()
    assert pipeline.DEVICE_TAG not in nb and "p2pntk-device" not in nb  # the pipeline's cell is removed
