"""``builtin/quadrotor-hover``: the Crazyflie 2.1 hover task of "Learning to Fly in Seconds" (Eschmann et al. 2023).

The simulator replicates the training configuration of the authors' code (arplaboratory/learning-to-fly,
``src/config/*.h`` and ``include/learning_to_fly/simulator/*`` with its rl_tools submodule @3a612e2), not the newer
re-identified rl-tools "l2f" parameters:

- Crazyflie 2.1: mass 0.027 kg, g 9.81 m/s²; rotors at (±0.028, ±0.028, 0) m in the X layout, order (+x,−y),
  (−x,−y), (−x,+y), (+x,+y), yaw-torque signs −, +, −, +; thrust f = 3.16e-10·RPM² N along body z per rotor, yaw
  torque 0.005964552·f; inertia diag(3.85e-6, 3.85e-6, 5.9675e-6) kg·m².
- First-order motors dRPM/dt = (RPM_cmd − RPM)/0.15 s with the RPMs part of the RK4 state (the command is held
  over the step), RPMs clamped to [0, 21702] after each step; action a ∈ [−1, 1]⁴, RPM_cmd = (a + 1)/2·21702
  (hover: a ≈ 0.334).
- RK4 at dt = 0.01 s (100 Hz); the quaternion is renormalised after each step; no action noise.
- Per-episode disturbances held for the episode: a world-frame force N(0, m·g/20) and a body torque
  N(0, m·g/10000) per axis.
- Initial states: with probability 0.9 position U(±0.2 m) per axis and a uniform random attitude resampled until
  its angle is ≤ 90°; with probability 0.1 ("guidance") position 0 and level. Velocities are always U(±1 m/s)
  and angular velocities U(±1 rad/s) per axis; the RPMs start at 10851 (a = 0); the action history at 0.
- Episodes last 500 steps (5 s, truncation) and terminate when |p_i| > 0.6 m on any axis (or |v_i|, |ω_i| > 1000,
  the code's ``fast_learning`` thresholds, which only catch a vehicle spun up until the integration fails).

:class:`QuadrotorBatch` steps N vehicles at once. Its arithmetic is written per state component, so the same code
runs on NumPy rows (N vehicles as one array operation) and on Python floats (one vehicle, where NumPy's per-call
overhead costs more than the arithmetic); :func:`make_hover` is the Gymnasium env for single use with the actor's
146-d observation (``obs='state'``) or rendered frames (``obs='pixels'``).

Success test (stated in ``docs/envs/quadrotor.md``): from a start drawn from the training distribution the vehicle
survives all 500 steps and ends closer than :data:`SUCCESS_RADIUS` = 0.2 m to the target (the origin): the
authors' own validation metric ``SettlingFractionPosition(200mm)`` (learning-to-fly ``src/config/validation.h``,
``include/learning_to_fly/simulator/metrics.h``), which the paper does not report. The env reports it as
``info["is_success"]`` on the last step of every episode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from pixelrl.errors import ConfigError

# ---- Crazyflie 2.1 as in learning-to-fly's training config ---------------------------------------------------
MASS = 0.027
GRAVITY = 9.81
ARM = 0.028
"""x and y offset of each rotor (arm length 0.0396 m)."""
ROTOR_X = (ARM, -ARM, -ARM, ARM)
ROTOR_Y = (-ARM, -ARM, ARM, ARM)
YAW_SIGN = (-1.0, 1.0, -1.0, 1.0)
THRUST_COEF = 3.16e-10
"""N per RPM²."""
TORQUE_COEF = 0.005964552
"""yaw torque per N of rotor thrust (N·m / N)."""
JXX, JYY, JZZ = 3.85e-6, 3.85e-6, 5.9675e-6
MOTOR_T = 0.15
"""first-order motor time constant (s): 0.15 in the code and paper (later sys-id: ~0.072 s; kept to replicate)."""
RPM_MAX = 21702.0
DT = 0.01
EPISODE_STEPS = 500
POSITION_LIMIT = 0.6
VELOCITY_LIMIT = 1000.0
"""|v_i| (m/s) and |ω_i| (rad/s) above which an episode terminates (learning-to-fly's ``termination::fast_learning``:
in effect only a guard against a vehicle spun up until the integration fails)."""
HISTORY = 32
OBS_DIM = 3 + 9 + 3 + 3 + 4 * HISTORY  # 146
CRITIC_DIM = 3 + 9 + 3 + 3 + 6 + 4  # 28
FORCE_SIGMA = MASS * GRAVITY / 20
TORQUE_SIGMA = MASS * GRAVITY / 10000
INIT_POSITION = 0.2
INIT_VELOCITY = 1.0
INIT_ANGULAR_VELOCITY = 1.0
INIT_MAX_ANGLE = math.pi / 2
GUIDANCE = 0.1
OBS_NOISE = (0.001, 0.001, 0.002, 0.002)
"""Gaussian σ of the actor's observation: position, each rotation-matrix entry, velocity, angular velocity."""
SUCCESS_RADIUS = 0.2
"""m: a surviving episode succeeds when its last position is closer than this to the target (the authors' 200 mm)."""
HOVER_RPM = math.sqrt(MASS * GRAVITY / 4 / THRUST_COEF)
HOVER_ACTION = 2 * HOVER_RPM / RPM_MAX - 1  # 0.3340
INIT_RPM = RPM_MAX / 2  # a = 0


