"""``make`` / ``list_envs`` / ``make_vector``: one id scheme for every environment family.

Ids: ``dmc/<domain>-<task>`` (dm_control suite), ``gym/<Id>`` (Gymnasium registry, MuJoCo envs rendered to
pixels), ``ale/<Game>`` (ale-py ``ALE/<Game>-v5`` with standard Atari preprocessing), ``metaworld/<task>-v3``
(Meta-World v3 through DrM's and MENTOR's corner camera, :mod:`pixelrl.envs.metaworld`). Optional packages are
imported inside functions, so ``import pixelrl.envs`` works without any of them. See ``docs/envs.md``.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import multiprocessing as mp
import os
import warnings
from typing import Any

import gymnasium as gym
import numpy as np

from pixelrl.envs import builtin as _builtin
from pixelrl.envs import dmc as _dmc
from pixelrl.envs import metaworld as _metaworld
from pixelrl.envs._gl import ensure_mujoco_gl, gl_environment
from pixelrl.envs.wrappers import (
    ActionRepeat,
    ActionScale,
    ChannelFirst,
    EnvInfo,
    FrameStack,
    PixelObservation,
    StateFloat32,
)
from pixelrl.errors import ConfigError, MissingExtraError, UnknownEnvError

PREFIXES = ("dmc", "gym", "ale", "builtin", "metaworld")
OBS_MODES = ("pixels", "state", "pixels+state")

#: Atari 100k games; ale/ suggestions when ale-py is not installed.
STATIC_ALE_GAMES = (
    "Alien", "Amidar", "Assault", "Asterix", "BankHeist", "BattleZone", "Boxing", "Breakout", "ChopperCommand",
    "CrazyClimber", "DemonAttack", "Freeway", "Frostbite", "Gopher", "Hero", "Jamesbond", "Kangaroo", "Krull",
    "KungFuMaster", "MsPacman", "Pong", "PrivateEye", "Qbert", "RoadRunner", "Seaquest", "UpNDown",
)


# ----------------------------------------------------------------------------------------------- ids


def _register_ale() -> Any:
    try:
        import ale_py
    except ImportError as e:
        raise MissingExtraError("ale-py", "atari", "ale/ environments") from e
    gym.register_envs(ale_py)
    return ale_py


def _ale_games() -> list[str]:
    try:
        _register_ale()
    except MissingExtraError:
        return list(STATIC_ALE_GAMES)
    games = []
    for key in gym.registry:
        if key.startswith("ALE/") and key.endswith("-v5"):
            games.append(key[len("ALE/"):-len("-v5")])
    return sorted(games) or list(STATIC_ALE_GAMES)


def _gym_ids() -> list[str]:
    return sorted(k for k in gym.registry if "/" not in k)


def list_envs(prefix: str | None = None) -> list[str]:
    """All known env ids, optionally only those of one family (``"dmc"``, ``"gym"``, ``"ale"``; a trailing
    ``/`` is allowed). dmc ids come from the installed dm_control (static list without it), gym ids from the
    Gymnasium registry, ale ids from ale-py's registered games."""
    if prefix is not None:
        prefix = prefix.rstrip("/")
        if prefix not in PREFIXES:
            raise UnknownEnvError(
                f"unknown env prefix {prefix!r}; known prefixes: {', '.join(p + '/' for p in PREFIXES)}"
            )
    out: list[str] = []
    if prefix in (None, "dmc"):
        out += [_dmc.canonical_id(d, t) for d, t in _dmc.all_tasks()]
    if prefix in (None, "gym"):
        out += [f"gym/{k}" for k in _gym_ids()]
    if prefix in (None, "ale"):
        out += [f"ale/{g}" for g in _ale_games()]
    if prefix in (None, "builtin"):
        out += [f"builtin/{n}" for n in sorted(_builtin.BUILTIN_ENVS)]
    if prefix in (None, "metaworld"):
        out += [f"metaworld/{t}" for t in sorted(_metaworld.all_tasks())]
    return out


