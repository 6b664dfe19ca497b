"""make_vector(): subprocess envs match the in-process env for the same seeds and actions."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

from pixelrl.envs import make, make_vector

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("dm_control") is None, reason="dm_control not installed (pip install 'pixelrl[dmc]')"
)

ENV = "dmc/cartpole-swingup"
KW = dict(size=32)


def _actions(n, num_envs=1, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (n, num_envs, 1)).astype(np.float32)


@pytest.mark.parametrize("context", [None, "spawn"])  # None = forkserver
def test_vector_one_env_equals_single_env(context):
    acts = _actions(6)
    single = make(ENV, **KW)
    s_obs, _ = single.reset(seed=11)
    s_traj = [(s_obs, 0.0)]
    for a in acts:
        o, r, *_ = single.step(a[0])
        s_traj.append((o, r))

    vec = make_vector(ENV, 1, context=context, **KW)
    try:
        assert vec.env_id == ENV and vec.action_repeat == 2 and vec.frame_stack == 3
        assert vec.single_observation_space.shape == (9, 32, 32)
        v_obs, _ = vec.reset(seed=[11])
        np.testing.assert_array_equal(v_obs[0], s_traj[0][0])
        for a, (o, r) in zip(acts, s_traj[1:]):
            vec.step_async(a)  # the trainer's overlap path: learn here, then wait
            vo, vr, vterm, vtrunc, vinfo = vec.step_wait()
            np.testing.assert_array_equal(vo[0], o)
            assert vr[0] == r
        assert vinfo["frames"][0] == 2
    finally:
        vec.close()


def test_vector_fork_in_fresh_process():
    """fork works when the parent has not rendered yet (forking after an EGL context exists may hang)."""
    import subprocess
    import sys

    code = (
        "import numpy as np\n"
        "from pixelrl.envs import make, make_vector\n"
        f"vec = make_vector({ENV!r}, 1, context='fork', size=32)\n"
        "vo, _ = vec.reset(seed=[3])\n"
        "a = np.full((1, 1), 0.5, np.float32)\n"
        "vo, vr, *_ = vec.step(a)\n"
        "vec.close()\n"
        f"env = make({ENV!r}, size=32)\n"
        "env.reset(seed=3)\n"
        "o, r, *_ = env.step(a[0])\n"
        "assert np.array_equal(vo[0], o) and vr[0] == r\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_vector_two_envs_seeded_like_single_envs():
    acts = _actions(4, num_envs=2, seed=1)
    vec = make_vector(ENV, 2, seed=5, **KW)
    try:
        v_obs, _ = vec.reset()  # first reset without seeds uses seed + i
        singles = [make(ENV, seed=5 + i, **KW) for i in range(2)]
        for i, env in enumerate(singles):
            np.testing.assert_array_equal(v_obs[i], env.reset()[0])
        assert not np.array_equal(v_obs[0], v_obs[1])
        for a in acts:
            vo, vr, *_ = vec.step(a)
            for i, env in enumerate(singles):
                o, r, *_ = env.step(a[i])
                np.testing.assert_array_equal(vo[i], o)
                assert vr[i] == r
    finally:
        vec.close()


def test_vector_sync():
    vec = make_vector(ENV, 2, asynchronous=False, obs="state")
    try:
        obs, _ = vec.reset(seed=[0, 1])
        assert obs.shape == (2, 5) and obs.dtype == np.float32
    finally:
        vec.close()


def test_worker_replays_gl_environment(monkeypatch):
    from pixelrl.envs.factory import _make_in_worker

    monkeypatch.setenv("MUJOCO_GL", os.environ.get("MUJOCO_GL", "egl"))
    env = _make_in_worker(ENV, 0, {"MUJOCO_GL": os.environ["MUJOCO_GL"], "PIXELRL_TEST_MARK": "1"}, {"obs": "state"})
    assert os.environ["PIXELRL_TEST_MARK"] == "1"
    monkeypatch.delenv("PIXELRL_TEST_MARK")
    env.close()
