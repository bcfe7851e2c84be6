"""The README's "Use it on your own problem" example runs, as a user would run it; docstrings render in help().

The example is extracted from README.md (its ``python`` blocks, in order) and executed in a
fresh interpreter outside the repository, without ``jax_enable_x64`` (the test suite's
float64 setting would hide what a user gets by default).
"""
import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import p2pntk

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Use it on your own problem"
TOLERANCE = 0.03        # stated in the README: prediction within 3 % of the test outputs' movement


def section_code(readme: str) -> list[str]:
    """The ``python`` code blocks of the README section, in order."""
    start = readme.index(SECTION)
    end = readme.find("\n## ", start + len(SECTION))
    body = readme[start:end if end > 0 else None]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def test_readme_section_has_the_example_and_states_its_tolerance():
    readme = (ROOT / "README.md").read_text()
    blocks = section_code(readme)
    assert len(blocks) == 2
    assert "p2pntk.simulate(*args" in blocks[0] and "p2pntk.predict(*args" in blocks[0]
    assert "assert err < 0.03" in blocks[0] and "tolerance of 3 %" in readme
    assert "kernels.mlp" not in blocks[0] and "jnp.tanh" in blocks[0]       # an own model, not the package's


def test_readme_example_runs_and_predicts_training_within_the_tolerance(tmp_path):
    code = "\n".join(section_code((ROOT / "README.md").read_text()))
    code += "\nprint('ERR', err, 'AGREE', agree, 'DTYPE', predicted.test.dtype, K.dtype, 'X64', jax.config.jax_enable_x64)\n"
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_ENABLE_X64", "P2PNTK_ROOT")}
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                         env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    m = re.search(r"ERR (\S+) AGREE (\S+) DTYPE float64 float64 X64 False", out.stdout)
    assert m, out.stdout
    err, agree = float(m[1]), float(m[2])
    assert err < TOLERANCE and agree > 0.97
    # the printed sentence is the README's (its number is the measured one, to the printed digits)
    printed = re.search(r"prediction within (\d+\.\d+)% of their movement", out.stdout)[1]
    assert f"prediction within {printed}% of their movement" in (ROOT / "README.md").read_text()
    assert out.stderr.strip() == "", out.stderr[-2000:]           # no TF log line, no warning


def _docstrings(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = getattr(node, "body", [])
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                yield body[0].value


def non_raw_docstrings_with_backslashes(source: str) -> list[int]:
    """First lines of docstrings written without ``r`` that hold a backslash escape before a letter
    (``\\theta`` would render as a tab and "heta" in help(), ``\\nabla`` as a new line and "abla");
    an escaped backslash (``\\\\otimes``) renders correctly and is allowed."""
    lines = source.splitlines()
    bad = []
    for const in _docstrings(ast.parse(source)):
        literal = "\n".join(lines[const.lineno - 1:const.end_lineno])[const.col_offset:]
        prefix = re.match(r"([rRbBuUfF]*)['\"]", literal)[1]
        if "r" not in prefix.lower() and any(m[1].isalpha() for m in re.finditer(r"\\(.)", literal, flags=re.S)):
            bad.append(const.lineno)
    return bad


def test_the_docstring_check_finds_a_non_raw_docstring():
    assert non_raw_docstrings_with_backslashes('def f():\n    """theta \\theta_0."""\n') == [2]
    assert non_raw_docstrings_with_backslashes('def f():\n    r"""theta \\theta_0."""\n') == []
    assert non_raw_docstrings_with_backslashes('"""Plain."""\n') == []
    assert non_raw_docstrings_with_backslashes('class A:\n    """Escaped :math:`W\\\\otimes I`."""\n') == []
    assert non_raw_docstrings_with_backslashes('"""Flow \\nabla f."""\n') == [1]


@pytest.mark.parametrize("module", p2pntk.MODULES + ("__init__",))
def test_every_docstring_with_a_backslash_is_raw(module):
    path = ROOT / "src" / "p2pntk" / f"{module}.py"
    assert non_raw_docstrings_with_backslashes(path.read_text()) == [], path


def test_help_of_problem_shows_theta_0():
    """help(problems.Problem) rendered "heta_0" and "m test" (\\t and \\r in a non-raw docstring)."""
    from p2pntk import problems

    doc = problems.Problem.__doc__
    assert r"\theta_0" in doc and r"X_{\rm test}" in doc and "\t" not in doc and "\r" not in doc
