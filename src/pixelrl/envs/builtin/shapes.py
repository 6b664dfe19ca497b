"""``builtin/shapes-*``: the 2-D object-centric RL tasks of Yoon et al. 2023 ("An Investigation into Pre-Training
Object-Centric Representations for Reinforcement Learning", ICML), rendered by a batched NumPy rasteriser.

Source of truth: the authors' ``jsikyoon/OCRL`` (``envs/synthetic_envs/{base,target,push,oddoneout,randomobjs}.py``,
``configs/env/*.yaml``), which draws Spriteworld sprites with PIL. The world is the unit square (y up, as
Spriteworld); the agent is a red circle of scale 0.15 that starts at the centre (0.5, 0.5) and moves 0.05 per step
(actions 0 up, 1 left, 2 down, 3 right; clipped so it stays inside); an episode lasts at most 100 steps (a time
limit: truncation). Rewards are sparse: touching the target (centre distance < 0.15, the agent's scale) gives +1 and
ends the episode, touching any other object ends it with 0. Objects are placed uniformly at random, at least
``r_i + r_j + 0.08`` apart (centre to centre; ``r`` = scale / 2) from each other and from the agent, and at least
``r + 0.08`` from the walls (the authors' "hard" mode, which their RL runs use).

Tasks (the authors' config in brackets):

* ``shapes-object-goal`` [``target-N4C4S3S1``]: reach the blue square among 4 objects of colours {blue, green,
  yellow, red} and shapes {square, triangle, star_4}; only the target is a blue square.
* ``shapes-object-interaction`` [``push-N3C4S1S1``]: push the blue square onto the goal, a blue square drawn in the
  bottom-left corner, among 3 squares (4 colours); pushing another square onto the goal ends with 0. Wall margin
  0.15. Pushing follows the authors' ``PushEnv._move_objs``: an object the agent overlaps moves with it unless it is
  at a wall or would overlap another object, and the agent advances only as far as the object did.
* ``shapes-object-comparison`` [``odd-one-out-N4C2S2S1-oc``]: 4 objects; all but one are identical; the odd one
  differs in exactly one property (colour or shape); reach it.
* ``shapes-property-comparison`` [``odd-one-out-N4C2S2S1``]: 4 objects; one has a property value (a colour or a
  shape) no other object has, the other properties vary; reach it.

Out-of-distribution splits (options of :func:`make_env`, and ids of their own, see :data:`TASKS`):
``num_objects`` (the paper's 1-7 objects), ``colors`` / ``shapes`` (properties seen in encoder pretraining but not
in RL, e.g. ``("blue", "yellow")``, or unseen even in pretraining, ``("blue", "pink")``), and
``unseen_combi`` + ``combi_mode`` (a colour pairing held out of training: ``"train"`` never pairs the two colours
as odd one out and others, ``"test"`` always does).

Rendering (:func:`render_scenes`): each sprite is the Spriteworld polygon of area ``scale**2`` (a square of side
``scale``; Spriteworld's circle is a 30-gon, here an exact disc of the same area), rasterised at pixel centres
(even-odd rule) inside a bounding box per sprite, painted in order (objects, then the goal, then the agent) on a
black background, for a whole batch of scenes in a few NumPy calls. ``supersample=k`` renders at ``k`` times the
size and averages ``k x k`` blocks (anti-aliasing; the authors' PIL renderer uses 10x). Deviation: the default is
no supersampling (hard edges), ``supersample=10`` matches the authors' edges more closely at a 100x cost.

``obs="state"`` gives the ground-truth state the paper compares with: per object (then the goal, then the agent)
a one-hot colour (:data:`COLORS`), a one-hot shape (:data:`SHAPES`), the scale and the position, flattened,
zero rows up to ``max_objects``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from pixelrl.errors import ConfigError

__all__ = ["COLORS", "SHAPES", "COLOR_RGB", "TASKS", "TaskSpec", "ShapesEnv", "render_scenes", "random_scenes",
           "make_env", "make_object_goal", "make_object_interaction", "make_object_comparison",
           "make_property_comparison"]

COLORS = ("blue", "green", "yellow", "red", "cyan", "pink", "brown")
"""Colour names in the order of the authors' ``COLORS`` (the one-hot order of the state observation)."""
COLOR_RGB = {"blue": (0, 0, 255), "green": (0, 128, 0), "yellow": (255, 255, 0), "red": (255, 0, 0),
             "cyan": (0, 255, 255), "pink": (255, 192, 203), "brown": (165, 42, 42)}
