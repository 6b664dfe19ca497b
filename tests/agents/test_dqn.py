"""DQN family (agents/dqn.py): TD targets against hand computations, the learner-only life-loss terminal, the epsilon
schedule, DrQ(eps)'s augmentation, the HL-Gauss head for discrete actions, exact checkpoint continuation, a short
learning run on CartPole, and the pixel path through the real trainer on ALE (with an exact resume)."""

from __future__ import annotations

import dataclasses
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from pixelrl.agents import agent_preset, agent_train_preset, make_agent
from pixelrl.agents.dqn import DQNAgent, DQNConfig, drq_augment, linearly_decaying_epsilon
from pixelrl.data.batch import Batch
from pixelrl.data.replay import ReplayBuffer
from pixelrl.errors import ConfigError
from pixelrl.mechanisms.hl_gauss import HLGaussConfig, hl_gauss_target
from pixelrl.utils.checkpoint import load_checkpoint, save_checkpoint

from helpers import load_script

STATE = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
TWO = gym.spaces.Discrete(2)


def _cfg(**kw) -> DQNConfig:
    base = dict(num_seed_steps=0, update_every_steps=1, mlp_hidden=(16,), reward_clip=0.0)
    base.update(kw)
    return DQNConfig(**base)


class _Table(nn.Module):
    """A Q 'network' that returns fixed rows: obs[:, 0] is the state index."""

    def __init__(self, q: list[list[float]]) -> None:
        super().__init__()
        self.q = torch.tensor(q)

    def forward(self, x):
        return self.q[x[:, 0].long()]


# ---------------------------------------------------------------------------------------------------- TD targets
def test_double_q_target_uses_online_argmax_and_target_value():
    agent = DQNAgent(STATE, TWO, _cfg(target_update_period=100, double_q=True))
    agent.q_net = _Table([[1.0, 3.0]])  # online: argmax = action 1
    agent.target_net = _Table([[5.0, 2.0]])  # target: max = 5 at action 0
    batch = Batch(obs=None, action=None, reward=torch.tensor([[0.5]]), discount=torch.tensor([[0.9]]),
                  next_obs=torch.zeros(1, 2))
    y = agent.td_target(batch, batch.next_obs)
    assert y.item() == pytest.approx(0.5 + 0.9 * 2.0)  # target's value of the online argmax
    agent.cfg = dataclasses.replace(agent.cfg, double_q=False)
    assert agent.td_target(batch, batch.next_obs).item() == pytest.approx(0.5 + 0.9 * 5.0)  # max of the target net
    terminal = dataclasses.replace(batch, discount=torch.tensor([[0.0]]))
    assert agent.td_target(terminal, batch.next_obs).item() == pytest.approx(0.5)


def test_period_one_without_ema_uses_the_online_network_as_target():
    agent = DQNAgent(STATE, TWO, _cfg(target_update_period=1, double_q=True))
    assert agent.target_net is None and agent.online_is_target
    agent.q_net = _Table([[1.0, 3.0]])
    batch = Batch(obs=None, action=None, reward=torch.tensor([[1.0]]), discount=torch.tensor([[0.5]]),
                  next_obs=torch.zeros(1, 2))
    assert agent.td_target(batch, batch.next_obs).item() == pytest.approx(1.0 + 0.5 * 3.0)


def test_dueling_head_is_value_plus_centred_advantage():
    from pixelrl.nets.dueling import QNetwork

    net = QNetwork((2,), 3, dueling=True, mlp_hidden=(2,))
    with torch.no_grad():
        net.advantage.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        net.advantage.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
        net.value.weight.copy_(torch.tensor([[2.0, -1.0]]))
        net.value.bias.copy_(torch.tensor([0.5]))
    feat = torch.tensor([[1.0, 2.0]])
    adv = torch.tensor([1.0, 3.0, 2.0])  # W f + b
    v = 2.0 * 1.0 - 1.0 * 2.0 + 0.5
    expected = v + adv - adv.mean()
    assert torch.allclose(net.head(feat)[0], expected)
    # the mean advantage is removed: Q averages to V
    assert net.head(feat)[0].mean().item() == pytest.approx(v)


