"""SQIRL's learner: regression targets and loss by hand, heads fitted to the exact Q^1 / Q^2 of a tabular MDP, the
time-indexed policy, the authors' k-QVI-solvability, checkpoints and config errors."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from pixelrl.agents.sqirl import (SQIRLAgent, SQIRLConfig, horizon_estimate, qvi_min_k, qvi_q_functions,
                                  scaled_head_loss, sqirl_targets)
from pixelrl.data.batch import Batch
from pixelrl.errors import ConfigError

# The two-step MDP of the tests: s0 --a0--> A --a0: r=1 / a1: r=0;  s0 --a1--> B --any: r=0.6. Episode: 2 steps.
# Q^1 (random policy) at s0: (0.5, 0.6) -> greedy on Q^1 takes B (0.6); Q^2 at s0: (1.0, 0.6) -> optimal (1.0).
S0, A_, B_, END = 0, 1, 2, 3
P = np.zeros((4, 2, 4))
P[S0, 0, A_] = P[S0, 1, B_] = 1
P[A_, :, END] = P[B_, :, END] = P[END, :, END] = 1
R = np.zeros((4, 2))
R[A_, 0] = 1.0
R[B_, :] = 0.6


def onehot(s):
    x = np.zeros(4, np.float32)
    x[s] = 1
    return x


def test_targets_by_hand():
    mc = torch.tensor([3.0, 2.0])
    r = torch.tensor([1.0, 0.5])
    disc = torch.tensor([0.9, 0.0])  # the second transition ends its episode
    next_q = torch.tensor([[[1.0, 4.0], [10.0, 20.0], [0.0, 0.0]],
                           [[7.0, 8.0], [9.0, 9.0], [0.0, 0.0]]])  # [B=2, k=3, A=2]
    y = sqirl_targets(mc, r, disc, next_q)
    # head 1: MC return; head 2: r + disc * max_a Q^1(s', a); head 3: r + disc * max_a Q^2(s', a)
    assert torch.allclose(y, torch.tensor([[3.0, 1.0 + 0.9 * 4.0, 1.0 + 0.9 * 20.0],
                                           [2.0, 0.5, 0.5]]))
    assert torch.equal(sqirl_targets(mc, r, disc, None), mc[:, None])


def test_scaled_loss_running_mean_by_hand():
    pred = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
    target = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    running = [None, None]
    loss, head = scaled_head_loss(pred, target, running, huber=False, scale=True, smoothing=0.99)
    # per-head means: head 1 (1 + 4) / 2 = 2.5, head 2 (0 + 4) / 2 = 2; first batch sets the running means
    assert running == [2.5, 2.0] and torch.allclose(head, torch.tensor([2.5, 2.0]))
    assert math.isclose(loss.item(), (1 / 2.5 + 0 + 4 / 2.5 + 4 / 2.0) / 4, rel_tol=1e-6)
    loss2, _ = scaled_head_loss(pred, target, running, huber=False, scale=True, smoothing=0.99)
    assert running == [2.5, 2.0] and math.isclose(loss2.item(), loss.item(), rel_tol=1e-6)
    running = [5.0, 1.0]
    scaled_head_loss(pred, target, running, huber=False, scale=True, smoothing=0.9)
    assert running == pytest.approx([0.9 * 5 + 0.1 * 2.5, 0.9 * 1 + 0.1 * 2.0])
    unscaled, _ = scaled_head_loss(pred, target, [None, None], huber=False, scale=False, smoothing=0.99)
    assert math.isclose(unscaled.item(), (1 + 0 + 4 + 4) / 4)


def test_tabular_q_iteration_and_min_k_match_the_hand_computation():
    qs, q_star = qvi_q_functions(P, R, horizon=2, max_k=2)
    assert np.allclose(qs[0][0, S0], [0.5, 0.6]) and np.allclose(qs[1][0, S0], [1.0, 0.6])
    assert np.allclose(q_star[0, S0], [1.0, 0.6])
    assert qvi_min_k(P, R, horizon=2) == 2
    R1 = R.copy()
    R1[B_, :] = 0.4  # now the random policy's Q already prefers A: greedy on Q^1 is optimal
    assert qvi_min_k(P, R1, horizon=2) == 1
    assert qvi_min_k(P, R, horizon=2, max_k=1) is None


def _random_policy_batch():
    """All four trajectories of the uniform random policy, each once (equal weight): transitions with MC returns."""
    obs, act, rew, nxt, disc, mc = [], [], [], [], [], []
    for a0 in (0, 1):
        s1 = A_ if a0 == 0 else B_
        for a1 in (0, 1):
            r1 = R[s1, a1]
            obs += [onehot(S0), onehot(s1)]
            act += [a0, a1]
            rew += [0.0, r1]
            nxt += [onehot(s1), onehot(END)]
            disc += [1.0, 0.0]
            mc += [r1, r1]
    t = torch.tensor
    return Batch(obs=t(np.stack(obs)), action=t(act), reward=t(rew)[:, None], discount=t(disc)[:, None],
                 next_obs=t(np.stack(nxt)), extras={"mc_return": t(mc)[:, None]})


def _agent(**kw):
    torch.manual_seed(0)
    obs_space = gym.spaces.Box(0, 1, (4,), np.float32)
    return SQIRLAgent(obs_space, gym.spaces.Discrete(2), SQIRLConfig(**kw))


def test_heads_regress_the_exact_q1_and_q2_of_a_tabular_mdp():
    agent = _agent(planning_depth=2, discount=1.0, lr=3e-3)
    batch = _random_policy_batch()
    for _ in range(3000):
        agent.update(batch)
    with torch.no_grad():
        q = agent.q(torch.tensor(np.stack([onehot(S0), onehot(A_), onehot(B_)])))
    qs, _ = qvi_q_functions(P, R, horizon=2, max_k=2)
    assert np.allclose(q[0, 0].numpy(), qs[0][0, S0], atol=0.03)  # head 1 = Q^1 (MC returns): (0.5, 0.6)
    assert np.allclose(q[0, 1].numpy(), qs[1][0, S0], atol=0.03)  # head 2 = Q^2: (1.0, 0.6)
    assert np.allclose(q[1, 0].numpy(), [1.0, 0.0], atol=0.03) and np.allclose(q[2, 1].numpy(), [0.6, 0.6],
                                                                               atol=0.03)
    # greedy on the last head: k=2 takes the optimal branch A at s0
    assert agent.greedy(onehot(S0)[None], 0)[0] == 0
    k1 = _agent(planning_depth=1, discount=1.0, lr=3e-3)
    for _ in range(3000):
        k1.update(batch)
    assert k1.greedy(onehot(S0)[None], 0)[0] == 1  # k=1 takes B (0.6 > 0.5): the MDP is not 1-QVI-solvable


def test_time_indexed_policy():
    agent = _agent()
    x = onehot(S0)
    with torch.no_grad():
        for p in agent.q.parameters():
            p.zero_()
        agent.q.head[-1].bias.copy_(torch.tensor([1.0, 0.0]))
        agent.freeze()  # timestep 0: action 0
        agent.q.head[-1].bias.copy_(torch.tensor([0.0, 1.0]))
        agent.freeze()  # timestep 1: action 1
        agent.q.head[-1].bias.copy_(torch.tensor([2.0, 0.0]))  # current network (not frozen): action 0
    assert agent.horizon == 2
    agent.begin_episode()
    assert [agent.act(x, step=99, eval_mode=True) for _ in range(4)] == [0, 1, 0, 0]
    agent.begin_episode()
    assert [agent.act(x, eval_mode=True) for _ in range(2)] == [0, 1]  # begin_episode restarts at timestep 0
    # training mode: frozen timesteps act greedily, beyond them uniformly at random (both actions appear)
    seen = set()
    for _ in range(20):
        agent.begin_episode()
        acts = [agent.act(x, eval_mode=False) for _ in range(6)]
        assert acts[:2] == [0, 1]
        seen.update(acts[2:])
    assert seen == {0, 1}
    assert list(agent.greedy(np.stack([x, x]), 1)) == [1, 1]


def test_state_dict_round_trip_restores_every_frozen_policy():
    agent = _agent(planning_depth=2)
    batch = _random_policy_batch()
    for _ in range(3):
        agent.update(batch)
        agent.freeze()
    state = agent.state_dict()
    other = _agent(planning_depth=2)
    torch.manual_seed(5)
    other.load_state_dict(state)
    assert other.horizon == 3 and other.loss_running == agent.loss_running and other.updates == 3
    obs = batch.obs
    for t in range(4):
        assert torch.equal(other.q_values(obs, t), agent.q_values(obs, t))
    a, b = agent.update(batch), other.update(batch)  # optimizer state restored: the next update is the same
    assert a == b
    with pytest.raises(ValueError, match="Q heads"):
        _agent(planning_depth=3).load_state_dict(state)


def test_config_and_space_errors():
    with pytest.raises(ConfigError, match="planning-depth"):
        SQIRLConfig(planning_depth=0)
    with pytest.raises(ConfigError, match="discount"):
        SQIRLConfig(discount=1.5)
    with pytest.raises(ConfigError, match="discrete action space"):
        SQIRLAgent(gym.spaces.Box(0, 1, (4,), np.float32), gym.spaces.Box(-1, 1, (2,), np.float32))
    with pytest.raises(ConfigError, match="pixel"):
        SQIRLAgent(gym.spaces.Dict({"x": gym.spaces.Box(0, 1, (4,))}), gym.spaces.Discrete(2))


def test_pixel_network_is_the_nature_cnn_with_k_heads():
    agent = SQIRLAgent(gym.spaces.Box(0, 255, (4, 84, 84), np.uint8), gym.spaces.Discrete(6),
                       SQIRLConfig(planning_depth=3))
    q = agent.q(torch.zeros(2, 4, 84, 84, dtype=torch.uint8))
    assert q.shape == (2, 3, 6)
    assert isinstance(agent.q.head[0], torch.nn.Linear) and agent.q.head[0].in_features == 512  # net_arch () on pixels


def test_horizon_estimate():
    assert horizon_estimate(1, 1, 2) == 1.0
    assert horizon_estimate(2, 64, 2) == pytest.approx(6.0)
    assert horizon_estimate(3, 4, 2) == 3.0  # m < A^k: each action sequence is seen < once; H_k >= k