@dataclass(frozen=True)
class RewardWeights:
    """r = −0.5·(position·‖p‖² + orientation·(1 − q_w²) + linear_velocity·‖v‖² + action·‖a − a_hover‖²) + 2 on the
    pre-step state, 0 on a terminating transition. Defaults: the training start; the curriculum multiplies them."""

    position: float = 5.0
    orientation: float = 5.0
    linear_velocity: float = 0.01
    action: float = 0.01
    constant: float = 2.0
    scale: float = 0.5


TRAIN_START_WEIGHTS = RewardWeights()
EVAL_WEIGHTS = RewardWeights(position=40.0, orientation=5.0, linear_velocity=1.0, action=1.0)
"""The curriculum's caps, the authors' evaluation reward."""


def reward(w: RewardWeights, p, qw, v, a, terminated):
    """Vectorised reward of transitions: ``p``, ``v`` ``[..., 3]``, ``qw`` ``[...]``, executed action ``a``
    ``[..., 4]``, ``terminated`` bool ``[...]``."""
    cost = (w.position * (p * p).sum(-1) + w.orientation * (1.0 - qw * qw) + w.linear_velocity * (v * v).sum(-1)
            + w.action * ((a - HOVER_ACTION) ** 2).sum(-1))
    return np.where(terminated, 0.0, -w.scale * cost + w.constant)


# ---- dynamics, component-wise (works on floats and on NumPy rows) --------------------------------------------


def _derivative(s, cmd, fx, fy, fz, tx, ty, tz):
    """d/dt of the 17 state components ``s`` = (px, py, pz, vx, vy, vz, qw, qx, qy, qz, wx, wy, wz, r0..r3) under
    the held RPM command ``cmd`` (4 components) and the disturbance force (world) / torque (body)."""
    _, _, _, vx, vy, vz, qw, qx, qy, qz, wx, wy, wz, r0, r1, r2, r3 = s
    f0, f1, f2, f3 = THRUST_COEF * r0 * r0, THRUST_COEF * r1 * r1, THRUST_COEF * r2 * r2, THRUST_COEF * r3 * r3
    thrust = f0 + f1 + f2 + f3
    # body torque Σ r_i × (0, 0, f_i) + yaw torques
    mx = ARM * (-f0 - f1 + f2 + f3) + tx
    my = -ARM * (f0 - f1 - f2 + f3) + ty
    mz = TORQUE_COEF * (-f0 + f1 - f2 + f3) + tz
    # world acceleration: R e_z · thrust / m + g + F / m
    t_m = thrust / MASS
    ax = 2.0 * (qx * qz + qw * qy) * t_m + fx / MASS
    ay = 2.0 * (qy * qz - qw * qx) * t_m + fy / MASS
    az = (1.0 - 2.0 * (qx * qx + qy * qy)) * t_m - GRAVITY + fz / MASS
    # ω̇ = J⁻¹ (τ − ω × Jω)
    dwx = (mx - (wy * JZZ * wz - wz * JYY * wy)) / JXX
    dwy = (my - (wz * JXX * wx - wx * JZZ * wz)) / JYY
    dwz = (mz - (wx * JYY * wy - wy * JXX * wx)) / JZZ
    # q̇ = ½ q ⊗ (0, ω)
    dqw = -0.5 * (qx * wx + qy * wy + qz * wz)
    dqx = 0.5 * (qw * wx + qy * wz - qz * wy)
    dqy = 0.5 * (qw * wy - qx * wz + qz * wx)
    dqz = 0.5 * (qw * wz + qx * wy - qy * wx)
    c0, c1, c2, c3 = cmd
    k = 1.0 / MOTOR_T
    return (vx, vy, vz, ax, ay, az, dqw, dqx, dqy, dqz, dwx, dwy, dwz,
            (c0 - r0) * k, (c1 - r1) * k, (c2 - r2) * k, (c3 - r3) * k)