def test_updates_reach_the_fixed_point_of_a_tiny_mdp():
    """s0 --a0 (r 0)--> s0, s0 --a1 (r 1)--> s1 (terminal). gamma 0.9: Q*(s0) = [0.9, 1.0]. Double Q, dueling,
    Huber loss, target = online net; one fixed batch of the two transitions."""
    torch.manual_seed(0)
    agent = DQNAgent(STATE, TWO, _cfg(target_update_period=1, double_q=True, dueling=True, lr=3e-3,
                                      mlp_hidden=(32,)))
    s0, s1 = [1.0, 0.0], [0.0, 1.0]
    batch = Batch(obs=torch.tensor([s0, s0]), action=torch.tensor([0, 1]), reward=torch.tensor([[0.0], [1.0]]),
                  discount=torch.tensor([[0.9], [0.0]]), next_obs=torch.tensor([s0, s1]))
    for step in range(1500):
        m = agent.update(batch, step=step)
    with torch.no_grad():
        q = agent.q_net(torch.tensor([s0]))[0]
    assert q.tolist() == pytest.approx([0.9, 1.0], abs=0.03)
    assert agent.greedy(np.array(s0, np.float32)) == 1
    assert m["td_loss"] < 1e-3


def test_hard_target_copies_follow_the_period_in_agent_steps():
    torch.manual_seed(0)
    agent = DQNAgent(STATE, TWO, _cfg(target_update_period=4, lr=1e-2))
    batch = Batch(obs=torch.randn(8, 2), action=torch.randint(0, 2, (8,)), reward=torch.randn(8, 1),
                  discount=torch.full((8, 1), 0.9), next_obs=torch.randn(8, 2))

    def same():
        return all(torch.equal(a, b) for a, b in zip(agent.q_net.parameters(), agent.target_net.parameters()))

    copies = []
    for step in range(1, 10):
        agent.update(batch, step=step)
        copies.append(same())
    assert copies == [False, False, False, True, False, False, False, True, False]  # after steps 4 and 8
    ema = DQNAgent(STATE, TWO, _cfg(target_update_period=4, target_tau=0.5, lr=1e-2))
    before = [p.clone() for p in ema.target_net.parameters()]
    ema.update(batch, step=1)
    for b, t, o in zip(before, ema.target_net.parameters(), ema.q_net.parameters()):
        assert torch.allclose(t, b + 0.5 * (o - b))


# ---------------------------------------------------------------------------------------------------- life loss
def _life_loss_episode(replay: ReplayBuffer, rewards, life_loss_at: int) -> None:
    replay.add_first(np.array([0.0], np.float32))
    for t, r in enumerate(rewards):
        replay.add(np.int64(0), r, np.array([t + 1.0], np.float32), t == len(rewards) - 1, False,
                   learner_terminal=(t == life_loss_at))


def test_nstep_targets_stop_at_a_learner_terminal_while_the_episode_runs_on():
    space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    replay = ReplayBuffer(space, TWO, 100, frame_stack=1, nstep=3, discount=0.5, seed=0)
    rewards = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
    _life_loss_episode(replay, rewards, life_loss_at=2)  # the step from obs 2 to obs 3 loses a life
    assert replay.num_sampleable() == len(rewards)  # one episode: the steps after the life loss are still in it
    b = replay.sample(512)
    got = {int(o): (float(r), float(d), int(n)) for o, r, d, n in zip(b.obs[:, 0], b.reward[:, 0], b.discount[:, 0],
                                                                        b.next_obs[:, 0])}
    assert got[0] == (1 + 0.5 * 2 + 0.25 * 4, 0.0, 3)  # cut at the life loss: no bootstrap
    assert got[1] == (2 + 0.5 * 4, 0.0, 3)
    assert got[2] == (4.0, 0.0, 3)
    assert got[3] == (8 + 0.5 * 16 + 0.25 * 32, 0.125, 6)  # after the life loss: a normal 3-step return
    assert got[4] == (16 + 0.5 * 32 + 0.25 * 64, 0.0, 7)  # the real game over
    assert got[6] == (64.0, 0.0, 7)


