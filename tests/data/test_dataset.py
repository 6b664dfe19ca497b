"""Datasets on disk: round trips, Minari compatibility, corrupt files, interrupted writers, replay filling."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from pixelrl.data.dataset import (
    DatasetWriter,
    _resign,
    convert_minari,
    default_dataset_id,
    load_dataset,
    space_from_json,
    space_to_json,
    stack_frames,
)
from pixelrl.data.replay import ReplayBuffer
from pixelrl.envs.wrappers import FrameStack
from pixelrl.errors import ConfigError, CorruptFileError

h5py = pytest.importorskip("h5py")


class ToyEnv(gym.Env):
    """Random channels-first frames (and a state vector for obs='pixels+state', or only a state), random rewards,
    episodes that terminate at random or are truncated at ``horizon``."""

    def __init__(self, obs="pixels", discrete=False, horizon=9, size=12):
        self.kind = obs
        pix = spaces.Box(0, 255, (3, size, size), np.uint8)
        state = spaces.Box(-np.inf, np.inf, (4,), np.float32)
        self.observation_space = {"pixels": pix, "state": state,
                                  "pixels+state": spaces.Dict({"pixels": pix, "state": state})}[obs]
        self.action_space = spaces.Discrete(5) if discrete else spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.horizon, self.size = horizon, size

    def _obs(self):
        pix = self.np_random.integers(0, 256, (3, self.size, self.size), dtype=np.uint8)
        state = self.np_random.normal(size=4).astype(np.float32)
        return {"pixels": pix, "state": state, "pixels+state": {"pixels": pix, "state": state}}[self.kind]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        terminated = bool(self.np_random.random() < 0.15)
        truncated = self.t >= self.horizon and not terminated
        return self._obs(), float(self.np_random.normal()), terminated, truncated, {}


def make_env(obs="pixels", discrete=False, frame_stack=3, **kw):
    env = ToyEnv(obs, discrete, **kw)
    return FrameStack(env, frame_stack) if obs != "state" else env


def rollout(env, episodes, seed=0, replay=None):
    """Episodes as the writer takes them; also feeds ``replay`` live, as a trainer does."""
    out = []
    rng = np.random.default_rng(seed)
    env.action_space.seed(seed)
    for e in range(episodes):
        obs, _ = env.reset(seed=seed * 1000 + e)
        if replay is not None:
            replay.add_first(obs)
        ep = {"observations": [obs], "actions": [], "rewards": [], "terminations": [], "truncations": []}
        done = False
        while not done:
            if isinstance(env.action_space, spaces.Discrete):
                a = int(rng.integers(env.action_space.n))
            else:
                a = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
            obs, r, term, trunc, _ = env.step(a)
            if replay is not None:
                replay.add(a, r, obs, term, trunc)
            for k, v in (("observations", obs), ("actions", a), ("rewards", r), ("terminations", term),
                         ("truncations", trunc)):
                ep[k].append(v)
            done = term or trunc
        out.append(ep)
    return out


def write(path, env, episodes, frame_stack=3, **kw):
    with DatasetWriter(path, env.observation_space, env.action_space, env_id="toy/env", frame_stack=frame_stack,
                       **kw) as w:
        for ep in episodes:
            w.add_episode(**ep)
    return path


def assert_obs_equal(got, expected_list):
    if isinstance(got, dict):
        for k, v in got.items():
            np.testing.assert_array_equal(v, np.stack([o[k] for o in expected_list]))
            assert v.dtype == expected_list[0][k].dtype
    else:
        np.testing.assert_array_equal(got, np.stack(expected_list))
        assert got.dtype == expected_list[0].dtype


# --------------------------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("obs,discrete,stack", [("pixels", False, 3), ("pixels", True, 4), ("state", False, 1),
                                                ("pixels+state", False, 2), ("state", True, 1)])
def test_round_trip_is_identical(tmp_path, obs, discrete, stack):
    env = make_env(obs, discrete, frame_stack=stack)
    eps = rollout(env, 3, seed=1)
    path = write(tmp_path / "ds", env, eps, frame_stack=stack, metadata={"env_kwargs": {"size": 12}, "x": [1, 2]})
    ds = load_dataset(path)
    assert ds.num_episodes == 3
    assert ds.num_transitions == sum(len(e["rewards"]) for e in eps)
    assert ds.observation_space == env.observation_space
    assert ds.action_space == env.action_space
    assert ds.env_id == "toy/env" and ds.frame_stack == stack
    assert ds.env_kwargs == {"size": 12} and ds.metadata["x"] == [1, 2]
    np.testing.assert_array_equal(ds.episode_returns(), [sum(e["rewards"]) for e in eps])
    got = list(ds.iter_episodes())
    assert len(got) == 3
    for g, e in zip(got, eps):
        assert_obs_equal(g["observations"], e["observations"])
        np.testing.assert_array_equal(g["actions"], np.asarray(e["actions"]))
        assert g["actions"].dtype == (np.int64 if discrete else np.float32)
        np.testing.assert_array_equal(g["rewards"], e["rewards"])
        np.testing.assert_array_equal(g["terminations"], e["terminations"])
        np.testing.assert_array_equal(g["truncations"], e["truncations"])
    # the path conventions: the data/ folder and the HDF5 file name the same dataset
    assert load_dataset(path / "data").num_transitions == ds.num_transitions
    assert load_dataset(path / "data" / "main_data.hdf5").num_episodes == 3


def test_pixels_are_stored_once_per_step_and_compressed(tmp_path):
    env = make_env("pixels", frame_stack=3, size=32)
    eps = rollout(env, 1, seed=2)
    path = write(tmp_path / "ds", env, eps)
    with h5py.File(path / "data" / "main_data.hdf5", "r") as f:
        d = f["episode_0/observations"]
        assert d.shape == (len(eps[0]["observations"]), 3, 32, 32)  # one frame per step, not the stack of 3
        assert d.compression == "gzip" and d.chunks == (1, 3, 32, 32)
    meta = json.loads((path / "data" / "metadata.json").read_text())
    assert space_from_json(json.loads(meta["observation_space"])) == spaces.Box(0, 255, (3, 32, 32), np.uint8)
    assert meta["pixelrl"]["frame_stack"] == 3
    single = load_dataset(path).get_episode(0, stacked=False)["observations"]
    np.testing.assert_array_equal(single, np.stack(eps[0]["observations"])[:, -3:])


def test_stack_frames_matches_the_framestack_wrapper():
    frames = np.arange(5 * 2 * 1 * 1, dtype=np.uint8).reshape(5, 2, 1, 1)
    st = stack_frames(frames, 3)
    assert st.shape == (5, 6, 1, 1)
    np.testing.assert_array_equal(st[0, :, 0, 0], [0, 1, 0, 1, 0, 1])  # first frame repeated at reset
    np.testing.assert_array_equal(st[1, :, 0, 0], [0, 1, 0, 1, 2, 3])
    np.testing.assert_array_equal(st[4, :, 0, 0], [4, 5, 6, 7, 8, 9])


def test_space_serialisation_matches_minari():
    minari_ser = pytest.importorskip("minari.serialization")
    for s in [spaces.Box(0, 255, (3, 8, 8), np.uint8), spaces.Box(-np.inf, np.inf, (4,), np.float32),
              spaces.Discrete(6, start=1), spaces.MultiDiscrete([3, 4]), spaces.MultiBinary(3),
              spaces.Dict({"pixels": spaces.Box(0, 255, (3, 8, 8), np.uint8),
                           "state": spaces.Box(-1, 1, (2,), np.float64)})]:
        assert json.loads(minari_ser.serialize_space(s)) == space_to_json(s)
        assert space_from_json(space_to_json(s)) == s
        assert minari_ser.deserialize_space(json.dumps(space_to_json(s))) == s


def test_writer_rejects_bad_episodes(tmp_path):
    env = make_env("pixels", frame_stack=3)
    ep = rollout(env, 1, seed=3)[0]
    with DatasetWriter(tmp_path / "ds", env.observation_space, env.action_space, env_id="toy/env",
                       frame_stack=3) as w:
        with pytest.raises(ConfigError, match="not frame stacks"):  # stacks built with another frame_stack
            w.add_episode(**{**ep, "observations": ep["observations"][::-1]})
        with pytest.raises(ConfigError, match="T\\+1 observations"):
            w.add_episode(**{**ep, "observations": ep["observations"][:-1]})
        with pytest.raises(ConfigError, match="only the last step"):
            w.add_episode(**{**ep, "terminations": [True] + list(ep["terminations"][1:])})
        with pytest.raises(ConfigError, match="NaN"):
            w.add_episode(**{**ep, "rewards": [float("nan")] + list(ep["rewards"][1:])})
        w.add_episode(**ep)
    assert load_dataset(tmp_path / "ds").num_episodes == 1  # the rejected episodes left nothing behind
    with pytest.raises(ConfigError, match="already exists"):
        DatasetWriter(tmp_path / "ds", env.observation_space, env.action_space, env_id="toy/env", frame_stack=3)
    with pytest.raises(ConfigError, match="Minari id"):
        DatasetWriter(tmp_path / "x", env.observation_space, env.action_space, env_id="toy/env", frame_stack=3,
                      dataset_id="no version")
    with pytest.raises(ConfigError, match="not a multiple of frame_stack"):
        DatasetWriter(tmp_path / "y", env.observation_space, env.action_space, env_id="toy/env", frame_stack=2)
    with pytest.raises(ConfigError, match="no episode"):
        DatasetWriter(tmp_path / "z", env.observation_space, env.action_space, env_id="toy/env",
                      frame_stack=3).close()
    assert not (tmp_path / "z").exists()


def test_discrete_range_and_observation_key_selection(tmp_path):
    env = make_env("pixels+state", discrete=True, frame_stack=2)
    ep = rollout(env, 1, seed=0)[0]
    with DatasetWriter(tmp_path / "ds", env.observation_space, env.action_space, env_id="toy/env",
                       frame_stack=2) as w:
        with pytest.raises(ConfigError, match="discrete actions must lie in \\[0, 4\\]"):
            w.add_episode(**{**ep, "actions": [7] * len(ep["actions"])})
        w.add_episode(**ep)
    ds = load_dataset(tmp_path / "ds")
    with pytest.raises(ConfigError, match="unknown observation key"):
        ds.iter_episodes(obs_keys=["depth"])  # checked when called, before any reading
    only = next(ds.iter_episodes(obs_keys=["state"]))
    assert set(only["observations"]) == {"state"}
    np.testing.assert_array_equal(only["observations"]["state"], np.stack([o["state"] for o in ep["observations"]]))


def test_default_dataset_id_follows_the_minari_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "root"))
    assert default_dataset_id(tmp_path / "root" / "pixelrl" / "cartpole-random-v2") == "pixelrl/cartpole-random-v2"
    assert default_dataset_id(tmp_path / "elsewhere" / "walker.h5") == "pixelrl/walker-h5-v0"


# ------------------------------------------------------------------------------------------------- Minari


@pytest.mark.parametrize("obs,discrete", [("pixels", False), ("pixels+state", True), ("state", False)])
def test_minari_reads_our_dataset(tmp_path, monkeypatch, obs, discrete):
    minari = pytest.importorskip("minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "root"))
    env = make_env(obs, discrete, frame_stack=3 if obs != "state" else 1)
    eps = rollout(env, 3, seed=4)
    path = tmp_path / "root" / "pixelrl" / f"toy-{obs.replace('+', '-')}-v0"
    write(path, env, eps, frame_stack=3 if obs != "state" else 1, metadata={"algorithm_name": "random"})
    dataset_id = f"pixelrl/toy-{obs.replace('+', '-')}-v0"
    md = minari.load_dataset(dataset_id, download=False)
    assert md.id == dataset_id and md.total_episodes == 3
    assert md.total_steps == sum(len(e["rewards"]) for e in eps)
    assert dataset_id in minari.list_local_datasets()
    for m, e in zip(md.iterate_episodes(), eps):
        np.testing.assert_array_equal(m.actions, np.asarray(e["actions"]))
        np.testing.assert_array_equal(m.rewards, e["rewards"])
        np.testing.assert_array_equal(m.terminations, e["terminations"])
        np.testing.assert_array_equal(m.truncations, e["truncations"])
        # Minari sees single frames: the newest channels of each stacked observation
        if obs == "pixels":
            np.testing.assert_array_equal(m.observations, np.stack(e["observations"])[:, -3:])
        elif obs == "pixels+state":
            np.testing.assert_array_equal(m.observations["pixels"],
                                          np.stack([o["pixels"] for o in e["observations"]])[:, -3:])
            np.testing.assert_array_equal(m.observations["state"], np.stack([o["state"] for o in e["observations"]]))
        else:
            np.testing.assert_array_equal(m.observations, np.stack(e["observations"]))
    assert md.action_space == env.action_space


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_convert_minari_state_and_image_datasets(tmp_path, monkeypatch):
    minari = pytest.importorskip("minari")
    from minari.data_collector import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "root"))
    rng = np.random.default_rng(0)

    def buffers(obs_fn, act_fn, n=3):
        out = []
        for i in range(n):
            t = int(rng.integers(3, 7))
            out.append(EpisodeBuffer(
                observations=obs_fn(t + 1), actions=act_fn(t), rewards=rng.normal(size=t),
                terminations=np.r_[np.zeros(t - 1, bool), True], truncations=np.zeros(t, bool)))
        return out

    # state observations (float64) and Box actions in [-2, 2]
    obs_space = spaces.Box(-np.inf, np.inf, (3,), np.float64)
    act_space = spaces.Box(-2.0, 2.0, (2,), np.float32)
    src = buffers(lambda n: rng.normal(size=(n, 3)), lambda t: rng.uniform(-2, 2, (t, 2)).astype(np.float32))
    minari.create_dataset_from_buffers("test/state-v0", src, observation_space=obs_space, action_space=act_space,
                                       algorithm_name="x", author="x", author_email="x", code_permalink="x",
                                       description="x")
    out = convert_minari("test/state-v0", tmp_path / "state")
    ds = load_dataset(out)
    assert ds.observation_space == spaces.Box(-np.inf, np.inf, (3,), np.float32)
    assert ds.action_space == spaces.Box(-1.0, 1.0, (2,), np.float32) and ds.frame_stack == 1
    for g, s in zip(ds.iter_episodes(), src):
        np.testing.assert_allclose(g["observations"], s.observations, rtol=1e-6)
        np.testing.assert_allclose(g["actions"], s.actions / 2.0, rtol=1e-6)
        np.testing.assert_array_equal(g["rewards"], s.rewards)
        np.testing.assert_array_equal(g["terminations"], s.terminations)

    # HWC images + Discrete actions, converted from the folder path, stacked 2 frames
    img_space = spaces.Box(0, 255, (40, 40, 3), np.uint8)
    src = buffers(lambda n: rng.integers(0, 256, (n, 40, 40, 3), dtype=np.uint8),
                  lambda t: rng.integers(0, 4, t))
    minari.create_dataset_from_buffers("test/img-v0", src, observation_space=img_space,
                                       action_space=spaces.Discrete(4), algorithm_name="x", author="x",
                                       author_email="x", code_permalink="x", description="x", jpeg_encoding=False)
    out = convert_minari(tmp_path / "root" / "test" / "img-v0", tmp_path / "img", frame_stack=2)
    ds = load_dataset(out)
    assert ds.observation_space.shape == (6, 40, 40) and ds.frame_stack == 2
    for g, s in zip(ds.iter_episodes(stacked=False), src):
        np.testing.assert_array_equal(g["observations"], np.moveaxis(s.observations, -1, 1))
        np.testing.assert_array_equal(g["actions"], s.actions)
    with pytest.raises(ConfigError, match="no Minari dataset"):
        convert_minari("test/absent-v0", tmp_path / "nothing")
    with pytest.raises(ConfigError, match="convert it"):  # loading a Minari dataset directly names the fix
        load_dataset(tmp_path / "root" / "test" / "img-v0")


# ------------------------------------------------------------------------------------------ corrupt files


@pytest.fixture
def good(tmp_path):
    env = make_env("pixels+state", frame_stack=2)
    return write(tmp_path / "good", env, rollout(env, 3, seed=0), frame_stack=2)


def _h5_edit(path, fn):
    with h5py.File(path / "data" / "main_data.hdf5", "a") as f:
        fn(f)
    _resign(path)


def _replace(f, name, data):
    del f[name]
    f.create_dataset(name, data=data)


def _meta_edit(path, fn, resign=False):
    mpath = path / "data" / "metadata.json"
    meta = json.loads(mpath.read_text())
    fn(meta)
    mpath.write_text(json.dumps(meta))
    if resign:
        from pixelrl.data.dataset import _metadata_checksum

        meta["pixelrl"]["checksum"] = _metadata_checksum(meta)
        mpath.write_text(json.dumps(meta))


CORRUPTIONS = {
    # name: (edit, expected words in the error)
    "truncated": (lambda p: _truncate(p / "data" / "main_data.hdf5", 0.6), "truncated"),
    "truncated_resigned": (lambda p: (_truncate(p / "data" / "main_data.hdf5", 0.6), _resign(p)), "HDF5"),
    "random_bytes": (lambda p: _overwrite(p / "data" / "main_data.hdf5"), "sha256"),
    "random_bytes_resigned": (lambda p: (_overwrite(p / "data" / "main_data.hdf5"), _resign(p)), "HDF5"),
    "empty_file": (lambda p: (p / "data" / "main_data.hdf5").write_bytes(b""), "size"),
    "empty_metadata": (lambda p: (p / "data" / "metadata.json").write_bytes(b""), "empty"),
    "random_metadata": (lambda p: (p / "data" / "metadata.json").write_bytes(os.urandom(300)), "JSON"),
    "missing_file": (lambda p: (p / "data" / "main_data.hdf5").unlink(), "missing"),
    "missing_metadata": (lambda p: (p / "data" / "metadata.json").unlink(), "missing"),
    "missing_group": (lambda p: _h5_edit(p, lambda f: f.__delitem__("episode_1")), "episode_1 is missing"),
    "missing_actions": (lambda p: _h5_edit(p, lambda f: f.__delitem__("episode_0/actions")), "actions is missing"),
    "missing_obs_key": (lambda p: _h5_edit(p, lambda f: f.__delitem__("episode_2/observations/state")), "keys"),
    "extra_group": (lambda p: _h5_edit(p, lambda f: f.create_group("episode_9")), "unexpected"),
    "wrong_reward_dtype": (lambda p: _h5_edit(p, lambda f: _replace(f, "episode_0/rewards",
                                                                    f["episode_0/rewards"][()].astype(np.float16))),
                           "float16"),
    "wrong_action_shape": (lambda p: _h5_edit(p, lambda f: _replace(f, "episode_1/actions",
                                                                    f["episode_1/actions"][()][:, :1])), "shape"),
    "wrong_pixel_dtype": (lambda p: _h5_edit(p, lambda f: _replace(
        f, "episode_0/observations/pixels", f["episode_0/observations/pixels"][()].astype(np.int16))), "int16"),
    "T_not_T_plus_1": (lambda p: _h5_edit(p, lambda f: _replace(
        f, "episode_1/observations/state", f["episode_1/observations/state"][()][:-1])), "T+1"),
    "nan_reward": (lambda p: _h5_edit(p, lambda f: f["episode_2/rewards"].__setitem__(0, np.nan)), "NaN"),
    "early_termination": (lambda p: _h5_edit(p, _terminate_first_step_of_longest), "before its last step"),
    "pixels_changed": (lambda p: _h5_edit(p, lambda f: f["episode_1/observations/pixels"].__setitem__(
        (0, 0, 0, 0), 7 if f["episode_1/observations/pixels"][0, 0, 0, 0] != 7 else 8)), "sha256"),
    "metadata_edited": (lambda p: _meta_edit(p, lambda m: m["pixelrl"].__setitem__("frame_stack", 1)), "checksum"),
    "total_steps_edited": (lambda p: _meta_edit(p, lambda m: m.__setitem__("total_steps", 3)), "checksum"),
    "total_steps_resigned": (lambda p: _meta_edit(p, lambda m: m.__setitem__("total_steps", 3), resign=True),
                             "total_steps"),
    "frame_stack_resigned": (lambda p: _meta_edit(p, lambda m: m["pixelrl"].__setitem__("frame_stack", 3),
                                                  resign=True), "observation_keys"),
    "space_resigned": (lambda p: _meta_edit(p, lambda m: m.__setitem__("action_space", "{]"), resign=True),
                       "space"),
    "missing_data_dir": (lambda p: __import__("shutil").rmtree(p / "data"), "folder is missing"),
}


def _terminate_first_step_of_longest(f):
    name = max((k for k in f.keys()), key=lambda k: f[k]["rewards"].shape[0])
    assert f[name]["rewards"].shape[0] >= 2
    f[name]["terminations"][0] = True


def _truncate(f, frac):
    data = f.read_bytes()
    f.write_bytes(data[: int(len(data) * frac)])


def _overwrite(f):
    f.write_bytes(np.random.default_rng(0).integers(0, 256, f.stat().st_size, dtype=np.uint8).tobytes())


def _load_all(path):
    ds = load_dataset(path)
    return [ep for ep in ds.iter_episodes()]


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corrupt_dataset_is_named(good, name):
    edit, words = CORRUPTIONS[name]
    edit(good)
    with pytest.raises(CorruptFileError) as info:
        _load_all(good)
    assert words in str(info.value), str(info.value)
    assert str(good) in str(info.value.path)


def test_fuzzed_bytes_give_corrupt_file_error_or_identical_data(good, tmp_path):
    """Random byte flips and truncations, with the checksums recomputed so that the HDF5 parser and the structural
    checks see them: the loader raises CorruptFileError or returns exactly the original data, nothing else."""
    reference = _load_all(good)
    fpath = good / "data" / "main_data.hdf5"
    original = fpath.read_bytes()
    rng = np.random.default_rng(1)
    outcomes = {"error": 0, "same": 0}
    for trial in range(40):
        data = bytearray(original)
        if trial % 4 == 0:
            data = data[: int(rng.integers(0, len(data)))]
        else:
            for pos in rng.integers(0, len(data), size=int(rng.integers(1, 20))):
                data[pos] ^= int(rng.integers(1, 256))
        fpath.write_bytes(bytes(data))
        _resign(good)
        try:
            got = _load_all(good)
        except CorruptFileError:
            outcomes["error"] += 1
            continue
        for g, r in zip(got, reference):
            for k in ("actions", "rewards", "terminations", "truncations"):
                np.testing.assert_array_equal(g[k], r[k])
            for k in ("pixels", "state"):
                np.testing.assert_array_equal(g["observations"][k], r["observations"][k])
        outcomes["same"] += 1
    assert outcomes["error"] > 10
    fpath.write_bytes(original)
    _resign(good)
    assert len(_load_all(good)) == 3
    # without re-signing, any flip is caught by the file checksum
    data = bytearray(original)
    data[len(data) // 2] ^= 1
    fpath.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="sha256"):
        load_dataset(good)


def test_missing_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no dataset"):
        load_dataset(tmp_path / "absent")


# -------------------------------------------------------------------------------------- interrupted writer


def test_writer_that_raises_leaves_no_dataset(tmp_path):
    env = make_env("pixels")
    eps = rollout(env, 2, seed=6)
    with pytest.raises(RuntimeError):
        with DatasetWriter(tmp_path / "ds", env.observation_space, env.action_space, env_id="toy/env",
                           frame_stack=3) as w:
            w.add_episode(**eps[0])
            raise RuntimeError("killed")
    assert not (tmp_path / "ds").exists()
    assert os.listdir(tmp_path) == []


def test_killed_writer_leaves_no_dataset(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        import numpy as np
        from gymnasium import spaces
        from pixelrl.data.dataset import DatasetWriter
        w = DatasetWriter({str(tmp_path / 'ds')!r}, spaces.Box(-1, 1, (3,), np.float32),
                          spaces.Box(-1, 1, (1,), np.float32), env_id="toy/env", frame_stack=1)
        for i in range(3):
            w.add_episode(np.zeros((11, 3), np.float32), np.zeros((10, 1), np.float32), np.ones(10),
                          np.zeros(10, bool), np.r_[np.zeros(9, bool), True])
        print("ready", flush=True)
        time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert not (tmp_path / "ds").exists()
    with pytest.raises(ConfigError, match="no dataset"):
        load_dataset(tmp_path / "ds")
    leftovers = [e for e in os.listdir(tmp_path) if e.startswith(".ds.partial-")]
    assert len(leftovers) == 1
    # the next writer of that path removes the dead writer's partial folder and publishes a complete dataset
    with DatasetWriter(tmp_path / "ds", spaces.Box(-1, 1, (3,), np.float32), spaces.Box(-1, 1, (1,), np.float32),
                       env_id="toy/env", frame_stack=1) as w:
        w.add_episode(np.zeros((3, 3), np.float32), np.zeros((2, 1), np.float32), np.ones(2), [False, True],
                      [False, False])
    assert os.listdir(tmp_path) == ["ds"]
    assert load_dataset(tmp_path / "ds").num_transitions == 2


# ------------------------------------------------------------------------------------------------- replay


@pytest.mark.parametrize("obs,discrete,stack", [("pixels", False, 3), ("pixels+state", True, 2),
                                                ("state", False, 1)])
def test_fill_replay_equals_live_stepping(tmp_path, obs, discrete, stack):
    env = make_env(obs, discrete, frame_stack=stack)
    kw = dict(capacity=200, frame_stack=stack, nstep=3, discount=0.9, seed=7)
    live = ReplayBuffer(env.observation_space, env.action_space, **kw)
    eps = rollout(env, 4, seed=8, replay=live)
    ds = load_dataset(write(tmp_path / "ds", env, eps, frame_stack=stack))
    filled = ReplayBuffer(ds.observation_space, ds.action_space, **kw)
    assert ds.fill_replay(filled) == ds.num_transitions == len(live)
    a, b = live.state_dict(), filled.state_dict()
    assert a["meta"] == b["meta"]
    for k in a["arrays"]:
        np.testing.assert_array_equal(a["arrays"][k], b["arrays"][k], err_msg=k)
    x, y = live.sample(16), filled.sample(16)
    for k in ("action", "reward", "discount"):
        np.testing.assert_array_equal(getattr(x, k).numpy(), getattr(y, k).numpy())
    xo, yo = (x.obs, y.obs) if isinstance(x.obs, dict) else ({"": x.obs}, {"": y.obs})
    for k in xo:
        np.testing.assert_array_equal(xo[k].numpy(), yo[k].numpy())


def test_fill_replay_checks_the_buffer_first(tmp_path):
    env = make_env("pixels", frame_stack=3)
    ds = load_dataset(write(tmp_path / "ds", env, rollout(env, 3, seed=9)))
    need = ds.replay_capacity_needed()
    assert need == ds.num_transitions + ds.num_episodes - 1
    small = ReplayBuffer(ds.observation_space, ds.action_space, capacity=need - 1, frame_stack=3)
    with pytest.raises(ConfigError, match=f"capacity >= {need}"):
        ds.fill_replay(small)
    assert len(small) == 0
    ReplayBuffer(ds.observation_space, ds.action_space, capacity=need, frame_stack=3)  # exactly enough
    exact = ReplayBuffer(ds.observation_space, ds.action_space, capacity=need, frame_stack=3)
    ds.fill_replay(exact)
    assert len(exact) == ds.num_transitions  # nothing evicted
    other = make_env("pixels", frame_stack=1)
    with pytest.raises(ConfigError, match="observation space"):
        ds.fill_replay(ReplayBuffer(other.observation_space, other.action_space, capacity=need, frame_stack=1))
    with pytest.raises(ConfigError, match="action space"):
        ds.fill_replay(ReplayBuffer(ds.observation_space, spaces.Discrete(3), capacity=need, frame_stack=3))
