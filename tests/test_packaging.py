"""What a user gets without a clone: the wheel and sdist carry the package and its data and nothing else, the docs'
links resolve (README included, which the docs site does not build), the site's nav names existing pages, and the
commands of the "reproduce a paper" pages parse. The wheel installed in a clean venv and trained from is CI's
`scripts/wheel_smoke.sh`; the site's strict build is CI's `make docs`."""

import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "pixelrl"


def _package_files() -> tuple[set[str], set[str]]:
    """(modules, data files) under src/pixelrl, as paths relative to src/."""
    modules, data = set(), set()
    for path in PACKAGE.rglob("*"):
        if not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        (modules if path.suffix == ".py" else data).add(path.relative_to(ROOT / "src").as_posix())
    return modules, data


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """sdist and wheel built by `python -m build` (no isolation: the venv's setuptools) from a copy of the files the
    build reads (and the tests, which it must leave out), so the repository gets no build/ or egg-info."""
    tmp = tmp_path_factory.mktemp("build")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "MANIFEST.in"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(ROOT / "src", src / "src", ignore=ignore)
    shutil.copytree(ROOT / "tests", src / "tests", ignore=ignore)  # setuptools would take some of them into the sdist
    out = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp / "dist"), str(src)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("pixelrl-*.whl")
    (sdist,) = (tmp / "dist").glob("pixelrl-*.tar.gz")
    return wheel, sdist


def test_wheel_carries_the_package_its_data_and_nothing_else(built):
    wheel, _ = built
    names = set(zipfile.ZipFile(wheel).namelist())
    modules, data = _package_files()
    assert modules - names == set(), "modules missing from the wheel"
    assert data - names == set(), "package data missing from the wheel: add it to [tool.setuptools.package-data]"
    assert {"pixelrl/web/static/index.html", "pixelrl/web/static/label.js"} <= names  # the labelling page
    top = {n.split("/", 1)[0] for n in names}
    assert top == {"pixelrl", wheel.name.split("-py3")[0] + ".dist-info"}, top  # no tests/, benchmarks/, docs/
    dist_info = wheel.name.split("-py3")[0] + ".dist-info"
    entry_points = zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt").decode()
    assert "pixelrl = pixelrl.cli.main:main" in entry_points
    metadata = zipfile.ZipFile(wheel).read(f"{dist_info}/METADATA").decode()
    extras = set(re.findall(r"^Provides-Extra: (\S+)$", metadata, re.M))
    assert {"dmc", "docs", "dev", "all"} <= extras, extras
    assert re.search(r"^Requires-Dist: dm[-_]control.*extra == \"dmc\"", metadata, re.M)
    assert "License-Expression: Apache-2.0" in metadata


def test_sdist_builds_the_same_package(built):
    _, sdist = built
    names = {n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n}
    assert {"pyproject.toml", "README.md", "src/pixelrl/__init__.py", "src/pixelrl/web/static/index.html"} <= names
    assert not any(n.startswith(("benchmarks/", "docs/", ".ci/", "tests/")) for n in names), sorted(names)


# ------------------------------------------------------------------------------------------------------- docs

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _no_fences(text: str) -> str:
    return re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.S | re.M)


def _prose(text: str) -> str:
    """Markdown without fenced code blocks and inline code, where a link is not a link."""
    return re.sub(r"`[^`\n]*`", "", _no_fences(text))


def _slug(heading: str) -> str:
    """The anchor of a heading, as Python-Markdown's toc and GitHub make it (lower case, punctuation dropped)."""
    heading = re.sub(r"[`*]", "", heading).strip().lower()
    return re.sub(r"\s+", "-", re.sub(r"[^\w\s-]", "", heading))


def _anchors(path: Path) -> set[str]:
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*$", _no_fences(path.read_text(encoding="utf-8")), re.M)
    return {_slug(h) for h in headings}


def _markdown_files() -> list[Path]:
    pages = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [p for p in pages if p.is_file()]


