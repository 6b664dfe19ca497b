"""builtin/shapes-*: placement without overlap, success and failure ends, determinism, pushing, OOD splits,
rendering (shapes, colours, throughput)."""

import time

import numpy as np
import pytest

from pixelrl.envs import make
from pixelrl.envs.builtin.shapes import (AGENT, COLOR_RGB, COLORS, EPS, SHAPES, TASKS, random_scenes,
                                         render_scenes)
from pixelrl.errors import ConfigError

MAIN = ["shapes-object-goal", "shapes-object-interaction", "shapes-object-comparison", "shapes-property-comparison"]


def _base(env):
    return env.unwrapped


@pytest.mark.parametrize("name", list(TASKS))
def test_objects_never_overlap_at_reset(name):
    env = make(f"builtin/{name}", seed=0, size=64)
    for ep in range(100):
        env.reset(seed=ep)
        b = _base(env)
        n = len(b.pos)
        agent, goal = n - 1, (b.spec_.num_objects if b.spec_.kind == "push" else None)
        for i in range(n):
            for j in range(i + 1, n):
                if goal is not None and {i, j} == {goal, agent}:
                    continue  # both fixed by the task
                gap = np.linalg.norm(b.pos[i] - b.pos[j]) - (b.scale[i] + b.scale[j]) / 2
                assert gap >= EPS - 1e-9, (name, ep, i, j, gap)
        np.testing.assert_allclose(b.pos[agent], (0.5, 0.5))
        # the episode does not start touching anything
        assert np.linalg.norm(b.pos[:b.spec_.num_objects] - b.pos[agent], axis=1).min() >= AGENT[2]


def _walk_to(env, target_pos, max_steps=100):
    b = _base(env)
    for _ in range(max_steps):
        d = target_pos - b.pos[-1]
        a = (3 if d[0] > 0 else 1) if abs(d[0]) >= abs(d[1]) else (0 if d[1] > 0 else 2)
        obs, r, term, trunc, info = env.step(a)
        if term or trunc:
            return r, term, trunc, info
    raise AssertionError("episode did not end")


@pytest.mark.parametrize("name", ["shapes-object-goal", "shapes-object-comparison", "shapes-property-comparison"])
def test_reaching_the_target_succeeds_and_a_wrong_object_fails(name):
    env = make(f"builtin/{name}", seed=0, size=64)
    wins = fails = 0
    for ep in range(30):
        env.reset(seed=ep)
        b = _base(env)
        r, term, trunc, info = _walk_to(env, b.pos[b.target].copy())
        if r == 1.0:
            assert term and info["is_success"]
            wins += 1
        else:  # another object was in the way: a failure end
            assert term and r == 0.0 and not info["is_success"]
        env.reset(seed=1000 + ep)
        wrong = next(i for i in range(b.spec_.num_objects) if i != b.target)
        r, term, trunc, info = _walk_to(env, b.pos[wrong].copy())
        assert term and not trunc
        if not info["is_success"]:
            assert r == 0.0
            fails += 1
    assert wins >= 20 and fails >= 20


def test_time_limit_truncates_after_100_steps():
    env = make("builtin/shapes-object-goal", seed=0, size=64)
    env.reset(seed=3)
    b = _base(env)
    b.pos[:4] = [(0.15, 0.15), (0.85, 0.15), (0.15, 0.85), (0.85, 0.85)]  # out of the way of the pacing agent
    out, steps = None, 0
    for a in [0, 2] * 60:
        out = env.step(a)
        steps += 1
        if out[2] or out[3]:
            break
    assert steps == 100 and out[3] and not out[2] and out[1] == 0.0 and not out[4]["is_success"]


@pytest.mark.parametrize("name", MAIN)
def test_same_seed_same_frames(name):
    def run(seed):
        env = make(f"builtin/{name}", seed=seed, size=64)
        frames = [env.reset()[0]]
        rng = np.random.default_rng(0)
        for _ in range(60):
            obs, r, term, trunc, _ = env.step(int(rng.integers(4)))
            frames.append(obs)
            if term or trunc:
                frames.append(env.reset()[0])
        return np.stack(frames)

    a, b, c = run(5), run(5), run(6)
    assert a.dtype == np.uint8 and a.shape[1:] == (3, 64, 64)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[0], c[0])


def test_push_moves_the_target_onto_the_goal():
    env = make("builtin/shapes-object-interaction", seed=0, size=64)
    b = _base(env)
    env.reset(seed=0)
    # a hand-made scene: the blue square right of the goal's column, the agent right of it, the others far away
    b.pos[0] = (0.3, 0.075 + 0.0)
    b.pos[1], b.pos[2] = (0.8, 0.8), (0.8, 0.55)
    b.pos[-1] = (0.45, 0.075)
    ends = []
    for _ in range(10):
        obs, r, term, trunc, info = env.step(1)  # push left
        ends.append((r, term))
        if term:
            break
    assert ends[-1] == (1.0, True) and info["is_success"]
    # a square that is not the target on the goal ends the episode with 0
    env.reset(seed=1)
    b.pos[0] = (0.8, 0.8)
    b.pos[1], b.pos[2] = (0.3, 0.075), (0.8, 0.55)
    b.pos[-1] = (0.45, 0.075)
    for _ in range(10):
        obs, r, term, trunc, info = env.step(1)
        if term:
            break
    assert term and r == 0.0 and not info["is_success"]