def test_frame_stacks_run_across_a_lost_life():
    space = gym.spaces.Box(0, 255, (2, 4, 4), np.uint8)  # 2 stacked 1-channel frames
    replay = ReplayBuffer(space, TWO, 100, frame_stack=2, nstep=1, discount=0.9, seed=0)

    def frames(a, b):
        return np.stack([np.full((4, 4), a, np.uint8), np.full((4, 4), b, np.uint8)])

    replay.add_first(frames(0, 0))
    for t in range(1, 5):
        replay.add(np.int64(0), 0.0, frames(t - 1, t), t == 4, False, learner_terminal=(t == 2))
    b = replay.sample(256)
    newest = b.obs[:, 1, 0, 0]
    after_loss = b.obs[newest == 2]  # obs 2 is the observation right after the lost life
    assert len(after_loss) and (after_loss[:, 0] == 1).all()  # its stack still holds frame 1, as the env's does
    assert (b.discount[newest == 1] == 0).all() and (b.discount[newest == 2] > 0).all()


class _FakeLivesEnv:
    """An EnvRunner-like env: 6 steps, a life lost on step 3, rewards 5 (clipped to 1 for the learner)."""

    env_id = "fake/lives"

    def __init__(self):
        self.t = 0
        self.life_loss = False

    def reset(self, seed):
        self.t = 0
        return np.array([0.0], np.float32)

    def step_async(self, action):
        pass

    def step_wait(self):
        self.t += 1
        self.life_loss = self.t == 3
        return np.array([float(self.t)], np.float32), 5.0, self.t == 6, False, 4


def test_train_episode_stores_life_loss_terminals_and_clipped_rewards_for_the_learner_only():
    from pixelrl.train.episode import train_episode

    class Progress:
        def update(self, *a, **k):
            pass

    space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    agent = DQNAgent(space, TWO, _cfg(terminal_on_life_loss=True, reward_clip=1.0))
    replay = ReplayBuffer(space, TWO, 100, frame_stack=1, nstep=1, discount=0.9, seed=0)
    counters = {"agent_steps": 0, "frames": 0, "episodes": 0}
    ep = train_episode(_FakeLivesEnv(), agent, replay, lambda: None, counters=counters, reset_seed=0,
                       seed_steps=100, update_every=1, updates_per_step=1, warmup_rng=np.random.default_rng(0),
                       action_space=TWO, action_repeat=4, progress=Progress())
    assert ep.episode_return == 30.0 and ep.episode_length == 6  # the scored episode: raw rewards, to the end
    b = replay.sample(256)
    disc = {int(o): round(float(d), 4) for o, d in zip(b.obs[:, 0], b.discount[:, 0])}
    assert disc == {0: 0.9, 1: 0.9, 2: 0.0, 3: 0.9, 4: 0.9, 5: 0.0}
    assert set(b.reward[:, 0].tolist()) == {1.0}
    # without the agent asking for it, the same episode is stored as it happened
    plain = DQNAgent(space, TWO, _cfg())
    replay2 = ReplayBuffer(space, TWO, 100, frame_stack=1, nstep=1, discount=0.9, seed=0)
    train_episode(_FakeLivesEnv(), plain, replay2, lambda: None, counters=dict(counters, agent_steps=0),
                  reset_seed=0, seed_steps=100, update_every=1, updates_per_step=1,
                  warmup_rng=np.random.default_rng(0), action_space=TWO, action_repeat=4, progress=Progress())
    b2 = replay2.sample(256)
    assert {int(o): round(float(d), 4) for o, d in zip(b2.obs[:, 0], b2.discount[:, 0])}[2] == 0.9
    assert set(b2.reward[:, 0].tolist()) == {5.0}