def _unknown(env_id: str, candidates: list[str], bad_prefix: bool = False) -> UnknownEnvError:
    close = difflib.get_close_matches(env_id, candidates, n=5, cutoff=0.6)
    if not close:  # compare the part after the prefix too (e.g. 'cartpole-swingup' without 'dmc/')
        tail = env_id.split("/", 1)[-1].lower()
        close = difflib.get_close_matches(tail, [c.split("/", 1)[1].lower() for c in candidates], n=5, cutoff=0.6)
        close = [c for c in candidates if c.split("/", 1)[1].lower() in close][:5]
    hint = f"did you mean: {', '.join(close)}?" if close else (
        f"known prefixes: {', '.join(p + '/' for p in PREFIXES)}; see pixelrl.envs.list_envs()"
    )
    if bad_prefix and close:
        hint = f"known prefixes: {', '.join(p + '/' for p in PREFIXES)}; {hint}"
    return UnknownEnvError(f"unknown env id {env_id!r}; {hint}")


def _split(env_id: str) -> tuple[str, str]:
    if not isinstance(env_id, str) or "/" not in env_id:
        raise _unknown(str(env_id), _all_ids_for_suggestions(), bad_prefix=True)
    prefix, name = env_id.split("/", 1)
    if prefix.lower() not in PREFIXES or not name:
        raise _unknown(env_id, _all_ids_for_suggestions(), bad_prefix=True)
    return prefix.lower(), name


def _all_ids_for_suggestions() -> list[str]:
    return list_envs()


def action_kind(env_id: str) -> str | None:
    """``"continuous"`` or ``"discrete"``: the kind of action space ``make(env_id)`` gives, known without starting a
    simulator where the family fixes it (dmc/: continuous, ale/: discrete); gym/ ids are made once without
    rendering to read it. None when it cannot be told here (an unknown id: :func:`make` names the problem)."""
    try:
        prefix, name = _split(env_id)
    except UnknownEnvError:
        return None
    if prefix in ("dmc", "metaworld"):
        return "continuous"
    if prefix == "ale":
        return "discrete"
    if prefix == "builtin":
        entry = _builtin.BUILTIN_ENVS.get(name)
        return entry.action_kind if entry is not None else None
    try:
        with _quiet_make():
            env = gym.make(name)
        try:
            space = env.action_space
        finally:
            env.close()
    except Exception:  # noqa: BLE001 -- unknown id or missing extra: make() reports it properly
        return None
    if isinstance(space, gym.spaces.Discrete):
        return "discrete"
    if isinstance(space, gym.spaces.Box):
        return "continuous"
    return None


@contextlib.contextmanager
def _quiet_make():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ---------------------------------------------------------------------------------------------- make


def make(
    env_id: str,
    *,
    seed: int = 0,
    action_repeat: int | None = None,
    frame_stack: int | None = None,
    size: int = 84,
    obs: str = "pixels",
    camera: int | None = None,
    fast_render: bool = False,
    **options: Any,
) -> gym.Env:
    """Create an environment from an id (see ``docs/envs.md`` for the full table).

    Args:
        env_id: ``dmc/<domain>-<task>``, ``gym/<Id>``, ``ale/<Game>``, ``metaworld/<task>-v3`` or
            ``builtin/<name>`` (pixelrl's own simulators, :mod:`pixelrl.envs.builtin`).
        seed: seed of the first ``reset()`` and of the action space. ``reset(seed=s)`` fully determines an
            episode afterwards.
        action_repeat: simulator frames per ``step`` (rewards summed). Default 2 for dmc (DrQ-v2) and metaworld
            (DrM, MENTOR), 1 for gym
            (Gymnasium MuJoCo envs already skip 5 physics steps per frame), 4 for ale (inside
            ``AtariPreprocessing``).
        frame_stack: frames concatenated on the channel axis. Default 3 for dmc/gym pixels, 4 for ale,
            1 for ``obs="state"``.
        size: pixel height and width.
        obs: ``"pixels"`` (``uint8[frame_stack*C, size, size]``), ``"state"`` (``float32[d]``) or
            ``"pixels+state"`` (``Dict(pixels=..., state=...)``; only pixels stacked). ale: pixels only.
        camera: camera id; None = family default (dmc: 0, quadruped 2; gym: the env's default view; metaworld:
            ``corner2`` where DrM and MENTOR put it).
        fast_render: no shadows / reflections / anti-aliasing (MuJoCo envs); faster, visually different.
        **options: family-specific. dmc: ``time_limit`` (seconds), ``environment_kwargs``. gym and ale:
            passed to ``gymnasium.make`` (e.g. ``max_episode_steps``, ``repeat_action_probability``).
            ale also takes ``noop_max`` (30) and ``terminal_on_life_loss`` (False).

    Returns:
        A ``gymnasium.Env`` whose ``get_wrapper_attr`` gives ``env_id``, ``action_repeat``, ``frame_stack``;
        step infos carry ``"frames"`` (simulator frames executed by that step).
    """
    prefix, name = _split(env_id)
    if obs not in OBS_MODES:
        raise ConfigError(f"obs must be one of {', '.join(OBS_MODES)}; got {obs!r}")
    if int(size) < 1:
        raise ConfigError(f"size must be a positive number of pixels, got {size}")
    if prefix == "dmc":
        return _make_dmc(env_id, name, seed, action_repeat, frame_stack, int(size), obs, camera, fast_render, options)
    if prefix == "gym":
        return _make_gym(env_id, name, seed, action_repeat, frame_stack, int(size), obs, camera, fast_render, options)
    if prefix == "builtin":
        return _make_builtin(env_id, name, seed, action_repeat, frame_stack, int(size), obs, camera, fast_render,
                             options)
    if prefix == "metaworld":
        return _make_metaworld(env_id, name, seed, action_repeat, frame_stack, int(size), obs, camera, fast_render,
                               options)
    return _make_ale(env_id, name, seed, action_repeat, frame_stack, int(size), obs, camera, fast_render, options)


