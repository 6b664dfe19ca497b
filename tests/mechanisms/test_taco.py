"""Tests of pixelrl.mechanisms.taco: InfoNCE, action encoders, the TACO loss, and TACO installed in a DrQ-v2 agent."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch

from pixelrl.agents.drqv2 import DrQv2Agent, DrQv2Config
from pixelrl.data.replay import ReplayBuffer, sample_kwargs
from pixelrl.errors import ConfigError
from pixelrl.mechanisms import taco
from pixelrl.mechanisms.taco import (
    ActionEncoder,
    TACOConfig,
    TACOModule,
    bilinear_logits,
    info_nce,
    latent_action_dim,
    make_action_encoder,
    taco_loss,
)

A = 2  # action dim


# ---------------------------------------------------------------------------- InfoNCE
def test_info_nce_identical_pairs_below_shuffled_pairs():
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    eye = torch.eye(8)
    perm = torch.roll(torch.arange(64), 1)  # every row gets another row's positive
    matched, shuffled = info_nce(x, x, eye), info_nce(x, x[perm], eye)
    assert matched < np.log(64) < shuffled  # log B: the loss of a uniform guess


def test_bilinear_logits_orientation_and_row_max():
    torch.manual_seed(1)
    a, p, W = torch.randn(5, 3), torch.randn(5, 3), torch.randn(3, 3)  # W not symmetric: orientation matters
    logits = bilinear_logits(a, p, W)
    want = torch.tensor([[float(a[i] @ W @ p[j]) for j in range(5)] for i in range(5)])
    want = want - want.max(dim=1, keepdim=True).values
    torch.testing.assert_close(logits, want, rtol=1e-5, atol=1e-5)
    assert torch.all(logits.max(dim=1).values == 0)


def test_info_nce_is_finite_for_huge_logits():
    torch.manual_seed(2)
    x = torch.randn(16, 4) * 1e3
    loss = info_nce(x, x, torch.eye(4))
    assert torch.isfinite(loss)


def test_info_nce_weights_drop_rows():
    torch.manual_seed(3)
    a, p, W = torch.randn(6, 4), torch.randn(6, 4), torch.rand(4, 4)
    w = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    a2 = a.clone()
    a2[5] = torch.randn(4) * 10  # the anchor of a zero-weight row
    torch.testing.assert_close(info_nce(a, p, W, w), info_nce(a2, p, W, w))
    assert not torch.allclose(info_nce(a, p, W), info_nce(a2, p, W))


# ---------------------------------------------------------------------------- config and action encoder
@pytest.mark.parametrize("action_dim, latent", [(1, 2), (2, 3), (4, 6), (6, 8), (12, 16), (38, 48)])
def test_latent_action_dim_rule(action_dim, latent):
    assert latent_action_dim(action_dim, TACOConfig()) == latent
    enc = make_action_encoder(action_dim, TACOConfig())
    assert enc.out_dim == latent
    assert enc(torch.zeros(5, 3, action_dim)).shape == (5, 3, latent)  # works per step of a sequence
    assert latent_action_dim(action_dim, TACOConfig(latent_action_dim=7)) == 7


def test_action_encoder_architecture():
    enc = make_action_encoder(6, TACOConfig())
    linears = [m for m in enc.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(6, 64), (64, 8)]
    assert any(isinstance(m, torch.nn.Tanh) for m in enc.modules())


@pytest.mark.parametrize("kw", [dict(multistep=0), dict(latent_action_dim=-1), dict(taco_weight=-1.0),
                                dict(curl_weight=float("nan")), dict(action_hidden_dim=0), dict(z_dim=-2)])
def test_bad_config_raises(kw):
    with pytest.raises(ConfigError):
        TACOConfig(**kw)


# ---------------------------------------------------------------------------- the loss alone
def _loss_setup(seed=0, **cfg_kw):
    torch.manual_seed(seed)
    cfg = TACOConfig(**cfg_kw)
    B, K, repr_dim = 12, cfg.multistep, 10
    encoder = torch.nn.Linear(6, repr_dim)  # stands in for the conv encoder
    act_enc = make_action_encoder(A, cfg)
    module = TACOModule(repr_dim, act_enc.out_dim, K, z_dim=5, hidden_dim=16,
                        reward_prediction=cfg.reward_prediction)
    obs = torch.randn(B, 6)
    next_feat = torch.randn(B, repr_dim, requires_grad=True)  # a leaf: any gradient to it would show up
    pos_feat = torch.randn(B, repr_dim, requires_grad=True)
    inputs = dict(action_seq=torch.rand(B, K, A) * 2 - 1, seq_mask=torch.ones(B, K), reward=torch.randn(B, 1),
                  next_feat=next_feat, pos_feat=pos_feat)
    return cfg, encoder, act_enc, module, obs, inputs


def test_loss_finite_and_gradient_reaches_encoder_and_action_encoder_not_target():
    cfg, encoder, act_enc, module, obs, inputs = _loss_setup()
    loss, metrics = taco_loss(module, act_enc, cfg, feat=encoder(obs), **inputs)
    assert torch.isfinite(loss) and set(metrics) == {"contrastive", "accuracy", "curl", "reward"}
    torch.testing.assert_close(loss, metrics["contrastive"] + metrics["curl"] + metrics["reward"])
    loss.backward()
    for name, p in [("encoder", encoder.weight), ("action encoder", act_enc.net[0].weight), ("W", module.W),
                    ("proj_s", module.proj_s[0].weight), ("seq encoder", module.seq_encoder[0].weight),
                    ("proj_sa", module.proj_sa[0].weight), ("reward head", module.reward_head[0].weight)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert inputs["next_feat"].grad is None  # stop-gradient on the target side
    assert inputs["pos_feat"].grad is None  # and on CURL's positive


def test_terms_switch_off_and_weights_scale():
    cfg, encoder, act_enc, module, obs, inputs = _loss_setup(curl=False, reward_prediction=False)
    assert module.reward_head is None
    loss, metrics = taco_loss(module, act_enc, cfg, feat=encoder(obs), **inputs)
    assert set(metrics) == {"contrastive", "accuracy"}
    torch.testing.assert_close(loss, metrics["contrastive"])
    cfg2 = dataclasses.replace(cfg, taco_weight=2.5)
    loss2, _ = taco_loss(module, act_enc, cfg2, feat=encoder(obs), **inputs)
    torch.testing.assert_close(loss2, 2.5 * loss)


def test_cut_windows_do_not_count_in_temporal_and_reward_terms():
    cfg, encoder, act_enc, module, obs, inputs = _loss_setup(curl=False)
    inputs["seq_mask"][3, 2:] = 0  # row 3's window was cut by the episode end
    feat = encoder(obs).detach()
    _, m1 = taco_loss(module, act_enc, cfg, feat=feat, **inputs)
    inputs["action_seq"][3] = torch.rand(cfg.multistep, A)
    inputs["reward"][3] = 100.0
    _, m2 = taco_loss(module, act_enc, cfg, feat=feat, **inputs)
    torch.testing.assert_close(m1["contrastive"], m2["contrastive"])
    torch.testing.assert_close(m1["reward"], m2["reward"])
    inputs["action_seq"][4] = torch.rand(cfg.multistep, A)  # a complete row does count
    _, m3 = taco_loss(module, act_enc, cfg, feat=feat, **inputs)
    assert not torch.allclose(m1["contrastive"], m3["contrastive"])


def test_loss_decreases_when_trained():
    """A few Adam steps on a fixed batch lower the temporal InfoNCE (the parts are wired so they can learn)."""
    cfg, encoder, act_enc, module, obs, inputs = _loss_setup(curl=False, reward_prediction=False)
    opt = torch.optim.Adam([*encoder.parameters(), *act_enc.parameters(), *module.parameters()], lr=1e-2)
    first = None
    for _ in range(30):
        loss, _ = taco_loss(module, act_enc, cfg, feat=encoder(obs), **inputs)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


# ---------------------------------------------------------------------------- installed in a DrQ-v2 agent
def _cfg(**kw) -> DrQv2Config:
    base = dict(aux=("taco",), batch_size=16, feature_dim=8, hidden_dim=16, nstep=3, num_seed_steps=0,
                stddev_schedule="0.2", lr=1e-3, encoder_channels=(4, 4), encoder_strides=(2, 1))
    base.update(kw)
    return DrQv2Config(**base)


def _agent(obs_space, **kw) -> DrQv2Agent:
    torch.manual_seed(0)
    return DrQv2Agent(obs_space, gym.spaces.Box(-1, 1, (A,), np.float32), _cfg(**kw))


def _replay(obs_space, nstep=3, seed=0) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    buf = ReplayBuffer(obs_space, gym.spaces.Box(-1, 1, (A,), np.float32), 200, frame_stack=1, nstep=nstep,
                       seed=seed)

    def obs():
        if len(obs_space.shape) == 3:
            return rng.integers(0, 256, obs_space.shape, dtype=np.uint8)
        return rng.standard_normal(obs_space.shape).astype(np.float32)

    for length in (10, 7):
        buf.add_first(obs())
        for t in range(length):
            buf.add(rng.uniform(-1, 1, A).astype(np.float32), float(rng.standard_normal()), obs(), False,
                    t == length - 1)
    return buf


def _extras(agent) -> dict:
    """What the trainer passes to ReplayBuffer.sample for the agent's batch_extras."""
    return sample_kwargs(agent.batch_extras)