# ---------------------------------------------------------------------------------------------------- epsilon
def test_epsilon_schedule_is_dopamines_linear_decay_after_warmup():
    eps = lambda s: linearly_decaying_epsilon(s, warmup=1600, decay=5000, final=0.01)  # noqa: E731
    assert eps(0) == 1.0 and eps(1600) == 1.0
    assert eps(1600 + 2500) == pytest.approx(0.01 + 0.99 * 0.5)
    assert eps(1600 + 5000) == pytest.approx(0.01) and eps(10**6) == pytest.approx(0.01)
    assert linearly_decaying_epsilon(5, warmup=10, decay=0, final=0.05) == 1.0
    assert linearly_decaying_epsilon(10, warmup=10, decay=0, final=0.05) == 0.05
    agent = DQNAgent(STATE, TWO, _cfg(num_seed_steps=1600, epsilon_decay_steps=5000))
    assert agent.epsilon(4100) == pytest.approx(0.505)


def test_act_is_greedy_or_random_at_the_configured_rates():
    torch.manual_seed(0)
    agent = DQNAgent(STATE, TWO, _cfg(epsilon_train=0.0, epsilon_eval=0.5, epsilon_decay_steps=0))
    agent.q_net = _Table([[0.0, 1.0]])
    obs = np.zeros(2, np.float32)
    assert {int(agent.act(obs, step=10, eval_mode=False)) for _ in range(50)} == {1}  # epsilon 0: greedy
    evals = [int(agent.act(obs, step=10, eval_mode=True)) for _ in range(2000)]
    assert np.mean(np.array(evals) == 0) == pytest.approx(0.25, abs=0.04)  # eps 0.5, half of those pick action 0
    # evaluation has its own generator: it does not shift the exploration stream
    a = DQNAgent(STATE, TWO, _cfg(epsilon_train=0.5, epsilon_decay_steps=0))
    b = DQNAgent(STATE, TWO, _cfg(epsilon_train=0.5, epsilon_decay_steps=0))
    b.load_state_dict(a.state_dict())
    for _ in range(20):
        b.act(obs, step=5, eval_mode=True)
    assert [int(a.act(obs, step=5, eval_mode=False)) for _ in range(30)] == \
           [int(b.act(obs, step=5, eval_mode=False)) for _ in range(30)]


# ---------------------------------------------------------------------------------------------------- augmentation
def _offset(aug: torch.Tensor, src: torch.Tensor, pad: int) -> tuple[int, int]:
    padded = torch.nn.functional.pad(src[None].float(), (pad,) * 4, mode="replicate")[0]
    h, w = src.shape[-2:]
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            if torch.equal(padded[:, dy:dy + h, dx:dx + w], aug):
                return dy, dx
    raise AssertionError("no crop of the padded image matches")