def _make_builtin(env_id, name, seed, action_repeat, frame_stack, size, obs, camera, fast_render, options):
    if name not in _builtin.BUILTIN_ENVS:
        raise _unknown(env_id, [f"builtin/{n}" for n in _builtin.BUILTIN_ENVS])
    if camera is not None or fast_render:
        raise ConfigError("camera= and fast_render= do not apply to builtin envs")
    return _builtin.maker(name)(seed=seed, size=size, obs=obs, action_repeat=action_repeat, frame_stack=frame_stack,
                                **options)


def _default_stack(frame_stack: int | None, obs: str, pixels_default: int) -> int:
    if frame_stack is not None:
        return int(frame_stack)
    return 1 if obs == "state" else pixels_default


def _finish(env: gym.Env, *, env_id: str, obs: str, size: int, action_repeat: int, frame_stack: int,
            seed: int) -> gym.Env:
    """Common tail: repeat, pixels, stack, info."""
    env = ActionRepeat(env, action_repeat)
    if obs != "state":
        env = PixelObservation(env, mode=obs, size=(size, size))
        env = FrameStack(env, frame_stack)
    elif frame_stack != 1:
        raise ConfigError(f"frame_stack={frame_stack} is only supported for pixel observations (obs='state')")
    return EnvInfo(env, env_id=env_id, action_repeat=action_repeat, frame_stack=frame_stack, seed=seed)


def _make_dmc(env_id, name, seed, action_repeat, frame_stack, size, obs, camera, fast_render, options):
    tasks = _dmc.all_tasks()
    found = _dmc.resolve(name, tasks)
    if found is None:
        raise _unknown(env_id, [_dmc.canonical_id(d, t) for d, t in tasks])
    domain, task = found
    known = {"time_limit", "environment_kwargs"}
    extra = set(options) - known
    if extra:
        raise ConfigError(f"unknown option(s) for dmc envs: {', '.join(sorted(extra))}; known: {', '.join(sorted(known))}")
    base = _dmc.DMCEnv(
        domain, task, size=size, camera=camera, fast_render=fast_render, seed=seed,
        time_limit=options.get("time_limit"), environment_kwargs=options.get("environment_kwargs"),
    )
    env: gym.Env = ActionScale(base)
    repeat = 2 if action_repeat is None else int(action_repeat)
    return _finish(env, env_id=_dmc.canonical_id(domain, task), obs=obs, size=size, action_repeat=repeat,
                   frame_stack=_default_stack(frame_stack, obs, 3), seed=seed)


def _make_metaworld(env_id, name, seed, action_repeat, frame_stack, size, obs, camera, fast_render, options):
    tasks = _metaworld.all_tasks()
    task = _metaworld.resolve(name, tasks)
    if task is None:
        raise _unknown(env_id, [f"metaworld/{t}" for t in tasks])
    if options:
        raise ConfigError(f"unknown option(s) for metaworld envs: {', '.join(sorted(options))}; they take none")
    base = _metaworld.MetaWorldEnv(task, size=size, camera=camera, fast_render=fast_render, seed=seed)
    repeat = 2 if action_repeat is None else int(action_repeat)
    return _finish(base, env_id=f"metaworld/{task}", obs=obs, size=size, action_repeat=repeat,
                   frame_stack=_default_stack(frame_stack, obs, 3), seed=seed)


