"""The command-line interface: listing, validation before running, one chapter end to end."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "p2pntk.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


def test_chapters_lists_parameters_and_profile_values():
    out = cli("chapters", "--profile", "paper")
    assert out.returncode == 0
    assert "consensus" in out.stdout and "n_agents = 16" in out.stdout and "[paper: 36]" in out.stdout


@pytest.mark.parametrize("args,message", [
    (["run", "nothere"], "unknown chapter 'nothere'; chapters: consensus"),
    (["run", "consensus", "-p", "n_agent=3"], "has no parameter 'n_agent'; its parameters: n_agents"),
    (["run", "consensus", "-p", "n_agents=3.5"],
     "parameter 'n_agents' of 'consensus' takes an int (a whole number; default 16), got 3.5, a float"),
    (["run", "consensus", "-p", "iterations=1e9"], "parameter 'iterations' of 'consensus' takes an int"),
    (["run", "consensus", "-p", "rule=3"], "parameter 'rule' of 'consensus' takes a string (default 'metropolis'), got 3, an int"),
    (["run", "consensus", "-p", "n_agents"], "must look like NAME=VALUE"),
    (["reproduce", "--profile", "huge"], "unknown profile 'huge'; profiles: ci, paper"),
    (["run", "p2p_methods", "-p", "topology=rnig"],
     "parameter 'topology' of 'p2p_methods': unknown value 'rnig'; allowed: ring, path, star, complete, grid"),
    (["run", "consensus", "-p", "rule=uniform"], "unknown value 'uniform'; allowed: metropolis, max_degree"),
    (["run", "stability", "-p", "partition=random"], "unknown value 'random'; allowed: iid, dirichlet, by_class"),
    (["run", "sweep", "-p", "dataset=mnist"], "unknown value 'mnist'; allowed: digits, fashion_mnist"),
    (["run", "sweep", "-p", "algorithms=['dgd','sgd']"], "unknown value 'sgd'; allowed: dgd, atc, cta, centralized"),
    (["run", "linearized_dynamics", "-p", "check_topologies=['ring','torus']"], "unknown value 'torus'"),
])
def test_bad_input_rejected_before_running(args, message):
    out = cli(*args)
    assert out.returncode == 2
    assert message in out.stderr


@pytest.mark.parametrize("command", [[], ["chapters"], ["run"], ["reproduce"]])
def test_help_of_every_command(command):
    out = cli(*command, "--help")
    assert out.returncode == 0 and out.stdout.startswith(f"usage: p2pntk {' '.join(command)}".rstrip())
    assert "--profile" in out.stdout or not command
    assert ("--wait" in out.stdout) == (command in (["run"], ["reproduce"]))


def test_allowed_values_come_from_the_package():
    from p2pntk import algorithms, data, graphs, pipeline

    assert pipeline.allowed_values("topology") == graphs.TOPOLOGIES
    assert pipeline.allowed_values("check_topologies") == graphs.TOPOLOGIES
    assert pipeline.allowed_values("algorithms") == algorithms.ALGORITHMS
    assert pipeline.allowed_values("partition") == data.PARTITIONS
    assert pipeline.allowed_values("lr_factor") is None and pipeline.allowed_values("n_agents") is None


def test_bad_profile_value_stops_the_build_before_running(tmp_path, monkeypatch):
    from p2pntk import pipeline

    monkeypatch.setenv("P2PNTK_BUILD", str(tmp_path))
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit, match="parameter 'topology' of 'ntk': unknown value 'rnig'"):
        pipeline.build("ci", ["ntk"], html=False, extra={"ntk": {"topology": "rnig"}})
    assert not (tmp_path / "stage").exists()


def test_run_one_chapter_with_override_end_to_end(tmp_path):
    out = cli("run", "consensus", "-p", "n_agents=9", "-p", "iterations=20", env={"P2PNTK_BUILD": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    # the path printed is the one written (P2PNTK_BUILD), not <root>/_build
    assert f"executed notebook: {tmp_path.resolve() / 'stage' / 'book' / 'consensus.ipynb'}" in out.stdout
    nb = (tmp_path / "stage" / "book" / "consensus.ipynb").read_text()
    assert "n_agents = 9" in nb and "iterations = 20" in nb
    for name in ("fig-topologies", "fig-consensus-error"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 1000


def test_bench_command_passes_options_to_the_benchmark_suite():
    out = cli("bench", "--help")
    assert out.returncode == 0 and "--quick" in out.stdout and "--only" in out.stdout
    out = cli("bench", "--only", "nosuch")
    assert out.returncode == 2 and "invalid choice: 'nosuch'" in out.stderr and "predict" in out.stderr


def test_run_prints_the_notebook_under_P2PNTK_BUILD_not_the_root(tmp_path, monkeypatch, capsys):
    """The fast check of the printed path (the end-to-end test above runs the chapter)."""
    from p2pntk import cli as cli_module, pipeline

    calls = []
    monkeypatch.setattr(pipeline, "build", lambda *a, **k: calls.append((a, k)))
    monkeypatch.setenv("P2PNTK_BUILD", str(tmp_path / "elsewhere"))
    monkeypatch.chdir(ROOT)
    cli_module.main(["run", "consensus", "-p", "n_agents=9"])
    out = capsys.readouterr().out
    assert out == f"executed notebook: {(tmp_path / 'elsewhere').resolve() / 'stage' / 'book' / 'consensus.ipynb'}\n"
    assert str(ROOT / "_build") not in out
    assert calls[0][1]["extra"] == {"consensus": {"n_agents": 9}}


def test_the_command_works_from_any_folder(tmp_path):
    """Installed from the source checkout (editable), the book's sources are found from elsewhere."""
    env = {k: v for k, v in os.environ.items() if k != "P2PNTK_ROOT"}
    out = subprocess.run([sys.executable, "-m", "p2pntk.cli", "chapters"], cwd=tmp_path, capture_output=True,
                         text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "consensus  (book/consensus.md)" in out.stdout
    assert not (tmp_path / "_build").exists()


def test_no_book_sources_message_names_P2PNTK_ROOT(tmp_path, monkeypatch, capsys):
    from p2pntk import cli as cli_module, paths

    monkeypatch.delenv("P2PNTK_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(paths, "SOURCE_CHECKOUT", tmp_path)       # as a non-editable install: no sources
    assert paths.project_root() == tmp_path.resolve()
    with pytest.raises(SystemExit) as exc:
        cli_module.main(["chapters"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"the book's sources (_toc.yml, book/profiles.yml) not found in {tmp_path.resolve()}" in err
    assert "run p2pntk inside the repository, or set P2PNTK_ROOT=/path/to/repository" in err
    monkeypatch.setenv("P2PNTK_ROOT", str(tmp_path))
    for argv, what in ((["chapters"], "the book's sources"), (["bench", "--quick"], "the benchmark suite")):
        with pytest.raises(SystemExit) as exc:
            cli_module.main(argv)
        assert exc.value.code == 2
        assert f"P2PNTK_ROOT={tmp_path} does not hold {what}" in capsys.readouterr().err


def test_failed_chapter_in_a_log_file_has_no_colour_codes_and_names_the_failed_notebook(tmp_path):
    """A failure written to a file (as in CI logs): plain text, the reason, and where the traceback stays."""
    log = tmp_path / "log"
    with open(log, "w") as f:
        out = subprocess.run([sys.executable, "-m", "p2pntk.cli", "run", "consensus", "-p", "n_agents=0"], cwd=ROOT,
                             stdout=f, stderr=subprocess.STDOUT, text=True, timeout=600,
                             env={**os.environ, "P2PNTK_BUILD": str(tmp_path / "build")})
    text = log.read_text()
    assert out.returncode == 1, text[-3000:]
    assert "\x1b[" not in text
    failed = (tmp_path / "build").resolve() / "stage" / "book" / "consensus.failed.ipynb"
    assert f"executed notebook of the failed run, with the full traceback: {failed}" in text
    assert "book/consensus FAILED: cell" in text and "Traceback" in text  # the traceback, in plain text
    tracebacks = ["\n".join(o["traceback"]) for c in json.loads(failed.read_text())["cells"]
                  for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert len(tracebacks) == 1 and "\x1b[" in tracebacks[0]  # coloured there: the log's were stripped
