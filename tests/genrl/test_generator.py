"""pixelrl.genrl.generator: the generator folder format, the tiny random generator, training and distillation."""

from __future__ import annotations

import json
import time

import pytest
import torch

from pixelrl.errors import ConfigError


def _load(folder):
    import diffusers
    import transformers as tf

    index = json.loads((folder / "model_index.json").read_text())
    sched_cls = getattr(diffusers, index["scheduler"][1])
    return (diffusers.UNet2DConditionModel.from_pretrained(folder, subfolder="unet"),
            sched_cls.from_pretrained(folder, subfolder="scheduler"),
            tf.CLIPTextModel.from_pretrained(folder, subfolder="text_encoder"),
            tf.CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"))


def test_tiny_generator_folder_format(tiny_generator):
    index = json.loads((tiny_generator / "model_index.json").read_text())
    assert index["_class_name"] == "PixelRLPixelPipeline"
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"] and index["scheduler"][1] == "DDIMScheduler"
    assert "vae" not in index
    for sub in ("unet", "scheduler", "text_encoder", "tokenizer"):
        assert (tiny_generator / sub).is_dir()
    assert list((tiny_generator / "unet").glob("*.safetensors")) and not list(tiny_generator.rglob("*.bin"))
    info = json.loads((tiny_generator / "pixelrl_generator.json").read_text())
    assert info["kind"] == "ddpm" and info["image_size"] == 32


def test_tiny_generator_samples_fast_with_sigma_positive(tiny_generator):
    unet, sched, text, tok = _load(tiny_generator)
    assert unet.config.in_channels == 3 and unet.config.sample_size == 32
    sched.set_timesteps(2)
    assert sched.timesteps.tolist() == [999, 499]  # trailing spacing: a few-step sample starts from pure noise
    # the last DDIM step's alpha_prev is alphas_cumprod[0] < 1, so its eta = 1 sigma is > 0 (no 0/0 log-prob)
    assert float(sched.final_alpha_cumprod) < 1.0
    torch.manual_seed(0)
    with torch.no_grad():
        ids = tok(["two red circles"] * 4, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        x = torch.randn(4, 3, 32, 32)
        t0 = time.perf_counter()
        emb = text(ids)[0]
        for t in sched.timesteps:
            x = sched.step(unet(x, t, emb).sample, t, x, eta=1.0).prev_sample
        dt = time.perf_counter() - t0
    assert x.shape == (4, 3, 32, 32) and torch.isfinite(x).all()
    assert dt < 1.0, f"2-step sample of 4 took {dt:.2f}s"


def test_lcm_kind_writes_lcm_scheduler(tiny_lcm_generator):
    index = json.loads((tiny_lcm_generator / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "LCMScheduler"]
    _, sched, _, _ = _load(tiny_lcm_generator)
    sched.set_timesteps(4)
    assert len(sched.timesteps) == 4


def test_init_generator_is_seeded_and_overwrites_atomically(tmp_path):
    from safetensors.torch import load_file

    from pixelrl.genrl.generator import init_generator

    a = init_generator(tmp_path / "g", seed=3)
    wa = load_file(next((a / "unet").glob("*.safetensors")))
    b = init_generator(tmp_path / "g", seed=3)  # over an existing folder
    wb = load_file(next((b / "unet").glob("*.safetensors")))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]  # no temporary or old folder left
    c = init_generator(tmp_path / "h", seed=4)
    wc = load_file(next((c / "unet").glob("*.safetensors")))
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="gan"), "kind"),
    (dict(image_size=33), "image_size"),
    (dict(size="huge"), "size"),
    (dict(block_width=3), "unknown generator size option"),
    (dict(attention_levels=(True,)), "attention_levels"),
])
def test_init_generator_bad_options_one_line(tmp_path, kwargs, match):
    from pixelrl.genrl.generator import init_generator

    with pytest.raises(ConfigError, match=match) as e:
        init_generator(tmp_path / "g", **kwargs)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "g").exists()