"""``matplotlib.colors.to_rgb(name) * 255``, as the authors' renderer converts the names."""
SHAPES = ("square", "triangle", "star_4", "circle", "pentagon", "hexagon")
"""Shapes drawn here (a subset of the authors' list, same Spriteworld vertex definitions)."""

PRETRAIN_COLORS = ("blue", "green", "yellow", "red")
PRETRAIN_SHAPES = ("square", "triangle", "star_4", "circle")
PRETRAIN_SCALES = (0.15, 0.22)
"""The encoders' pretraining images: the authors' ``random-N5C4S4S2`` dataset (5 random objects, 4 colours, 4
shapes, 2 scales, no agent, occlusion allowed)."""

AGENT = ("red", "circle", 0.15)
STEP_SIZE = 0.05
MAX_STEPS = 100
EPS = 0.08


# ---------------------------------------------------------------------------------------------- rendering


def _polygon(n: int, theta0: float = 0.0) -> np.ndarray:
    theta = 2 * np.pi / n
    path = np.array([[np.cos(i * theta + theta0), np.sin(i * theta + theta0)] for i in range(n)])
    return path / np.sqrt(n * np.sin(theta / 2) * np.cos(theta / 2))  # area 1


def _star(n: int, point_height: float = 1.0, theta0: float = 0.0) -> np.ndarray:
    to_centre = 1 + point_height
    theta = 2 * np.pi / n
    path = np.empty((2 * n, 2))
    for i in range(n):
        path[2 * i] = [np.cos(i * theta + theta0), np.sin(i * theta + theta0)]
        path[2 * i + 1] = to_centre * np.array([np.cos((i + 0.5) * theta + theta0), np.sin((i + 0.5) * theta + theta0)])
    return path / np.sqrt(to_centre * n * np.sin(theta / 2))  # area 1


_TEMPLATES = {"square": _polygon(4, np.pi / 4), "triangle": _polygon(3, np.pi / 2), "star_4": _star(4, 1.0, np.pi / 4),
              "pentagon": _polygon(5, np.pi / 2), "hexagon": _polygon(6), "circle": None}
_VMAX = 8
_VERTS = np.zeros((len(SHAPES), _VMAX, 2))
_EXTENT = np.zeros(len(SHAPES))
for _i, _name in enumerate(SHAPES):
    _t = _TEMPLATES[_name]
    if _t is None:
        _EXTENT[_i] = 1 / np.sqrt(np.pi)
        continue
    _VERTS[_i, :len(_t)] = _t
    _VERTS[_i, len(_t):] = _t[-1]  # repeated last vertex: zero-length edges never cross a scanline
    _EXTENT[_i] = np.abs(_t).max()
_CIRCLE = SHAPES.index("circle")
_RGB = np.array([COLOR_RGB[c] for c in COLORS], np.uint8)


