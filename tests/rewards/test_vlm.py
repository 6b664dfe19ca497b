"""VLM-RM: the reward formula on hand-made embeddings, the authors' preprocessing, the real transformers loading
path on a tiny saved CLIP, batching, caching, checkpoints, and one line for each bad input."""

from __future__ import annotations

import json
import shutil
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import through_checkpoint
from pixelrl.errors import ConfigError, MissingExtraError
from pixelrl.rewards import RewardConfig, build_reward_model
from pixelrl.rewards.vlm import (OPENAI_MEAN, OPENAI_STD, VLMRewardModel, load_clip, preprocess, projection_matrix,
                                 vlm_reward)
from rewards.conftest import IMAGE_SIZE, save_tiny_clip


def _unit(v) -> torch.Tensor:
    v = torch.as_tensor(v, dtype=torch.float32)
    return v / v.norm(dim=-1, keepdim=True)


class HandMade:
    """An embedder with fixed prompt vectors; an image's embedding is row ``frame[0, 0, 0]`` of ``images``."""

    def __init__(self, text: dict[str, list[float]], images: torch.Tensor | None = None) -> None:
        self.text, self.images, self.text_calls = text, images, 0

    def embed_text(self, prompts):
        self.text_calls += 1
        return _unit([self.text[p] for p in prompts])

    def embed_images(self, frames):
        return _unit(self.images[frames[:, 0, 0, 0].long()])


def _authors_reward(x, target, baseline, alpha):
    """vlmrm/reward_model.py CLIPReward (compute_projection + forward), transcribed."""
    direction = target - baseline
    projection = direction.T @ direction / torch.norm(direction) ** 2
    identity = torch.diag(torch.ones(projection.shape[0]))
    projection = alpha * projection + (1 - alpha) * identity
    x = x / torch.norm(x, dim=-1, keepdim=True)
    return 1 - (torch.norm((x - target) @ projection, dim=-1) ** 2) / 2


# ------------------------------------------------------------------------------------------- the formula


def test_alpha_0_with_one_goal_prompt_is_cosine_similarity():
    g = torch.Generator().manual_seed(0)
    goal = torch.randn(8, generator=g)
    x = torch.randn(20, 8, generator=g) * 3  # not normalised: the reward normalises
    m = VLMRewardModel(HandMade({"goal": goal.tolist()}), ["goal"], alpha=0.0)
    r = m.rewards_from_embeddings(x)
    assert torch.allclose(r, F.cosine_similarity(x, goal[None], dim=-1), atol=1e-6)


def test_alpha_0_with_several_goal_prompts_is_the_mean_embeddings_scaled_cosine_plus_a_constant():
    g = torch.Generator().manual_seed(1)
    prompts = {f"p{i}": torch.randn(8, generator=g).tolist() for i in range(3)}
    x = torch.randn(20, 8, generator=g)
    m = VLMRewardModel(HandMade(prompts), list(prompts), alpha=0.0)
    mean = _unit(list(prompts.values())).mean(0)  # the mean of normalised embeddings, not renormalised
    assert mean.norm() < 0.99
    assert torch.allclose(m.goal[0], mean)
    expected = mean.norm() * F.cosine_similarity(x, mean[None], dim=-1) + (1 - mean.norm() ** 2) / 2
    assert torch.allclose(m.rewards_from_embeddings(x), expected, atol=1e-6)