def _make_gym(env_id, name, seed, action_repeat, frame_stack, size, obs, camera, fast_render, options):
    if name not in gym.registry:
        raise _unknown(env_id, [f"gym/{k}" for k in _gym_ids()])
    spec = gym.registry[name]
    entry = spec.entry_point if isinstance(spec.entry_point, str) else getattr(spec.entry_point, "__module__", "")
    is_mujoco = "mujoco" in str(entry)
    kwargs = dict(options)
    kwargs.setdefault("render_mode", "rgb_array")  # also lets a trainer record videos of state envs
    if is_mujoco:
        ensure_mujoco_gl()
        try:
            import mujoco  # noqa: F401
        except ImportError as e:
            raise MissingExtraError("mujoco", "gym", "gym/ MuJoCo environments") from e
        kwargs.setdefault("width", size)
        kwargs.setdefault("height", size)
        if camera is not None:
            kwargs.setdefault("camera_id", int(camera))
    elif camera is not None:
        raise ConfigError(f"camera= is only supported for MuJoCo gym envs, not {env_id}")
    try:
        env = gym.make(name, **kwargs)
    except gym.error.DependencyNotInstalled as e:
        raise MissingExtraError("gymnasium[mujoco]", "gym", f"{env_id}: {e}") from e
    if fast_render:
        if not is_mujoco:
            raise ConfigError(f"fast_render=True is only supported for MuJoCo envs, not {env_id}")
        _dmc.apply_fast_render(env.unwrapped.model)
    if isinstance(env.action_space, gym.spaces.Box):
        env = ActionScale(env)
    if isinstance(env.observation_space, gym.spaces.Box) and np.issubdtype(env.observation_space.dtype, np.floating):
        env = StateFloat32(env)
    repeat = 1 if action_repeat is None else int(action_repeat)
    return _finish(env, env_id=f"gym/{name}", obs=obs, size=size, action_repeat=repeat,
                   frame_stack=_default_stack(frame_stack, obs, 3), seed=seed)


def _make_ale(env_id, name, seed, action_repeat, frame_stack, size, obs, camera, fast_render, options):
    _register_ale()
    try:
        import cv2  # noqa: F401  (AtariPreprocessing resizes with OpenCV)
    except ImportError as e:
        raise MissingExtraError("opencv-python-headless", "atari", "Atari preprocessing") from e
    games = _ale_games()
    lookup = {g.lower(): g for g in games}
    game = lookup.get(name.lower().removesuffix("-v5").replace("_", ""))
    if game is None:
        raise _unknown(env_id, [f"ale/{g}" for g in games])
    if obs != "pixels":
        raise ConfigError(f"ale envs support obs='pixels' only, got {obs!r}")
    if camera is not None or fast_render:
        raise ConfigError("camera= and fast_render= do not apply to ale envs")
    kwargs = dict(options)
    noop_max = int(kwargs.pop("noop_max", 30))
    life_loss = bool(kwargs.pop("terminal_on_life_loss", False))
    fire_reset = bool(kwargs.pop("fire_reset", False))
    kwargs["frameskip"] = 1
    try:
        base = gym.make(f"ALE/{game}-v5", **kwargs)
    except TypeError as e:
        raise ConfigError(f"ale/{game}: unknown env option ({e}); ale options are noop_max, terminal_on_life_loss, "
                          "fire_reset and ALE's own (repeat_action_probability, full_action_space, "
                          "max_num_frames_per_episode, mode, difficulty)") from None
    repeat = 4 if action_repeat is None else int(action_repeat)
    env = gym.wrappers.AtariPreprocessing(
        base, noop_max=noop_max, frame_skip=repeat, screen_size=size, terminal_on_life_loss=life_loss,
        grayscale_obs=True, grayscale_newaxis=False, scale_obs=False,
    )
    env = _AleFrames(env)
    if fire_reset:
        env = _FireReset(env)
    env = ChannelFirst(env)
    stack = _default_stack(frame_stack, obs, 4)
    env = FrameStack(env, stack)
    return EnvInfo(env, env_id=f"ale/{game}", action_repeat=repeat, frame_stack=stack, seed=seed)


