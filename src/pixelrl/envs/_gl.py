"""OpenGL backend selection for MuJoCo rendering.

MuJoCo (and dm_control) read ``MUJOCO_GL`` once, when they are first imported. pixelrl sets it to ``egl``
(headless, GPU-accelerated where a GPU driver is present, Mesa software rendering otherwise) when the user
has not chosen one, on Linux only. Set ``MUJOCO_GL=osmesa`` (pure software) or ``MUJOCO_GL=glfw`` (needs a
display) *before* importing pixelrl/mujoco to override. The DrQ-v2 reference hard-codes ``egl``; we do not.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

_GL_VARS = ("MUJOCO_GL", "PYOPENGL_PLATFORM", "MUJOCO_EGL_DEVICE_ID", "EGL_DEVICE_ID")


def ensure_mujoco_gl() -> str | None:
    """Default ``MUJOCO_GL`` to ``egl`` on Linux if unset; return the value in effect."""
    if "MUJOCO_GL" not in os.environ and sys.platform.startswith("linux"):
        os.environ["MUJOCO_GL"] = "egl"
    gl = os.environ.get("MUJOCO_GL")
    # PyOpenGL must agree with MuJoCo on the platform, else the first render fails obscurely.
    if gl in ("egl", "osmesa") and "PYOPENGL_PLATFORM" not in os.environ:
        os.environ["PYOPENGL_PLATFORM"] = gl
    return gl


@contextlib.contextmanager
def first_render(env: object, what: str) -> Iterator[None]:
    """Around an env's ``render()``: a failure of its first render becomes :func:`render_error` (a GL backend that does
    not work here), a later one passes through as it is. Marks ``env._rendered``."""
    try:
        yield
    except Exception as e:
        if getattr(env, "_rendered", False):
            raise
        raise render_error(what, e) from e
    finally:
        env._rendered = True  # type: ignore[attr-defined]


def render_error(what: str, error: Exception) -> RuntimeError:
    """The error of a first render that failed: which env, the backend in effect, and how to get a working one."""
    gl = os.environ.get("MUJOCO_GL")
    return RuntimeError(
        f"rendering {what} failed with MUJOCO_GL={gl!r}: {error}. Headless Linux needs MUJOCO_GL=egl (libEGL, e.g. apt "
        "install libegl1) or MUJOCO_GL=osmesa (apt install libosmesa6), set before mujoco is imported."
    )


def gl_environment() -> dict[str, str]:
    """The rendering-related environment variables to replay in a worker process."""
    ensure_mujoco_gl()
    return {k: os.environ[k] for k in _GL_VARS if k in os.environ}
