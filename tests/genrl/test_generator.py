"""pixelrl.genrl.generator: the generator folder format, the tiny random generator, training and distillation."""

from __future__ import annotations

import json
import time

import numpy as np
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
    assert dt < 3.0, f"2-step sample of 4 took {dt:.2f}s"  # about 0.05 s on an idle core; slack for a busy machine


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


@pytest.fixture(scope="module")
def trained_tiny(tmp_path_factory):
    """A tiny 16x16 generator trained for 80 steps in two calls (40, then continued to 80)."""
    from pixelrl.genrl.generator import train_generator

    out = tmp_path_factory.mktemp("train") / "gen"
    kw = dict(size="tiny", image_size=16, batch_size=8, checkpoint_every=20, log_every=20, warmup_steps=10, seed=0)
    first = train_generator(out, steps=40, progress=False, **kw)
    lines: list[str] = []
    second = train_generator(out, steps=80, progress=False, log=lines.append, **kw)
    return out, first, second, lines


def test_training_lowers_the_held_out_denoising_loss_and_resumes(trained_tiny):
    out, first, second, lines = trained_tiny
    assert first["steps"] == 40 and second["steps"] == 80
    assert any("continuing from step_000000040" in line for line in lines)
    # the same fixed held-out batch (noise and timesteps fixed): 80 steps of training lower its loss clearly
    assert second["held_loss_after"] < 0.85 * first["held_loss_before"], (first, second)
    info = json.loads((out / "pixelrl_generator.json").read_text())
    assert info["kind"] == "ddpm" and info["steps"] == 80 and info["image_size"] == 16
    assert (out / "checkpoints").is_dir() and (out / "model_index.json").is_file()
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [20, 40, 60, 80]


def test_training_refuses_a_folder_of_another_run(trained_tiny):
    from pixelrl.genrl.generator import train_generator

    out = trained_tiny[0]
    with pytest.raises(ConfigError, match="holds a pretrain-generator run with other") as e:
        train_generator(out, steps=90, size="tiny", image_size=16, batch_size=4, progress=False)
    assert "\n" not in str(e.value)


def test_boundary_conditions_and_ddim_solver():
    import diffusers

    from pixelrl.genrl.generator import DDIMSolver, boundary_scalings

    c_skip, c_out = boundary_scalings(torch.tensor([0.0, 19.0, 999.0]))
    assert c_skip[0] == 1 and c_out[0] == 0  # f(x, 0) = x
    assert torch.allclose(c_skip[1], torch.tensor(0.25 / (190.0 ** 2 + 0.25)))
    assert c_out[2] > 0.999
    # the same scalings as diffusers' LCMScheduler
    sched = diffusers.LCMScheduler(timestep_scaling=10.0)
    assert sched.get_scalings_for_boundary_condition_discrete(19)[0] == pytest.approx(float(c_skip[1]))
    ac = diffusers.DDPMScheduler().alphas_cumprod
    solver = DDIMSolver(ac, 1000, 50)
    assert solver.timesteps[0] == 19 and solver.timesteps[-1] == 999
    assert solver.alpha_prev[0] == ac[0] and solver.alpha_prev[1] == ac[19]
    x0, eps = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    idx = torch.tensor([1, 1])
    assert torch.allclose(solver.step(x0, eps, idx), ac[19].sqrt() * x0 + (1 - ac[19]).sqrt() * eps)


def test_distill_writes_a_few_step_lcm_generator(trained_tiny, tmp_path):
    from pixelrl.genrl.generator import distill_consistency, lcm_sample, load_components, encode_prompts

    teacher = trained_tiny[0]
    out = tmp_path / "lcm"
    s = distill_consistency(teacher, out, steps=6, batch_size=4, time_cond_proj_dim=16, checkpoint_every=3,
                            warmup_steps=0, progress=False)
    assert s["steps"] == 6 and np.isfinite(s["loss"])
    index = json.loads((out / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "LCMScheduler"]
    info = json.loads((out / "pixelrl_generator.json").read_text())
    assert info["kind"] == "lcm" and info["teacher"] == str(teacher) and info["guidance_embedding"]
    unet, sched, text, tok = load_components(out)
    assert unet.config.time_cond_proj_dim == 16
    with torch.no_grad():
        images = lcm_sample(unet, sched, encode_prompts(tok, text, ["two red circles"] * 2), steps=2, guidance=3.0,
                            generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, 16, 16) and images.min() >= 0 and images.max() <= 1
    with pytest.raises(ConfigError, match="already a consistency model"):
        distill_consistency(out, tmp_path / "again", steps=1, progress=False)