def rk4_step(s, cmd, dist, dt=DT):
    """One RK4 step of the component tuple ``s`` (see :func:`_derivative`); ``dist`` = (fx, fy, fz, tx, ty, tz).
    Returns the new components with the quaternion renormalised and the RPMs clamped to [0, RPM_MAX]."""
    k1 = _derivative(s, cmd, *dist)
    h = 0.5 * dt
    k2 = _derivative(tuple(a + h * b for a, b in zip(s, k1)), cmd, *dist)
    k3 = _derivative(tuple(a + h * b for a, b in zip(s, k2)), cmd, *dist)
    k4 = _derivative(tuple(a + dt * b for a, b in zip(s, k3)), cmd, *dist)
    d6 = dt / 6.0
    out = [a + d6 * (b1 + 2.0 * b2 + 2.0 * b3 + b4) for a, b1, b2, b3, b4 in zip(s, k1, k2, k3, k4)]
    qw, qx, qy, qz = out[6:10]
    if isinstance(qw, float):
        n = 1.0 / math.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
        out[6:10] = qw * n, qx * n, qy * n, qz * n
        out[13:17] = [min(max(r, 0.0), RPM_MAX) for r in out[13:17]]
    else:
        n = 1.0 / np.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
        out[6:10] = qw * n, qx * n, qy * n, qz * n
        out[13:17] = [np.clip(r, 0.0, RPM_MAX) for r in out[13:17]]
    return out


def rotation_matrix(q: np.ndarray) -> np.ndarray:
    """``q`` ``[..., 4]`` (w, x, y, z) -> R ``[..., 3, 3]`` (body to world)."""
    w, x, y, z = np.moveaxis(q, -1, 0)
    r = np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                  2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                  2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)
    return r.reshape(q.shape[:-1] + (3, 3))


def sample_initial_states(rng: np.random.Generator, n: int) -> np.ndarray:
    """``[n, 17]`` start states (init::orientation_biggest_angle with 10 % guidance starts, see the module doc)."""
    s = np.zeros((n, 17))
    guidance = rng.random(n) < GUIDANCE
    s[:, 0:3] = np.where(guidance[:, None], 0.0, rng.uniform(-INIT_POSITION, INIT_POSITION, (n, 3)))
    q = np.zeros((n, 4))
    todo = np.flatnonzero(~guidance)
    while todo.size:  # uniform random rotation (normalised 4-D Gaussian), resampled until its angle ≤ 90°
        c = rng.standard_normal((todo.size, 4))
        c /= np.linalg.norm(c, axis=1, keepdims=True)
        ok = 2 * np.arccos(np.minimum(np.abs(c[:, 0]), 1.0)) <= INIT_MAX_ANGLE
        q[todo[ok]] = c[ok]
        todo = todo[~ok]
    q[guidance, 0] = 1.0
    s[:, 6:10] = q
    s[:, 3:6] = rng.uniform(-INIT_VELOCITY, INIT_VELOCITY, (n, 3))
    s[:, 10:13] = rng.uniform(-INIT_ANGULAR_VELOCITY, INIT_ANGULAR_VELOCITY, (n, 3))
    s[:, 13:17] = INIT_RPM
    return s


