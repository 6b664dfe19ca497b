"""Interventions (HIL-SERL, RLIF): an expert watches the agent act and takes over when it is going wrong.

While an intervention lasts the expert's action replaces the agent's, in the env and in the stored transition.
Every transition goes to the online replay as usual; the intervened ones also go to an *intervention buffer* mixed
into every batch RLPD-style (HIL-SERL: half of each batch, ``--intervention.demo-ratio 0.5``, through
:class:`pixelrl.data.mixing.MixedSampler`). ``--demos PATH`` seeds that buffer with prior demonstrations before the
first step (HIL-SERL's demo buffer starts with ~20 demos and the interventions join them; under RLIF's reward the
demos are stored with reward 0, as RLIF's reward-zeroed copy of its prior data). RLIF's reward is an option (``--intervention.reward rlif``): the env's
reward is replaced by 0, and by -1 on the agent's transition that led into the state where an intervention starts
(its last ``(s, a)`` before the expert takes over; not terminal).

Sources (``--intervention.expert SPEC``):

* ``policy:RUN_DIR`` -- a trained pixelrl run (its latest checkpoint) acts as the expert, deterministically (the
  actor's mean). When that run used ``--obs state`` and this one renders pixels, the expert reads the simulator's
  state (the training env then runs in-process): RLIF's simulated expert is a state-based policy too.
* ``scripted:cartpole`` -- a hand-written swing-up and balance controller for ``dmc/cartpole-*`` on the true state.
* ``keyboard`` / ``gamepad`` -- a person (``pygame``; only where a display or a gamepad exists, see
  docs/interventions.md): holding the intervention button takes over, the keys / sticks give the action.

Expert quality: ``expert_noise`` adds Gaussian noise to its actions and ``expert_random`` replaces an action by a
uniform one with that probability (RLIF varies quality by using experts of different training levels).

Triggers (``--intervention.trigger``), evaluated at each agent step while no intervention is running. ``a_agent`` is
the action the agent would execute, exploration noise included (RLIF tests ``agent.sample_actions``, the sampled
action; HIL-SERL's person watches what the robot does):

* ``value`` (RLIF's simulated expert, ``examples/train_rlif_main.py``): intervene when ``Q(s, a_agent) < threshold *
  Q(s, a_ref)``, with ``Q`` and ``a_ref`` from a reference agent (``--intervention.judge``; default: the expert
  run), ``Q`` the min over its critic's heads as RLIF's SAC reference; the decision is flipped with probability
  ``flip`` (RLIF: 0.05);
* ``action-distance`` (RLIF's ``BinarySampler``, used by its HG-DAgger baseline): intervene when
  ``||a_agent - a_expert||_1 > bound`` (flipped with probability ``flip``);
* ``random``: with probability ``probability`` per step (RLIF's ``UniformSampler``); ``always``; ``never``;
* ``device``: the person's button (keyboard / gamepad).

An intervention lasts ``steps`` agent steps (RLIF: 4); the agent then acts one step before the trigger is evaluated
again (as in RLIF's loop, where the step that ends an intervention skips the check), except for ``always`` and
``device``, which are asked again at once.

Exactness: the decisions draw from this module's own NumPy generator (seeded from the run's seed), the expert acts
deterministically, and the trainer checkpoints the generator, the counters and the intervention buffer at episode
boundaries, so a resumed run repeats the same interventions (``tests/rewards/test_interventions.py``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Protocol

import numpy as np

from pixelrl.errors import ConfigError

__all__ = ["InterventionConfig", "InterventionSource", "PolicyExpert", "ScriptedCartpole", "DeviceSource",
           "Interventions", "InterventionStore", "load_run_agent", "env_state", "TRIGGERS", "REWARDS",
           "intervention_config_from_args"]

TRIGGERS = ("auto", "value", "action-distance", "random", "always", "never", "device")
REWARDS = ("env", "rlif")
SCRIPTED = ("cartpole",)


# ------------------------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class InterventionConfig:
    """An expert that takes over the agent's actions during online training (``--intervention.expert SPEC`` and
    ``--intervention.*``; see docs/interventions.md)."""

    expert: str
    """Who intervenes: ``policy:RUN_DIR`` (a trained pixelrl run acts, deterministically), ``scripted:cartpole``
    (a hand-written controller on the simulator state of dmc/cartpole-*), ``keyboard`` or ``gamepad`` (a person,
    through pygame; only where such a device exists)."""
    trigger: str = "auto"
    """When an intervention starts: ``value`` (RLIF: Q(s, a_agent) < threshold * Q(s, a_ref) under the judge's
    critic), ``action-distance`` (L1 distance between the agent's and the expert's action > bound), ``random``
    (probability per step), ``always``, ``never``, ``device`` (a person's button). ``auto``: ``value`` for a
    ``policy:`` expert, ``action-distance`` for a scripted one, ``device`` for keyboard / gamepad."""
    threshold: float = 0.99
    """``value`` trigger: intervene when Q(s, a_agent) < threshold * Q(s, a_ref) (RLIF's walker script: 0.99). With
    negative Q values the inequality is applied as written, as the authors do."""
    bound: float = 0.5
    """``action-distance`` trigger: intervene when ||a_agent - a_expert||_1 exceeds this (actions in [-1, 1]). RLIF's
    ``BinarySampler`` (its HG-DAgger baseline) uses the same test on sampled actions; its pen script sets 12 for the
    24-d action, 0.5 per dimension. Only meaningful where good policies agree action by action: on
    dmc/cartpole-swingup a DrQ-v2 agent scoring ~720 differs from ``scripted:cartpole`` by more than 0.5 on ~60% of
    its steps (docs/interventions.md), so prefer the ``value`` trigger there."""
    probability: float = 0.05
    """``random`` trigger: chance of an intervention per agent step."""
    flip: float = 0.05
    """Chance that the ``value`` / ``action-distance`` decision is flipped (RLIF: 0.05, the simulated expert's
    noise). Deviation: RLIF's dagger-style samplers also decay it by exp(-0.1 * iteration); its RL script keeps 0.05."""
    steps: int = 4
    """Agent steps an intervention lasts before the trigger is evaluated again (RLIF: 4)."""
    expert_noise: float = 0.0
    """Std of Gaussian noise added to the expert's actions (clipped to [-1, 1]): a worse expert."""
    expert_random: float = 0.0
    """Chance that an expert action is replaced by a uniform random one: a worse expert."""
    judge: Optional[str] = None
    """``value`` trigger: the run whose critic and actor give Q and a_ref (RLIF's ground-truth agent). None: the
    expert's run (``policy:`` experts only). Deviation: RLIF's reference agent samples its action; here it acts
    deterministically so that no torch random numbers are drawn."""
    reward: str = "env"
    """``env``: the learner keeps the env's reward (HIL-SERL); ``rlif``: 0 everywhere and -1 on the agent's transition
    just before an intervention starts (RLIF)."""
    demo_ratio: float = 0.5
    """Share of every batch drawn from the intervention buffer (HIL-SERL: 0.5, half of each 256 batch); 0 keeps no
    intervention buffer (RLIF's reference runs: offline_ratio 0, its RLPD learner samples the online buffer only).
    With ``--demos PATH`` the demos seed this buffer (HIL-SERL's demo buffer: demos + interventions) and
    ``--demo-ratio`` must be the same number."""
    in_warmup: bool = True
    """Whether the expert may intervene during the agent's random warm-up steps (then ``a_agent`` is the random
    action)."""

    def __post_init__(self) -> None:
        kind, arg = _parse_expert(self.expert)
        if self.trigger not in TRIGGERS:
            raise ConfigError(f"--intervention.trigger must be one of {', '.join(TRIGGERS)}, got {self.trigger!r}")
        trig = self.trigger
        if trig == "auto":
            trig = {"policy": "value", "scripted": "action-distance"}.get(kind, "device")
            object.__setattr__(self, "trigger", trig)
        if trig == "device" and kind not in ("keyboard", "gamepad"):
            raise ConfigError("--intervention.trigger device needs a person's device (--intervention.expert keyboard "
                              "or gamepad)")
        if kind in ("keyboard", "gamepad") and trig != "device":
            raise ConfigError(f"a {kind} expert decides itself when to intervene; use --intervention.trigger device")
        if trig == "value" and kind != "policy" and self.judge is None:
            raise ConfigError("--intervention.trigger value needs a critic: a policy:RUN_DIR expert or "
                              "--intervention.judge RUN_DIR")
        for name, lo, hi in (("threshold", -math.inf, math.inf), ("bound", 0.0, math.inf),
                             ("probability", 0.0, 1.0), ("flip", 0.0, 1.0), ("expert_noise", 0.0, math.inf),
                             ("expert_random", 0.0, 1.0), ("demo_ratio", 0.0, 1.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
                rng = f"in [{lo:g}, {hi:g}]" if math.isfinite(hi) else (f">= {lo:g}" if math.isfinite(lo) else "finite")
                raise ConfigError(f"--intervention.{name.replace('_', '-')} must be a number {rng}, got {v!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"--intervention.steps must be an integer >= 1, got {self.steps!r}")
        if self.reward not in REWARDS:
            raise ConfigError(f"--intervention.reward must be one of {', '.join(REWARDS)}, got {self.reward!r}")
        if self.judge is not None and (not isinstance(self.judge, str) or not self.judge.strip()):
            raise ConfigError(f"--intervention.judge must be a run folder, got {self.judge!r}")

    @property
    def kind(self) -> str:
        return _parse_expert(self.expert)[0]

    @property
    def argument(self) -> str:
        return _parse_expert(self.expert)[1]


EXPERT_USAGE = "policy:RUN_DIR, scripted:cartpole, keyboard or gamepad"


def _parse_expert(spec: Any) -> tuple[str, str]:
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"--intervention.expert needs a spec ({EXPERT_USAGE}), got {spec!r}")
    kind, sep, arg = spec.strip().partition(":")
    kind = kind.lower()
    if kind in ("keyboard", "gamepad"):
        return kind, arg
    if kind not in ("policy", "scripted") or not sep or not arg.strip():
        raise ConfigError(f"--intervention.expert {spec!r} is not an expert spec; use {EXPERT_USAGE}")
    if kind == "scripted" and arg.strip().lower() not in SCRIPTED:
        raise ConfigError(f"--intervention.expert {spec!r}: no scripted expert {arg!r}; known: "
                          f"{', '.join('scripted:' + s for s in SCRIPTED)}")
    return kind, arg.strip()


def intervention_config_from_args(argv: list[str]) -> Optional[InterventionConfig]:
    """Take ``--intervention.<option> VALUE`` out of ``argv`` (in place) and build the :class:`InterventionConfig`
    (None when none is given). An unknown option or a bad value is one ConfigError line."""
    import dataclasses

    fields = {f.name.replace("_", "-"): f for f in dataclasses.fields(InterventionConfig)}
    values: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        a = argv[i]
        key, eq, value = a.partition("=")
        if not key.startswith("--intervention."):
            i += 1
            continue
        name = key[len("--intervention."):].replace("_", "-")
        negated = name.startswith("no-") and name[3:] in fields
        f = fields.get(name[3:] if negated else name)
        if f is None:
            raise ConfigError(f"unknown option {key}; the intervention options are "
                              f"{', '.join('--intervention.' + n for n in fields)}")
        del argv[i]
        if str(f.type) == "bool":
            values[f.name] = (value.lower() in ("1", "true")) if eq else not negated
            continue
        if not eq:
            if i >= len(argv) or argv[i].startswith("--"):
                raise ConfigError(f"{key} needs a value")
            value = argv.pop(i)
        t = str(f.type)
        try:
            if "Optional" in t and value.lower() in ("none", "null"):
                values[f.name] = None
            elif "float" in t:
                values[f.name] = float(value)
            elif "int" in t:
                values[f.name] = int(value)
            else:
                values[f.name] = value
        except ValueError:
            raise ConfigError(f"{key} must be {'a number' if 'float' in t else 'an integer'}, got {value!r}") from None
    if not values:
        return None
    if "expert" not in values:
        raise ConfigError("--intervention.* options need --intervention.expert SPEC (" + EXPERT_USAGE + ")")
    return InterventionConfig(**values)


# ------------------------------------------------------------------------------------------- experts


class InterventionSource(Protocol):
    """Who intervenes. ``bind`` gets the in-process training env (for the simulator's state) and the learner's
    action space; ``action(obs)`` is the expert's action on the learner's observation; ``wants(obs, agent_action)``
    says whether it takes over now (only sources that decide themselves: the person's devices; None: the trigger
    decides). Sources with internal state give ``state_dict`` / ``load_state_dict``."""

    def bind(self, env: Any, action_space: Any, action_repeat: int) -> None: ...

    def action(self, obs: Any) -> np.ndarray: ...

    def wants(self, obs: Any, agent_action: Any) -> Optional[bool]: ...


def env_state(env: Any) -> np.ndarray:
    """The state observation (as ``--obs state`` gives it) of an in-process env at its current time step."""
    u = env.unwrapped
    if hasattr(u, "dm_env"):
        from pixelrl.envs.dmc import _flatten_state

        return _flatten_state(u.dm_env.task.get_observation(u.physics))
    if hasattr(u, "_get_obs"):
        return np.asarray(u._get_obs(), dtype=np.float32)
    raise ConfigError(f"cannot read the simulator state of {type(u).__name__}; a state-based expert needs a dmc/ or "
                      "gym/ MuJoCo env")


def _env_kwargs(cfg: dict) -> dict:
    kw: dict[str, Any] = {"size": cfg.get("size", 84), "fast_render": cfg.get("fast_render", False),
                          "obs": cfg.get("obs", "pixels")}
    for k in ("action_repeat", "frame_stack"):
        if cfg.get(k) is not None:
            kw[k] = cfg[k]
    kw.update(cfg.get("env_options") or {})
    return kw


def load_run_agent(run_dir: str | Path, *, device: Any = "cpu", what: str = "the expert") -> tuple[Any, dict]:
    """The agent of a pixelrl run folder at its latest checkpoint, and the run's config dict (``config.json``).
    One line when the folder is not a run or has no checkpoint."""
    import torch

    from pixelrl.agents import get_spec, make_agent
    from pixelrl.envs import make
    from pixelrl.utils.checkpoint import latest_checkpoint, load_checkpoint
    from pixelrl.utils.dataclass_io import from_dict

    run = Path(run_dir)
    cfg_path = run / "config.json"
    if not cfg_path.is_file():
        raise ConfigError(f"{what} {run} is not a pixelrl run folder (no config.json); train one with pixelrl train")
    cfg = json.loads(cfg_path.read_text())
    ckpt = latest_checkpoint(run / "checkpoints")
    if ckpt is None:
        raise ConfigError(f"{what} {run} has no checkpoint yet; let the run write one (it does at every evaluation)")
    spec = get_spec(cfg["agent_name"])
    agent_cfg = from_dict(spec.config_cls, cfg["agent"], where=f"{cfg_path} agent")
    env = make(cfg["env"], seed=0, **_env_kwargs(cfg))
    try:
        agent = make_agent(cfg["agent_name"], env.observation_space, env.action_space, agent_cfg, torch.device(device))
    finally:
        env.close()
    state = load_checkpoint(ckpt)
    agent.load_state_dict(state["agent"])
    return agent, cfg


class PolicyExpert:
    """``policy:RUN_DIR`` -- a trained pixelrl agent as the expert (and, for the ``value`` trigger, the judge)."""

    def __init__(self, run_dir: str, *, device: Any = "cpu") -> None:
        self.run_dir = str(run_dir)
        self.agent, self.cfg = load_run_agent(run_dir, device=device)
        self.reads_state = False
        self._env = None

    def bind(self, env: Any, action_space: Any, action_repeat: int, learner_obs: str = "pixels") -> None:
        rep = self.cfg.get("action_repeat")
        if rep is not None and int(rep) != int(action_repeat):
            raise ConfigError(f"the expert run {self.run_dir} acted every {rep} frames, this run every {action_repeat}; "
                              f"pass --action-repeat {rep}")
        expert_obs = self.cfg.get("obs", "pixels")
        if expert_obs == learner_obs:
            self.reads_state = False
        elif expert_obs == "state":
            if env is None:
                raise ConfigError("a state-based expert needs the training env in this process")
            self.reads_state = True
        else:
            raise ConfigError(f"the expert run {self.run_dir} observes {expert_obs!r}, this run {learner_obs!r}; an "
                              "expert must observe what the learner does, or the simulator state (--obs state)")
        self._env = env

    def expert_obs(self, obs: Any) -> Any:
        return env_state(self._env) if self.reads_state else obs

    def action(self, obs: Any) -> np.ndarray:
        import torch

        with torch.no_grad():
            return np.asarray(self.agent.act(self.expert_obs(obs), step=10 ** 9, eval_mode=True), dtype=np.float32)

    def q_values(self, obs: Any, actions: list[np.ndarray]) -> np.ndarray:
        """Min over the critic's heads of Q(s, a) for each action (RLIF's SAC reference takes min(Q1, Q2))."""
        import torch

        agent = self.agent
        if not all(hasattr(agent, a) for a in ("critic", "encoder", "_obs_to_tensor")):
            raise ConfigError(f"the judge run {self.run_dir} has no Q critic ({type(agent).__name__}); the value "
                              "trigger needs a DrQ-v2 / SAC-style agent")
        with torch.no_grad():
            x = agent._obs_to_tensor(self.expert_obs(obs))
            feat = agent.encoder(x)
            a = torch.as_tensor(np.stack(actions), dtype=torch.float32, device=feat.device)
            feat = feat.expand(len(actions), *feat.shape[1:])
            enc = agent.action_encoder(a) if hasattr(agent, "action_encoder") else a
            q = agent.critic.values(feat, enc).float()
        return q.min(0).values.reshape(-1).cpu().numpy()

    def wants(self, obs: Any, agent_action: Any) -> Optional[bool]:
        return None


class ScriptedCartpole:
    """``scripted:cartpole`` -- energy-pumping swing-up, then a linear balance controller, on the simulator state
    of dmc/cartpole-* (``[x, cos a, sin a, x', a']``, a = 0 upright); see :func:`cartpole_controller`."""

    def __init__(self) -> None:
        self._env = None

    def bind(self, env: Any, action_space: Any, action_repeat: int, learner_obs: str = "pixels") -> None:
        u = env.unwrapped if env is not None else None
        if u is None or getattr(u, "domain", None) != "cartpole":
            raise ConfigError("scripted:cartpole drives dmc/cartpole-* envs only")
        self._env = env
        self.action_repeat = int(action_repeat)

    def action(self, obs: Any) -> np.ndarray:
        return cartpole_controller(env_state(self._env))

    def wants(self, obs: Any, agent_action: Any) -> Optional[bool]:
        return None


def cartpole_controller(state: np.ndarray) -> np.ndarray:
    """The scripted cartpole action for a state ``[x, cos a, sin a, x', a']`` (a = 0 upright): above the horizontal
    (cos a > 0.31) a linear feedback on the angle, angular velocity, cart position and velocity; below it energy
    pumping ``0.326 * E * sign(a' cos a)`` with ``E = a'^2 / 2 + 11.27 (cos a - 1)``, the pole's energy relative to
    upright rest. The gains came from a random search on dmc/cartpole-swingup here; returns 810-840 over seeds 0-2
    at action repeat 2, 4 and 8 (1000 frames)."""
    x, c, s, xd, ad = (float(v) for v in np.asarray(state, dtype=np.float64)[:5])
    if c > 0.309:
        u = 12.298 * math.atan2(s, c) + 1.339 * ad + 1.931 * x + 0.075 * xd
    else:
        energy = 0.5 * ad ** 2 + 11.267 * (c - 1.0)
        u = 0.326 * energy * (1.0 if ad * c + 1e-9 > 0 else -1.0) - 0.5 * x - 0.3 * xd
    return np.array([min(max(u, -1.0), 1.0)], dtype=np.float32)


class DeviceSource:
    """``keyboard`` / ``gamepad`` -- a person takes over through pygame. Gamepad: hold button 0 to intervene, the
    left stick's axes give the action's first dimensions. Keyboard (a small pygame window must have the focus):
    hold space to intervene, left/right and up/down arrows set the first two action dimensions to -1/+1. Only where
    pygame is installed and the device exists; otherwise one line says what is missing."""

    def __init__(self, kind: str) -> None:
        try:
            import pygame
        except ImportError:
            raise ConfigError(f"the {kind} expert needs pygame (pip install pygame) and a {kind}; neither is part of "
                              "pixelrl's extras") from None
        self.kind, self.pg = kind, pygame
        pygame.init()
        if kind == "gamepad":
            pygame.joystick.init()
            if pygame.joystick.get_count() == 0:
                raise ConfigError("no gamepad found (pygame sees no joystick); connect one or use another expert")
            self.pad = pygame.joystick.Joystick(0)
            self.pad.init()
        else:
            try:
                pygame.display.set_mode((240, 80))
                pygame.display.set_caption("pixelrl: hold space to intervene")
            except pygame.error as e:
                raise ConfigError(f"the keyboard expert needs a display for its window ({e})") from None
        self._dim = 1

    def bind(self, env: Any, action_space: Any, action_repeat: int, learner_obs: str = "pixels") -> None:
        self._dim = int(np.prod(action_space.shape))

    def _poll(self) -> tuple[bool, np.ndarray]:
        pg = self.pg
        pg.event.pump()
        a = np.zeros(self._dim, dtype=np.float32)
        if self.kind == "gamepad":
            for i in range(min(self._dim, self.pad.get_numaxes())):
                a[i] = float(self.pad.get_axis(i))
            return bool(self.pad.get_button(0)), np.clip(a, -1, 1)
        keys = pg.key.get_pressed()
        a[0] = float(keys[pg.K_RIGHT]) - float(keys[pg.K_LEFT])
        if self._dim > 1:
            a[1] = float(keys[pg.K_UP]) - float(keys[pg.K_DOWN])
        return bool(keys[pg.K_SPACE]), a

    def action(self, obs: Any) -> np.ndarray:
        return self._poll()[1]

    def wants(self, obs: Any, agent_action: Any) -> Optional[bool]:
        return self._poll()[0]


def build_interventions(cfg: InterventionConfig, *, seed: int, device: Any = "cpu") -> "Interventions":
    """The hook for ``cfg``: its source loaded (a missing expert run is one line) and the judge, if any."""
    judge = PolicyExpert(cfg.judge, device=device) if cfg.judge is not None else None
    return Interventions(cfg, build_source(cfg, device), seed=seed, judge=judge)


def build_source(cfg: InterventionConfig, device: Any = "cpu") -> Any:
    if cfg.kind == "policy":
        return PolicyExpert(cfg.argument, device=device)
    if cfg.kind == "scripted":
        return ScriptedCartpole()
    return DeviceSource(cfg.kind)


# ------------------------------------------------------------------------------------------- the online hook


class Interventions:
    """What the trainer drives: the decision at every agent step (``__call__``, given to
    :func:`pixelrl.train.episode.train_episode` as ``intervene``), the store that routes transitions
    (:attr:`store`), the per-episode statistics and the checkpointed state."""

    def __init__(self, cfg: InterventionConfig, source: Any, *, seed: int, judge: Any = None) -> None:
        self.cfg = cfg
        self.source = source
        self.judge = judge if judge is not None else (source if cfg.trigger == "value" else None)
        self.rng = np.random.default_rng(seed)
        self.store: Optional[InterventionStore] = None
        self.sampler: Any = None
        self.demo_replay: Any = None
        self.demo_store: Any = None
        self.action_space = None
        self.totals = {"interventions": 0, "intervened_steps": 0, "steps": 0}
        self._episode = {"interventions": 0, "intervened_steps": 0, "steps": 0, "rlif_penalties": 0}
        self._active, self._left, self._rest = False, 0, False
        self.intervened = False
        """Whether the current step's action is the expert's."""

    def bind(self, env: Any, action_space: Any, action_repeat: int, learner_obs: str) -> None:
        self.action_space = action_space
        self.source.bind(env, action_space, action_repeat, learner_obs)
        if self.judge is not None and self.judge is not self.source:
            self.judge.bind(env, action_space, action_repeat, learner_obs)

    def attach(self, store: Any, demo: Any = None) -> "InterventionStore":
        self.store = InterventionStore(store, demo, rlif=self.cfg.reward == "rlif", hooks=self)
        return self.store

    def begin_episode(self) -> None:
        self._active, self._left, self._rest, self.intervened = False, 0, False, False

    def _expert_action(self, obs: Any) -> np.ndarray:
        cfg = self.cfg
        a = np.asarray(self.source.action(obs), dtype=np.float32)
        low, high = self.action_space.low, self.action_space.high
        if cfg.expert_random > 0 and self.rng.random() < cfg.expert_random:
            return self.rng.uniform(low, high).astype(np.float32)
        if cfg.expert_noise > 0:
            a = np.clip(a + cfg.expert_noise * self.rng.standard_normal(a.shape), low, high).astype(np.float32)
        return a

    def _trigger(self, obs: Any, agent_action: np.ndarray) -> tuple[bool, Optional[np.ndarray]]:
        """Whether to start an intervention now, and the expert's action if it was computed."""
        cfg, t = self.cfg, self.cfg.trigger
        if t == "never":
            return False, None
        if t == "always":
            return True, None
        if t == "device":
            return bool(self.source.wants(obs, agent_action)), None
        if t == "random":
            return bool(self.rng.random() < cfg.probability), None
        expert = None
        if t == "value":
            ref = self.judge.action(obs)
            q_agent, q_ref = self.judge.q_values(obs, [agent_action, ref])
            hit = bool(q_agent < cfg.threshold * q_ref)
        else:  # action-distance
            expert = self._expert_action(obs)
            hit = bool(np.abs(np.asarray(agent_action, np.float64) - expert).sum() > cfg.bound)
        if cfg.flip > 0 and self.rng.random() < cfg.flip:
            hit = not hit
        return hit, expert

    def __call__(self, obs: Any, action: Any, *, step: int, warmup: bool = False) -> Any:
        """The action the env receives at this agent step: the agent's, or the expert's during an intervention.
        Also hands the previous transition to the replay, now that it is known whether this step starts an
        intervention (RLIF's -1)."""
        started, expert = False, None
        if self._rest:  # RLIF: the step after an intervention is the agent's, without a trigger check
            self._rest = False
        elif not self._active and (self.cfg.in_warmup or not warmup):
            hit, expert = self._trigger(obs, np.asarray(action))
            if hit:
                self._active, self._left, started = True, self.cfg.steps, True
        self.intervened = self._active
        if self._active:
            out = expert if expert is not None else self._expert_action(obs)
            self._left -= 1
            if self._left == 0:  # RLIF's triggers let the agent act one step before they are checked again
                self._active, self._rest = False, self.cfg.trigger not in ("always", "device")
        else:
            out = action
        e = self._episode
        e["steps"] += 1
        if self.intervened:
            e["intervened_steps"] += 1
        if started:
            e["interventions"] += 1
        if self.store is not None:
            e["rlif_penalties"] += int(self.store.decided(started=started, intervened=self.intervened))
        return out

    def episode_stats(self) -> dict[str, float]:
        """``intervention_rate`` (share of the episode's steps the expert acted), ``interventions`` (starts),
        ``intervened_steps``, with ``rlif_penalties`` under the RLIF reward and ``interventions_total`` (since the
        run began); resets the episode's counts."""
        e = self._episode
        for k in ("interventions", "intervened_steps", "steps"):
            self.totals[k] += e[k]
        out = {"intervention_rate": e["intervened_steps"] / max(e["steps"], 1),
               "interventions": float(e["interventions"]), "intervened_steps": float(e["intervened_steps"]),
               "interventions_total": float(self.totals["interventions"])}
        if self.cfg.reward == "rlif":
            out["rlif_penalties"] = float(e["rlif_penalties"])
        self._episode = {"interventions": 0, "intervened_steps": 0, "steps": 0, "rlif_penalties": 0}
        if self.demo_store is not None and hasattr(self.demo_store, "episode_stats"):
            self.demo_store.episode_stats()  # the reward wrapper of the intervention buffer: its sums restart
        return out

    # ---- buffers and checkpoints (driven by the trainer) ---------------------------------------------------------
    def setup_buffers(self, replay: Any, store: Any, reward_model: Any = None, *, capacity: int,
                      seed: int) -> tuple["InterventionStore", Any]:
        """Build the intervention buffer (like ``replay``: spaces, n-step, discount, device, but each slot holding the
        whole frame stack, so that a segment's first observations carry the frames before the takeover; with a
        reward model, behind its own reward wrapper so its transitions get the model's reward too) and return the
        store the episode loop adds to and what batches are drawn from (a :class:`MixedSampler` of ``online`` and
        ``interventions`` at ``1 - demo_ratio`` / ``demo_ratio``, or the online store alone when ``demo_ratio`` is
        0)."""
        from pixelrl.data.mixing import MixedSampler
        from pixelrl.data.replay import ReplayBuffer

        self.demo_replay = self.demo_store = None
        if self.cfg.demo_ratio > 0:
            # frame_stack=1: each slot keeps the whole stacked observation. A segment starts mid-episode, and a
            # buffer that stores each frame once would pad its first stacks with copies of the segment's first
            # frame (no velocity in them); the online replay's stacks hold the real preceding frames.
            self.demo_replay = ReplayBuffer(replay.observation_space, replay.action_space, int(capacity),
                                            frame_stack=1, nstep=replay.nstep,
                                            discount=replay.discount, device=replay.device, seed=seed)
            self.demo_store = self.demo_replay
            if reward_model is not None:
                from pixelrl.rewards.wrapper import RewardedReplay

                self.demo_store = RewardedReplay(self.demo_replay, reward_model)
        online = self.attach(store, self.demo_store)
        if self.demo_store is None:
            self.sampler = None
            return online, online
        r = float(self.cfg.demo_ratio)
        self.sampler = MixedSampler({"online": online, "interventions": _WholeStacks(self.demo_store, replay)},
                                    {"online": 1.0 - r, "interventions": r}, on_empty="redistribute")
        return online, self.sampler

    def add_demos(self, dataset: Any) -> int:
        """Seed the intervention buffer with a demo dataset's episodes (``--demos PATH``; HIL-SERL's demo buffer
        starts with the offline demos and the intervened transitions join them), each slot the whole frame stack as
        the environment returned it. Under RLIF's reward the demos' rewards are stored as 0 (RLIF puts a reward-zeroed
        copy of its prior data in the replay). Called once, before the first step (a resumed run loads the buffer
        from its checkpoint instead). Returns the transitions added."""
        if self.demo_replay is None:
            raise ConfigError("--demos seeds the intervention buffer, but --intervention.demo-ratio 0 keeps none; give "
                              "--intervention.demo-ratio and --demo-ratio a share > 0, or drop --demos")
        buf = self.demo_replay
        if len(buf) != 0:
            raise ConfigError("the intervention buffer already holds transitions; demos seed it before the first step")
        need = int(dataset.num_transitions) + int(dataset.num_episodes)
        if need > int(buf.capacity):
            raise ConfigError(f"the demos ({dataset.num_episodes} episodes, {dataset.num_transitions} transitions) "
                              f"do not fit the intervention buffer ({buf.capacity} slots, the agent's replay capacity); "
                              "raise --agent.replay-capacity or use fewer demos")
        rlif = self.cfg.reward == "rlif"
        dict_obs = getattr(dataset, "observation_keys", [None]) != [None]
        added = 0
        for ep in dataset.iter_episodes(stacked=True):
            obs = ep["observations"]

            def at(t: int) -> Any:
                return {k: v[t] for k, v in obs.items()} if dict_obs else obs[t]

            buf.add_first(at(0))
            for t in range(len(ep["rewards"])):
                r = 0.0 if rlif else float(ep["rewards"][t])
                buf.add(ep["actions"][t], r, at(t + 1), bool(ep["terminations"][t]), bool(ep["truncations"][t]))
            added += len(ep["rewards"])
        return added

    def batch_extras(self) -> dict[str, float]:
        """The realised share of intervention rows in the last batch (``frac_interventions``)."""
        if self.sampler is None:
            return {}
        counts = self.sampler.last_counts
        return {"frac_interventions": counts["interventions"] / max(sum(counts.values()), 1)}

    def checkpoint(self, directory: Path) -> dict:
        """Save the intervention buffer's new slots under ``directory`` and return what a checkpoint keeps."""
        state = {"hooks": self.state_dict(), "replay_manifest": None}
        if self.demo_replay is not None:
            self.demo_replay.save(directory)
            state["replay_manifest"] = (Path(directory) / "manifest.json").read_text()
        return state

    def restore(self, state: Optional[dict], directory: Path) -> None:
        """Load what :meth:`checkpoint` kept (writes nothing; :meth:`commit_resume` puts the manifest back)."""
        if state is None:
            raise ConfigError("the checkpoint has no intervention state; it was saved by a run without "
                              "--intervention.*")
        self.load_state_dict(state["hooks"])
        self._manifest = state.get("replay_manifest")
        if self.demo_replay is not None:
            if self._manifest is None:
                raise ConfigError("the checkpoint has no intervention buffer; it was saved with "
                                  "--intervention.demo-ratio 0")
            self.demo_replay.load(directory, manifest=self._manifest)

    def commit_resume(self, directory: Path) -> None:
        from pixelrl.utils.atomic import write_json_atomic

        if self.demo_replay is not None and getattr(self, "_manifest", None):
            write_json_atomic(Path(directory) / "manifest.json", json.loads(self._manifest))

    def state_dict(self) -> dict:
        return {"rng": json.dumps(self.rng.bit_generator.state), "totals": dict(self.totals)}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = json.loads(state["rng"])
        self.totals = {k: int(v) for k, v in state["totals"].items()}


class _WholeStacks:
    """The intervention buffer as the batch mix sees it: it stores whole frame stacks (``frame_stack=1``) and samples
    observations shaped like the online replay's ``frame_stack``-frame stacks, so it reports that replay's
    ``frame_stack`` to :class:`~pixelrl.data.mixing.MixedSampler`'s compatibility check. Everything else is the
    buffer's."""

    def __init__(self, buffer: Any, online: Any) -> None:
        self._buffer = buffer
        self.frame_stack = online.frame_stack

    def __getattr__(self, name: str) -> Any:
        return getattr(self._buffer, name)

    def __len__(self) -> int:
        return len(self._buffer)


class InterventionStore:
    """Stands where the trainer's episode loop expects the replay (like the reward wrapper). Each transition is held
    until the decision of the next agent step is known (:meth:`decided`, called by :class:`Interventions` before the
    step's updates, so the transition reaches the sampler exactly when it would without interventions), then stored
    in the online replay; the intervened ones also in ``demo``, each intervention as its own segment (an episode of
    the demo buffer, cut -- truncated, so it bootstraps -- where the agent takes back control). Every other
    attribute is the wrapped store's."""

    def __init__(self, store: Any, demo: Any = None, *, rlif: bool = False, hooks: Any = None) -> None:
        self.replay_store = store
        self.hooks = hooks
        self.demo = demo
        self.rlif = rlif
        self._pending: Optional[tuple] = None
        self._last_obs: Any = None
        self._demo_open = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.replay_store, name)

    def __len__(self) -> int:
        return len(self.replay_store)

    def add_first(self, obs: Any) -> None:
        self._flush(next_intervened=False)
        if self.hooks is not None:
            self.hooks.begin_episode()
        self.replay_store.add_first(obs)
        self._last_obs = obs

    def add(self, action: Any, reward: float, next_obs: Any, terminated: bool, truncated: bool, **kwargs: Any) -> None:
        """One env step; whether its action was the expert's comes from the hook (``Interventions.intervened``)."""
        intervened = bool(self.hooks.intervened) if self.hooks is not None else False
        r = 0.0 if self.rlif else float(reward)
        self._pending = [self._last_obs, action, r, next_obs, bool(terminated), bool(truncated), intervened, kwargs]
        self._last_obs = next_obs
        if terminated or truncated:
            self._flush(next_intervened=False)

    def decided(self, *, started: bool, intervened: bool) -> bool:
        """The next step's decision is known: label (RLIF: -1 when it starts an intervention) and store the held
        transition. Returns whether a -1 was given."""
        penalty = False
        if self._pending is not None and started and self.rlif and not self._pending[6]:
            self._pending[2] = -1.0
            penalty = True
        self._flush(next_intervened=intervened)
        return penalty

    def _flush(self, *, next_intervened: bool) -> None:
        if self._pending is None:
            return
        obs, action, r, nxt, term, trunc, intervened, kw = self._pending
        self._pending = None
        self.replay_store.add(action, r, nxt, term, trunc, **kw)
        if self.demo is None or not intervened:
            return
        if not self._demo_open:
            self.demo.add_first(obs)
            self._demo_open = True
        cut = not (term or trunc) and not next_intervened  # the agent takes back control: the segment ends here
        self.demo.add(action, r, nxt, term, trunc or cut, **kw)
        if term or trunc or cut:
            self._demo_open = False

    def sample(self, *args: Any, **kwargs: Any) -> Any:
        return self.replay_store.sample(*args, **kwargs)
