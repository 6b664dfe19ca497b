"""Suite-wide settings: tests use tiny networks, for which one torch thread is faster than several (OpenMP
synchronisation costs more than the work), and much faster when the machine is busy.

In CI (``CI=true``), a test or module skipped because an optional extra's package is missing fails instead: CI
installs the extras named in ``PIXELRL_EXTRAS`` (``scripts/setup.sh``; default all of them), so such a skip means an
extra failed to install or import, and ~60 tests would otherwise turn into skips while CI stays green."""

from __future__ import annotations

import os
import re

import pytest
import torch

torch.set_num_threads(1)

EXTRA_MODULES = {"dm_control": "dmc", "mujoco": "dmc", "ale_py": "atari", "ale-py": "atari", "cv2": "atari",
                 "opencv": "atari", "h5py": "offline", "minari": "offline", "transformers": "rewards",
                 "selenium": "dev", "chromium": "dev", "chromedriver": "dev", "metaworld": "metaworld",
                 "huggingface_hub": "hub", "wandb": "wandb", "diffusers": "genrl", "peft": "genrl", "ray": "ray",
                 "mkdocs": "docs"}
"""Import and package names of the optional extras' packages (pyproject.toml ``[project.optional-dependencies]``)
-> extra."""

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(rel: str, pattern: str) -> str:
    with open(os.path.join(_ROOT, rel), encoding="utf-8") as f:
        m = re.search(pattern, f.read(), re.M)
    if m is None:
        raise RuntimeError(f"tests/conftest.py: {rel} no longer matches {pattern!r}; update the pattern")
    return m.group(1)


DEFAULT_CI_EXTRAS = _read("scripts/setup.sh", r"^EXTRAS=\$\{PIXELRL_EXTRAS:-([\w,]+)\}")
"""What ``scripts/setup.sh`` installs when ``PIXELRL_EXTRAS`` is not set (read from it: one list, not two)."""
ALL_EXTRAS = _read("pyproject.toml", r'^all = \["pixelrl\[([\w,]+)\]"\]')
"""The extras that ``all`` stands for (pyproject.toml)."""


# precision='auto' times bf16 against fp32 on machines with native bf16; a suite run on a loaded machine could then
# pick either, and tests that compare two runs or exact values would depend on the timing. The suite fixes what
# 'auto' means (subprocesses inherit it); tests/utils/test_precision.py unsets it to test the decision itself.
os.environ.setdefault("PIXELRL_PRECISION", "fp32")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def ci_extras() -> set[str]:
    extras = {e.strip() for e in os.environ.get("PIXELRL_EXTRAS", DEFAULT_CI_EXTRAS).split(",") if e.strip()}
    return extras | (set(ALL_EXTRAS.split(",")) if "all" in extras else set())


def missing_extra(reason: str) -> str | None:
    """The extra whose package a skip reason names (``could not import 'h5py'``, ``pip install 'pixelrl[dmc]'``),
    or None for a skip with another cause."""
    m = re.search(r"pixelrl\[(\w+)\]", reason)
    if m:
        return m.group(1)
    for module, extra in EXTRA_MODULES.items():
        if re.search(rf"\b{re.escape(module)}\b", reason):
            return extra
    return None


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _fail_extra_skip(report) -> None:
    if not (in_ci() and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    extra = missing_extra(reason)
    if extra is not None and extra in ci_extras():
        report.outcome = "failed"
        report.longrepr = (f"CI: skipped for a missing optional dependency of the '{extra}' extra, which CI "
                           f"installs (PIXELRL_EXTRAS): {reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_extra_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield  # a module-level importorskip / skipif skips the whole module at collection
    _fail_extra_skip(outcome.get_result())