STATE = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
PIXELS = gym.spaces.Box(0, 255, (3, 12, 12), np.uint8)


@pytest.mark.parametrize("obs_space", [STATE, PIXELS], ids=["state", "pixels"])
def test_install_update_reports_taco_terms_and_steps_every_part_once(obs_space):
    agent = _agent(obs_space)
    assert agent.batch_extras == {"action_seq"}
    assert isinstance(agent.action_encoder, ActionEncoder) and agent.action_encoder.out_dim == 3
    module = next(e.module for e in agent.aux_losses if e.name == "taco")
    assert isinstance(module, TACOModule) and module.W.shape == (8, 8)  # z_dim follows feature_dim
    in_opt = {id(p) for g in agent.critic_opt.param_groups for p in g["params"]}
    assert all(id(p) in in_opt for p in [*module.parameters(), *agent.action_encoder.parameters()])
    assert not any(id(p) in in_opt for p in agent.actor.parameters())

    batch = _replay(obs_space).sample(16, **_extras(agent))
    before = {k: v.clone() for k, v in [("W", module.W), ("phi", agent.action_encoder.net[0].weight),
                                         ("proj_s", module.proj_s[0].weight)]}
    metrics = agent.update(batch, step=0)
    for key in ("taco_loss", "taco_contrastive", "taco_curl", "taco_reward", "taco_accuracy"):
        assert key in metrics and np.isfinite(metrics[key]), key
    assert metrics["taco_loss"] == pytest.approx(
        metrics["taco_contrastive"] + metrics["taco_curl"] + metrics["taco_reward"], rel=1e-5)
    for name, old in before.items():
        now = {"W": module.W, "phi": agent.action_encoder.net[0].weight, "proj_s": module.proj_s[0].weight}[name]
        assert not torch.equal(old, now), f"{name} was not trained"
    # exactly one optimizer step on every parameter of the encoder / action encoder / TACO module per update
    for p in [*agent.encoder.parameters(), *agent.action_encoder.parameters(), *module.parameters()]:
        assert int(agent.critic_opt.state[p]["step"]) == 1