def test_alpha_1_counts_only_the_component_along_goal_minus_baseline():
    # goal - baseline points along e0: two frames with the same e0 component get the same reward at alpha = 1
    text = {"goal": [1.0, 0.0, 0.0], "base": [0.0, 0.0, 1.0]}
    x = torch.tensor([[0.6, 0.8, 0.0], [0.6, 0.0, 0.8], [0.6, -0.8, 0.0], [0.9, 0.43588989, 0.0]])
    m1 = VLMRewardModel(HandMade(text), ["goal"], ["base"], alpha=1.0)
    r = m1.rewards_from_embeddings(x)
    d = torch.tensor([1.0, 0.0, -1.0]) / 2 ** 0.5
    expected = 1 - ((x - torch.tensor([1.0, 0.0, 0.0])) @ d) ** 2 / 2
    assert torch.allclose(r, expected, atol=1e-6)
    assert torch.allclose(r[0], r[2]) and not torch.allclose(r[0], r[1])  # only the d-component counts
    assert r[3] > r[0]  # closer to the goal along d
    m0 = VLMRewardModel(HandMade(text), ["goal"], ["base"], alpha=0.0)
    r0 = m0.rewards_from_embeddings(x)
    assert torch.allclose(r0[0], r0[2]) and torch.allclose(r0, x @ torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)
    # the projection is idempotent at alpha = 1 and the identity at 0
    P = projection_matrix(m1.goal, m1.baseline, 1.0)
    assert torch.allclose(P @ P, P, atol=1e-6) and torch.allclose(projection_matrix(m1.goal, None, 0.0), torch.eye(3))


@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.5, 1.0])
def test_matches_the_authors_clip_reward(alpha):
    g = torch.Generator().manual_seed(2)
    text = {f"g{i}": torch.randn(16, generator=g).tolist() for i in range(2)}
    text.update({f"b{i}": torch.randn(16, generator=g).tolist() for i in range(2)})
    x = torch.randn(32, 16, generator=g)
    m = VLMRewardModel(HandMade(text), ["g0", "g1"], ["b0", "b1"], alpha=alpha)
    target = _unit([text["g0"], text["g1"]]).mean(0, keepdim=True)
    baseline = _unit([text["b0"], text["b1"]]).mean(0, keepdim=True)
    assert torch.allclose(m.rewards_from_embeddings(x), _authors_reward(x, target, baseline, alpha), atol=1e-6)
    assert torch.allclose(vlm_reward(x, target, projection_matrix(target, baseline, alpha)),
                          _authors_reward(x, target, baseline, alpha), atol=1e-6)


def test_the_model_scores_the_newest_frame_of_next_obs_in_chunks_with_prompts_embedded_once():
    g = torch.Generator().manual_seed(3)
    images = torch.randn(10, 4, generator=g)
    emb = HandMade({"goal": [1.0, 0, 0, 0], "base": [0, 1.0, 0, 0]}, images)
    m = VLMRewardModel(emb, ["goal"], ["base"], alpha=0.5, batch_size=3)
    m.bind(gym.spaces.Box(0, 255, (9, 4, 4), np.uint8), 3)
    obs = np.zeros((10, 9, 4, 4), np.uint8)
    obs[:, 6] = np.arange(10)[:, None, None]  # the newest frame (channels 6..8) names the image
    obs[:, 0] = 9 - np.arange(10)[:, None, None]  # older frames are ignored
    r = m(None, next_obs=obs)
    assert r.dtype == np.float32 and r.shape == (10,)
    assert np.allclose(r, m.rewards_from_embeddings(images).numpy(), atol=1e-6)
    assert np.allclose(m(obs), r)  # no next_obs: obs itself is scored
    assert emb.text_calls == 2  # goal and baseline, at construction only


def test_goal_and_baseline_with_the_same_embedding_cannot_be_projected():
    with pytest.raises(ConfigError, match="same CLIP embedding"):
        VLMRewardModel(HandMade({"a": [1.0, 0.0], "b": [2.0, 0.0]}), ["a"], ["b"], alpha=0.5)
    with pytest.raises(ConfigError, match="same length"):
        VLMRewardModel(HandMade({"a": [1.0, 0.0], "b": [0.0, 1.0]}), ["a", "b"], ["b"], alpha=0.5)


# ------------------------------------------------------------------------------------------- preprocessing


