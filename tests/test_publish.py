"""Publishing: the workflow (valid, the README's commands, Pages, the results cache), the launch
buttons (repository from the git remote, their targets in the built HTML), Binder's files and the
notebooks exported for Colab.

The one test that builds HTML builds a throwaway one-chapter book (a few seconds of papermill and
about 10 s of Jupyter Book); the check of the real book's launch links runs only when
``_build/html`` exists (after ``make book``).
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from test_build_pipeline import tiny_chapter

from p2pntk import pipeline

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"
REPO = "https://github.com/someone/p2pntk"


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def steps(job: str) -> list:
    return workflow()["jobs"][job]["steps"]


def check_jsonschema(path: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("check-jsonschema")
    return subprocess.run([str(exe), "--no-cache", "--builtin-schema", "vendor.github-workflows", str(path)],
                          capture_output=True, text=True, timeout=120)


def readme_block(section: str) -> list[str]:
    """Commands of the first ```bash block of README section ``section`` (comments dropped)."""
    text = (ROOT / "README.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", body, re.S).group(1)
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


# --- the workflow ---------------------------------------------------------------------------

def test_workflow_validates_against_the_published_schema(tmp_path):
    out = check_jsonschema(WORKFLOW)
    assert out.returncode == 0, out.stdout + out.stderr
    broken = workflow()
    broken["jobs"]["build"]["steps"][0]["uses"] = "actions/checkout@v4"  # a step with both run and uses
    del broken["jobs"]["deploy"]["runs-on"]
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump(broken))
    out = check_jsonschema(bad)
    assert out.returncode == 1 and "runs-on" in out.stdout, out.stdout + out.stderr


def test_workflow_runs_the_readme_commands_in_debian_with_python_311():
    build = workflow()["jobs"]["build"]
    assert build["container"].startswith("debian:bookworm")  # its python3 is 3.11
    makes = [s["run"].strip() for s in build["steps"] if s.get("run", "").startswith("make ")]
    assert makes == readme_block("Publishing")
    assert makes[0] == "make test" and makes[-1] == "make browser-test"
    readme = readme_block("The two commands")
    assert readme == ["make book", "make test"] and all(any(m.startswith(r) for m in makes) for r in readme)
    apt = build["steps"][0]["run"]
    assert "chromium" in apt and "git" in apt and "python3-venv" in apt
    uses = [s.get("uses", "") for s in build["steps"]]
    assert uses.index("actions/checkout@v4") > 0  # after git is installed: the clone keeps its remote


def test_workflow_triggers_profiles_and_pages_deployment():
    wf = workflow()
    on = wf[True] if True in wf else wf["on"]  # YAML 1.1 reads the key `on` as True
    assert on["push"]["branches"] == ["main"]
    assert on["workflow_dispatch"]["inputs"]["profile"]["default"] == "paper"
    build = wf["jobs"]["build"]
    assert build["env"]["PROFILE"] == "${{ inputs.profile || 'ci' }}"  # a push builds ci
    uses = [s.get("uses", "").split("@")[0] for s in build["steps"]]
    assert uses.index("actions/configure-pages") < uses.index("actions/upload-pages-artifact")
    upload = next(s for s in build["steps"] if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "_build/html"
    deploy = wf["jobs"]["deploy"]
    assert deploy["needs"] == "build" and deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert [s["uses"].split("@")[0] for s in deploy["steps"]] == ["actions/deploy-pages"]
    assert deploy["environment"]["name"] == "github-pages"
    assert wf["permissions"] == {"contents": "read"}  # write access only where needed
    assert wf["jobs"]["notebooks"]["permissions"] == {"contents": "write"}


def test_paper_results_cache_resumes_an_interrupted_run():
    build = steps("build")
    restore = next(s for s in build if s.get("uses", "").startswith("actions/cache/restore"))
    save = next(s for s in build if s.get("uses", "").startswith("actions/cache/save"))
    book = next(i for i, s in enumerate(build) if s.get("run", "").startswith("make book"))
    assert build.index(restore) < book < build.index(save)
    assert restore["with"]["path"] == save["with"]["path"] == "_build/results"
    assert restore["with"]["key"] == save["with"]["key"] and "${{ github.run_id }}" in save["with"]["key"]
    prefix = restore["with"]["restore-keys"]
    assert save["with"]["key"].startswith(prefix) and "github" not in prefix  # the latest earlier run's
    assert save["if"].startswith("always()") and "paper" in save["if"] and "paper" in restore["if"]


def test_notebooks_branch_job_commits_the_exported_notebooks():
    build = steps("build")
    export = next(s for s in build if "--export-notebooks" in s.get("run", ""))
    artifact = next(s for s in build if s.get("uses", "").startswith("actions/upload-artifact"))
    assert export["run"].split()[-1] + "/book/" == artifact["with"]["path"]
    script = "\n".join(s.get("run", "") for s in steps("notebooks"))
    assert f"git checkout -B {pipeline.NOTEBOOKS_BRANCH}" in script
    assert f"git push -f origin {pipeline.NOTEBOOKS_BRANCH}" in script
    assert yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["branch"] == pipeline.NOTEBOOKS_BRANCH


# --- repository and launch buttons ----------------------------------------------------------

@pytest.mark.parametrize("remote,url", [
    ("https://github.com/someone/p2pntk.git", REPO), ("https://github.com/someone/p2pntk", REPO),
    ("https://token@github.com/someone/p2pntk.git", REPO), ("git@github.com:someone/p2pntk.git", REPO),
    ("ssh://git@github.com/someone/p2pntk.git", REPO), ("https://gitlab.com/someone/p2pntk.git", None),
    ("/work/main", None), ("", None),
])
def test_github_url_of_a_remote(remote, url):
    assert pipeline.github_url(remote) == url


def git(cwd, *args):
    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True)


def test_repository_is_read_from_the_git_remote(tmp_path):
    assert pipeline.github_repository(tmp_path) is None  # not a repository
    git(tmp_path, "init", "-q")
    assert pipeline.github_repository(tmp_path) is None  # no remote
    git(tmp_path, "remote", "add", "origin", "/srv/git/p2pntk.git")
    git(tmp_path, "remote", "add", "fork", "git@github.com:other/p2pntk.git")
    assert pipeline.github_repository(tmp_path) == "https://github.com/other/p2pntk"
    git(tmp_path, "remote", "set-url", "origin", "git@github.com:someone/p2pntk.git")
    assert pipeline.github_repository(tmp_path) == REPO  # origin first


def sphinx_config(config: dict) -> dict:
    """The Sphinx configuration Jupyter Book generates from ``config`` (as ``jupyter-book config sphinx``)."""
    from jupyter_book.config import get_final_config

    return get_final_config(user_yaml=config, cli_config={"latex_individualpages": False}, sourcedir=ROOT)[0]


def theme_options(config: dict) -> dict:
    return sphinx_config(config)["html_theme_options"]


def test_site_config_sets_or_leaves_out_the_launch_buttons():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert "url" not in config.get("repository", {})  # never written in _config.yml
    with_repo = pipeline.site_config(config, REPO, "This site shows the **`ci`** profile")
    opts = theme_options(with_repo)
    assert opts["repository_url"] == REPO and opts["repository_branch"] == "notebooks"
    assert opts["launch_buttons"]["binderhub_url"] == "https://mybinder.org"
    assert opts["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert with_repo["parse"]["myst_substitutions"]["build_profile"] == "This site shows the **`ci`** profile"
    assert "substitution" in with_repo["parse"]["myst_enable_extensions"]
    final = sphinx_config(with_repo)
    assert final["myst_substitutions"] == {"build_profile": "This site shows the **`ci`** profile"}
    assert "substitution" in final["myst_enable_extensions"] and "dollarmath" in final["myst_enable_extensions"]
    opts = theme_options(pipeline.site_config(config, None, "x"))
    assert not any(opts.get("launch_buttons", {}).get(k) for k in ("binderhub_url", "colab_url", "jupyterhub_url"))
    assert config == yaml.safe_load((ROOT / "_config.yml").read_text())  # not modified in place


def test_profile_sentence_is_generated_from_the_profile():
    chapters = {"book/reproduction": {"parameters": {"dataset": "fashion_mnist", "n_train": 1024, "n_agents": 8,
                                                     "width": 4096}}}
    text = pipeline.profile_sentence("paper", ["ci", "paper"], chapters)
    assert text.startswith("This site shows the **`paper`** profile")
    assert "fashion_mnist, 1024 training points, Q = 8 agents, width 4096" in text
    assert "The other profile, `ci`, is built with `make book PROFILE=ci`." in text
    assert "{{ build_profile }}" in (ROOT / "book" / "intro.md").read_text()


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs = []

    def handle_starttag(self, tag, attrs):
        self.hrefs += [v for k, v in attrs if k == "href" and v]


def launch_links(page: Path) -> dict:
    parser = Links()
    parser.feed(page.read_text())
    return {kind: [h for h in parser.hrefs if host in h]
            for kind, host in (("binder", "mybinder.org"), ("colab", "colab.research.google.com"))}


CHAPTER = tiny_chapter("n = 3\n", "    caption: A line, a scatter, bars and a band.\n", """\
import matplotlib.pyplot as plt
from p2pntk import plotting

fig, ax = plt.subplots(figsize=(3, 2))
ax.plot(range(n), range(n), label="line")
ax.scatter([0, 1], [1, 0], label="points")
ax.bar([0, 1], [1, 2], alpha=0.3, label="bars")
ax.fill_between([0, 1, 2], [0, 0, 0], [1, 2, 1], alpha=0.2, label="band")
plotting.save(fig, "fig-tiny")
plt.show()
""")


@pytest.fixture
def tiny_book(tmp_path, monkeypatch):
    """A one-chapter book whose _config.yml is the real one's launch settings; returns its root."""
    root = tmp_path / "book-project"
    (root / "book").mkdir(parents=True)
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/tiny\n")
    real = yaml.safe_load((ROOT / "_config.yml").read_text())
    config = {k: real[k] for k in ("execute", "repository", "launch_buttons", "html")}
    (root / "_config.yml").write_text(yaml.safe_dump({"title": "tiny", **config}))
    (root / "references.bib").write_text("")
    (root / "book" / "profiles.yml").write_text("ci:\npaper:\n  tiny:\n    n: 4\n")
    (root / "book" / "intro.md").write_text("# Intro\n\n{{ build_profile }}\n")
    (root / "book" / "tiny.md").write_text(CHAPTER)
    monkeypatch.setenv("P2PNTK_ROOT", str(root))
    monkeypatch.delenv("P2PNTK_BUILD", raising=False)
    monkeypatch.setenv("P2PNTK_FIG_DIR", str(root / "_build" / "figures"))  # build() sets it; restored after
    return root


def test_built_tiny_book_launch_links_profile_sentence_and_figure_data(tiny_book, capfd):
    root = tiny_book
    git(root, "init", "-q")
    git(root, "remote", "add", "origin", "git@github.com:someone/p2pntk.git")
    pipeline.build("ci")
    html = root / "_build" / "html"
    links = launch_links(html / "book" / "tiny.html")
    assert links["binder"] == ["https://mybinder.org/v2/gh/someone/p2pntk/notebooks?urlpath=lab/tree/book/tiny.ipynb"]
    assert links["colab"] == ["https://colab.research.google.com/github/someone/p2pntk/blob/notebooks/book/tiny.ipynb"]
    intro = (html / "book" / "intro.html").read_text()
    assert re.search(r"This site shows the <strong><code[^>]*><span[^>]*>ci</span></code></strong> profile", intro)
    assert "{{" not in intro
    page = (html / "book" / "tiny.html").read_text()
    csv_link = re.search(r'href="([^"]*_downloads/[^"]*fig-tiny\.csv)"', page)
    assert csv_link and "Plotted values" in page
    csv = (html / "book" / csv_link.group(1)).resolve().read_text()
    assert csv.startswith(",".join(__import__("p2pntk.plotting").plotting.CSV_COLUMNS))
    kinds = {line.split(",")[4] for line in csv.splitlines()[1:]}
    assert kinds == {"line", "scatter", "bar", "fill"}
    prov = json.loads((root / "_build" / "provenance.json").read_text())
    assert prov["chapters"]["book/tiny"]["device"]["platform"] == "cpu"  # the kernel imported no JAX
    nb = (root / "_build" / "stage" / "book" / "tiny.ipynb").read_text()
    assert pipeline.DEVICE_TAG not in nb  # the pipeline's device cell is removed

    git(root, "remote", "remove", "origin")  # no GitHub remote: the buttons are left out
    pipeline.build("ci")
    assert launch_links(html / "book" / "tiny.html") == {"binder": [], "colab": []}
    assert "\x1b[" not in capfd.readouterr().out  # Jupyter Book's colours are stripped in a log


def test_built_site_launch_links_point_at_the_notebooks_branch():
    html = ROOT / "_build" / "html"
    pages = sorted((html / "book").glob("*.html")) if html.is_dir() else []
    if not pages:
        pytest.skip("no built book in _build/html (make book)")
    repo = pipeline.github_repository(ROOT)
    notebooks = {p.stem for p in (ROOT / "_build" / "stage" / "book").glob("*.ipynb")
                 if not p.name.endswith((".failed.ipynb", ".input.ipynb")) and not p.name.startswith(".")}
    for page in pages:
        links = launch_links(page)
        if repo is None:
            assert links == {"binder": [], "colab": []}, page
            continue
        if page.stem not in notebooks:
            continue
        owner_repo = repo.removeprefix("https://github.com/")
        assert links["binder"] == [f"https://mybinder.org/v2/gh/{owner_repo}/{pipeline.NOTEBOOKS_BRANCH}"
                                   f"?urlpath=lab/tree/book/{page.stem}.ipynb"], page
        assert links["colab"] == [f"https://colab.research.google.com/github/{owner_repo}/blob/"
                                  f"{pipeline.NOTEBOOKS_BRANCH}/book/{page.stem}.ipynb"], page


# --- Binder and Colab ------------------------------------------------------------------------

def test_binder_installs_the_pinned_package_with_jupytext():
    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == "python-3.11"
    lines = [l.strip() for l in (ROOT / "binder" / "requirements.txt").read_text().splitlines()
             if l.strip() and not l.startswith("#")]
    assert lines == ["-e ."]  # the package with the pins of pyproject.toml, written only there
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("jupytext==") for d in deps)
    post = ROOT / "binder" / "postBuild"
    assert os.access(post, os.X_OK) and "Jupytext Notebook" in post.read_text()


def test_exported_notebooks_install_p2pntk_on_colab_only(tmp_path):
    import nbformat

    stage = tmp_path / "stage"
    (stage / "book").mkdir(parents=True)
    for name in ("consensus", "consensus.failed", ".consensus.1.running"):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
        nbformat.write(nb, stage / "book" / f"{name}.ipynb")
    written = pipeline.export_notebooks(tmp_path / "out", REPO, stage)
    assert written == [tmp_path / "out" / "book" / "consensus.ipynb"]
    nb = nbformat.read(written[0], as_version=4)
    first = nb.cells[0].source
    assert 'if "google.colab" in sys.modules:' in first and f"'{REPO}.git'" in first
    assert "'--branch', 'notebooks'" in first.replace('"', "'") and "pip" in first
    assert [c.source for c in nb.cells[1:]] == ["x = 1"]
    compile(first, "cell", "exec")
    exec(compile(first, "cell", "exec"), {})  # outside Colab it does nothing
    with pytest.raises(SystemExit, match="no executed notebooks"):
        pipeline.export_notebooks(tmp_path / "out2", REPO, tmp_path / "empty")