def render_scenes(color: np.ndarray, shape: np.ndarray, scale: np.ndarray, pos: np.ndarray, size: int = 64,
                  supersample: int = 1) -> np.ndarray:
    """Rasterise ``B`` scenes of ``K`` sprites each into ``uint8[B, 3, size, size]``.

    ``color`` / ``shape``: int ``[B, K]`` indices into :data:`COLORS` / :data:`SHAPES` (-1: no sprite);
    ``scale``: ``[B, K]``; ``pos``: ``[B, K, 2]`` centres (x right, y up, unit square). Sprites are painted in
    ``K`` order (later on top)."""
    color, shape = np.asarray(color), np.asarray(shape)
    scale, pos = np.asarray(scale, np.float64), np.asarray(pos, np.float64)
    B, K = shape.shape
    S = int(size) * int(supersample)
    canvas = np.zeros((B, S, S, 3), np.uint8)
    valid = (shape >= 0) & (color >= 0)
    if valid.any():
        sh = np.where(valid, shape, 0)
        ext = _EXTENT[sh] * scale  # [B, K] bounding half-width in world units
        W = int(np.ceil(2 * ext[valid].max() * S)) + 2
        cx, cy = pos[..., 0] * S, (1.0 - pos[..., 1]) * S  # pixel coordinates (rows grow downwards)
        c0 = np.floor(cx - W / 2).astype(np.int64)
        r0 = np.floor(cy - W / 2).astype(np.int64)
        ar = np.arange(W)
        # world coordinates of the pixel centres in each sprite's box: X [B, K, 1, W], Y [B, K, W, 1]
        X = ((c0[..., None] + ar + 0.5) / S)[..., None, :]
        Y = (1.0 - (r0[..., None] + ar + 0.5) / S)[..., :, None]
        dx, dy = X - pos[..., 0, None, None], Y - pos[..., 1, None, None]
        inside = np.zeros((B, K, W, W), bool)
        circ = valid & (sh == _CIRCLE)
        if circ.any():
            r2 = (scale / np.sqrt(np.pi)) ** 2
            inside |= circ[..., None, None] & (dx * dx + dy * dy < r2[..., None, None])
        poly = valid & (sh != _CIRCLE)
        if poly.any():
            v = _VERTS[sh] * scale[..., None, None]  # [B, K, V, 2] relative to the centre
            odd = np.zeros((B, K, W, W), bool)
            for i in range(_VMAX):
                xi, yi = v[:, :, i, 0, None, None], v[:, :, i, 1, None, None]
                j = (i + 1) % _VMAX
                xj, yj = v[:, :, j, 0, None, None], v[:, :, j, 1, None, None]
                straddle = (yi > dy) != (yj > dy)
                with np.errstate(divide="ignore", invalid="ignore"):
                    xc = (xj - xi) * (dy - yi) / (yj - yi) + xi
                odd ^= straddle & (dx < xc)
            inside |= poly[..., None, None] & odd
        rows = r0[..., None, None] + ar[:, None]  # [B, K, W, 1]
        cols = c0[..., None, None] + ar[None, :]  # [B, K, 1, W]
        inside &= (rows >= 0) & (rows < S) & (cols >= 0) & (cols < S)
        bidx = np.broadcast_to(np.arange(B)[:, None, None], (B, W, W))
        for k in range(K):  # painter's order
            m = inside[:, k]
            if not m.any():
                continue
            rr = np.broadcast_to(rows[:, k], (B, W, W))
            cc = np.broadcast_to(cols[:, k], (B, W, W))
            rgb = _RGB[np.where(valid[:, k], color[:, k], 0)]  # [B, 3]
            canvas[bidx[m], rr[m], cc[m]] = np.broadcast_to(rgb[:, None, None], (B, W, W, 3))[m]
    if supersample > 1:
        s = int(supersample)
        canvas = canvas.reshape(B, size, s, size, s, 3).mean(axis=(2, 4)).round().astype(np.uint8)
    return np.ascontiguousarray(canvas.transpose(0, 3, 1, 2))


