"""``--device`` of the model-building commands (``pixelrl genrl pretrain-generator | distill | pretrain-verifier``):
the default (auto) resolves as ``pixelrl genrl train``'s and, without CUDA, trains exactly what ``--device cpu``
does; the device used is recorded; ``--device cuda`` without CUDA is one error line before anything is written.
On a machine with CUDA the comparison runs with CUDA hidden (auto then resolves to the CPU)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from pixelrl.cli.main import main
from pixelrl.errors import ConfigError

CUDA = torch.cuda.is_available()
_GEN = dict(size="tiny", image_size=16, batch_size=4, steps=3, warmup_steps=1, checkpoint_every=3, log_every=3)
_DISTILL = dict(steps=2, batch_size=2, time_cond_proj_dim=16, warmup_steps=0, checkpoint_every=2, log_every=2)


def _no_cuda(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from pixelrl.genrl.generator import init_generator

    return init_generator(tmp_path_factory.mktemp("dev") / "teacher", image_size=16, size="tiny", seed=0)


def test_pretrain_generator_default_is_cpu_here_and_recorded(tmp_path, monkeypatch):
    from pixelrl.genrl.generator import train_generator

    _no_cuda(monkeypatch)
    auto = train_generator(tmp_path / "auto", progress=False, **_GEN)
    cpu = train_generator(tmp_path / "cpu", progress=False, device="cpu", **_GEN)
    assert auto["device"] == cpu["device"] == "cpu"
    assert auto["held_loss_after"] == cpu["held_loss_after"] and auto["loss"] == cpu["loss"]
    for part in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        _same_tensors(load_file(tmp_path / "auto" / part), load_file(tmp_path / "cpu" / part))
    for run, asked in (("auto", "auto"), ("cpu", "cpu")):
        info = json.loads((tmp_path / run / "pixelrl_generator.json").read_text())
        assert info["train_device"] == "cpu" and info["train"]["device"] == asked


def test_distill_default_is_cpu_here_and_recorded(teacher, tmp_path, monkeypatch):
    from pixelrl.genrl.generator import distill_consistency

    _no_cuda(monkeypatch)
    auto = distill_consistency(teacher, tmp_path / "auto", progress=False, **_DISTILL)
    cpu = distill_consistency(teacher, tmp_path / "cpu", progress=False, device="cpu", **_DISTILL)
    assert auto["device"] == cpu["device"] == "cpu" and auto["loss"] == cpu["loss"]
    _same_tensors(load_file(tmp_path / "auto" / "unet" / "diffusion_pytorch_model.safetensors"),
                  load_file(tmp_path / "cpu" / "unet" / "diffusion_pytorch_model.safetensors"))
    info = json.loads((tmp_path / "cpu" / "pixelrl_generator.json").read_text())
    assert info["distill_device"] == "cpu" and info["distill"]["device"] == "cpu"


def test_pretrain_verifier_default_is_cpu_here_and_recorded(tmp_path, monkeypatch):
    from pixelrl.genrl.rewards import VerifierConfig, train_verifier

    _no_cuda(monkeypatch)
    kw = dict(steps=6, batch_size=8, pool_images=40, eval_images=16, width=4, blur=1.0, jitter=0.2, log_every=3)
    auto = train_verifier(tmp_path / "auto", VerifierConfig(**kw), progress=False)
    cpu = train_verifier(tmp_path / "cpu", VerifierConfig(device="cpu", **kw), progress=False)
    assert auto["device"] == cpu["device"] == "cpu"
    assert (auto["loss"], auto["pair_accuracy"]) == (cpu["loss"], cpu["pair_accuracy"])
    _same_tensors(load_file(tmp_path / "auto" / "detector.safetensors"),
                  load_file(tmp_path / "cpu" / "detector.safetensors"))
    meta = json.loads((tmp_path / "cpu" / "detector.json").read_text())
    assert meta["device"] == "cpu" and meta["config"]["device"] == "cpu"


@pytest.mark.skipif(CUDA, reason="CUDA is available here: --device cuda is valid")
def test_cuda_without_cuda_is_one_line_before_anything_is_written(teacher, tmp_path):
    from pixelrl.genrl.generator import distill_consistency, train_generator
    from pixelrl.genrl.rewards import VerifierConfig, train_verifier

    calls = {"gen": lambda: train_generator(tmp_path / "gen", progress=False, device="cuda", **_GEN),
             "lcm": lambda: distill_consistency(teacher, tmp_path / "lcm", progress=False, device="cuda", **_DISTILL),
             "ver": lambda: train_verifier(tmp_path / "ver", VerifierConfig(steps=1, device="cuda"), progress=False)}
    for name, call in calls.items():
        with pytest.raises(ConfigError, match="CUDA is not available; use --device cpu") as e:
            call()
        assert "\n" not in str(e.value)
        assert not (tmp_path / name).exists()


@pytest.mark.skipif(CUDA, reason="CUDA is available here: --device cuda is valid")
def test_cli_device_cuda_without_cuda_is_one_line(teacher, tmp_path, capsys):
    for args in (["pretrain-generator", "--out", tmp_path / "g", "--size", "tiny", "--steps", "1"],
                 ["distill", "--teacher", teacher, "--out", tmp_path / "l", "--steps", "1"],
                 ["pretrain-verifier", "--out", tmp_path / "v", "--steps", "1"]):
        assert main(["genrl", *map(str, args), "--device", "cuda", "--no-progress"]) == 1
        err = capsys.readouterr().err.strip()
        assert err.endswith("CUDA is not available; use --device cpu") and "\n" not in err, err
    assert not any(tmp_path.joinpath(n).exists() for n in ("g", "l", "v"))


def test_bad_device_names_are_one_line():
    from pixelrl.genrl.generator import DistillConfig, GeneratorTrainConfig
    from pixelrl.genrl.rewards import VerifierConfig

    for cls in (GeneratorTrainConfig, DistillConfig, VerifierConfig):
        with pytest.raises(ConfigError, match="--device must be auto, cpu or cuda") as e:
            cls(device="gpu")
        assert "\n" not in str(e.value)
        assert cls(device="cuda:1").device == "cuda:1"  # checked when the command starts, not here