class _AleFrames(gym.Wrapper):
    """Set ``info["frames"]`` from ALE's ``episode_frame_number`` (fewer than frame_skip at game over), and
    ``info["life_loss"]``: True on the step that lost a life (game over included). Learners that treat a lost life
    as the end of their return -- DQN's Atari-100k protocol, PPO's ``EpisodicLifeEnv`` -- read it while the scored
    episode runs on to game over."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._last = 0
        self._lives = 0

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._last = int(info.get("episode_frame_number", 0))
        self._lives = int(info.get("lives", 0))
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info = dict(info)
        if "episode_frame_number" in info:
            now = int(info["episode_frame_number"])
            info["frames"] = now - self._last
            self._last = now
        lives = int(info.get("lives", self._lives))
        info["life_loss"] = bool(terminated or lives < self._lives)
        self._lives = lives
        return obs, reward, terminated, truncated, info


class _FireReset(gym.Wrapper):
    """Press FIRE (then action 2) after every reset, for games that wait for it (CleanRL's / baselines'
    ``FireResetEnv``); a no-op wrapper for games without FIRE."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        meanings = env.unwrapped.get_action_meanings()
        self._active = len(meanings) >= 3 and meanings[1] == "FIRE"

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        if not self._active:
            return obs, info
        for action in (1, 2):
            obs, _, terminated, truncated, _ = self.env.step(action)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        return obs, info


# -------------------------------------------------------------------------------------------- vector


def _make_in_worker(env_id: str, seed: int, gl_env: dict[str, str], make_kwargs: dict[str, Any]) -> gym.Env:
    """Runs in the worker process: replay the parent's GL settings before anything imports mujoco.

    With ``forkserver`` the server process was started with the environment of that moment, so later
    changes to ``MUJOCO_GL`` in the parent would otherwise be lost.
    """
    os.environ.update(gl_env)
    return make(env_id, seed=seed, **make_kwargs)


def _quiet_worker(index, env_fn, pipe, parent_pipe, shared_memory, error_queue, *args) -> None:
    """Gymnasium's env worker, made to leave quietly: it ignores Ctrl-C (the parent handles it and closes the
    worker) and exits without a traceback when the parent has died (its pipe is broken)."""
    import signal

    from gymnasium.vector.async_vector_env import _async_worker

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _async_worker(index, env_fn, pipe, parent_pipe, shared_memory, error_queue, *args)
    except (BrokenPipeError, EOFError, ConnectionError):
        pass  # the parent is gone: nobody to report to


def make_vector(
    env_id: str,
    num_envs: int,
    *,
    seed: int = 0,
    asynchronous: bool = True,
    context: str | None = None,
    autoreset_mode: str = "NextStep",
    **make_kwargs: Any,
) -> gym.vector.VectorEnv:
    """``num_envs`` copies of ``make(env_id, seed=seed + i, **make_kwargs)`` in a Gymnasium vector env.

    ``asynchronous=True`` gives an ``AsyncVectorEnv`` (one subprocess per env; ``step_async`` / ``step_wait``
    let rendering overlap learning, also with ``num_envs=1``); ``False`` a ``SyncVectorEnv``. ``context`` is
    the multiprocessing start method: ``"forkserver"`` (the default, where available, else ``"spawn"``),
    ``"spawn"`` or ``"fork"``. Only use ``"fork"`` if this process has not rendered yet: a child forked
    after the parent created an EGL/OSMesa context can hang on its first render.
    Sub-envs auto-reset (Gymnasium's next-step mode; ``autoreset_mode="SameStep"`` resets in the step that ends
    the episode and puts its last observation and info under ``info["final_obs"]`` / ``info["final_info"]``, as
    on-policy rollouts need); call ``reset(seed=[...])`` for explicit per-episode seeds. The returned env has ``env_id``, ``action_repeat``, ``frame_stack`` attributes.
    """
    if int(num_envs) < 1:
        raise ConfigError(f"num_envs must be >= 1, got {num_envs}")
    _split(env_id)  # fail fast in the parent on a bad id
    gl_env = gl_environment()
    fns = [
        functools.partial(_make_in_worker, env_id, int(seed) + i, gl_env, dict(make_kwargs))
        for i in range(int(num_envs))
    ]
    if asynchronous:
        if context is None:
            context = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        vec = gym.vector.AsyncVectorEnv(fns, shared_memory=True, context=context, worker=_quiet_worker,
                                        autoreset_mode=autoreset_mode)
    else:
        vec = gym.vector.SyncVectorEnv(fns, autoreset_mode=autoreset_mode)
    for attr in ("env_id", "action_repeat", "frame_stack"):
        setattr(vec, attr, vec.get_attr(attr)[0])
    vec.action_space.seed(int(seed))
    return vec