def random_scenes(n: int, rng: np.random.Generator, *, num_objects: int = 5,
                  colors: Sequence[str] = PRETRAIN_COLORS, shapes: Sequence[str] = PRETRAIN_SHAPES,
                  scales: Sequence[float] = PRETRAIN_SCALES, min_dist: float = 0.15, wall: float = EPS,
                  size: int = 64, supersample: int = 1) -> np.ndarray:
    """``n`` images ``uint8[n, 3, size, size]`` of ``num_objects`` random objects (the encoders' pretraining data,
    the authors' ``RandomObjsEnv`` with ``occlusion=True`` and no agent: each property uniform over its values,
    positions uniform at least ``r + wall`` from the walls and ``min_dist`` apart centre to centre, so objects may
    partly occlude each other)."""
    ci = np.array([COLORS.index(c) for c in colors])
    si = np.array([SHAPES.index(s) for s in shapes])
    color = ci[rng.integers(len(ci), size=(n, num_objects))]
    shape = si[rng.integers(len(si), size=(n, num_objects))]
    scale = np.asarray(scales, np.float64)[rng.integers(len(scales), size=(n, num_objects))]
    lo, hi = scale / 2 + wall, 1 - scale / 2 - wall
    pos = np.zeros((n, num_objects, 2))
    for k in range(num_objects):  # rejection sampling, vectorised over the batch
        todo = np.ones(n, bool)
        for _ in range(1000):
            m = int(todo.sum())
            if m == 0:
                break
            p = rng.uniform(lo[todo, k, None], hi[todo, k, None], size=(m, 2))
            pos[todo, k] = p
            if k:
                d = np.linalg.norm(pos[todo, :k] - p[:, None], axis=-1)
                ok = (d >= min_dist).all(axis=1)
            else:
                ok = np.ones(m, bool)
            idx = np.flatnonzero(todo)
            todo[idx[ok]] = False
        if todo.any():
            raise ConfigError(f"could not place {num_objects} objects {min_dist} apart; use fewer objects")
    out = []
    for i in range(0, n, 1024):  # bounded memory
        out.append(render_scenes(color[i:i + 1024], shape[i:i + 1024], scale[i:i + 1024], pos[i:i + 1024],
                                 size, supersample))
    return np.concatenate(out) if out else np.zeros((0, 3, size, size), np.uint8)


# ------------------------------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class TaskSpec:
    """One task: its kind (``goal``, ``push``, ``odd``), property sets and options (see the module docstring)."""

    kind: str
    num_objects: int = 4
    colors: tuple = ("blue", "green")
    shapes: tuple = ("square", "triangle")
    scales: tuple = (0.15,)
    target: tuple = ("blue", "square", 0.15)
    obj_comp: bool = False
    wall: float = EPS
    unseen_combi: tuple = ()
    combi_mode: str | None = None
    summary: str = ""
    extra: dict = field(default_factory=dict)


TASKS: dict[str, TaskSpec] = {
    "shapes-object-goal": TaskSpec(
        "goal", 4, ("blue", "green", "yellow", "red"), ("square", "triangle", "star_4"),
        summary="object goal (Yoon et al. 2023): reach the blue square among 4 objects; 64x64 RGB, 4 moves"),
    "shapes-object-interaction": TaskSpec(
        "push", 3, ("blue", "green", "yellow", "red"), ("square",), wall=0.15,
        summary="object interaction (Yoon et al. 2023): push the blue square onto the corner goal; 3 squares"),
    "shapes-object-comparison": TaskSpec(
        "odd", 4, obj_comp=True,
        summary="object comparison (Yoon et al. 2023): reach the odd one out, the others identical"),
    "shapes-property-comparison": TaskSpec(
        "odd", 4,
        summary="property comparison (Yoon et al. 2023): reach the object with a unique colour or shape"),
    # OOD splits of the comparison tasks (the authors' configs in brackets)
    "shapes-object-comparison-ood-seen-color": TaskSpec(
        "odd", 4, ("blue", "yellow"), obj_comp=True,
        summary="object comparison, OOD: yellow (seen in pretraining, not in RL) [odd-one-out-...-oc-ood-agent-color1]"),
    "shapes-object-comparison-ood-unseen-color": TaskSpec(
        "odd", 4, ("blue", "pink"), obj_comp=True,
        summary="object comparison, OOD: pink (unseen even in pretraining) [odd-one-out-...-oc-ood-ocr-color1]"),
    "shapes-property-comparison-pairing-train": TaskSpec(
        "odd", 4, ("blue", "green", "yellow"), ("square",), unseen_combi=("blue", "yellow"), combi_mode="train",
        summary="property comparison, colour pairing blue/yellow held out [odd-one-out-N4C3S1S1-ood-unseen-combi-train1]"),
    "shapes-property-comparison-pairing-test": TaskSpec(
        "odd", 4, ("blue", "green", "yellow"), ("square",), unseen_combi=("blue", "yellow"), combi_mode="test",
        summary="property comparison, only the held-out blue/yellow pairing [odd-one-out-N4C3S1S1-ood-unseen-combi-test1]"),
}
"""name (after ``builtin/``) -> :class:`TaskSpec`."""


