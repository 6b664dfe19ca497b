"""CI guards. tests/conftest.py: with CI=true a skip for a missing extra's package fails the run (module-level
importorskip, skipif marks, skips inside a test); other skips, and every skip outside CI, stay skips. And CI's
command deselects no `slow` test."""

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

_ROOT_EXPR = "os.path.dirname(os.path.dirname(os.path.abspath(__file__)))"
CONFTEST = (Path(__file__).parent / "conftest.py").read_text()
assert _ROOT_EXPR in CONFTEST, "tests/conftest.py finds the repository root another way now; update this test"
CONFTEST = CONFTEST.replace(_ROOT_EXPR, repr(str(Path(__file__).resolve().parent.parent)), 1)  # the copy runs elsewhere

TESTS = {
    "test_module_skip.py": "import pytest\npytest.importorskip('dm_control_not_really_xyz', reason='"
                           "could not import dm_control')\n\ndef test_a():\n    pass\n",
    "test_marks.py": "import pytest\n\n"
                     "@pytest.mark.skipif(True, reason=\"h5py not installed (pip install 'pixelrl[offline]')\")\n"
                     "def test_extra():\n    pass\n\n"
                     "def test_inside():\n    pytest.skip('ale-py / opencv not installed')\n\n"
                     "@pytest.mark.skipif(True, reason='egl default is Linux-only')\n"
                     "def test_other_cause():\n    pass\n",
}


@pytest.fixture
def suite(pytester):
    pytester.makeconftest(CONFTEST)
    for name, text in TESTS.items():
        pytester.makepyfile(**{name[:-3]: text})
    return pytester


def test_outside_ci_a_missing_extra_is_a_skip(suite, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    result = suite.runpytest_inprocess("-p", "no:cacheprovider", "--continue-on-collection-errors")
    result.assert_outcomes(skipped=4)


def test_in_ci_a_missing_extra_fails(suite, monkeypatch):
    monkeypatch.setenv("CI", "true")
    monkeypatch.delenv("PIXELRL_EXTRAS", raising=False)
    result = suite.runpytest_inprocess("-p", "no:cacheprovider", "--continue-on-collection-errors")
    # a skip in setup (skipif) or collection (importorskip) becomes an error, one inside the test a failure
    result.assert_outcomes(failed=1, skipped=1, errors=2)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*CI: skipped for a missing optional dependency of the 'offline' extra*"])


def test_in_ci_an_extra_not_installed_on_purpose_stays_a_skip(suite, monkeypatch):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("PIXELRL_EXTRAS", "dmc,dev")  # this CI installs no atari / offline extras
    result = suite.runpytest_inprocess("-p", "no:cacheprovider", "--continue-on-collection-errors")
    result.assert_outcomes(skipped=3, errors=1)


ROOT = Path(__file__).resolve().parents[1]


def test_slow_marker_deselects_nothing_in_ci():
    """CI runs `make test` (.ci/run) = pytest with pyproject's addopts: none of them may drop the `slow` tests (the
    end-to-end runs), so CI runs the whole suite; `-m "not slow"` is for a quick local run only."""
    import shlex
    import tomllib

    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "-m" not in shlex.split(ci.split("make test", 1)[1].split("\n", 1)[0])
    make_test = next(line for line in (ROOT / "Makefile").read_text().splitlines() if "-m pytest" in line)
    assert "slow" not in make_test and " -m " not in make_test.split("-m pytest", 1)[1]
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "slow" not in ini.get("addopts", "") and "-m" not in shlex.split(ini.get("addopts", ""))
    assert any(m.startswith("slow:") for m in ini["markers"])  # registered, so a typo in it is caught (--strict)