def test_preprocessing_resizes_straight_to_the_square_and_normalises_with_openai_statistics():
    frames = np.zeros((2, 3, 40, 60), np.uint8)
    frames[0] = 200
    frames[1, :, :, :30] = 255  # left half white, right half black
    x = preprocess(torch.from_numpy(frames), 24)
    assert x.shape == (2, 3, 24, 24)  # aspect ratio not kept, nothing cropped
    mean, std = torch.tensor(OPENAI_MEAN).view(3, 1, 1), torch.tensor(OPENAI_STD).view(3, 1, 1)
    assert torch.allclose(x[0], ((200 / 255 - mean) / std).expand(3, 24, 24), atol=1e-5)  # bicubic keeps constants
    assert torch.allclose(x[1, :, :, :10], ((1 - mean) / std).expand(3, 24, 10), atol=1e-5)  # the left half stays
    # frames already S x S are only scaled and normalised
    same = preprocess(torch.from_numpy(frames[:, :, :24, :24]), 24)
    assert torch.equal(same, (torch.from_numpy(frames[:, :, :24, :24]).float() / 255 - mean) / std)
    # the authors' resize: bicubic, align_corners=False, no antialiasing
    ref = F.interpolate(torch.from_numpy(frames).float() / 255, size=(24, 24), mode="bicubic", align_corners=False)
    assert torch.allclose(x, (ref - mean) / std, atol=1e-6)


# ------------------------------------------------------------------------------------------- a real (tiny) CLIP


def _frames(n: int, size: int = IMAGE_SIZE, seed: int = 0, stack: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3 * stack, size, size), dtype=np.uint8)


def test_loaded_clip_reward_at_alpha_0_is_clips_own_image_text_similarity(tiny_clip):
    import transformers as tf

    m = build_reward_model(RewardConfig("vlm:a pole standing upright", model=str(tiny_clip)), device="cpu")
    frames = _frames(6)
    r = m(next_obs=frames)
    model = tf.CLIPModel.from_pretrained(tiny_clip).eval()
    tok = tf.AutoTokenizer.from_pretrained(tiny_clip)(["a pole standing upright"], return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"],
                    pixel_values=preprocess(torch.from_numpy(frames[:, -3:]), IMAGE_SIZE))
        cosine = (out.logits_per_image / model.logit_scale.exp())[:, 0].numpy()
    assert np.allclose(r, cosine, atol=1e-5)
    assert len(set(np.round(r, 6))) == 6  # different frames, different rewards


def test_batched_rewards_equal_one_by_one_and_resizing_frames_works(tiny_clip):
    cfg = RewardConfig("vlm:a pole standing upright|a balanced pole", baseline="a cartpole|a cart",
                       model=str(tiny_clip), batch_size=4)
    m = build_reward_model(cfg)
    assert m.alpha == 0.5 and cfg.alpha == 0.5  # resolved: a baseline is given
    frames = _frames(11, size=48, seed=1)  # resized to the model's 32 x 32
    batched = m(next_obs=frames)
    single = np.concatenate([m(next_obs=frames[i:i + 1]) for i in range(len(frames))])
    assert np.allclose(batched, single, atol=1e-5)
    one_pass = build_reward_model(RewardConfig(cfg.spec, baseline=cfg.baseline, model=str(tiny_clip), batch_size=64))
    assert np.allclose(one_pass(next_obs=frames), batched, atol=1e-5)


def test_prompt_embeddings_are_computed_once(tiny_clip):
    m = build_reward_model(RewardConfig("vlm:a pole standing upright", model=str(tiny_clip)))

    def no_text(*a, **k):
        raise AssertionError("the text tower ran again")

    m.embedder.model.get_text_features = no_text
    assert np.isfinite(m(next_obs=_frames(3))).all()


def test_checkpoint_state_round_trips_and_a_changed_model_is_refused(tiny_clip, tmp_path):
    cfg = RewardConfig("vlm:a pole standing upright", baseline="a cartpole", model=str(tiny_clip))
    m = build_reward_model(cfg)
    m.load_state_dict(through_checkpoint(m.state_dict()))  # the same model: accepted
    other = build_reward_model(RewardConfig(cfg.spec, baseline=cfg.baseline,
                                            model=str(save_tiny_clip(tmp_path / "other", seed=1))))
    with pytest.raises(ConfigError, match="CLIP model or the prompts changed"):
        other.load_state_dict(through_checkpoint(m.state_dict()))