def test_update_without_action_seq_raises_clear_error():
    agent = _agent(STATE)
    batch = _replay(STATE).sample(16)  # extras not requested
    with pytest.raises(ConfigError, match="action_seq"):
        agent.update(batch, step=0)


def test_multistep_is_independent_of_nstep():
    """TACO's walker task files: nstep 1 (the TD target) with multistep 3 (the contrastive horizon). Today's code
    refused K != n; the replay now gives the K-step window and o_(t+K) besides the 1-step transition."""
    agent = _agent(STATE, nstep=1)
    assert agent.cfg.taco.multistep == 3 and agent.batch_extras == {"action_seq": 3}
    batch = _replay(STATE, nstep=1).sample(16, **_extras(agent))
    assert batch.extras["action_seq"].shape == (16, 3, A) and batch.extras["seq_next_obs"].shape == (16, 5)
    metrics = agent.update(batch, step=0)
    assert np.isfinite(metrics["taco_loss"]) and np.isfinite(metrics["taco_contrastive"])
    # K = n: the n-step window, nothing extra
    same = _agent(STATE, nstep=1, taco=TACOConfig(multistep=1))
    assert same.batch_extras == {"action_seq"}
    assert np.isfinite(same.update(_replay(STATE, nstep=1).sample(16, **_extras(same)), step=0)["taco_loss"])
    with pytest.raises(ConfigError, match="action_seq=3"):
        agent.update(_replay(STATE, nstep=1).sample(16, action_seq=True), step=1)  # a 1-step window


