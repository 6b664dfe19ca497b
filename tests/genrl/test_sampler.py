"""The denoising MDP: loading, schedules (the sigma = 0 trap), and log-probabilities recomputed exactly as sampled."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from pixelrl.errors import ConfigError, NotFoundError
from pixelrl.genrl.model import load_generator
from pixelrl.genrl.sampler import _mean_std, _model_output, make_schedule, sample, step_log_prob


@pytest.fixture(scope="module")
def gen(tiny_generator):
    return load_generator(tiny_generator)


@pytest.fixture(scope="module")
def lcm(tiny_lcm_generator):
    return load_generator(tiny_lcm_generator)


def test_load_generator_components(gen, lcm):
    assert gen.kind == "ddpm" and lcm.kind == "lcm" and gen.vae is None
    c, h, w = gen.latent_shape
    assert c == 3 and h == w
    emb = gen.encode_prompts(["a red circle", "two blue squares"])
    assert emb.shape[0] == 2 and emb.ndim == 3
    img = gen.decode(torch.linspace(-3, 3, 2 * 3 * h * w).reshape(2, 3, h, w))
    assert img.min() == 0 and img.max() == 1


def test_load_generator_bad_folders(tmp_path, tiny_generator):
    with pytest.raises(NotFoundError, match="not found"):
        load_generator(tmp_path / "nothing")
    bad = tmp_path / "bad"
    shutil.copytree(tiny_generator, bad)
    index = json.loads((bad / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", "EulerDiscreteScheduler"]
    (bad / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ConfigError, match="EulerDiscreteScheduler is not supported"):
        load_generator(bad)


def test_sigma_zero_trap_is_avoided(tmp_path, tiny_generator):
    """A DDIM scheduler from defaults (leading spacing, steps_offset 0) ends at timestep 0, where sigma = 0 and the
    log-prob is 0/0; the schedule moves to steps_offset = 1 and every step has sigma > 0 and a finite log-prob."""
    folder = tmp_path / "leading"
    shutil.copytree(tiny_generator, folder)
    cfg_path = folder / "scheduler" / "scheduler_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(timestep_spacing="leading", steps_offset=0, set_alpha_to_one=True)
    cfg_path.write_text(json.dumps(cfg))
    g = load_generator(folder)
    from diffusers import DDIMScheduler

    naive = DDIMScheduler.from_config(g.scheduler.config)
    naive.set_timesteps(4)
    assert int(naive.timesteps[-1]) == 0  # the trap is really there
    s = make_schedule(g, 4)
    assert s.notes and "steps_offset = 1" in s.notes[0]
    assert int(s.timesteps[-1]) > 0 and bool((s.std > 0).all())
    traj = sample(g, s, ["a red circle"] * 2, guidance=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(traj.log_probs).all()
    with pytest.raises(ConfigError, match="eta must be > 0"):
        make_schedule(g, 4, eta=0.0)


def test_lcm_last_step_keeps_sigma_and_decodes_f_theta(lcm):
    s = make_schedule(lcm, 4)
    assert s.kind == "lcm" and s.steps == 4
    assert float(s.alpha_prev[-1]) == float(s.alpha_t[-1])  # RLCM: the last step uses its own timestep
    assert bool((s.std > 0).all())
    traj = sample(lcm, s, ["a red circle"] * 2, guidance=8.0, generator=torch.Generator().manual_seed(0))
    j = torch.full((2,), s.steps - 1)
    with torch.no_grad():
        x = traj.latents[:, -2]
        out = _model_output(lcm, lcm.unet, s, x, j, traj.embeds, None, 8.0)
        _, _, denoised = _mean_std(s, j, x, out)
    assert torch.allclose(traj.images, lcm.decode(denoised), atol=1e-6)
    assert not torch.allclose(traj.images, lcm.decode(traj.latents[:, -1]), atol=1e-3)


@pytest.mark.parametrize("which,guidance", [("gen", 5.0), ("lcm", 8.0)])
def test_recomputed_log_probs_give_ratio_one(which, guidance, gen, lcm):
    g = gen if which == "gen" else lcm
    s = make_schedule(g, 3)
    uncond = g.encode_prompts([""]) if s.kind == "ddim" else None
    prompts = ["a red circle", "two blue squares", "a green triangle", "a red circle"]
    traj = sample(g, s, prompts, guidance=guidance, generator=torch.Generator().manual_seed(1), uncond=uncond)
    assert traj.latents.shape[:2] == (4, 4) and traj.log_probs.shape == (4, 3)
    assert traj.latents.device.type == "cpu"
    for j in range(s.steps):
        idx = torch.full((4,), j)
        lp = step_log_prob(g, s, traj.latents[:, j], traj.latents[:, j + 1], idx, traj.embeds, uncond, guidance)
        assert torch.equal(lp.detach(), traj.log_probs[:, j])  # the same batch: bit for bit
        sub = torch.tensor([2, 0])  # another minibatch (other size, order, mixed timesteps): float error only
        mixed = torch.tensor([j, (j + 1) % s.steps])
        lp2 = step_log_prob(g, s, traj.latents[sub, mixed], traj.latents[sub, mixed + 1], mixed, traj.embeds[sub],
                            uncond, guidance)
        ratio = torch.exp(lp2.detach() - traj.log_probs[sub, mixed])
        assert (ratio - 1).abs().max() < 1e-5
    assert lp.requires_grad


def test_same_seed_same_trajectories(gen):
    s = make_schedule(gen, 2)
    a = sample(gen, s, ["x", "y"], guidance=1.0, generator=torch.Generator().manual_seed(3))
    b = sample(gen, s, ["x", "y"], guidance=1.0, generator=torch.Generator().manual_seed(3))
    c = sample(gen, s, ["x", "y"], guidance=1.0, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.latents, b.latents) and torch.equal(a.log_probs, b.log_probs)
    assert not torch.equal(a.latents, c.latents)


def test_latent_generator_with_vae(tmp_path, tiny_generator):
    """A Stable-Diffusion-like folder (vae/ + a 4-channel latent unet) loads, samples and decodes to RGB images."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    folder = tmp_path / "latent"
    shutil.copytree(tiny_generator, folder)
    unet_cfg = dict(UNet2DConditionModel.load_config(folder / "unet"))
    unet_cfg.update(in_channels=4, out_channels=4, sample_size=8)
    shutil.rmtree(folder / "unet")
    torch.manual_seed(0)
    UNet2DConditionModel.from_config(unet_cfg).save_pretrained(folder / "unet")
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8),
                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  norm_num_groups=4, sample_size=16).save_pretrained(folder / "vae")
    index = json.loads((folder / "model_index.json").read_text())
    index["vae"] = ["diffusers", "AutoencoderKL"]
    (folder / "model_index.json").write_text(json.dumps(index))
    g = load_generator(folder)
    assert g.vae is not None and g.latent_shape == (4, 8, 8)
    s = make_schedule(g, 2)
    traj = sample(g, s, ["a red circle"] * 2, guidance=5.0, generator=torch.Generator().manual_seed(0))
    assert traj.latents.shape == (2, 3, 4, 8, 8) and traj.images.shape == (2, 3, 16, 16)
    assert 0 <= float(traj.images.min()) and float(traj.images.max()) <= 1
    uncond = g.encode_prompts([""])
    lp = step_log_prob(g, s, traj.latents[:, 1], traj.latents[:, 2], torch.full((2,), 1), traj.embeds, uncond, 5.0)
    assert torch.equal(lp.detach(), traj.log_probs[:, 1])