def sample_disturbances(rng: np.random.Generator, n: int) -> np.ndarray:
    """``[n, 6]``: world force N(0, m·g/20) and body torque N(0, m·g/10000) per axis."""
    return np.concatenate([rng.normal(0.0, FORCE_SIGMA, (n, 3)), rng.normal(0.0, TORQUE_SIGMA, (n, 3))], 1)


def action_to_rpm(a):
    return (np.clip(a, -1.0, 1.0) + 1.0) * (0.5 * RPM_MAX)


class QuadrotorBatch:
    """N vehicles stepped together. ``state`` ``[N, 17]`` = p, v, q (w, x, y, z), ω (body), RPMs; ``dist`` ``[N, 6]``.

    ``step(actions [N, 4])`` advances every vehicle by one RK4 step (with ``backend='numpy'`` as one array operation
    per component, with ``'python'`` vehicle by vehicle on floats); choose with :func:`fastest_backend`."""

    def __init__(self, n: int, *, backend: str = "numpy") -> None:
        if n < 1:
            raise ConfigError(f"the number of vehicles must be >= 1, got {n}")
        if backend not in ("numpy", "python"):
            raise ConfigError(f"backend must be 'numpy' or 'python', got {backend!r}")
        self.n, self.backend = n, backend
        self.state = np.zeros((n, 17))
        self.state[:, 6] = 1.0
        self.dist = np.zeros((n, 6))

    def reset(self, rng: np.random.Generator, idx: np.ndarray | None = None) -> None:
        """Draw start states and disturbances for vehicles ``idx`` (all when None)."""
        idx = np.arange(self.n) if idx is None else np.asarray(idx)
        self.state[idx] = sample_initial_states(rng, len(idx))
        self.dist[idx] = sample_disturbances(rng, len(idx))

    def step(self, actions: np.ndarray) -> None:
        cmd = action_to_rpm(np.asarray(actions, dtype=np.float64))
        if self.backend == "numpy":
            out = rk4_step(tuple(self.state.T), tuple(cmd.T), tuple(self.dist.T))
            self.state = np.stack(np.broadcast_arrays(*out), 1)
        else:
            for i in range(self.n):
                out = rk4_step(tuple(self.state[i].tolist()), tuple(cmd[i].tolist()), tuple(self.dist[i].tolist()))
                self.state[i] = out

    def terminated(self) -> np.ndarray:
        """|p_i| > 0.6 m, or |v_i|, |ω_i| > 1000 (or not finite), on any axis."""
        s = self.state
        if self.backend == "python":
            return np.array([not (max(abs(r[0]), abs(r[1]), abs(r[2])) <= POSITION_LIMIT
                                  and max(abs(r[3]), abs(r[4]), abs(r[5]), abs(r[10]), abs(r[11]), abs(r[12]))
                                  <= VELOCITY_LIMIT) for r in s.tolist()], bool)
        return ~((np.abs(s[:, 0:3]) <= POSITION_LIMIT).all(1) & (np.abs(s[:, 3:6]) <= VELOCITY_LIMIT).all(1)
                 & (np.abs(s[:, 10:13]) <= VELOCITY_LIMIT).all(1))

    def critic_obs(self) -> np.ndarray:
        """``[N, 28]``: p, R row-major, v, ω (no noise), disturbance force and torque, RPMs in [−1, 1]."""
        s = self.state
        if self.backend == "python":  # a few vehicles: floats beat NumPy's per-call overhead
            rows = []
            for r, d in zip(s.tolist(), self.dist.tolist()):
                w, x, y, z = r[6:10]
                k = 2.0 / RPM_MAX
                rows.append(r[0:3] + [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                                      2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                                      2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]
                            + r[3:6] + r[10:13] + d + [r[13] * k - 1, r[14] * k - 1, r[15] * k - 1, r[16] * k - 1])
            return np.array(rows)
        return np.concatenate([s[:, 0:3], rotation_matrix(s[:, 6:10]).reshape(-1, 9), s[:, 3:6], s[:, 10:13],
                               self.dist, s[:, 13:17] * (2.0 / RPM_MAX) - 1.0], 1)


OBS_SIGMA = np.repeat(np.asarray(OBS_NOISE), (3, 9, 3, 3))
"""The per-entry σ of the noise on the actor's 18 state entries."""


