"""Fixtures of the genrl tests: a tiny randomly initialised pixel-space generator folder (the format of
:mod:`pixelrl.genrl.generator`), written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("diffusers", reason="diffusers not installed (pip install 'pixelrl[genrl]')")


@pytest.fixture(scope="session")
def tiny_generator(tmp_path_factory) -> Path:
    """A tiny DDPM generator folder (32x32 pixels, DDIM scheduler, byte tokenizer, random weights)."""
    from pixelrl.genrl.generator import init_generator

    return init_generator(tmp_path_factory.mktemp("genrl") / "tiny-ddpm", image_size=32, kind="ddpm", seed=0)


@pytest.fixture(scope="session")
def tiny_lcm_generator(tmp_path_factory) -> Path:
    """The same tiny generator with an LCMScheduler (a consistency model's folder; random weights)."""
    from pixelrl.genrl.generator import init_generator

    return init_generator(tmp_path_factory.mktemp("genrl") / "tiny-lcm", image_size=32, kind="lcm", seed=0)