def test_replay_window_longer_than_nstep_reads_o_t_plus_k():
    """sample(action_seq=K) with nstep 1: actions a_t..a_(t+K-1), o_(t+K) (or the last observation inside the
    episode, masked), while reward / next_obs stay 1-step."""
    space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    buf = ReplayBuffer(space, gym.spaces.Box(-1, 1, (A,), np.float32), 100, frame_stack=1, nstep=1, seed=0)
    t_abs = 0
    for length in (9, 5):
        buf.add_first(np.array([t_abs], np.float32))
        for t in range(length):
            t_abs += 1
            buf.add(np.full(A, t_abs / 100, np.float32), 1.0, np.array([t_abs], np.float32), False, t == length - 1)
        t_abs += 1000
    b = buf.sample(256, action_seq=3)
    t0 = b.obs[:, 0]
    torch.testing.assert_close(b.next_obs[:, 0], t0 + 1)  # 1-step transition
    assert torch.all(b.reward == 1.0)
    mask = b.extras["seq_mask"]
    steps = mask.sum(dim=1)
    torch.testing.assert_close(b.extras["seq_next_obs"][:, 0], t0 + steps)
    for k in range(3):
        expect = torch.where(mask[:, k] > 0, (t0 + k + 1) / 100, torch.zeros_like(t0))
        torch.testing.assert_close(b.extras["action_seq"][:, k, 0], expect)
    assert (steps == 3).any() and (steps < 3).any()


def test_taco_walker_preset_keeps_nstep_1_with_k_3():
    from pixelrl.train.setup import build_config

    cfg = build_config("dmc/walker-walk", "taco", preset="paper", fill_run_dir=False)
    assert (cfg.agent.nstep, cfg.agent.taco.multistep, cfg.agent.batch_size) == (1, 3, 1024)
    cheetah = build_config("dmc/cheetah-run", "taco", preset="paper", fill_run_dir=False)
    assert (cheetah.agent.nstep, cheetah.agent.taco.multistep) == (3, 3)
    # --agent.aux taco on DrQ-v2's walker preset keeps the preset's n = 1
    mixed = build_config("dmc/walker-walk", "drqv2", preset="paper", fill_run_dir=False, agent={"aux": ("taco",)})
    assert mixed.agent.nstep == 1