def test_loading_draws_no_random_numbers_of_the_run(tiny_clip):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_clip(str(tiny_clip))
    assert torch.equal(torch.rand(3), expected)


# ------------------------------------------------------------------------------------------- bad input: one line each


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_a_folder_without_config_json_is_not_a_clip_model(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(ConfigError) as e:
        load_clip(str(tmp_path / "m"))
    assert "not a CLIP model folder" in _one_line(e) and "hf download" in str(e.value)


def test_a_folder_holding_another_model_type_is_refused(tmp_path, tiny_clip):
    folder = tmp_path / "bert"
    shutil.copytree(tiny_clip, folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    with pytest.raises(ConfigError) as e:
        load_clip(str(folder))
    assert "'bert' model, not a CLIP model" in _one_line(e)


def test_a_clip_config_without_weights_says_what_is_missing(tmp_path, tiny_clip):
    folder = tmp_path / "noweights"
    shutil.copytree(tiny_clip, folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ConfigError) as e:
        load_clip(str(folder))
    assert "cannot load a CLIP model" in _one_line(e) and "model.safetensors" in str(e.value)


def test_incomplete_weights_are_refused_rather_than_filled_with_random_ones(tmp_path, tiny_clip):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "partial"
    shutil.copytree(tiny_clip, folder)
    weights = load_file(folder / "model.safetensors")
    del weights["text_projection.weight"]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ConfigError) as e:
        load_clip(str(folder))
    assert "lack 1 tensor" in _one_line(e) and "text_projection" in str(e.value)


def test_a_missing_folder_or_uncached_hub_id_says_how_to_get_a_model(tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as e:
        load_clip(str(tmp_path / "no" / "such" / "folder"))
    assert "no such folder" in _one_line(e) and "--reward.model DIR" in str(e.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network here: only the (empty) cache is looked at
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(ConfigError) as e:
        load_clip("openai/clip-vit-base-patch32")
    msg = _one_line(e)
    assert "not in the Hugging Face cache" in msg
    assert "hf download openai/clip-vit-base-patch32 --local-dir DIR" in msg and "--reward.model DIR" in msg


def test_without_transformers_the_extra_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingExtraError, match=r"pixelrl\[rewards\]"):
        load_clip("anything")


@pytest.mark.parametrize("space, stack, needle", [
    (gym.spaces.Box(-1, 1, (5,), np.float32), 1, "not uint8 [C, H, W] images"),
    (gym.spaces.Box(0, 255, (4, 84, 84), np.uint8), 4, "1-channel frames"),
    (gym.spaces.Dict({"state": gym.spaces.Box(-1, 1, (5,), np.float32)}), 1, "no 'pixels' entry"),
])
def test_observations_that_are_not_rgb_frames_are_refused(space, stack, needle):
    m = VLMRewardModel(HandMade({"g": [1.0, 0.0]}), ["g"])
    with pytest.raises(ConfigError) as e:
        m.bind(space, stack)
    assert needle in _one_line(e)


def test_dict_observations_use_their_pixels_and_float_frames_are_refused():
    images = torch.eye(3)
    m = VLMRewardModel(HandMade({"g": [1.0, 0.0, 0.0]}, images), ["g"])
    m.bind(gym.spaces.Dict({"pixels": gym.spaces.Box(0, 255, (6, 4, 4), np.uint8),
                            "state": gym.spaces.Box(-1, 1, (2,), np.float32)}), 2)
    obs = {"pixels": np.zeros((3, 6, 4, 4), np.uint8), "state": np.zeros((3, 2), np.float32)}
    obs["pixels"][:, 3] = np.arange(3)[:, None, None]
    assert np.allclose(m(next_obs=obs), [1.0, 0.0, 0.0], atol=1e-6)
    with pytest.raises(ConfigError) as e:
        m(next_obs=np.zeros((2, 6, 4, 4), np.float32))
    assert "uint8" in _one_line(e)
