"""builtin/quadrotor-hover: the Crazyflie simulator against physics, and the env's conventions."""

from __future__ import annotations

import numpy as np
import pytest

from pixelrl.envs.builtin import quadrotor as Q
from pixelrl.errors import ConfigError


def _rest_state(n=1, rpm=Q.HOVER_RPM):
    s = np.zeros((n, 17))
    s[:, 6] = 1.0
    s[:, 13:17] = rpm
    return s


def test_hover_constants():
    assert Q.HOVER_ACTION == pytest.approx(0.334, abs=5e-4)
    assert 4 * Q.THRUST_COEF * Q.RPM_MAX ** 2 / (Q.MASS * Q.GRAVITY) == pytest.approx(2.25, abs=0.02)
    assert Q.OBS_DIM == 146 and Q.CRITIC_DIM == 28


@pytest.mark.parametrize("backend", ["numpy", "python"])
def test_hover_action_keeps_vehicle_at_rest_for_a_second(backend):
    sim = Q.QuadrotorBatch(3, backend=backend)
    sim.state = _rest_state(3)
    for _ in range(100):  # 1 s at 100 Hz
        sim.step(np.full((3, 4), Q.HOVER_ACTION))
    assert np.abs(sim.state[:, 0:6]).max() < 1e-9  # position and velocity
    assert np.abs(sim.state[:, 10:13]).max() < 1e-12
    np.testing.assert_allclose(sim.state[:, 6], 1.0)
    # a 1 % thrust deficit (0.5 % RPM) does sink: the test could fail
    sim = Q.QuadrotorBatch(1, backend=backend)
    sim.state = _rest_state(1, Q.HOVER_RPM * 0.995)
    for _ in range(100):
        sim.step(np.full((1, 4), 2 * Q.HOVER_RPM * 0.995 / Q.RPM_MAX - 1))
    assert sim.state[0, 2] < -0.03


def test_known_torque_gives_expected_angular_acceleration():
    f_hover = Q.THRUST_COEF * Q.HOVER_RPM ** 2
    rpm = np.array([1.0, 1.0, 1.1, 1.1]) * Q.HOVER_RPM  # rotors 2, 3 (at +y) push harder: roll about +x
    s = tuple(_rest_state()[0, :13]) + tuple(rpm)
    d = Q._derivative(s, tuple(rpm), 0, 0, 0, 0, 0, 0)
    f = Q.THRUST_COEF * rpm ** 2
    assert d[10] == pytest.approx(Q.ARM * (f[2] + f[3] - f[0] - f[1]) / Q.JXX, rel=1e-12)
    assert d[10] == pytest.approx(Q.ARM * 2 * 0.21 * f_hover / 3.85e-6, rel=1e-9)
    assert d[11] == pytest.approx(0.0, abs=1e-9)
    # yaw: rotors 1 and 3 (sign +) faster
    rpm = np.array([1.0, 1.1, 1.0, 1.1]) * Q.HOVER_RPM
    d = Q._derivative(tuple(_rest_state()[0, :13]) + tuple(rpm), tuple(rpm), 0, 0, 0, 0, 0, 0)
    f = Q.THRUST_COEF * rpm ** 2
    assert d[12] == pytest.approx(Q.TORQUE_COEF * (f[1] + f[3] - f[0] - f[2]) / Q.JZZ, rel=1e-12)
    # a disturbance torque about y through a full RK4 step: Δω = τ/J·dt
    sim = Q.QuadrotorBatch(1)
    sim.state = _rest_state()
    sim.dist[0, 4] = 2e-5
    sim.step(np.full((1, 4), Q.HOVER_ACTION))
    assert sim.state[0, 11] == pytest.approx(2e-5 / Q.JYY * Q.DT, rel=1e-6)


def test_rk4_conserves_energy_without_motors():
    # free fall: ½ m v² + m g z constant, orientation untouched
    s = _rest_state(rpm=0.0)
    s[0, 3:6] = (0.3, -0.2, 1.0)
    sim = Q.QuadrotorBatch(1)
    sim.state = s.copy()

    def energy(st):
        return 0.5 * Q.MASS * (st[3:6] ** 2).sum() + Q.MASS * Q.GRAVITY * st[2]

    e0 = energy(sim.state[0])
    for _ in range(100):
        sim.step(np.full((1, 4), -1.0))
    assert energy(sim.state[0]) == pytest.approx(e0, abs=1e-12)
    assert sim.state[0, 2] == pytest.approx(1.0 - 0.5 * Q.GRAVITY, abs=1e-9)
    # torque-free tumbling: rotational energy and |angular momentum| conserved, quaternion stays unit
    s = _rest_state(rpm=0.0)
    s[0, 10:13] = (3.0, -2.0, 5.0)
    sim.state = s
    J = np.array([Q.JXX, Q.JYY, Q.JZZ])
    w0 = sim.state[0, 10:13].copy()
    for _ in range(200):
        sim.step(np.full((1, 4), -1.0))
    w = sim.state[0, 10:13]
    assert 0.5 * (J * w * w).sum() == pytest.approx(0.5 * (J * w0 * w0).sum(), rel=1e-8)
    assert np.linalg.norm(J * w) == pytest.approx(np.linalg.norm(J * w0), rel=1e-8)
    assert np.linalg.norm(sim.state[0, 6:10]) == pytest.approx(1.0, abs=1e-12)
    assert not np.allclose(w, w0)  # the asymmetric body does precess