def test_push_blocked_at_a_wall():
    env = make("builtin/shapes-object-interaction", seed=0, size=64)
    b = _base(env)
    env.reset(seed=0)
    b.pos[0], b.pos[1], b.pos[2] = (0.5, 0.925), (0.1, 0.5), (0.9, 0.5)
    b.pos[-1] = (0.5, 0.8)
    for _ in range(5):
        env.step(0)  # up into a square at the top wall
    assert b.pos[0][1] == pytest.approx(0.925) and b.pos[-1][1] < 0.8 + 1e-9


def test_comparison_tasks_have_one_odd_object():
    for name, oc in [("shapes-object-comparison", True), ("shapes-property-comparison", False)]:
        env = make(f"builtin/{name}", seed=0, size=64)
        for ep in range(50):
            env.reset(seed=ep)
            b = _base(env)
            n = b.spec_.num_objects
            props = [(b.color[i], b.shape[i]) for i in range(n)]
            t = b.target
            unique = [k for k in range(2) if sum(p[k] == props[t][k] for p in props) == 1]
            assert unique, (name, ep, props, t)
            if oc:  # the others are identical
                others = {props[i] for i in range(n) if i != t}
                assert len(others) == 1


def test_ood_splits():
    env = make("builtin/shapes-object-comparison", seed=0, size=64, num_objects=7)
    env.reset()
    assert _base(env).spec_.num_objects == 7 and len(_base(env).pos) == 8
    env = make("builtin/shapes-object-comparison-ood-unseen-color", seed=0, size=64)
    seen = set()
    for ep in range(30):
        env.reset(seed=ep)
        seen |= {COLORS[c] for c in _base(env).color[:-1]}
    assert seen == {"blue", "pink"}
    blue, yellow = COLORS.index("blue"), COLORS.index("yellow")
    for mode in ("train", "test"):
        env = make(f"builtin/shapes-property-comparison-pairing-{mode}", seed=0, size=64)
        paired = 0
        for ep in range(40):
            env.reset(seed=ep)
            b = _base(env)
            tc = b.color[b.target]
            others = {b.color[i] for i in range(b.spec_.num_objects) if i != b.target}
            paired += int({tc} | others == {blue, yellow})
        assert (paired == 0) if mode == "train" else (paired == 40)
    with pytest.raises(ConfigError, match="unknown option"):
        make("builtin/shapes-object-goal", colour=("blue",))
    with pytest.raises(ConfigError, match="unknown colour"):
        make("builtin/shapes-object-goal", colors=("mauve",))


def test_state_observation():
    env = make("builtin/shapes-object-goal", seed=0, obs="state")
    obs, _ = env.reset()
    b = _base(env)
    rows = obs.reshape(5, len(COLORS) + len(SHAPES) + 3)
    assert rows[-1, COLORS.index("red")] == 1 and rows[-1, len(COLORS) + SHAPES.index("circle")] == 1
    np.testing.assert_allclose(rows[:, -2:], b.pos, atol=1e-6)
    assert rows[b.target, COLORS.index("blue")] == 1 and rows[b.target, len(COLORS) + SHAPES.index("square")] == 1


def test_rendering_draws_the_shapes_in_their_colours():
    pos = np.array([[[0.25, 0.75], [0.75, 0.75], [0.25, 0.25], [0.75, 0.25]]])
    shape = np.array([[SHAPES.index(s) for s in ("square", "triangle", "circle", "star_4")]])
    color = np.array([[COLORS.index(c) for c in ("blue", "green", "red", "yellow")]])
    img = render_scenes(color, shape, np.full((1, 4), 0.3), pos, size=64)[0]
    assert img.shape == (3, 64, 64)
    # centres have the sprite's colour, the background is black
    for (x, y), c in zip(pos[0], ("blue", "green", "red", "yellow")):
        assert tuple(img[:, int((1 - y) * 64), int(x * 64)]) == COLOR_RGB[c]
    assert tuple(img[:, 32, 32]) == (0, 0, 0)
    # areas: every sprite covers scale^2 of the unit square (+- edge pixels)
    for (x, y), c in zip(pos[0], ("blue", "green", "red", "yellow")):
        quad = img[:, int((1 - y) * 64) - 16:int((1 - y) * 64) + 16, int(x * 64) - 16:int(x * 64) + 16]
        area = (quad.transpose(1, 2, 0) == COLOR_RGB[c]).all(-1).sum() / 64 ** 2
        assert abs(area - 0.09) < 0.015, (c, area)
    # y is up: a sprite at y = 0.9 is drawn in the top rows
    top = render_scenes(np.array([[0]]), np.array([[0]]), np.array([[0.1]]), np.array([[[0.5, 0.9]]]), size=64)[0]
    assert top[2, :12].any() and not top[2, 32:].any()


def test_rendering_throughput():
    """Measured frames/s of the batched renderer (pretraining images) and of one env stepping (printed)."""
    rng = np.random.default_rng(0)
    random_scenes(64, rng)
    t = time.perf_counter()
    imgs = random_scenes(2048, rng)
    batched = 2048 / (time.perf_counter() - t)
    env = make("builtin/shapes-object-goal", seed=0, size=64)
    env.reset()
    t, n = time.perf_counter(), 0
    while n < 500:
        _, _, term, trunc, _ = env.step(int(rng.integers(4)))
        n += 1
        if term or trunc:
            env.reset()
    single = n / (time.perf_counter() - t)
    print(f"\nshapes rendering: batched {batched:.0f} images/s, one env {single:.0f} steps/s")
    assert imgs.shape == (2048, 3, 64, 64) and imgs.reshape(2048, -1).any(1).all()
    assert batched > 500 and single > 200  # loose floors: the machine is shared
