"""The command-line interface: listing, validation before running, one chapter end to end."""
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
    (["run", "consensus", "-p", "n_agents=3.5"], "takes a int (default 16), got 3.5"),
    (["run", "consensus", "-p", "n_agents"], "must look like NAME=VALUE"),
    (["reproduce", "--profile", "huge"], "unknown profile 'huge'; profiles: ci, paper"),
])
def test_bad_input_rejected_before_running(args, message):
    out = cli(*args)
    assert out.returncode == 2
    assert message in out.stderr


def test_run_one_chapter_with_override_end_to_end(tmp_path):
    out = cli("run", "consensus", "-p", "n_agents=9", "-p", "iterations=20", env={"P2PNTK_BUILD": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    nb = (tmp_path / "stage" / "book" / "consensus.ipynb").read_text()
    assert "n_agents = 9" in nb and "iterations = 20" in nb
    for name in ("fig-topologies", "fig-consensus-error"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 1000