def actor_state(critic_obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The first 18 entries of the actor's observation: the critic's p, R, v, ω plus Gaussian noise."""
    x = critic_obs[..., :18]
    return x + rng.standard_normal(x.shape) * OBS_SIGMA


def fastest_backend(n: int, repeats: int = 200) -> tuple[str, dict]:
    """Measure both backends on ``n`` vehicles; return the faster one's name and the µs per step of each."""
    import time

    times = {}
    rng = np.random.default_rng(0)
    for backend in ("python", "numpy"):
        sim = QuadrotorBatch(n, backend=backend)
        sim.reset(rng)
        a = np.full((n, 4), HOVER_ACTION)
        sim.step(a)
        t = time.perf_counter()
        for _ in range(repeats):
            sim.step(a)
        times[backend] = (time.perf_counter() - t) / repeats * 1e6
    return min(times, key=times.get), times


# ---- rendering ---------------------------------------------------------------------------------------------------


def render_frame(state: np.ndarray, size: int = 256, trail: np.ndarray | None = None) -> np.ndarray:
    """Two views (top: x-y, side: x-z) of one vehicle as ``uint8[size, 2·size, 3]``: the body's arms (rotor 0 red),
    the target (cross), the ±0.6 m bounds, the 0.2 m success radius and the path so far. Pure NumPy rasterising."""
    img = np.full((size, 2 * size, 3), 255, np.uint8)
    half = POSITION_LIMIT * 1.1
    scale = (size - 1) / (2 * half)
    R = rotation_matrix(state[6:10])
    rotors = np.array([[x, y, 0.0] for x, y in zip(ROTOR_X, ROTOR_Y)]) * 3.0  # arms drawn 3x for visibility
    world = state[:3] + rotors @ R.T

    def to_px(u, w, view):
        col = (u + half) * scale + view * size
        row = (half - w) * scale
        return np.clip(np.round(row).astype(int), 0, size - 1), np.clip(np.round(col).astype(int), view * size,
                                                                          view * size + size - 1)

    def line(p0, p1, color, view, width=1):
        n = 40
        t = np.linspace(0, 1, n)[:, None]
        pts = p0 + (p1 - p0) * t
        r, c = to_px(pts[:, 0], pts[:, 1], view)
        for dr in range(-(width // 2), width // 2 + 1):
            for dc in range(-(width // 2), width // 2 + 1):
                img[np.clip(r + dr, 0, size - 1), np.clip(c + dc, view * size, view * size + size - 1)] = color

    for view, (i, j) in enumerate(((0, 1), (0, 2))):
        lim = POSITION_LIMIT
        box = np.array([[-lim, -lim], [lim, -lim], [lim, lim], [-lim, lim], [-lim, -lim]])
        for a, b in zip(box[:-1], box[1:]):
            line(a, b, (180, 180, 180), view)
        ang = np.linspace(0, 2 * np.pi, 60)
        circ = np.stack([np.cos(ang), np.sin(ang)], 1) * SUCCESS_RADIUS
        for a, b in zip(circ[:-1], circ[1:]):
            line(a, b, (150, 220, 150), view)
        line(np.array([-0.03, 0.0]), np.array([0.03, 0.0]), (0, 150, 0), view)
        line(np.array([0.0, -0.03]), np.array([0.0, 0.03]), (0, 150, 0), view)
        if trail is not None and len(trail) > 1:
            r, c = to_px(trail[:, i], trail[:, j], view)
            img[r, c] = (120, 120, 255)
        centre = state[[i, j]]
        for k in (2, 3, 1, 0):
            line(centre, world[k, [i, j]], (220, 0, 0) if k == 0 else (30, 30, 30), view, width=3)
        if view == 0:
            img[:, size - 1] = 0
    return img


# ---- Gymnasium env -------------------------------------------------------------------------------------------


class QuadrotorHoverEnv(gym.Env):
    """One Crazyflie hovering at the origin. Observation: the actor's 146 floats (noisy p, R, v, ω and the last 32
    actions, oldest first); action: 4 motor commands in [−1, 1]; reward: :func:`reward` with ``weights``.
    ``info`` carries ``frames`` (1), ``critic_obs`` (the privileged 28-d state), and on an episode's last step
    ``is_success`` (survived 500 steps and ``‖p‖ ≤ 0.2 m``)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}
    renders_state_video = True
    """``pixelrl eval --video`` films state-observation episodes with :meth:`render`."""

    def __init__(self, *, seed: int | None = None, weights: RewardWeights = TRAIN_START_WEIGHTS,
                 render_size: int = 128, backend: str = "python", waypoints=None,
                 waypoint_steps: int = EPISODE_STEPS) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        self.render_mode = "rgb_array"
        self.weights = weights
        self.render_size = int(render_size)
        self.sim = QuadrotorBatch(1, backend=backend)
        self._rng = np.random.default_rng(seed)
        self._history = np.zeros((HISTORY, 4))
        self._t = 0
        self._trail: list[np.ndarray] = []
        self.waypoints = np.zeros((1, 3)) if waypoints is None else np.asarray(waypoints, dtype=np.float64)
        self.waypoint_steps = int(waypoint_steps)
        self.episode_steps = len(self.waypoints) * self.waypoint_steps

    def _target(self) -> np.ndarray:
        return self.waypoints[min(self._t // self.waypoint_steps, len(self.waypoints) - 1)]

    def _critic_obs(self) -> np.ndarray:
        """The privileged state with the position relative to the current target."""
        c = self.sim.critic_obs()[0]
        c[0:3] -= self._target()
        return c

    def _obs(self) -> np.ndarray:
        state = actor_state(self._critic_obs(), self._rng)
        return np.concatenate([state, self._history.reshape(-1)]).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.sim.reset(self._rng)
        self._history[:] = 0.0
        self._t = 0
        self.sim.state[0, 0:3] += self.waypoints[0]  # starts around the first waypoint
        self._trail = [self.sim.state[0, :3].copy()]
        return self._obs(), {"critic_obs": self._critic_obs().astype(np.float32)}

    def step(self, action):
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(4), -1.0, 1.0)
        s = self.sim.state[0]
        p, qw, v = s[0:3] - self._target(), float(s[6]), s[3:6].copy()
        self.sim.step(a[None])
        self._t += 1
        self._history = np.roll(self._history, -1, 0)
        self._history[-1] = a
        # termination in the frame of the target in force before the step (the hover box around it)
        target = self.waypoints[min((self._t - 1) // self.waypoint_steps, len(self.waypoints) - 1)]
        s = self.sim.state[0]
        terminated = not (bool((np.abs(s[0:3] - target) <= POSITION_LIMIT).all())
                          and bool((np.abs(s[3:6]) <= VELOCITY_LIMIT).all())
                          and bool((np.abs(s[10:13]) <= VELOCITY_LIMIT).all()))
        truncated = not terminated and self._t >= self.episode_steps
        r = float(reward(self.weights, p, qw, v, a, terminated))
        self._trail.append(self.sim.state[0, :3].copy())
        info = {"frames": 1, "critic_obs": self._critic_obs().astype(np.float32), "target": self._target().copy()}
        if terminated or truncated:
            final = np.linalg.norm(self.sim.state[0, :3] - self.waypoints[-1])
            info["is_success"] = bool(truncated and final < SUCCESS_RADIUS)
        return self._obs(), r, terminated, truncated, info

    def render(self):
        state = self.sim.state[0].copy()
        state[0:3] -= self._target()  # drawn around the current target
        return render_frame(state, self.render_size, np.asarray(self._trail) - self._target())


def make_hover(*, seed=None, size=84, obs="state", action_repeat=1, frame_stack=None, weights=None,
               reward="train", render_size=128, **options):
    """``builtin/quadrotor-hover``. Options: ``reward`` = ``"train"`` (the curriculum's start weights, default) or
    ``"eval"`` (its caps, the authors' evaluation reward); ``render_size`` (pixels of each of the two views).
    ``obs='state'`` gives the actor's 146-d observation; pixel observations render the two views."""
    from pixelrl.envs.factory import _finish  # noqa: PLC0415 (the factory imports this package)

    if options:
        raise ConfigError(f"unknown option(s) for builtin/quadrotor-hover: {', '.join(sorted(options))}; known: "
                          "reward ('train' or 'eval'), render_size")
    if reward not in ("train", "eval"):
        raise ConfigError(f"builtin/quadrotor-hover: reward must be 'train' or 'eval', got {reward!r}")
    if action_repeat is not None and int(action_repeat) != 1:
        raise ConfigError("builtin/quadrotor-hover runs at the paper's 100 Hz control rate: action_repeat must be 1")
    w = weights or (TRAIN_START_WEIGHTS if reward == "train" else EVAL_WEIGHTS)
    env = QuadrotorHoverEnv(seed=seed, weights=w, render_size=render_size)
    stack = (1 if obs == "state" else 3) if frame_stack is None else int(frame_stack)
    return _finish(env, env_id="builtin/quadrotor-hover", obs=obs, size=int(size), action_repeat=1,
                   frame_stack=stack, seed=seed)


DEFAULT_WAYPOINTS = ((0.0, 0.0, 0.0), (0.3, 0.0, 0.0), (0.3, 0.3, 0.0), (0.0, 0.3, 0.0), (0.0, 0.0, 0.0))
WAYPOINT_JUMP = POSITION_LIMIT - INIT_POSITION
"""Largest per-axis distance between consecutive waypoints (0.4 m): a switch never puts the vehicle outside the
termination box around the new target."""


def make_waypoints(*, seed=None, size=84, obs="state", action_repeat=1, frame_stack=None, reward="train",
                   render_size=128, waypoints=DEFAULT_WAYPOINTS, waypoint_steps=200, **options):
    """``builtin/quadrotor-waypoints``: the hover task with a moving target, the variant gym-pybullet-drones users
    ask for. The target steps through ``waypoints`` (metres, world frame; default a 0.3 m square at 2 s per corner),
    ``waypoint_steps`` each; the episode lasts all of them. Observation, critic state, reward and the ±0.6 m
    termination box are those of the hover task relative to the current target, so a hover policy tracks waypoints
    unchanged; the start is drawn around the first waypoint; success = survive and end within 0.2 m of the last."""
    from pixelrl.envs.factory import _finish  # noqa: PLC0415

    if options:
        raise ConfigError(f"unknown option(s) for builtin/quadrotor-waypoints: {', '.join(sorted(options))}; known: "
                          "waypoints, waypoint_steps, reward ('train' or 'eval'), render_size")
    w = np.asarray(waypoints, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != 3 or len(w) < 1 or not np.isfinite(w).all():
        raise ConfigError(f"builtin/quadrotor-waypoints: waypoints must be a list of (x, y, z) in metres, got "
                          f"{waypoints!r}")
    if len(w) > 1 and np.abs(np.diff(w, axis=0)).max() > WAYPOINT_JUMP:
        raise ConfigError(f"builtin/quadrotor-waypoints: consecutive waypoints must be within {WAYPOINT_JUMP:.1f} m "
                          "per axis (the vehicle would start outside the termination box around the next one); add "
                          "intermediate waypoints")
    if int(waypoint_steps) < 1:
        raise ConfigError(f"builtin/quadrotor-waypoints: waypoint_steps must be >= 1, got {waypoint_steps}")
    if reward not in ("train", "eval"):
        raise ConfigError(f"builtin/quadrotor-waypoints: reward must be 'train' or 'eval', got {reward!r}")
    if action_repeat is not None and int(action_repeat) != 1:
        raise ConfigError("builtin/quadrotor-waypoints runs at 100 Hz: action_repeat must be 1")
    env = QuadrotorHoverEnv(seed=seed, weights=TRAIN_START_WEIGHTS if reward == "train" else EVAL_WEIGHTS,
                            render_size=render_size, waypoints=w, waypoint_steps=int(waypoint_steps))
    stack = (1 if obs == "state" else 3) if frame_stack is None else int(frame_stack)
    return _finish(env, env_id="builtin/quadrotor-waypoints", obs=obs, size=int(size), action_repeat=1,
                   frame_stack=stack, seed=seed)


__all__ = ["make_waypoints", "QuadrotorBatch", "QuadrotorHoverEnv", "RewardWeights", "make_hover", "reward", "rk4_step",
           "render_frame", "sample_initial_states", "fastest_backend", "HOVER_ACTION", "SUCCESS_RADIUS"]
