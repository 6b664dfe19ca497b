"""MUJOCO_GL defaulting: egl when unset (Linux), user choice kept otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CODE = "import os, pixelrl.envs; print(os.environ.get('MUJOCO_GL'), os.environ.get('PYOPENGL_PLATFORM'))"


def _run(env):
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="egl default is Linux-only")
def test_mujoco_gl_defaults_to_egl():
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    assert _run(env) == ["egl", "egl"]


def test_mujoco_gl_user_override_kept():
    env = {k: v for k, v in os.environ.items() if k != "PYOPENGL_PLATFORM"}
    env["MUJOCO_GL"] = "osmesa"
    assert _run(env) == ["osmesa", "osmesa"]


def test_gl_environment_for_workers(monkeypatch):
    from pixelrl.envs._gl import gl_environment

    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    monkeypatch.setenv("PYOPENGL_PLATFORM", "osmesa")
    assert gl_environment() == {"MUJOCO_GL": "osmesa", "PYOPENGL_PLATFORM": "osmesa"} | (
        {k: os.environ[k] for k in ("MUJOCO_EGL_DEVICE_ID", "EGL_DEVICE_ID") if k in os.environ}
    )