def test_separate_optimizer_reproduces_the_reference_double_step(monkeypatch):
    """optimizer='separate' (the authors' taco_opt): after the critic, actor and target steps, the TACO loss is
    computed with the *updated* encoder and stepped by a second Adam over encoder + action encoder + TACO module --
    so the encoder gets two Adam steps per update, from two sets of moments. 'joint' (default): one step."""
    assert TACOConfig().optimizer == "joint"
    seen = {}
    real = taco.taco_loss

    def spy(module, action_encoder, cfg, **kw):
        seen["encoder"] = [p.detach().clone() for p in agent.encoder.parameters()]
        seen["actor"] = [p.detach().clone() for p in agent.actor.parameters()]
        return real(module, action_encoder, cfg, **kw)

    monkeypatch.setattr(taco, "taco_loss", spy)
    agent = _agent(PIXELS, taco=TACOConfig(optimizer="separate"))
    enc0 = [p.detach().clone() for p in agent.encoder.parameters()]
    act0 = [p.detach().clone() for p in agent.actor.parameters()]
    metrics = agent.update(_replay(PIXELS).sample(16, **_extras(agent)), step=0)
    for key in ("taco_loss", "taco_contrastive", "taco_curl", "taco_reward"):
        assert np.isfinite(metrics[key]) and metrics[key] != 0.0, key
    # the TACO loss saw the encoder after the critic step and the actor after its step
    assert not any(torch.equal(a, b) for a, b in zip(enc0, seen["encoder"]))
    assert not any(torch.equal(a, b) for a, b in zip(act0, seen["actor"]))
    # ... and its own optimizer moved the encoder again
    assert not any(torch.equal(a, p) for a, p in zip(seen["encoder"], agent.encoder.parameters()))
    for p in agent.encoder.parameters():
        assert int(agent.critic_opt.state[p]["step"]) == 1
    taco_opt = agent.state_dict()["mech"]["taco_separate"]["opt"]
    n_enc = len(list(agent.encoder.parameters()))
    n_all = n_enc + len(list(agent.action_encoder.parameters())) + sum(
        1 for _ in TACOModule(1, 3, 3, 8, 16).parameters())
    assert len(taco_opt["state"]) == n_all and all(int(st["step"]) == 1 for st in taco_opt["state"].values())
    assert taco_opt["param_groups"][0]["lr"] == agent.cfg.lr

    # joint: the TACO loss is computed inside the critic loss, before any step
    joint = _agent(PIXELS)
    agent = joint
    enc0 = [p.detach().clone() for p in joint.encoder.parameters()]
    joint.update(_replay(PIXELS).sample(16, **_extras(joint)), step=0)
    assert all(torch.equal(a, b) for a, b in zip(enc0, seen["encoder"]))


def test_separate_optimizer_state_round_trip():
    buf = _replay(STATE)
    a = _agent(STATE, taco=TACOConfig(optimizer="separate"))
    for step in range(2):
        a.update(buf.sample(16, **_extras(a)), step=step)
    b = _agent(STATE, taco=TACOConfig(optimizer="separate"))
    b.load_state_dict(a.state_dict())
    batch = buf.sample(16, **_extras(a))
    torch.manual_seed(3)
    ma = a.update(batch, step=2)
    torch.manual_seed(3)
    mb = b.update(batch, step=2)
    assert ma == mb


def test_install_refuses_identity_action_encoder():
    agent = _agent(STATE, aux=())  # a plain agent: the critic reads raw actions
    agent.cfg = dataclasses.replace(agent.cfg, aux=("taco",))
    with pytest.raises(ConfigError, match="make_action_encoder"):
        taco.install(agent)


def test_bf16_update_is_finite():
    agent = _agent(PIXELS, precision="bf16")
    batch = _replay(PIXELS).sample(16, **_extras(agent))
    metrics = agent.update(batch, step=0)
    assert all(np.isfinite(metrics[k]) for k in ("taco_loss", "taco_contrastive", "taco_curl", "taco_reward"))


def test_state_dict_round_trip_continues_identically():
    buf = _replay(STATE)
    a = _agent(STATE)
    for step in range(3):
        a.update(buf.sample(16, **_extras(a)), step=step)
    state = a.state_dict()
    assert "taco" in state["aux"] and "action_encoder" in state
    b = _agent(STATE)
    b.load_state_dict(state)
    batch = buf.sample(16, **_extras(a))
    torch.manual_seed(7)
    ma = a.update(batch, step=3)
    torch.manual_seed(7)
    mb = b.update(batch, step=3)
    assert ma == mb
    for x, y in zip([*a.action_encoder.parameters(), *a.aux_losses[0].module.parameters()],
                    [*b.action_encoder.parameters(), *b.aux_losses[0].module.parameters()]):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
