"""Snapshot RL (S3RL) resets: simulator save/restore, k-means, the bank and its files, the reset wrapper."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import pixelrl.envs as E
from pixelrl.envs.snapshot import (
    SnapshotBank,
    SnapshotResetWrapper,
    agent_value_fn,
    capture_state,
    collect_snapshots,
    kmeans,
    restore_state,
)
from pixelrl.errors import ConfigError, CorruptFileError

torch.set_num_threads(1)

# cartpole: 0.01 s per frame; time_limit 1.0 s = 100 frames = 50 agent steps at action repeat 2
CARTPOLE = dict(obs="state", time_limit=1.0)


def _random_policy(seed: int, shape):
    rng = np.random.default_rng(seed)
    return lambda obs: rng.uniform(-1, 1, shape).astype(np.float32)


@pytest.fixture(scope="module")
def bank() -> SnapshotBank:
    env = E.make("dmc/cartpole-swingup", **CARTPOLE)
    return collect_snapshots(
        env, _random_policy(0, env.action_space.shape), lambda obs, a: float(obs[0] + a[0]),
        episodes=3, every=5, keep_episodes=2, k=3, seed=0,
    )


# ------------------------------------------------------------------------------------- save / restore


@pytest.mark.parametrize("env_id", ["dmc/cartpole-swingup", "gym/Hopper-v5"])
def test_restore_reproduces_the_original_trajectory(env_id):
    a = E.make(env_id, size=32, seed=0)
    b = E.make(env_id, size=32, seed=5)
    acts = np.random.default_rng(0).uniform(-1, 1, (20, *a.action_space.shape)).astype(np.float32)
    obs, _ = a.reset(seed=0)
    for t in range(8):
        obs, *_ = a.step(acts[t])
    state = capture_state(a)
    later = [a.step(acts[t]) for t in range(8, 20)]
    end = capture_state(a)

    b.reset(seed=123)  # another episode, then a few steps: the restore must overwrite all of it
    for t in range(3):
        b.step(-acts[t])
    restored = restore_state(b, state)
    np.testing.assert_array_equal(capture_state(b).physics, state.physics)
    assert capture_state(b).elapsed == state.elapsed > 0
    c = obs.shape[0] // 3  # frame stack 3: filled with the restored frame, which is the original latest frame
    for i in range(3):
        np.testing.assert_array_equal(restored[i * c:(i + 1) * c], obs[-c:])
    for t, (o0, r0, term0, trunc0, _) in zip(range(8, 20), later):
        o1, r1, term1, trunc1, _ = b.step(acts[t])
        assert r1 == r0 and (term1, trunc1) == (term0, trunc0)
        np.testing.assert_array_equal(o1[-c:], o0[-c:])  # newest frame
        if t >= 8 + 2:  # older stacked frames differ only while the reset-filled copies are in the stack
            np.testing.assert_array_equal(o1, o0)
    np.testing.assert_array_equal(capture_state(b).physics, end.physics)


def test_restore_keeps_time_limit_and_task_randomisation():
    # reacher's target position lives in the model and is drawn per episode: it must travel with the snapshot
    a = E.make("dmc/reacher-easy", obs="state", time_limit=0.4)  # 20 frames = 10 agent steps
    b = E.make("dmc/reacher-easy", obs="state", time_limit=0.4)
    obs, _ = a.reset(seed=1)
    for _ in range(6):
        obs, *_ = a.step(np.zeros(2, np.float32))
    state = capture_state(a)
    ob, _ = b.reset(seed=2)
    target = b.unwrapped.physics.named.model.geom_pos["target"].copy()
    restored = restore_state(b, state)
    assert not np.allclose(target, b.unwrapped.physics.named.model.geom_pos["target"])
    np.testing.assert_array_equal(restored, obs)
    truncs = [b.step(np.zeros(2, np.float32))[3] for _ in range(4)]
    assert truncs == [False, False, False, True]  # the env's own time limit counts from the saved step


def test_env_without_mujoco_simulator_is_a_clear_error():
    env = E.make("gym/CartPole-v1", obs="state")
    with pytest.raises(ConfigError, match="restorable MuJoCo simulator"):
        capture_state(env)


# ------------------------------------------------------------------------------------------- k-means


def test_kmeans_finds_well_separated_groups_and_is_deterministic():
    rng = np.random.default_rng(0)
    centres = np.array([-50.0, 0.0, 7.0, 30.0, 100.0, 400.0])
    truth = rng.permutation(np.repeat(np.arange(6), [3, 20, 5, 40, 8, 2]))
    x = centres[truth] + rng.normal(0, 0.5, len(truth))
    labels, cent = kmeans(x, 6, seed=3)
    np.testing.assert_array_equal(labels, truth)  # clusters numbered by ascending centroid
    np.testing.assert_allclose(cent[:, 0], centres, atol=1.0)
    labels2, cent2 = kmeans(x, 6, seed=3)
    np.testing.assert_array_equal(labels2, labels)
    np.testing.assert_array_equal(cent2, cent)
    # fewer distinct values than k: k is lowered, no empty cluster
    labels, cent = kmeans(np.array([1.0, 1.0, 5.0, 5.0]), 6)
    assert len(cent) == 2 and list(labels) == [0, 0, 1, 1]
    with pytest.raises(ConfigError, match="non-finite"):
        kmeans(np.array([1.0, np.nan]), 2)


# ---------------------------------------------------------------------------------------------- bank


def _synthetic_bank(sizes=(1, 3, 12)) -> SnapshotBank:
    n = sum(sizes)
    cluster = np.repeat(np.arange(len(sizes)), sizes)
    return SnapshotBank(
        physics=np.zeros((n, 4)), model=np.zeros((n, 2)), elapsed=np.zeros(n, np.int64),
        values=cluster.astype(float), episode=np.zeros(n, np.int64), step=np.arange(n), episode_return=np.ones(n),
        cluster=cluster, centroids=np.arange(len(sizes), dtype=float),
    )


def test_sampling_is_uniform_over_clusters_then_over_snapshots():
    bank = _synthetic_bank((1, 3, 12))
    rng = np.random.default_rng(0)
    draws = np.array([bank.sample(rng) for _ in range(30_000)])
    assert np.all(bank.cluster[draws[:, 1]] == draws[:, 0])
    cluster_freq = np.bincount(draws[:, 0], minlength=3) / len(draws)
    np.testing.assert_allclose(cluster_freq, 1 / 3, atol=0.02)  # uniform over snapshots would give 1/16 vs 12/16
    in_big = draws[draws[:, 0] == 2, 1]
    snap_freq = np.bincount(in_big - 4, minlength=12) / len(in_big)
    np.testing.assert_allclose(snap_freq, 1 / 12, atol=0.015)


def test_collect_keeps_the_best_episodes_and_tags_snapshots(bank):
    m = bank.meta
    rets = np.array(m["episode_returns"])
    assert sorted(m["kept_episodes"]) == sorted(np.argsort(-rets)[:2].tolist())
    assert set(np.unique(bank.episode)) == set(m["kept_episodes"])
    assert np.all(bank.step % 5 == 0) and np.all(bank.step < 50)
    assert len(bank) == 2 * 10  # 50 agent steps per episode, every 5 -> 10 snapshots per episode
    for e in m["kept_episodes"]:
        assert np.all(bank.episode_return[bank.episode == e] == rets[e])
    assert bank.num_clusters == 3 and m["sim_spec"]["sim"] == "dmc"
    # each snapshot's elapsed counter is 2 frames per agent step (action repeat 2)
    np.testing.assert_array_equal(bank.elapsed, 2 * bank.step)
    # clusters are k-means of the values: every value is nearest its own centroid
    d = np.abs(bank.values[:, None] - bank.centroids[None])
    np.testing.assert_array_equal(d.argmin(1), bank.cluster)
    with pytest.raises(ConfigError, match="keep_episodes"):
        collect_snapshots(E.make("dmc/cartpole-swingup", **CARTPOLE), None, None, episodes=2, keep_episodes=3)


def test_bank_save_load_round_trip(bank, tmp_path):
    bank.save(tmp_path / "b")
    back = SnapshotBank.load(tmp_path / "b")
    for name in ("physics", "model", "elapsed", "values", "episode", "step", "episode_return", "cluster", "centroids"):
        np.testing.assert_array_equal(getattr(back, name), getattr(bank, name))
    assert back.meta == json.loads(json.dumps(bank.meta))
    assert not list((tmp_path / "b").glob("*.tmp"))


@pytest.mark.parametrize("damage", ["flip", "truncate", "json", "missing", "swap"])
def test_bank_load_detects_damage(bank, tmp_path, damage):
    root = bank.save(tmp_path / "b")
    npz, meta = root / "snapshots.npz", root / "snapshots.json"
    if damage == "flip":
        raw = bytearray(npz.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        npz.write_bytes(bytes(raw))
    elif damage == "truncate":
        npz.write_bytes(npz.read_bytes()[:200])
    elif damage == "json":
        meta.write_text(meta.read_text()[:50])
    elif damage == "missing":
        npz.unlink()
    else:  # a valid NPZ from another bank next to this JSON
        _synthetic_bank().save(tmp_path / "other")
        npz.write_bytes((tmp_path / "other" / "snapshots.npz").read_bytes())
    with pytest.raises(CorruptFileError):
        SnapshotBank.load(root)


# ------------------------------------------------------------------------------------------- wrapper


def test_wrapper_restores_truncates_then_goes_plain(bank):
    env = SnapshotResetWrapper(E.make("dmc/cartpole-swingup", **CARTPOLE), bank, horizon=7,
                               active_agent_steps=15, seed=0)
    lengths, snaps = [], []
    for _ in range(4):
        obs, info = env.reset()
        snaps.append(info["snapshot"])
        if info["snapshot"] is not None:
            i = info["snapshot"]
            assert info["snapshot_cluster"] == bank.cluster[i]
            np.testing.assert_array_equal(capture_state(env).physics, bank.physics[i])
        n, done = 0, False
        while not done:
            obs, r, term, trunc, info = env.step(np.zeros(1, np.float32))
            n += 1
            done = term or trunc
        lengths.append(n)
    # 3 snapshot episodes (0, 7, 14 agent steps < 15 when they start), then plain ones
    assert all(s is not None for s in snaps[:3]) and snaps[3] is None
    for s, n in zip(snaps[:3], lengths[:3]):  # horizon, or earlier when the env's own limit (50) comes first
        assert n == min(7, 50 - bank.step[s])
    assert lengths[3] == 50
    assert env.agent_steps == sum(lengths)


def test_wrapper_is_deterministic_and_checkpointable(bank):
    def run(w, n):
        out = []
        for _ in range(n):
            _, info = w.reset()
            out.append(info["snapshot"])
            w.step(np.zeros(1, np.float32))
        return out

    make = lambda seed: SnapshotResetWrapper(  # noqa: E731
        E.make("dmc/cartpole-swingup", **CARTPOLE), bank, horizon=3, seed=seed)
    w1, w2 = make(4), make(4)
    assert run(w1, 6) == run(w2, 6)
    state = json.loads(json.dumps(w1.state_dict()))  # JSON-able
    expected = run(w1, 8)
    w3 = make(99)
    w3.load_state_dict(state)
    assert w3.agent_steps == 6 and run(w3, 8) == expected
    assert run(make(5), 14) != run(make(4), 14)
    with pytest.raises(ConfigError, match="state dict"):
        w3.load_state_dict({"bank_size": len(bank)})


def test_wrapper_refuses_a_bank_from_another_task(bank):
    with pytest.raises(ConfigError, match="does not fit"):
        SnapshotResetWrapper(E.make("dmc/reacher-easy", obs="state"), bank)
    with pytest.raises(ConfigError, match="horizon"):
        SnapshotResetWrapper(E.make("dmc/cartpole-swingup", **CARTPOLE), bank, horizon=0)


# -------------------------------------------------------------------------------------- agent value


class _Critic(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q = torch.nn.Linear(3, 2)
        self.drop = torch.nn.Dropout(0.9)

    def values(self, feat, action):
        return self.drop(self.q(torch.cat([feat, action], -1))).T[..., None]  # [2, B, 1]


def test_agent_value_fn_is_min_q_in_eval_mode():
    agent = type("Agent", (), {})()
    agent.encoder = torch.nn.Linear(4, 2)
    agent.critic = _Critic()
    agent.critic.train()
    fn = agent_value_fn(agent)
    obs, act = np.arange(4, dtype=np.float32), np.array([0.5], np.float32)
    with torch.no_grad():
        feat = agent.encoder(torch.as_tensor(obs)[None])
        want = agent.critic.q(torch.cat([feat, torch.tensor([[0.5]])], -1)).min().item()
    assert fn(obs, act) == pytest.approx(want, rel=1e-6)
    assert fn(obs, act) == fn(obs, act)  # dropout off while evaluating
    assert agent.critic.training  # mode restored
    with pytest.raises(ConfigError, match="encoder"):
        agent_value_fn(object())