def test_relative_links_in_readme_and_docs_resolve():
    broken = []
    for page in _markdown_files():
        for target in LINK.findall(_prose(page.read_text(encoding="utf-8"))):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and dest.name != "benchmarks.md" and anchor not in _anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_link_check_finds_a_broken_link(tmp_path, monkeypatch):
    """The check above is not vacuous: a missing file and a missing heading are both reported."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# Top\n\nsee [a](docs/a.md#there) and [b](docs/b.md) and `[c](nowhere.md)`\n")
    (tmp_path / "docs" / "a.md").write_text("# A\n\n## Somewhere else\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    with pytest.raises(AssertionError) as e:
        test_relative_links_in_readme_and_docs_resolve()
    assert "docs/a.md#there (no such heading)" in str(e.value) and "docs/b.md (no such file)" in str(e.value)
    assert "nowhere" not in str(e.value)


def _nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [p for item in node for p in _nav_pages(item)]
    if isinstance(node, dict):
        return [p for value in node.values() for p in _nav_pages(value)]
    return []


def test_site_nav_names_existing_pages():
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    pages = _nav_pages(config["nav"])
    missing = [p for p in pages if not (ROOT / "docs" / p).is_file()]
    assert not missing, f"mkdocs.yml nav names pages that do not exist: {missing}"
    reproduce = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs" / "reproduce").glob("*.md")}
    assert reproduce <= set(pages), f"reproduce pages not in the nav: {sorted(reproduce - set(pages))}"


def _train_commands(page: Path) -> list[list[str]]:
    text = page.read_text(encoding="utf-8").replace("\\\n", " ")
    commands = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line.startswith("pixelrl train "):
                commands.append(shlex.split(line)[2:])
    return commands


REPRODUCE = sorted((ROOT / "docs" / "reproduce").glob("*.md"))


@pytest.mark.parametrize("page", REPRODUCE, ids=[p.stem for p in REPRODUCE])
def test_reproduce_page_commands_parse(page, monkeypatch):
    """Each `pixelrl train` command of a reproduce page resolves its preset and parses into a checked config (the
    run itself is stopped where it would start). A command with ``--dataset`` reads the dataset before parsing the
    rest, so it is left out."""
    import pixelrl.cli.main as cli

    class Parsed(Exception):
        pass

    def stop(cfg):
        raise Parsed(cfg)

    monkeypatch.setattr(cli, "_announce", stop)
    commands = _train_commands(page)
    if page.stem != "index":
        assert commands, f"{page.name} has no pixelrl train command"
    for argv in (a for a in commands if "--dataset" not in a):
        with pytest.raises(Parsed):
            cli.cmd_train(argv)


def test_reproduce_pages_cite_committed_results():
    """Every result file a reproduce page names is in the repository (`benchmarks/results/` or, for the published
    scores, `benchmarks/`), and every figure it shows exists: the numbers on these pages come from those files."""
    missing = []
    for page in REPRODUCE:
        text = page.read_text(encoding="utf-8")
        for name in set(re.findall(r"`(?:benchmarks/(?:results/)?)?([A-Za-z0-9_]+\.json)`", text)):
            if not any((ROOT / "benchmarks" / sub / name).is_file() for sub in ("results", ".")):
                missing.append(f"{page.name}: {name}")
    assert not missing, f"reproduce pages cite result files that are not committed: {missing}"
    cited = {n for p in REPRODUCE for n in re.findall(r"([a-z0-9_]+_(?:cpu|h100)[a-z0-9_]*\.json)", p.read_text())}
    assert {"dmc_sample_efficiency_cpu_reduced.json", "offline_vs_d3rlpy_cpu.json", "ppo_vs_sb3_cpu.json"} <= cited


def test_docs_hook_shows_sphinx_roles_as_code():
    from helpers import load_script

    hooks = load_script("scripts/docs_hooks.py")
    html = ("see :func:<code>agent_preset</code>, :class:<code>~pixelrl.agents.AgentSpec</code> and "
            ":meth:<code>Trainer.run</code>; a:b <code>x</code> stays")
    assert hooks.strip_roles(html) == ("see <code>agent_preset</code>, <code>AgentSpec</code> and "
                                       "<code>Trainer.run</code>; a:b <code>x</code> stays")