def test_drq_augmentation_shapes_ranges_offsets_and_determinism():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 4, 20, 20), dtype=torch.uint8, generator=g)
    crop = drq_augment(x, pad=4, intensity=0.0, generator=torch.Generator().manual_seed(1))
    assert crop.shape == x.shape and crop.dtype == torch.float32
    offsets = {_offset(crop[i], x[i], 4) for i in range(64)}
    assert all(0 <= dy <= 7 and 0 <= dx <= 7 for dy, dx in offsets)  # Dopamine: maxval 2 * pad is exclusive
    assert len({o[0] for o in offsets}) > 4  # offsets differ per image
    drq = drq_augment(x, pad=4, intensity=0.0, offsets="drq", generator=torch.Generator().manual_seed(1))
    assert 8 in {max(_offset(drq[i], x[i], 4)) for i in range(64)}  # DrQ's PyTorch range includes 2 * pad
    # intensity: one factor per image in [0.9, 1.1] (0.05 * clip(N(0, 1), -2, 2))
    full = drq_augment(x, pad=0, intensity=0.05, generator=torch.Generator().manual_seed(2))
    ratio = full / x.float().clamp(min=1)
    per_image = ratio.flatten(1)[:, 0]
    mask = x.flatten(1).float() > 0
    assert torch.allclose((ratio.flatten(1) * mask), per_image[:, None] * mask, atol=1e-5)
    assert per_image.min() >= 0.9 - 1e-6 and per_image.max() <= 1.1 + 1e-6 and per_image.std() > 0.01
    # determinism under a seed
    a = drq_augment(x, generator=torch.Generator().manual_seed(3))
    b = drq_augment(x, generator=torch.Generator().manual_seed(3))
    c = drq_augment(x, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(5)
    d = drq_augment(x)
    torch.manual_seed(5)
    assert torch.equal(d, drq_augment(x))  # without a generator: torch's global RNG (checkpointed by the trainer)


# ---------------------------------------------------------------------------------------------------- HL-Gauss
def test_hl_gauss_head_gives_per_action_histograms_with_cross_entropy_loss():
    torch.manual_seed(0)
    hl = HLGaussConfig(num_bins=21, v_min=-5.0, v_max=5.0)
    agent = DQNAgent(STATE, gym.spaces.Discrete(3), _cfg(critic="hl-gauss", hl_gauss=hl, dueling=True,
                                                         target_update_period=1, lr=3e-3))
    obs = torch.randn(6, 2)
    out = agent.q_net(obs)
    assert out.shape == (6, 3, 21)
    head = agent.value_head
    q = agent.q_values(out)
    assert q.shape == (6, 3)
    assert torch.allclose(q, (out.softmax(-1) * head.centres).sum(-1), atol=1e-6)
    # the loss is the cross-entropy of the chosen actions' logits to the HL-Gauss target
    action = torch.tensor([0, 1, 2, 0, 1, 2])
    target = torch.linspace(-4, 4, 6)[:, None]
    chosen = out[torch.arange(6), action]
    probs = hl_gauss_target(target[:, 0], head.edges, head.sigma)
    manual = -(probs * chosen.log_softmax(-1)).sum(-1).mean()
    assert agent._value_loss(chosen, target).item() == pytest.approx(manual.item(), rel=1e-5)
    # trained on the tiny MDP it converges like the scalar head
    s0, s1 = [1.0, 0.0], [0.0, 1.0]
    batch = Batch(obs=torch.tensor([s0, s0]), action=torch.tensor([0, 1]), reward=torch.tensor([[0.0], [1.0]]),
                  discount=torch.tensor([[0.9], [0.0]]), next_obs=torch.tensor([s0, s1]))
    agent2 = DQNAgent(STATE, TWO, _cfg(critic="hl-gauss", hl_gauss=hl, target_update_period=1, lr=3e-3,
                                       mlp_hidden=(32,)))
    for step in range(1500):
        agent2.update(batch, step=step)
    with torch.no_grad():
        q0 = agent2.q_values(agent2.q_net(torch.tensor([s0])))[0]
    assert q0.tolist() == pytest.approx([0.9, 1.0], abs=0.05)


def test_hl_gauss_without_a_range_is_one_clear_error():
    with pytest.raises(ConfigError, match="v_min"):
        DQNAgent(STATE, TWO, _cfg(critic="hl-gauss"))


# ---------------------------------------------------------------------------------------------------- config, checkpoints
def test_bad_config_and_spaces_are_one_clear_error():
    for kw, word in [(dict(loss="l1"), "loss"), (dict(epsilon_train=2.0), "epsilon_train"),
                     (dict(target_tau=-1.0), "target_tau"), (dict(nstep=0), "nstep"), (dict(padding="x"), "padding")]:
        with pytest.raises(ConfigError, match=word):
            DQNConfig(**kw)
    with pytest.raises(ConfigError, match="Discrete"):
        DQNAgent(STATE, gym.spaces.Box(-1, 1, (2,), np.float32), _cfg())
    with pytest.raises(ConfigError, match="augment"):
        DQNAgent(STATE, TWO, _cfg(augment=True))


def test_presets_dqn_and_drq_eps():
    assert agent_preset("dqn", "ale/Pong") == {}
    p = agent_preset("drq-eps", "ale/Pong")
    assert p["nstep"] == 10 and p["num_seed_steps"] == 1600 and p["target_update_period"] == 1
    assert p["double_q"] and p["dueling"] and p["augment"] and p["terminal_on_life_loss"]
    assert (p["epsilon_train"], p["epsilon_eval"], p["epsilon_decay_steps"]) == (0.01, 0.001, 5000)
    assert (p["lr"], p["adam_eps"]) == (1e-4, 1.5e-4)
    t = agent_train_preset("drq-eps", "ale/Pong")
    assert t["frames"] == 400_000 and t["eval_episodes"] == 100
    assert t["env_options"] == {"repeat_action_probability": 0.0, "max_num_frames_per_episode": 108_000,
                                "noop_max": 30}
    assert "env_options" not in agent_train_preset("drq-eps", "gym/CartPole-v1")


def test_state_dict_round_trip_continues_exactly(tmp_path):
    space = gym.spaces.Box(0, 255, (4, 36, 36), np.uint8)
    acts = gym.spaces.Discrete(4)
    cfg = DQNConfig(num_seed_steps=0, augment=True, double_q=True, dueling=True, target_update_period=3,
                    epsilon_train=0.3, epsilon_decay_steps=0, hidden_dim=32, padding="same")
    g = torch.Generator().manual_seed(0)
    batches = [Batch(obs=torch.randint(0, 256, (8, 4, 36, 36), dtype=torch.uint8, generator=g),
                     action=torch.randint(0, 4, (8,), generator=g), reward=torch.randn(8, 1, generator=g),
                     discount=torch.full((8, 1), 0.9), next_obs=torch.randint(0, 256, (8, 4, 36, 36),
                                                                               dtype=torch.uint8, generator=g))
               for _ in range(6)]
    obs = np.asarray(batches[0].obs[0])
    torch.manual_seed(1)
    a = DQNAgent(space, acts, cfg)
    for i in range(3):
        a.update(batches[i], step=i)
        a.act(obs, step=i, eval_mode=False)
    save_checkpoint(tmp_path, "c", {"agent": a.state_dict()})
    rng = torch.get_rng_state()
    torch.manual_seed(99)
    b = DQNAgent(space, acts, cfg)
    b.load_state_dict(load_checkpoint(tmp_path / "c")["agent"])
    runs = []
    for agent in (a, b):
        torch.set_rng_state(rng)  # the trainer restores torch's RNG (augmentation) from the checkpoint
        out = []
        for i in range(3, 6):
            out.append(agent.update(batches[i], step=i)["loss"])
            out.append(int(agent.act(obs, step=i, eval_mode=False)))
        runs.append((out, [p.detach().clone() for p in agent.q_net.parameters()],
                     [p.detach().clone() for p in agent.target_net.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(x, y) for x, y in zip(runs[0][1] + runs[0][2], runs[1][1] + runs[1][2]))


def test_make_agent_and_aux_loss_hook():
    agent = make_agent("drq-eps", gym.spaces.Box(0, 255, (4, 44, 44), np.uint8), gym.spaces.Discrete(3),
                       {"hidden_dim": 16, "num_seed_steps": 0})
    assert isinstance(agent, DQNAgent) and agent.target_net is None and agent.cfg.augment
    extra = nn.Linear(agent.q_net.repr_dim, 1)
    seen = {}

    def aux(inp):
        seen["feat"] = inp.feat.shape
        return extra(inp.feat).pow(2).mean(), {"probe": inp.feat.mean()}

    agent.add_aux_loss(aux, module=extra, name="probe")
    calls = []
    agent.update_hooks.append(lambda ag, step: calls.append(step) or {"hooked": 1.0})
    g = torch.Generator().manual_seed(0)
    batch = Batch(obs=torch.randint(0, 256, (4, 4, 44, 44), dtype=torch.uint8, generator=g),
                  action=torch.tensor([0, 1, 2, 0]), reward=torch.zeros(4, 1), discount=torch.full((4, 1), 0.9),
                  next_obs=torch.randint(0, 256, (4, 4, 44, 44), dtype=torch.uint8, generator=g))
    w0 = extra.weight.clone()
    m = agent.update(batch, step=7)
    assert seen["feat"] == (4, 16) and calls == [7] and m["hooked"] == 1.0
    assert {"probe_loss", "probe_probe", "td_loss", "loss"} <= set(m)
    assert not torch.equal(w0, extra.weight)  # the module joined the optimizer
    assert "probe" in agent.state_dict()["aux"]
    fresh = make_agent("drq-eps", gym.spaces.Box(0, 255, (4, 44, 44), np.uint8), gym.spaces.Discrete(3),
                       {"hidden_dim": 16})
    fresh.add_aux_loss(aux, module=nn.Linear(16, 1), name="probe")
    fresh.load_state_dict(agent.state_dict())
    assert torch.equal(fresh.aux_losses[0].module.weight, extra.weight)


# ---------------------------------------------------------------------------------------------------- end to end
def _trainer_cfg(tmp_path, env, name, frames, agent, **kw):
    from pixelrl.train.setup import build_config

    base = dict(frames=frames, run_dir=str(tmp_path / name), video=False, tensorboard=False, progress=False,
                async_env=False, threads=1, seed=1)
    base.update(kw)
    return build_config(env=env, agent_name=agent.pop("_name", "dqn"), preset="none", device="cpu",
                        agent=agent, **base)


def test_cartpole_learns_quickly(tmp_path):
    """Double + dueling DQN with a 3-step return on CartPole states: measured (seeds 1/2/3, 10k frames, one core):
    final eval 316 / 337 / 204 against a random policy's 15 / 23 / 26, in 15-23 s."""
    from pixelrl.train.loop import Trainer

    agent = dict(num_seed_steps=500, update_every_steps=1, target_update_period=200, epsilon_decay_steps=2000,
                 lr=1e-3, nstep=3, mlp_hidden=(64, 64), double_q=True, dueling=True, reward_clip=0.0)
    cfg = _trainer_cfg(tmp_path, "gym/CartPole-v1", "cp", 10_000, agent, obs="state", eval_every_frames=5000,
                       eval_episodes=5)
    summary = Trainer(cfg).run()
    assert summary["final_eval_return"] >= 120, summary
    assert summary["final_eval_return"] >= 4 * summary["random_return"], summary


def _rows(run, kind):
    from pixelrl.train.logger import TIMING_COLUMNS, read_rows

    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS and k != "wall_s"} for r in read_rows(run, kind)]


def test_pong_pixels_through_the_trainer_and_an_exact_resume(tmp_path):
    pytest.importorskip("ale_py")
    from pixelrl.train.loop import Trainer

    agent = dict(_name="drq-eps", num_seed_steps=120, hidden_dim=32, epsilon_decay_steps=50)
    kw = dict(eval_every_frames=400, eval_episodes=1, eval_random=False,
              env_options={"repeat_action_probability": 0.0, "max_num_frames_per_episode": 400, "noop_max": 30})
    full = _trainer_cfg(tmp_path, "ale/Pong", "full", 800, dict(agent), **kw)
    assert full.agent.nstep == 10 and full.agent.augment and full.frames == 800
    s = Trainer(full).run()
    assert s["frames"] >= 800
    train_rows = _rows(full.run_dir, "train")
    assert train_rows and all(math.isfinite(r["td_loss"]) for r in train_rows if "td_loss" in r)
    assert any("td_loss" in r for r in train_rows)
    part = _trainer_cfg(tmp_path, "ale/Pong", "part", 400, dict(agent), **kw)
    Trainer(part).run()
    resumed = dataclasses.replace(part, frames=800)
    Trainer(resumed, resume=True).run()
    assert _rows(part.run_dir, "train") == train_rows
    assert _rows(part.run_dir, "eval") == _rows(full.run_dir, "eval")


def test_breakout_life_losses_become_learner_terminals_in_the_replay(tmp_path):
    pytest.importorskip("ale_py")
    from pixelrl.train.loop import Trainer

    agent = dict(_name="drq-eps", num_seed_steps=10_000, hidden_dim=16)
    cfg = _trainer_cfg(tmp_path, "ale/Breakout", "bo", 1000, agent, eval_every_frames=10_000, eval_episodes=1,
                       eval_random=False, env_options={"repeat_action_probability": 0.0, "noop_max": 30,
                                                       "max_num_frames_per_episode": 2000})
    t = Trainer(cfg)
    t.run()
    s = t.replay._state
    hi = s["hi"]
    term = s["terminated"][:hi]
    first = s["first"][:hi]
    mid_episode = [g for g in range(hi - 1) if term[g] and not first[g + 1]]
    assert mid_episode, "random Breakout play should lose a life within 250 agent steps"
    # the replay saved with the run keeps them
    replay = ReplayBuffer(t.obs_space, t.action_space, cfg.agent.replay_capacity, frame_stack=4, nstep=10,
                          discount=0.99)
    replay.load(tmp_path / "bo" / "replay")
    assert np.array_equal(replay._state["terminated"][:hi], term)


# ---------------------------------------------------------------------------------------------------- benchmark maths
def _bench():
    return load_script("benchmarks/atari100k.py")


def test_atari100k_tables_iqm_and_stratified_bootstrap():
    scipy_stats = pytest.importorskip("scipy.stats")
    b = _bench()
    assert len(b.GAMES) == 26 and set(b.GAMES) == set(b.HUMAN) == set(b.RANDOM) == set(b.DRQ_EPS)
    published = np.array([b.hns(g, b.DRQ_EPS[g]) for g in b.GAMES])
    assert published.mean() == pytest.approx(0.465, abs=5e-4)  # DrQ(eps)'s published mean HNS
    assert np.median(published) == pytest.approx(0.313, abs=1e-3)  # and median (tables: 0.313)
    x = np.random.default_rng(0).normal(size=(5, 26))
    assert b.iqm(x) == pytest.approx(scipy_stats.trim_mean(x, 0.25, axis=None))
    lo, hi = b.stratified_bootstrap_ci(x, reps=300)
    assert lo < b.iqm(x) < hi
    # resampling is within each game: runs that agree within every game leave no uncertainty
    same = np.tile(np.arange(26.0), (4, 1))
    assert b.stratified_bootstrap_ci(same, reps=50) == pytest.approx((b.iqm(same), b.iqm(same)))
    agg = b.aggregate([{"game": "Pong", "hns": 0.1}, {"game": "Pong", "hns": 0.3}, {"game": "Breakout", "hns": 0.5},
                       {"game": "Breakout", "hns": 0.7}], ["Pong", "Breakout"], reps=100)
    assert agg["runs_per_game"] == 2 and agg["mean_hns"] == pytest.approx(0.4) and len(agg["iqm_hns_ci95"]) == 2


def test_atari100k_runs_checkpoint_midway_and_resume(tmp_path):
    """A run of the benchmark writes checkpoints every --checkpoint-every frames (its own evaluations run only at
    the start and the end), and a run folder with a checkpoint is resumed instead of started again."""
    import argparse
    import shlex

    b = _bench()
    args = argparse.Namespace(out_dir=str(tmp_path), frames=None, agent="drq-eps", device="cpu", train_eval_episodes=1,
                              threads=1, agent_flags="", checkpoint_every=50_000, eval_episodes=100)
    first = shlex.split(b.command(args, "Pong", 1).split(" && ")[0])
    assert first[first.index("--checkpoint-every-frames") + 1] == "50000"
    assert first[first.index("--eval-every-frames") + 1] == "400000"
    ckpt = b.run_dir(tmp_path, "Pong", 1) / "checkpoints"
    ckpt.mkdir(parents=True)
    (ckpt / "latest.json").write_text("{}")
    again = shlex.split(b.command(args, "Pong", 1).split(" && ")[0])
    assert again[1:] == ["-m", "pixelrl.cli.main", "resume", str(b.run_dir(tmp_path, "Pong", 1))]
