"""metaworld/ ids: DrM's and MENTOR's corner-camera pixels, episode length, success in info and in eval rows."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

pytest.importorskip("metaworld", reason="metaworld is not installed: pip install 'pixelrl[metaworld]'")

from pixelrl.cli.main import main  # noqa: E402
from pixelrl.envs import action_kind, list_envs, make  # noqa: E402
from pixelrl.envs.metaworld import CAMERA, CAMERA_POS, STATIC_TASKS, MetaWorldEnv, all_tasks  # noqa: E402
from pixelrl.errors import ConfigError, UnknownEnvError  # noqa: E402


def test_ids_match_the_installed_tasks():
    assert set(STATIC_TASKS) == set(all_tasks())  # the static list (suggestions without the package) is current
    ids = list_envs("metaworld")
    assert len(ids) == 50 and "metaworld/assembly-v3" in ids
    assert action_kind("metaworld/assembly-v3") == "continuous"


def test_unknown_task_lists_close_matches():
    with pytest.raises(UnknownEnvError, match="did you mean: metaworld/assembly-v3"):
        make("metaworld/asembly-v3")
    with pytest.raises(ConfigError, match="unknown option"):
        make("metaworld/reach-v3", max_episode_steps=10)


def test_pixels_of_the_corner_camera():
    env = make("metaworld/assembly", seed=0, size=48, fast_render=True)  # DrM's task-file name, without -v3
    try:
        assert env.get_wrapper_attr("env_id") == "metaworld/assembly-v3"
        assert env.get_wrapper_attr("action_repeat") == 2 and env.get_wrapper_attr("frame_stack") == 3
        assert env.observation_space.shape == (9, 48, 48) and env.action_space.shape == (4,)
        obs, _ = env.reset()
        assert obs.shape == (9, 48, 48) and obs.dtype == np.uint8 and obs.std() > 10  # a scene, not a blank
        base = env.unwrapped
        assert isinstance(base, MetaWorldEnv)
        model = base._env.model
        assert model.camera(base.camera).name == CAMERA
        assert np.allclose(model.cam_pos[base.camera], CAMERA_POS)
        # corner2 is defined upside down (its up axis points down in the world), for mujoco-py's bottom-row-first
        # frames; the env flips the bindings' top-row-first render back, so the table is upright as in DrM's frames
        assert base._env.data.cam_xmat[base.camera].reshape(3, 3)[2, 1] < 0
        import mujoco

        with mujoco.Renderer(model, height=48, width=48) as raw:
            raw.update_scene(base._env.data, camera=base.camera)
            assert np.array_equal(base.render(), raw.render()[::-1])
        obs2, _, _, _, info = env.step(np.zeros(4, np.float32))
        assert info["frames"] == 2 and obs2.shape == (9, 48, 48)
    finally:
        env.close()


def test_seeded_resets_and_episode_length():
    env = MetaWorldEnv("reach-v3", size=16, fast_render=True)
    try:
        a, _ = env.reset(seed=3)
        b, _ = env.reset(seed=3)
        c, _ = env.reset(seed=4)
        assert np.array_equal(a, b) and not np.array_equal(a, c)  # the goal moves between seeds, not within one
        steps, truncated = 0, False
        while not truncated:
            _, _, terminated, truncated, _ = env.step(np.zeros(4, np.float32))
            assert not terminated
            steps += 1
        assert steps == 500  # Meta-World's episode: 250 agent steps at action repeat 2, as in DrM and MENTOR
    finally:
        env.close()


def test_success_is_reported_and_sticky():
    """Meta-World's scripted reach policy succeeds within a few steps; is_success stays true for the rest of the
    episode (DrM's episode success: any step) and is false again after a reset."""
    from metaworld.policies import ENV_POLICY_MAP

    env = make("metaworld/reach-v3", seed=0, size=16, fast_render=True, obs="pixels+state")
    policy = ENV_POLICY_MAP["reach-v3"]()
    try:
        obs, info = env.reset(seed=5)
        assert info["is_success"] is False
        seen = []
        for _ in range(60):
            obs, _, _, _, info = env.step(policy.get_action(obs["state"].astype(np.float64)))
            seen.append((info["success"], info["is_success"]))
        assert any(s == 1.0 for s, _ in seen), "the scripted policy never reached the goal"
        first = next(i for i, (s, _) in enumerate(seen) if s == 1.0)
        assert not any(sticky for _, sticky in seen[:first]) and all(sticky for _, sticky in seen[first:])
        for _ in range(5):  # moving away keeps the episode's success
            obs, _, _, _, info = env.step(np.array([1.0, 1.0, 1.0, 0.0], np.float32))
        assert info["is_success"] is True
        _, info = env.reset(seed=6)
        assert info["is_success"] is False
    finally:
        env.close()


@pytest.mark.slow
@pytest.mark.parametrize("agent", ["drm", "mentor"])
def test_tiny_run_reports_success_rate(tmp_path, agent):
    """The DrM and MENTOR presets train on a Meta-World task through the CLI with their Meta-World settings; eval
    rows and the summary carry the success rate."""
    from pixelrl.train.logger import read_rows

    run = tmp_path / "run"
    args = ["train", "--env", "metaworld/reach-v3", "--agent", agent, "--preset", "none", "--size", "32",
            "--action-repeat", "8", "--fast-render", "--frames", "500", "--eval-every-frames", "500",
            "--eval-episodes", "1", "--no-eval-random", "--threads", "1", "--device", "cpu", "--no-progress",
            "--no-video", "--no-tensorboard", "--agent.batch-size", "4", "--agent.hidden-dim", "8",
            "--agent.feature-dim", "4", "--agent.encoder-channels", "4", "4", "4", "4", "--agent.num-seed-steps",
            "40", "--agent.precision", "fp32", "--run-dir", str(run)]
    assert main(args) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["env"] == "metaworld/reach-v3" and cfg["agent"]["drm"]["lambda_const"] == 0.5
    if agent == "mentor":
        assert cfg["agent"]["mentor"]["perturb_interval"] == 50_000
    evals = read_rows(run, "eval")
    assert evals and all(r["eval_length"] == 63 and r["success_rate"] in (0.0, 1.0) for r in evals)
    train = read_rows(run, "train")  # training episodes carry their success too (DrM's episode_success_rate)
    assert train and all(r["episode_success"] in (0.0, 1.0) for r in train)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final_success_rate"] == evals[-1]["success_rate"]


def test_drm_and_mentor_presets_take_the_authors_metaworld_files():
    from pixelrl.train.setup import build_config

    for agent in ("drm", "mentor"):
        cfg = build_config("metaworld/assembly-v3", agent, "paper", "cpu", fill_run_dir=False)
        assert cfg.frames == 2_100_000 and cfg.agent.stddev_schedule == "linear(1.0,0.1,500000)"
        assert (cfg.agent.nstep, cfg.agent.discount) == (10, 0.97)  # floor(3 + 7), 0.997 - 0.02 - 0.007
        assert cfg.agent.drm.lambda_const == 0.5
    dmc = build_config("dmc/cheetah-run", "drm", "paper", "cpu", fill_run_dir=False)
    assert (dmc.agent.nstep, dmc.agent.discount, dmc.frames) == (3, 0.99, 3_100_000)


def test_a_first_render_that_fails_names_the_gl_backend(monkeypatch):
    import mujoco

    env = MetaWorldEnv("reach-v3", size=16)
    try:
        def broken(*args, **kwargs):
            raise OSError("no EGL display")

        monkeypatch.setattr(mujoco, "Renderer", broken)
        with pytest.raises(RuntimeError, match=r"rendering metaworld/reach-v3 failed with MUJOCO_GL=.*no EGL display.*"
                                               r"MUJOCO_GL=osmesa"):
            env.render()
        with pytest.raises(OSError, match="no EGL display"):  # later failures are the renderer's own
            env.render()
    finally:
        env.close()


def test_without_the_package_one_line_says_how_to_install(monkeypatch):
    from pixelrl.errors import MissingExtraError

    for name in ("metaworld", "metaworld.env_dict"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingExtraError) as info:
        make("metaworld/reach-v3")
    msg = str(info.value)
    assert "\n" not in msg and "pip install 'pixelrl[metaworld]' && pip install --no-deps metaworld==3.1.1" in msg