class ShapesEnv(gym.Env):
    """One shapes task as a Gymnasium env: ``Discrete(4)`` actions, observations ``uint8[3, size, size]``
    (``obs="pixels"``) or the flat ground-truth state (``obs="state"``); ``info["is_success"]`` at every step."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, spec: TaskSpec, *, size: int = 64, obs: str = "pixels", supersample: int = 1,
                 max_objects: int | None = None, max_steps: int = MAX_STEPS) -> None:
        if obs not in ("pixels", "state"):
            raise ConfigError(f"builtin/shapes-* envs take obs='pixels' or obs='state', got {obs!r}")
        if spec.num_objects < 1:
            raise ConfigError(f"num_objects must be >= 1, got {spec.num_objects}")
        if spec.kind == "odd" and spec.num_objects < 3:
            raise ConfigError(f"comparison tasks need num_objects >= 3 (an odd one out among >= 2 others), got "
                              f"{spec.num_objects}")
        for c in spec.colors:
            if c not in COLORS:
                raise ConfigError(f"unknown colour {c!r}; known: {', '.join(COLORS)}")
        for s in spec.shapes:
            if s not in SHAPES:
                raise ConfigError(f"unknown shape {s!r}; known: {', '.join(SHAPES)}")
        if spec.combi_mode not in (None, "train", "test"):
            raise ConfigError(f"combi_mode must be 'train' or 'test', got {spec.combi_mode!r}")
        if int(supersample) < 1:
            raise ConfigError(f"supersample must be >= 1, got {supersample}")
        self.spec_ = spec
        self.size, self.obs_mode, self.supersample = int(size), obs, int(supersample)
        self.max_steps = int(max_steps)
        self.max_objects = int(max_objects or spec.num_objects)
        if self.max_objects < spec.num_objects:
            raise ConfigError(f"max_objects ({self.max_objects}) < num_objects ({spec.num_objects})")
        self.action_space = spaces.Discrete(4)
        self.render_mode = "rgb_array"
        self.render_channels = 3
        rows = self.max_objects + (2 if spec.kind == "push" else 1)
        self.state_dim = rows * (len(COLORS) + len(SHAPES) + 3)
        if obs == "pixels":
            self.observation_space = spaces.Box(0, 255, (3, self.size, self.size), np.uint8)
        else:
            self.observation_space = spaces.Box(-np.inf, np.inf, (self.state_dim,), np.float32)
        self._ci = {c: COLORS.index(c) for c in COLORS}
        self.steps = 0
        # scene: rows = objects, [goal], agent; columns colour idx, shape idx; scale; pos
        self.color = np.zeros(0, np.int64)
        self.shape = np.zeros(0, np.int64)
        self.scale = np.zeros(0)
        self.pos = np.zeros((0, 2))
        self.target = 0

    # ---- scene generation ------------------------------------------------------------------------------------
    def _place(self, order: Sequence[int], fixed: Sequence[int]) -> None:
        """Positions for the rows in ``order``: uniform, ``r + wall`` from the walls, ``r_i + r_j + 0.08`` from every
        row placed before and from the ``fixed`` rows (the agent, the goal)."""
        rng = self.np_random
        placed = list(fixed)
        wall = self.spec_.wall
        for i in order:
            r = self.scale[i] / 2
            for _ in range(10_000):
                p = rng.uniform(r + wall, 1 - r - wall, size=2)
                if all(np.linalg.norm(self.pos[j] - p) >= r + self.scale[j] / 2 + EPS for j in placed):
                    break
            else:
                raise ConfigError(f"could not place {self.spec_.num_objects} objects without overlap; use fewer "
                                  "objects (num_objects)")
            self.pos[i] = p
            placed.append(i)

    def _random_props(self, n: int, exclude: tuple | None) -> list[tuple[str, str, float]]:
        rng, sp = self.np_random, self.spec_
        out = []
        for _ in range(n):
            while True:
                p = (sp.colors[rng.integers(len(sp.colors))], sp.shapes[rng.integers(len(sp.shapes))],
                     float(sp.scales[rng.integers(len(sp.scales))]))
                if exclude is None or p != tuple(exclude):
                    break
            out.append(p)
        return out

    def _odd_props(self) -> tuple[list[list], int]:
        """The authors' ``OddOneOutEnv._set_objs`` / ``_fill_properties``: a random property type with more than
        one value, a unique value of it for the target; each other column filled in groups of >= 2 objects."""
        rng, sp = self.np_random, self.spec_
        n = sp.num_objects
        values = [list(sp.colors), list(sp.shapes), [float(s) for s in sp.scales]]
        props: list[list] = [[None, None, None] for _ in range(n)]
        target = 0 if sp.combi_mode is not None else int(rng.integers(n))
        types = [t for t in range(3) if len(values[t]) > 1]
        if not types:
            raise ConfigError("comparison tasks need two values of some property (colours, shapes or scales)")
        t = types[int(rng.integers(len(types)))]
        unique = values[t][int(rng.integers(len(values[t])))]
        if sp.combi_mode == "test" and t == 0:
            while unique not in sp.unseen_combi:
                unique = values[0][int(rng.integers(len(values[0])))]
        props[target][t] = unique
        if sp.obj_comp:
            for o in range(3):
                if o != t:
                    v = values[o][int(rng.integers(len(values[o])))]
                    for row in props:
                        row[o] = v
        for col in range(3):
            vals = values[col]
            while any(row[col] is None for row in props):
                prop = vals[int(rng.integers(len(vals)))]
                while col == t and prop == unique:
                    prop = vals[int(rng.integers(len(vals)))]
                if sp.combi_mode is not None and col == 0 and t == 0:
                    pair = set(sp.unseen_combi)
                    while True:
                        is_pair = {unique, prop} == pair and unique != prop
                        if col == t and prop == unique:
                            ok = False
                        elif sp.combi_mode == "train":
                            ok = not is_pair
                        else:
                            ok = is_pair
                        if ok:
                            break
                        prop = vals[int(rng.integers(len(vals)))]
                empty = [i for i, row in enumerate(props) if row[col] is None]
                k = len(empty) if len(empty) < 2 else int(rng.integers(2, len(empty) + 1))
                for i in rng.permutation(empty)[:k]:
                    props[int(i)][col] = prop
                if sum(row[col] is None for row in props) == 1:
                    for row in props:
                        if row[col] is None:
                            row[col] = prop
        return props, target

    def _new_scene(self) -> None:
        sp = self.spec_
        n = sp.num_objects
        rows = n + (2 if sp.kind == "push" else 1)
        self.color = np.zeros(rows, np.int64)
        self.shape = np.zeros(rows, np.int64)
        self.scale = np.zeros(rows)
        self.pos = np.zeros((rows, 2))
        if sp.kind == "odd":
            props, self.target = self._odd_props()
        else:
            self.target = int(self.np_random.integers(n)) if sp.kind == "goal" else 0
            others = self._random_props(n - 1, sp.target)
            props = others[:self.target] + [list(sp.target)] + others[self.target:]
        for i, (c, s, sc) in enumerate(props):
            self.color[i], self.shape[i], self.scale[i] = COLORS.index(c), SHAPES.index(s), sc
        agent = rows - 1
        self.color[agent], self.shape[agent], self.scale[agent] = COLORS.index(AGENT[0]), SHAPES.index(AGENT[1]), AGENT[2]
        self.pos[agent] = (0.5, 0.5)
        fixed = [agent]
        if sp.kind == "push":  # the goal: the target's look, in the bottom-left corner
            g = n
            self.color[g], self.shape[g], self.scale[g] = self.color[0], self.shape[0], self.scale[0]
            self.pos[g] = (self.scale[0] / 2, self.scale[0] / 2)
            fixed.append(g)
        self._place(range(n), fixed)

    # ---- Gymnasium API ---------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._new_scene()
        self.steps = 0
        return self._obs(), {"is_success": False}

    def _touch_end(self) -> tuple[float, bool, bool]:
        """(reward, terminated, success) of the authors' ``_cal_reward`` (goal and comparison tasks)."""
        n = self.spec_.num_objects
        d = np.linalg.norm(self.pos[:n] - self.pos[-1], axis=1)
        hit = np.flatnonzero(d < AGENT[2])
        if hit.size == 0:
            return 0.0, False, False
        ok = int(hit[0]) == self.target
        return (1.0 if ok else 0.0), True, ok

    def _push(self, axis: int, delta: float, eps: float = 1e-6) -> None:
        n, ag = self.spec_.num_objects, len(self.pos) - 1
        r_ag = AGENT[2] / 2
        self.pos[ag, axis] += delta
        moves = [delta]
        for i in range(n):
            r = self.scale[i] / 2
            if np.linalg.norm(self.pos[i] - self.pos[ag]) + eps < r + r_ag:
                if self.pos[i, axis] == r or self.pos[i, axis] == 1 - r:  # at a wall
                    moves.append(0.0)
                    break
                before = self.pos[i, axis]
                self.pos[i, axis] += delta
                blocked = any(np.linalg.norm(self.pos[j] - self.pos[i]) + eps < self.scale[j] / 2 + r
                              for j in range(n) if j != i)
                if blocked:
                    self.pos[i, axis] -= delta
                    moves.append(0.0)
                    break
                self.pos[i, axis] = np.clip(self.pos[i, axis], r, 1 - r)
                moves.append(self.pos[i, axis] - before)
        self.pos[ag, axis] += -delta + (min(moves) if delta > 0 else max(moves))

    def _push_end(self, eps: float = 1e-6) -> tuple[float, bool, bool]:
        n, g = self.spec_.num_objects, self.spec_.num_objects
        for i in range(n):
            if np.linalg.norm(self.pos[i] - self.pos[g]) + eps < self.scale[i] / 2 + self.scale[g] / 2:
                ok = i == self.target
                return (1.0 if ok else 0.0), True, ok
        return 0.0, False, False

    def step(self, action: Any):
        a = int(action)
        if a not in (0, 1, 2, 3):
            raise ValueError(f"action must be 0 (up), 1 (left), 2 (down) or 3 (right), got {action!r}")
        axis, delta = ((1, STEP_SIZE), (0, -STEP_SIZE), (1, -STEP_SIZE), (0, STEP_SIZE))[a]
        ag = len(self.pos) - 1
        if self.spec_.kind == "push":
            self._push(axis, delta)
        else:
            self.pos[ag, axis] += delta
        r = AGENT[2] / 2
        self.pos[ag] = np.clip(self.pos[ag], r, 1 - r)
        self.steps += 1
        reward, terminated, success = self._push_end() if self.spec_.kind == "push" else self._touch_end()
        truncated = not terminated and self.steps >= self.max_steps
        return self._obs(), reward, terminated, truncated, {"is_success": success}

    def render(self) -> np.ndarray:
        """The current frame, ``uint8[size, size, 3]``."""
        return self._pixels().transpose(1, 2, 0)

    def _pixels(self) -> np.ndarray:
        return render_scenes(self.color[None], self.shape[None], self.scale[None], self.pos[None], self.size,
                             self.supersample)[0]

    def state(self) -> np.ndarray:
        """The ground-truth state (see the module docstring)."""
        nc, ns = len(COLORS), len(SHAPES)
        n = self.spec_.num_objects
        rows = self.max_objects + (2 if self.spec_.kind == "push" else 1)
        out = np.zeros((rows, nc + ns + 3), np.float32)
        extra = len(self.pos) - n  # goal and agent go to the last rows
        src = list(range(n)) + list(range(n, len(self.pos)))
        dst = list(range(n)) + list(range(rows - extra, rows))
        for s, d in zip(src, dst):
            out[d, self.color[s]] = 1
            out[d, nc + self.shape[s]] = 1
            out[d, nc + ns:] = (self.scale[s], *self.pos[s])
        return out.reshape(-1)

    def _obs(self) -> np.ndarray:
        return self._pixels() if self.obs_mode == "pixels" else self.state()