def test_batched_equals_single():
    rng = np.random.default_rng(3)
    a = Q.QuadrotorBatch(8, backend="numpy")
    a.reset(rng)
    b = Q.QuadrotorBatch(8, backend="python")
    b.state, b.dist = a.state.copy(), a.dist.copy()
    for _ in range(50):
        act = rng.uniform(-1, 1, (8, 4))
        a.step(act)
        b.step(act)
    np.testing.assert_allclose(a.state, b.state, rtol=1e-10, atol=1e-10)


def test_initial_state_distribution():
    rng = np.random.default_rng(0)
    s = Q.sample_initial_states(rng, 20000)
    guidance = (s[:, 0:3] == 0).all(1)
    assert guidance.mean() == pytest.approx(0.1, abs=0.01)
    assert (s[guidance, 6] == 1.0).all()
    assert np.abs(s[:, 0:3]).max() <= 0.2
    angle = 2 * np.arccos(np.minimum(np.abs(s[:, 6]), 1))
    assert angle.max() <= np.pi / 2 + 1e-9 and angle[~guidance].mean() > 0.8  # not all near level
    assert np.abs(s[:, 3:6]).max() <= 1.0 and np.abs(s[:, 3:6]).max() > 0.99  # velocities always random
    assert (s[:, 13:17] == Q.RPM_MAX / 2).all()
    d = Q.sample_disturbances(rng, 20000)
    assert d[:, :3].std() == pytest.approx(0.027 * 9.81 / 20, rel=0.03)
    assert d[:, 3:].std() == pytest.approx(0.027 * 9.81 / 10000, rel=0.03)


def test_reward_and_observation():
    w = Q.TRAIN_START_WEIGHTS
    p, v, a = np.array([0.1, 0, 0]), np.zeros(3), np.full(4, Q.HOVER_ACTION)
    assert Q.reward(w, p, 1.0, v, a, False) == pytest.approx(-0.5 * 5 * 0.01 + 2)
    assert Q.reward(w, p, 1.0, v, a, True) == 0.0
    sim = Q.QuadrotorBatch(2)
    sim.reset(np.random.default_rng(0))
    c = sim.critic_obs()
    assert c.shape == (2, 28)
    np.testing.assert_allclose(c[:, 3:12].reshape(2, 3, 3) @ c[:, 3:12].reshape(2, 3, 3).transpose(0, 2, 1),
                               np.broadcast_to(np.eye(3), (2, 3, 3)), atol=1e-12)
    np.testing.assert_allclose(c[:, 24:28], 0.0, atol=1e-12)  # RPM 10851 = the middle of [0, 21702]


def test_env_episode_ends_and_success():
    from pixelrl.envs import make

    env = make("builtin/quadrotor-hover", seed=0, obs="state")
    obs, _ = env.reset(seed=5)
    assert obs.shape == (146,) and obs.dtype == np.float32 and (obs[18:] == 0).all()
    obs, r, term, trunc, info = env.step(np.ones(4, np.float32))
    np.testing.assert_allclose(obs[-4:], 1.0)  # newest action last in the history
    steps = 1
    while not (term or trunc):  # full throttle flies out of the 0.6 m box
        obs, r, term, trunc, info = env.step(np.ones(4, np.float32))
        steps += 1
    assert term and not trunc and steps < 100 and info["is_success"] is False and r == 0.0
    base = env.unwrapped
    obs, _ = env.reset(seed=1)
    base.sim.state[:] = _rest_state()[0]
    base.sim.dist[:] = 0
    for t in range(500):
        obs, r, term, trunc, info = env.step(np.full(4, Q.HOVER_ACTION, np.float32))
        assert not term
    assert trunc and info["is_success"] is True and info["frames"] == 1
    assert env.get_wrapper_attr("env_id") == "builtin/quadrotor-hover"
    frame = base.render()
    assert frame.shape == (128, 256, 3) and frame.dtype == np.uint8 and (frame != 255).any()
    with pytest.raises(ConfigError, match="unknown option"):
        make("builtin/quadrotor-hover", seed=0, obs="state", wind=1)


def test_waypoints_variant_is_the_hover_task_relative_to_a_moving_target():
    from pixelrl.envs import make

    wps = ((0.0, 0.0, 0.0), (0.3, 0.0, 0.0), (0.3, 0.3, 0.1))
    env = make("builtin/quadrotor-waypoints", seed=0, obs="state", waypoints=wps, waypoint_steps=50)
    base = env.unwrapped
    obs, _ = env.reset(seed=3)
    # a vehicle resting exactly on each target in turn: relative position 0, full reward, success at the end
    total_steps = 0
    for k, target in enumerate(wps):
        for t in range(50):
            base.sim.state[:] = _rest_state()[0]
            base.sim.state[0, 0:3] = target
            base.sim.dist[:] = 0
            obs, r, term, trunc, info = env.step(np.full(4, Q.HOVER_ACTION, np.float32))
            total_steps += 1
            assert not term
            np.testing.assert_allclose(info["critic_obs"][0:3], np.asarray(target) - info["target"], atol=1e-6)
            assert abs(obs[0:3] - (np.asarray(target) - info["target"])).max() < 0.01  # noise σ 1 mm
            if t < 49 or k == len(wps) - 1:
                np.testing.assert_allclose(info["target"], target)
    assert trunc and total_steps == 150 and info["is_success"] is True
    assert r == pytest.approx(2.0, abs=1e-6)
    # leaving the box around the current target terminates, wherever the world origin is
    env.reset(seed=4)
    base.sim.state[0, 0:3] = (0.0, 0.0, 0.7)
    assert env.step(np.zeros(4, np.float32))[2]
    with pytest.raises(ConfigError, match="within 0.4 m"):
        make("builtin/quadrotor-waypoints", seed=0, obs="state", waypoints=((0, 0, 0), (1.0, 0, 0)))
