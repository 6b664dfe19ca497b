"""make(): dmc / gym / ale envs, seeding, episode ends, errors."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from pixelrl.envs import list_envs, make
from pixelrl.errors import ConfigError, MissingExtraError, UnknownEnvError

HAS_DMC = importlib.util.find_spec("dm_control") is not None
HAS_MUJOCO = importlib.util.find_spec("mujoco") is not None
HAS_ALE = importlib.util.find_spec("ale_py") is not None and importlib.util.find_spec("cv2") is not None
dmc = pytest.mark.skipif(not HAS_DMC, reason="dm_control not installed (pip install 'pixelrl[dmc]')")
gymmj = pytest.mark.skipif(not HAS_MUJOCO, reason="mujoco not installed (pip install 'pixelrl[gym]')")


def rollout(env, seed, n, rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    obs, _ = env.reset(seed=seed)
    out = [obs]
    rewards = []
    for _ in range(n):
        a = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        obs, r, *_ = env.step(a)
        out.append(obs)
        rewards.append(r)
    return out, rewards


# ------------------------------------------------------------------------------------------------ dmc


@dmc
def test_dmc_pixels_shape_dtype_and_attrs():
    env = make("dmc/cartpole-swingup", size=32)
    assert env.observation_space.shape == (9, 32, 32) and env.observation_space.dtype == np.uint8
    assert env.action_space.shape == (1,) and env.action_space.dtype == np.float32
    assert env.action_space.low.tolist() == [-1] and env.action_space.high.tolist() == [1]
    obs, _ = env.reset()
    assert obs.shape == (9, 32, 32) and obs.dtype == np.uint8
    np.testing.assert_array_equal(obs[:3], obs[6:])  # stack filled with the first frame
    assert obs.std() > 0, "rendered frame should not be blank"
    obs, r, term, trunc, info = env.step(env.action_space.sample())
    assert obs.shape == (9, 32, 32) and isinstance(r, float) and info["frames"] == 2
    assert not term and not trunc
    assert env.get_wrapper_attr("action_repeat") == 2
    assert env.get_wrapper_attr("frame_stack") == 3
    assert env.get_wrapper_attr("env_id") == "dmc/cartpole-swingup"
    env.close()


@dmc
def test_dmc_state_and_dict():
    env = make("dmc/cartpole-swingup", obs="state")
    obs, _ = env.reset()
    assert obs.shape == (5,) and obs.dtype == np.float32 and env.get_wrapper_attr("frame_stack") == 1
    env = make("dmc/cartpole-swingup", obs="pixels+state", size=32, frame_stack=2)
    obs, _ = env.reset()
    assert obs["pixels"].shape == (6, 32, 32) and obs["pixels"].dtype == np.uint8
    assert obs["state"].shape == (5,) and obs["state"].dtype == np.float32
    assert env.observation_space.contains(obs)
    with pytest.raises(ConfigError):
        make("dmc/cartpole-swingup", obs="state", frame_stack=3)
    with pytest.raises(ConfigError):
        make("dmc/cartpole-swingup", obs="rgb")


@dmc
@pytest.mark.parametrize(
    "alias", ["dmc/cartpole-swingup", "dmc/cartpole_swingup", "dmc/ball_in_cup-catch", "dmc/cup-catch",
              "dmc/cartpole-balance-sparse", "dmc/cartpole-balance_sparse"]
)
def test_dmc_id_aliases(alias):
    env = make(alias, obs="state")
    assert env.get_wrapper_attr("env_id") in {
        "dmc/cartpole-swingup", "dmc/ball_in_cup-catch", "dmc/cartpole-balance_sparse"}


def test_dmc_joined_names_are_unambiguous():
    from pixelrl.envs.dmc import STATIC_TASKS, all_tasks

    for tasks in (STATIC_TASKS, all_tasks()):
        joined = [f"{d}_{t}".lower() for d, t in tasks]
        assert len(joined) == len(set(joined))


@dmc
def test_dmc_cameras():
    env = make("dmc/quadruped-run", obs="state")
    assert env.unwrapped.camera == 2  # DrQ-v2 convention
    assert make("dmc/walker-walk", obs="state").unwrapped.camera == 0
    assert make("dmc/walker-walk", obs="state", camera=1).unwrapped.camera == 1
    with pytest.raises(ConfigError, match="camera"):
        make("dmc/cartpole-swingup", camera=99)


@dmc
def test_dmc_reset_seed_is_deterministic():
    a = make("dmc/cartpole-swingup", size=32, obs="pixels+state")
    b = make("dmc/cartpole-swingup", size=32, obs="pixels+state", seed=123)  # make seed must not matter
    oa, ra = rollout(a, 5, 10)
    ob, rb = rollout(b, 5, 10)
    for x, y in zip(oa, ob):
        np.testing.assert_array_equal(x["pixels"], y["pixels"])
        np.testing.assert_array_equal(x["state"], y["state"])
    assert ra == rb
    # same env, second time with the same seed after other episodes: same episode again
    rollout(a, 99, 3)
    oc, rc = rollout(a, 5, 10)
    np.testing.assert_array_equal(oc[-1]["pixels"], oa[-1]["pixels"])
    assert rc == ra
    od, _ = rollout(a, 6, 0)
    assert not np.array_equal(od[0]["state"], oa[0]["state"]), "different seeds should differ"


@dmc
def test_dmc_make_seed_seeds_first_reset():
    a = make("dmc/walker-walk", obs="state", seed=3)
    b = make("dmc/walker-walk", obs="state", seed=3)
    c = make("dmc/walker-walk", obs="state", seed=4)
    oa, ob, oc = a.reset()[0], b.reset()[0], c.reset()[0]
    np.testing.assert_array_equal(oa, ob)
    assert not np.array_equal(oa, oc)
    np.testing.assert_array_equal(a.action_space.sample(), b.action_space.sample())


@dmc
def test_dmc_time_limit_truncates():
    # cartpole: 1000 frames per episode; action_repeat 8 -> 125 agent steps, the last one truncated.
    env = make("dmc/cartpole-swingup", size=32, action_repeat=8, frame_stack=1)
    env.reset(seed=0)
    frames = 0
    for i in range(125):
        _, _, term, trunc, info = env.step(np.zeros(1, np.float32))
        frames += info["frames"]
        assert not term
        assert trunc == (i == 124)
    assert frames == 1000


@dmc
def test_dmc_time_limit_option_and_partial_repeat():
    env = make("dmc/cartpole-swingup", obs="state", action_repeat=4, time_limit=0.1)  # 10 frames
    env.reset(seed=0)
    infos = []
    for _ in range(3):
        _, _, term, trunc, info = env.step(np.zeros(1, np.float32))
        infos.append((trunc, info["frames"]))
    assert infos == [(False, 4), (False, 4), (True, 2)]


@dmc
def test_dmc_discount_zero_terminates():
    import dm_env

    env = make("dmc/cartpole-swingup", obs="state")
    env.reset(seed=0)
    inner = env.unwrapped.dm_env
    real_step = inner.step

    def fake_step(action):
        ts = real_step(action)
        return dm_env.TimeStep(dm_env.StepType.LAST, ts.reward, 0.0, ts.observation)

    inner.step = fake_step
    _, _, term, trunc, info = env.step(np.zeros(1, np.float32))
    assert term and not trunc and info["frames"] == 1


@dmc
def test_dmc_fast_render():
    env = make("dmc/cartpole-swingup", size=32, fast_render=True)
    model = env.unwrapped.physics.model
    assert model.vis.quality.offsamples == 0
    assert (model.light_castshadow == 0).all() and (model.mat_reflectance == 0).all()
    obs, _ = env.reset(seed=0)
    assert obs.shape == (9, 32, 32) and obs.std() > 0
    slow, _ = make("dmc/cartpole-swingup", size=32).reset(seed=0)
    assert not np.array_equal(obs, slow)  # it does look different


# ------------------------------------------------------------------------------------------------ gym


@gymmj
def test_gym_mujoco_pixels_and_state():
    env = make("gym/HalfCheetah-v5", size=32)
    assert env.observation_space.shape == (9, 32, 32)
    assert env.action_space.low.min() == -1 and env.action_space.high.max() == 1
    assert env.get_wrapper_attr("action_repeat") == 1 and env.get_wrapper_attr("env_id") == "gym/HalfCheetah-v5"
    oa, ra = rollout(env, 1, 5)
    assert oa[-1].shape == (9, 32, 32) and oa[-1].dtype == np.uint8 and oa[-1].std() > 0
    ob, rb = rollout(make("gym/HalfCheetah-v5", size=32), 1, 5)
    np.testing.assert_array_equal(oa[-1], ob[-1])
    assert ra == rb
    fast = make("gym/HalfCheetah-v5", size=32, fast_render=True)
    assert fast.unwrapped.model.vis.quality.offsamples == 0
    assert fast.reset(seed=1)[0].shape == (9, 32, 32)
    st = make("gym/HalfCheetah-v5", obs="state")
    obs, _ = st.reset(seed=0)
    assert obs.shape == (17,) and obs.dtype == np.float32


@gymmj
def test_gym_passes_truncation_through():
    env = make("gym/Hopper-v5", obs="state", max_episode_steps=3)
    env.reset(seed=0)
    ends = [env.step(np.zeros(3, np.float32))[3] for _ in range(3)]
    assert ends == [False, False, True]


# ------------------------------------------------------------------------------------------------ ale


def _ale_or_skip(game="Pong"):
    """ale/<game>, or a skip when the atari extra is not installed. With it installed, any error of make() fails the
    test (it used to turn every exception into a skip, so a broken ALE setup passed CI)."""
    if not HAS_ALE:
        pytest.skip("ale-py / opencv not installed (pip install 'pixelrl[atari]')")
    return make(f"ale/{game}")


def test_ale_pong():
    env = _ale_or_skip()
    assert env.observation_space.shape == (4, 84, 84) and env.observation_space.dtype == np.uint8
    assert env.action_space.n == 6
    assert env.get_wrapper_attr("action_repeat") == 4 and env.get_wrapper_attr("frame_stack") == 4
    obs, _ = env.reset(seed=1)
    assert obs.shape == (4, 84, 84)
    np.testing.assert_array_equal(obs[0], obs[3])
    seq = [env.step(a) for a in [0, 2, 3, 1, 2]]
    assert all(s[4]["frames"] == 4 for s in seq)
    env2 = make("ale/pong")
    obs2, _ = env2.reset(seed=1)
    np.testing.assert_array_equal(obs, obs2)
    seq2 = [env2.step(a) for a in [0, 2, 3, 1, 2]]
    np.testing.assert_array_equal(seq[-1][0], seq2[-1][0])


def test_ale_life_loss_flag_and_fire_reset():
    if not HAS_ALE:
        pytest.skip("ale-py / opencv not installed (pip install 'pixelrl[atari]')")
    env = make("ale/Breakout", repeat_action_probability=0.0, fire_reset=True)
    obs, info = env.reset(seed=3)
    lives, losses, rng = info["lives"], [], np.random.default_rng(0)
    for _ in range(5000):
        obs, r, term, trunc, info = env.step(int(rng.integers(4)))
        if info["life_loss"]:
            losses.append(info["lives"])
        if term or trunc:
            break
    assert term and lives == 5
    assert losses == [4, 3, 2, 1, 0]  # one flag per life lost, the last one at game over
    with pytest.raises(ConfigError, match="unknown env option"):
        make("ale/Breakout", sticky=0.0)
    # without fire_reset Breakout waits for FIRE: the ball is not in play after NOOPs
    plain = make("ale/Breakout", repeat_action_probability=0.0, noop_max=0)
    plain.reset(seed=3)
    fired = make("ale/Breakout", repeat_action_probability=0.0, noop_max=0, fire_reset=True)
    fired.reset(seed=3)
    a = [plain.step(0)[0] for _ in range(8)][-1]
    b = [fired.step(0)[0] for _ in range(8)][-1]
    assert not np.array_equal(a, b)


def test_action_kind_without_starting_a_simulator():
    from pixelrl.envs import action_kind

    assert action_kind("dmc/cartpole-swingup") == "continuous"
    assert action_kind("ale/Pong") == "discrete"
    assert action_kind("gym/CartPole-v1") == "discrete"
    assert action_kind("gym/Pendulum-v1") == "continuous"
    assert action_kind("gym/NoSuchEnv-v0") is None and action_kind("nonsense") is None


# --------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "bad, want",
    [
        ("dmc/cartpole-swingpu", "dmc/cartpole-swingup"),
        ("dcm/cartpole-swingup", "dmc/cartpole-swingup"),
        ("dmc/walker-wlak", "dmc/walker-walk"),
        ("gym/HalfCheeta-v5", "gym/HalfCheetah-v5"),
        ("cartpole-swingup", "dmc/cartpole-swingup"),
    ],
)
def test_unknown_id_names_close_match(bad, want):
    with pytest.raises(UnknownEnvError) as e:
        make(bad)
    msg = str(e.value)
    assert "\n" not in msg and repr(bad) in msg and want in msg
    if bad.startswith("dcm"):
        assert "known prefixes" in msg


def test_unknown_ale_game():
    if not HAS_ALE:
        pytest.skip("ale-py not installed (pip install 'pixelrl[atari]')")
    with pytest.raises(UnknownEnvError, match="ale/Pong"):
        make("ale/Pongg")


def test_list_envs():
    dmc_ids = list_envs("dmc")
    assert "dmc/cartpole-swingup" in dmc_ids and "dmc/ball_in_cup-catch" in dmc_ids
    assert all(i.startswith("dmc/") for i in dmc_ids)
    assert "gym/HalfCheetah-v5" in list_envs("gym/")
    assert set(list_envs()) >= set(dmc_ids)
    with pytest.raises(UnknownEnvError):
        list_envs("foo")


@pytest.mark.parametrize(
    "module, env_id, extra",
    [("dm_control", "dmc/cartpole-swingup", "dmc"), ("mujoco", "gym/HalfCheetah-v5", "gym"),
     ("ale_py", "ale/Pong", "atari"), ("cv2", "ale/Pong", "atari")],
)
def test_missing_extra(monkeypatch, module, env_id, extra):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(MissingExtraError) as e:
        make(env_id)
    assert e.value.extra == extra and f"pixelrl[{extra}]" in str(e.value)


def test_dmc_unknown_id_without_dm_control(monkeypatch):
    monkeypatch.setitem(sys.modules, "dm_control", None)
    with pytest.raises(UnknownEnvError, match="dmc/cartpole-swingup"):
        make("dmc/cartpole-swingpu")


def test_import_without_optional_packages():
    code = (
        "import sys\n"
        "for m in ('dm_control', 'mujoco', 'ale_py', 'cv2'): sys.modules[m] = None\n"
        "import pixelrl.envs as E\n"
        "assert 'dmc/cartpole-swingup' in E.list_envs('dmc')\n"
        "assert 'ale/Pong' in E.list_envs('ale')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_builtin_family_makes_registered_envs_lazily(monkeypatch):
    import gymnasium as gym

    from pixelrl.envs import action_kind, builtin

    made = {}

    def fake_maker(**kw):
        made.update(kw)
        return gym.make("CartPole-v1")

    monkeypatch.setattr("tests.envs.test_make._fake_maker", fake_maker, raising=False)
    monkeypatch.setitem(builtin.BUILTIN_ENVS, "toy", builtin.BuiltinEnv("tests.envs.test_make:_fake_maker", "discrete"))
    assert "builtin/toy" in list_envs("builtin") and action_kind("builtin/toy") == "discrete"
    env = make("builtin/toy", seed=3, size=32, fancy=1)
    assert env.action_space.n == 2
    assert made == {"seed": 3, "size": 32, "obs": "pixels", "action_repeat": None, "frame_stack": None, "fancy": 1}
    with pytest.raises(UnknownEnvError, match="builtin/toy"):
        make("builtin/tyo")
    with pytest.raises(ConfigError, match="do not apply to builtin"):
        make("builtin/toy", fast_render=True)