# -------------------------------------------------------------------------------------------------- makers


_OPTIONS = ("num_objects", "colors", "shapes", "scales", "unseen_combi", "combi_mode", "supersample", "max_objects",
            "max_steps")


def make_env(name: str, *, seed: int = 0, size: int = 64, obs: str = "pixels", action_repeat: int | None = None,
             frame_stack: int | None = None, **options: Any) -> gym.Env:
    """``builtin/<name>`` with the family conventions of :func:`pixelrl.envs.make` (``ActionRepeat``,
    ``FrameStack`` of pixels, ``EnvInfo``). Options: ``num_objects``, ``colors``, ``shapes``, ``scales``,
    ``unseen_combi``, ``combi_mode``, ``supersample`` (1), ``max_objects`` (state rows; default ``num_objects``),
    ``max_steps`` (100). Defaults: action repeat 1, frame stack 1 (the paper stacks none)."""
    from pixelrl.envs.wrappers import ActionRepeat, EnvInfo, FrameStack

    unknown = set(options) - set(_OPTIONS)
    if unknown:
        raise ConfigError(f"unknown option(s) for builtin/{name}: {', '.join(sorted(unknown))}; known: "
                          f"{', '.join(_OPTIONS)}")
    if obs not in ("pixels", "state"):
        raise ConfigError(f"builtin/{name} takes --obs pixels or --obs state, got {obs!r}")
    spec = TASKS[name]
    changes = {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in options.items()
               if k in ("num_objects", "colors", "shapes", "scales", "unseen_combi", "combi_mode")}
    if "num_objects" in changes:
        changes["num_objects"] = int(changes["num_objects"])
    spec = replace(spec, **changes)
    env: gym.Env = ShapesEnv(spec, size=size, obs=obs, supersample=int(options.get("supersample", 1)),
                             max_objects=options.get("max_objects"), max_steps=int(options.get("max_steps", MAX_STEPS)))
    repeat = 1 if action_repeat is None else int(action_repeat)
    env = ActionRepeat(env, repeat)
    stack = 1 if frame_stack is None else int(frame_stack)
    if obs == "pixels":
        env = FrameStack(env, stack)
    elif stack != 1:
        raise ConfigError(f"frame_stack={stack} is only supported for pixel observations")
    return EnvInfo(env, env_id=f"builtin/{name}", action_repeat=repeat, frame_stack=stack, seed=seed)


def _maker(name: str):
    def make(**kwargs: Any) -> gym.Env:
        return make_env(name, **kwargs)

    make.__name__ = "make_" + name.replace("-", "_")
    make.__doc__ = f"``builtin/{name}``: {TASKS[name].summary}"
    return make


make_object_goal = _maker("shapes-object-goal")
make_object_interaction = _maker("shapes-object-interaction")
make_object_comparison = _maker("shapes-object-comparison")
make_property_comparison = _maker("shapes-property-comparison")
make_object_comparison_ood_seen_color = _maker("shapes-object-comparison-ood-seen-color")
make_object_comparison_ood_unseen_color = _maker("shapes-object-comparison-ood-unseen-color")
make_property_comparison_pairing_train = _maker("shapes-property-comparison-pairing-train")
make_property_comparison_pairing_test = _maker("shapes-property-comparison-pairing-test")
