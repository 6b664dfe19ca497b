"""pixelrl.genrl.rewards: JPEG (in)compressibility as DDPO, the shapes verifier, the aesthetic MLP, the adapter of
pixelrl.rewards models, and make_reward's specs."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from pixelrl.errors import ConfigError, NotFoundError
from pixelrl.genrl.rewards import (AestheticMLP, ShapesVerifierReward, VerifierConfig, make_reward,
                                   train_verifier, write_aesthetic_folder)
from pixelrl.genrl.shapes_data import ShapesVocabulary, counts_array, parse_prompt, prompt_of, render_groups, \
    sample_batch, sample_groups


def test_jpeg_orders_flat_above_noise_and_matches_ddpo_formula():
    g = torch.Generator().manual_seed(0)
    flat = torch.full((1, 3, 32, 32), 0.5)
    noise = torch.rand((1, 3, 32, 32), generator=g)
    images = torch.cat([flat, noise])
    comp, incomp = make_reward("jpeg-compressibility"), make_reward("jpeg-incompressibility")
    r = comp(images, ["a", "b"])
    assert r.dtype == torch.float32 and r.shape == (2,)
    assert r[0] > r[1]  # the flat image is the more compressible
    assert torch.equal(incomp(images, ["a", "b"]), -r)
    # DDPO: PIL JPEG quality 95 of (x * 255).round() as uint8, size in kB = bytes / 1000
    from PIL import Image

    arr = (noise[0] * 255).round().clamp(0, 255).to(torch.uint8).numpy().transpose(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    assert float(incomp(noise, ["b"])[0]) == pytest.approx(buf.tell() / 1000, rel=1e-6)
    assert comp.name == "jpeg-compressibility" and comp.metadata(["x"]) == [{}]


def test_prompts_round_trip_and_render_counts():
    vocab = ShapesVocabulary(max_groups=2)
    rng = np.random.default_rng(0)
    groups = sample_groups(64, rng, vocab)
    for g in groups:
        assert parse_prompt(prompt_of(g), vocab) == g
    assert parse_prompt("A red circle and two Blue squares", vocab) == {("red", "circle"): 1, ("blue", "square"): 2}
    img = render_groups([{("red", "square"): 2}], rng, vocab, supersample=1)
    assert img.shape == (1, 3, 32, 32) and img.dtype == np.uint8
    red = (img[0, 0] == 255) & (img[0, 1] == 0) & (img[0, 2] == 0)
    side = vocab.scale * 32  # a square of side 0.16 of 32 px: about 26 px each, two of them, none overlapping
    assert 2 * (side - 1) ** 2 <= red.sum() <= 2 * (side + 1) ** 2
    assert counts_array([{("red", "square"): 2}], vocab)[0, vocab.pairs.index(("red", "square"))] == 2


@pytest.mark.parametrize("prompt", ["two red hexagons", "seven red circles", "red circles", "two purple circles"])
def test_parse_prompt_outside_vocabulary_is_one_line(prompt):
    with pytest.raises(ConfigError, match="not a shapes prompt") as e:
        parse_prompt(prompt, ShapesVocabulary())
    assert "\n" not in str(e.value)


@pytest.fixture(scope="module")
def tiny_verifier(tmp_path_factory):
    """A detector trained for a few seconds on an easy vocabulary (two colours, squares, one or two of them)."""
    vocab = ShapesVocabulary(colors=("red", "blue"), shapes=("square",), max_count=2, max_groups=2)
    out = tmp_path_factory.mktemp("verifier")
    summary = train_verifier(out, VerifierConfig(steps=120, batch_size=32, pool_images=600, width=8, lr=1e-2,
                                                 eval_images=128, vocabulary=vocab), progress=False)
    return out, vocab, summary


def test_verifier_rewards_ground_truth_one_and_mismatch_low(tiny_verifier):
    folder, vocab, summary = tiny_verifier
    assert (folder / "detector.safetensors").is_file() and summary["exact_match"] > 0.9
    rng = np.random.default_rng(5)
    groups = sample_groups(32, rng, vocab)
    images = torch.from_numpy(render_groups(groups, rng, vocab)).float() / 255
    reward = make_reward(f"shapes-verifier:{folder}")
    right = reward(images, [prompt_of(g) for g in groups])
    assert right.dtype == torch.float32 and right.shape == (32,)
    assert float(right.mean()) > 0.9 and float(reward.last_info["success"].float().mean()) > 0.9
    # the same images scored against prompts with every count changed (1 <-> 2): the detector finds none of them
    wrong = reward(images, [prompt_of({k: 3 - n for k, n in g.items()}) for g in groups])
    assert float(wrong.mean()) < 0.2 and float(reward.last_info["success"].float().mean()) < 0.2
    meta = reward.metadata(["two red squares"])
    assert meta == [{"requested": {"red square": 2}}]


def test_verifier_partial_credit_is_the_fraction_of_groups(tiny_verifier):
    folder, vocab, _ = tiny_verifier
    rng = np.random.default_rng(6)
    images = torch.from_numpy(render_groups([{("red", "square"): 2, ("blue", "square"): 1}], rng, vocab)).float() / 255
    reward = ShapesVerifierReward(folder)
    r = reward(images.repeat(3, 1, 1, 1), ["two red squares and one blue square", "two red squares and two blue squares",
                                           "two red squares"])
    assert r.tolist() == pytest.approx([1.0, 0.5, 1.0])
    assert reward.last_info["success"].tolist() == [True, False, False]  # an extra blue square is not exact


def test_count_threshold_rounds_faint_estimates_up_and_is_read_from_the_folder(tiny_verifier, tmp_path):
    import json
    import shutil

    from pixelrl.genrl.rewards import CountDetector

    det = CountDetector(2, 3, image_size=8, width=4)
    est = torch.tensor([[0.25, 1.35], [0.45, 2.6]])
    det.forward = lambda images: est[:len(images)]  # the estimates alone decide the rounding
    x = torch.zeros(2, 3, 8, 8)
    assert det.counts(x).tolist() == [[0, 1], [0, 3]]  # 0.5: the nearest integer
    assert det.counts(x, threshold=0.3).tolist() == [[0, 2], [1, 3]]  # 0.35 of the way to the next count is enough
    folder, vocab, _ = tiny_verifier
    assert ShapesVerifierReward(folder).threshold == 0.5  # detector.json written by train_verifier: 0.5
    low = tmp_path / "low"
    shutil.copytree(folder, low)
    meta = json.loads((low / "detector.json").read_text())
    meta["config"]["count_threshold"] = 0.3
    (low / "detector.json").write_text(json.dumps(meta))
    assert make_reward(f"shapes-verifier:{low}").threshold == 0.3
    assert ShapesVerifierReward(low, threshold=0.45).threshold == 0.45
    meta["config"]["count_threshold"] = 1.5
    (low / "detector.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="count_threshold"):
        ShapesVerifierReward(low)
    with pytest.raises(ConfigError, match="count_threshold"):
        VerifierConfig(count_threshold=0.0)


def test_partial_count_score_is_flow_grpo_geneval_score():
    from pixelrl.genrl.rewards import partial_count_score

    # 2 colours x 2 shapes, colour-major: (c0, s0), (c0, s1), (c1, s0), (c1, s1)
    want = torch.tensor([[2, 0, 0, 0]] * 5 + [[1, 0, 0, 2]])
    pred = torch.tensor([[2, 0, 0, 0],   # exact: class term 1, colour term 1
                         [1, 0, 1, 0],   # two of the shape but one of the colour: (1 + 0.5) / 2
                         [3, 0, 0, 0],   # one too many: class term 0.5, colour term 0 (class count wrong)
                         [0, 0, 0, 0],   # none: 0
                         [5, 0, 0, 0],   # far too many: class term 1 - 3/2 = -0.5, negative as GenEval's
                         [1, 0, 0, 1]])  # groups (1, 1) and (0.5, 0): mean of four terms
    r = partial_count_score(pred, want, 2, 2)
    assert r.tolist() == pytest.approx([1.0, 0.75, 0.25, 0.0, -0.25, 0.625])


def test_partial_verifier_spec_gives_credit_for_near_misses(tiny_verifier):
    folder, vocab, _ = tiny_verifier
    rng = np.random.default_rng(6)
    images = torch.from_numpy(render_groups([{("red", "square"): 2}], rng, vocab)).float() / 255
    strict, partial = make_reward(f"shapes-verifier:{folder}"), make_reward(f"shapes-verifier-partial:{folder}")
    prompts = ["two red squares", "one red square", "two blue squares"]
    assert strict(images.repeat(3, 1, 1, 1), prompts).tolist() == [1.0, 0.0, 0.0]
    # one red square asked, two found: class term 1 - 1/1 = 0; two blue asked, two squares found but none blue: 0.5
    assert partial(images.repeat(3, 1, 1, 1), prompts).tolist() == pytest.approx([1.0, 0.0, 0.5])
    assert partial.last_info["success"].tolist() == [True, False, False] and partial.name.startswith(
        "shapes-verifier-partial:")
    with pytest.raises(ConfigError, match="needs an argument"):
        make_reward("shapes-verifier-partial:")


def test_aesthetic_reward_is_the_laion_mlp_on_normalised_clip_embeddings(tmp_path):
    pytest.importorskip("transformers")
    from tests.rewards.conftest import save_tiny_clip

    clip = save_tiny_clip(tmp_path / "clip")
    torch.manual_seed(0)
    mlp = AestheticMLP(16)
    folder = write_aesthetic_folder(tmp_path / "aesthetic", clip, mlp_state=mlp.state_dict())
    reward = make_reward(f"aesthetic:{folder}")
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    r = reward(images, ["x"] * 3)
    assert r.shape == (3,) and r.dtype == torch.float32
    from pixelrl.rewards.vlm import load_clip

    emb = load_clip(str(clip)).embed_images((images * 255).round().to(torch.uint8))
    with torch.no_grad():
        want = mlp.eval()(emb / emb.norm(dim=-1, keepdim=True)).squeeze(1)
    assert torch.allclose(r, want, atol=1e-5)
    assert sorted(k for k in mlp.state_dict()) == sorted(f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7)
                                                          for p in ("weight", "bias"))


def test_model_reward_adapts_a_pixelrl_reward_model(tmp_path):
    pytest.importorskip("transformers")
    from tests.rewards.conftest import save_tiny_clip

    clip = save_tiny_clip(tmp_path / "clip")
    reward = make_reward("model:vlm:a red square", options={"model": str(clip)})
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    r = reward(images, ["p", "q"])
    assert r.shape == (2,) and r.dtype == torch.float32 and torch.isfinite(r).all()
    # the same as the VLM reward model on the uint8 frames
    import gymnasium as gym

    from pixelrl.rewards.base import RewardConfig, build_reward_model

    m = build_reward_model(RewardConfig(spec="vlm:a red square", model=str(clip)))
    m.bind(gym.spaces.Box(0, 255, (3, 32, 32), np.uint8), 1)
    obs = (images * 255).round().to(torch.uint8).numpy()
    assert np.allclose(r.numpy(), m(obs, next_obs=obs), atol=1e-6)


@pytest.mark.parametrize("spec, match", [
    ("jpeg", "not a generator reward"),
    ("aesthetic", "needs an argument"),
    ("shapes-verifier:", "needs an argument"),
    ("", "needs a spec"),
    ("clip:a dog", "not a generator reward"),
])
def test_bad_specs_are_one_line(spec, match):
    with pytest.raises(ConfigError, match=match) as e:
        make_reward(spec)
    assert "\n" not in str(e.value)


def test_missing_folders_are_one_line(tmp_path):
    for spec in (f"shapes-verifier:{tmp_path}", f"aesthetic:{tmp_path}"):
        with pytest.raises(NotFoundError) as e:
            make_reward(spec)
        assert "\n" not in str(e.value)


def test_generated_images_have_backgrounds_and_sprites():
    vocab = ShapesVocabulary()
    img, prompts, groups = sample_batch(16, np.random.default_rng(0), vocab)
    assert img.shape == (16, 3, 32, 32) and len(prompts) == 16
    assert all(parse_prompt(p, vocab) == g for p, g in zip(prompts, groups))


def test_verifier_augmentation_blurs_jitters_and_is_seeded():
    from pixelrl.genrl.rewards import augment_images

    img, _, _ = sample_batch(4, np.random.default_rng(0), ShapesVocabulary(max_groups=1), size=16)
    x = torch.from_numpy(img).float() / 255
    plain = VerifierConfig(noise=0.0, blur=0.0, jitter=0.0)
    flipped = augment_images(x, plain, torch.Generator().manual_seed(3))
    assert all(torch.equal(f, x[i]) or torch.equal(f, x[i].flip(-1)) for i, f in enumerate(flipped))
    blurred = augment_images(x, VerifierConfig(noise=0.0, blur=3.0, jitter=0.0), torch.Generator().manual_seed(3))
    # blur keeps the mean colour roughly but smooths: neighbouring pixels differ less than after the flip alone
    tv = lambda a: (a[..., 1:] - a[..., :-1]).abs().mean()  # noqa: E731
    assert tv(blurred) < 0.9 * tv(flipped)
    jit = augment_images(x, VerifierConfig(noise=0.0, blur=0.0, jitter=0.3), torch.Generator().manual_seed(3))
    assert not torch.allclose(jit, flipped) and jit.min() >= 0 and jit.max() <= 1
    full = VerifierConfig(noise=0.1, blur=1.5, jitter=0.15)
    a = augment_images(x, full, torch.Generator().manual_seed(5))
    assert torch.equal(a, augment_images(x, full, torch.Generator().manual_seed(5)))
    assert not torch.equal(a, augment_images(x, full, torch.Generator().manual_seed(6)))
    with pytest.raises(ConfigError, match="blur"):
        VerifierConfig(blur=-1.0)
    # the defaults (blur 0, jitter 0) are the old augmentation: a flip, then pixel noise, from the same draws
    g, d = torch.Generator().manual_seed(7), VerifierConfig()
    assert d.blur == 0 and d.jitter == 0
    flip = torch.rand(len(x), generator=g) < 0.5
    old = torch.where(flip[:, None, None, None], x.flip(-1), x)
    std = torch.rand(len(x), 1, 1, 1, generator=g) * d.noise
    old = (old + std * torch.randn(old.shape, generator=g)).clamp(0, 1)
    assert torch.equal(augment_images(x, d, torch.Generator().manual_seed(7)), old)


def test_one_shape_task_sets_both_vocabularies_and_renders_one_large_shape():
    """--task one-shape: the generator's vocabulary is one large shape on flat grey (12 prompts), the verifier's
    also holds two shapes; a config round-trips through JSON; a conflicting --vocabulary is one error line."""
    from pixelrl.genrl.generator import GeneratorTrainConfig
    from pixelrl.genrl.rewards import VerifierConfig
    from pixelrl.genrl.shapes_data import TASKS
    from pixelrl.utils.dataclass_io import from_dict, to_dict

    g = GeneratorTrainConfig(task="one-shape")
    assert g.vocabulary == TASKS["one-shape"].generator and g.vocabulary.max_count == 1
    assert from_dict(GeneratorTrainConfig, to_dict(g), where="test") == g
    assert GeneratorTrainConfig().vocabulary == ShapesVocabulary() == GeneratorTrainConfig(task="scenes").vocabulary
    v = VerifierConfig(task="one-shape")
    assert v.vocabulary.max_groups == 2 and v.vocabulary.scale == g.vocabulary.scale
    prompts = {prompt_of(x) for x in sample_groups(400, np.random.default_rng(0), g.vocabulary)}
    assert len(prompts) == 12 and all(p.startswith("one ") for p in prompts)
    rng = np.random.default_rng(1)
    groups = sample_groups(64, rng, v.vocabulary)
    img = render_groups(groups, rng, v.vocabulary, size=32)  # two large shapes fit without overlap
    bg = img[:, :, 0, 0].astype(int)  # flat background: the corner pixel's colour fills most of the image
    covered = (np.abs(img.astype(int) - bg[:, :, None, None]).sum(1) > 30).mean(axis=(1, 2))
    ones = np.array([sum(x.values()) == 1 for x in groups])
    assert 0.05 < covered[ones].mean() < 0.2 and covered[~ones].mean() > 1.5 * covered[ones].mean()
    with pytest.raises(ConfigError, match="unknown"):
        GeneratorTrainConfig(task="nope")
    with pytest.raises(ConfigError, match="sets the vocabulary"):
        VerifierConfig(task="one-shape", vocabulary=ShapesVocabulary(max_count=3))


def test_cli_verifier_keeps_its_two_group_vocabulary_default_and_takes_task():
    """The command line parses into unchecked copies of the configs; their nested vocabulary default must be the
    verifier's (up to 2 groups), not ShapesVocabulary's own (1), or --task one-shape would see a conflict."""
    from pixelrl.cli.genrl_models import _PretrainVerifier, _config
    from pixelrl.cli.main import _unchecked

    cls = _unchecked(_PretrainVerifier)
    assert _config(VerifierConfig, cls(), "t").vocabulary == ShapesVocabulary(max_groups=2)
    assert _config(VerifierConfig, cls(task="one-shape"), "t").vocabulary.scale == 0.3
