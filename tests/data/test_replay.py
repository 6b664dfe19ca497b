"""Tests of pixelrl.data.replay.ReplayBuffer against a naive stacked-storage reference."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces

from pixelrl.data.batch import Batch
from pixelrl.data.replay import EXTRAS, ReplayBuffer
from pixelrl.errors import ConfigError, CorruptFileError

C, H, W = 3, 4, 4


# ---------------------------------------------------------------------------- a fake environment
class FakeEnv:
    """Produces frame-stacked observations like the FrameStack wrapper; frame (ep, t) has pixel[0,0,0]=ep and
    pixel[1,0,0]=t, the rest random. ``obs_kind`` is "pixels", "state" or "dict" (pixels + state)."""

    def __init__(self, rng: np.random.Generator, stack: int, obs_kind: str = "pixels", discrete: bool = False,
                 action_dim: int = 2):
        self.rng, self.stack, self.obs_kind, self.discrete, self.action_dim = rng, stack, obs_kind, discrete, action_dim
        self.ep = -1

    @property
    def observation_space(self):
        pix = spaces.Box(0, 255, (self.stack * C, H, W), np.uint8)
        st = spaces.Box(-np.inf, np.inf, (5,), np.float32)
        return {"pixels": pix, "state": st, "dict": spaces.Dict({"pixels": pix, "state": st})}[self.obs_kind]

    @property
    def action_space(self):
        return spaces.Discrete(4) if self.discrete else spaces.Box(-1, 1, (self.action_dim,), np.float32)

    def _frame(self):
        f = self.rng.integers(0, 256, (C, H, W), dtype=np.uint8)
        f[0, 0, 0], f[1, 0, 0] = self.ep, self.t
        return f

    def _obs(self):
        pix = np.concatenate(list(self.frames), axis=0)
        state = np.array([self.ep, self.t, *self.rng.standard_normal(3)], dtype=np.float32)
        self.state = state
        return {"pixels": pix, "state": state, "dict": {"pixels": pix, "state": state}}[self.obs_kind]

    def reset(self):
        self.ep += 1
        self.t = 0
        f = self._frame()
        self.frames = [f] * self.stack
        return self._obs()

    def step(self):
        self.t += 1
        self.frames = (self.frames + [self._frame()])[-self.stack:]
        action = (np.int64(self.rng.integers(4)) if self.discrete
                  else self.rng.uniform(-1, 1, self.action_dim).astype(np.float32))
        reward = float(np.float32(self.rng.standard_normal()))
        return action, reward, self._obs()


class NaiveReplay:
    """Reference: stores every observation stacked, as the env returned it, and evaluates the spec literally.

    Eviction spec: the ``capacity + 1`` most recent observations are live; a transition needs its observation
    and every frame of its stack live."""

    def __init__(self, capacity, stack, nstep, gamma):
        self.cap, self.stack, self.nstep, self.gamma = capacity, stack, nstep, gamma
        self.obs = []  # global list of (ep, t, obs)
        self.eps = {}  # ep -> dict(first_g, steps=[(action, reward, term, trunc)], ended)
        self.cur = None

    def add_first(self, ep, obs):
        if self.cur is not None:
            self.eps[self.cur]["ended"] = True  # a reset without done ends the episode (bootstrapping)
        self.eps[ep] = {"first_g": len(self.obs), "steps": [], "ended": False}
        self.obs.append((ep, 0, obs))
        self.cur = ep

    def add(self, ep, action, reward, obs, term, trunc):
        e = self.eps[ep]
        e["steps"].append((action, reward, term, trunc))
        self.obs.append((ep, len(e["steps"]), obs))
        if term or trunc:
            e["ended"] = True

    @property
    def lo(self):
        return max(0, len(self.obs) - (self.cap + 1))

    def __len__(self):
        n = 0
        for g in range(self.lo, len(self.obs)):
            ep, t, _ = self.obs[g]
            n += t < len(self.eps[ep]["steps"])
        return n

    def expected(self):
        """(ep, t) -> (obs, action, reward, discount, next_obs) for every sampleable transition."""
        out = {}
        for g in range(self.lo, len(self.obs)):
            ep, t, obs = self.obs[g]
            e = self.eps[ep]
            steps = e["steps"]
            if t >= len(steps):
                continue
            if e["first_g"] + max(0, t - self.stack + 1) < self.lo:
                continue  # a frame of its stack was evicted
            ret, m, term = 0.0, 0, False
            for k in range(self.nstep):
                if t + k >= len(steps):
                    break
                a, r, te, tr = steps[t + k]
                ret += self.gamma ** k * r
                m += 1
                if te or tr:
                    term = te
                    break
            final = m == self.nstep or e["ended"]
            if not final:
                continue
            disc = 0.0 if term else self.gamma ** m
            nxt = self.obs[e["first_g"] + t + m][2]
            out[(ep, t)] = (obs, steps[t][0], ret, disc, nxt)
        return out


def _ident(obs):
    pix = obs["pixels"] if isinstance(obs, dict) else obs
    return int(pix[-C, 0, 0]), int(pix[-C + 1, 0, 0])


def _check_against(buf: ReplayBuffer, ref: NaiveReplay, draws: int = 600, obs_kind="pixels"):
    exp = ref.expected()
    assert len(buf) == len(ref)
    assert buf.num_sampleable() == len(exp)
    if not exp:
        with pytest.raises(ConfigError):
            buf.sample(4)
        return
    b = buf.sample(draws)
    assert b.reward.shape == (draws, 1) and b.discount.shape == (draws, 1)
    assert b.reward.dtype == torch.float32 and b.discount.dtype == torch.float32
    seen = set()
    for i in range(draws):
        if obs_kind == "dict":
            o = {k: v[i].numpy() for k, v in b.obs.items()}
            no = {k: v[i].numpy() for k, v in b.next_obs.items()}
            key = (int(o["state"][0]), int(o["state"][1]))
        elif obs_kind == "state":
            o, no = b.obs[i].numpy(), b.next_obs[i].numpy()
            key = (int(o[0]), int(o[1]))
        else:
            o, no = b.obs[i].numpy(), b.next_obs[i].numpy()
            key = _ident(o)
        assert key in exp, f"sampled {key}, which is not sampleable"
        eo, ea, er, ed, eno = exp[key]
        if obs_kind == "dict":
            for k in ("pixels", "state"):
                np.testing.assert_array_equal(o[k], eo[k])
                np.testing.assert_array_equal(no[k], eno[k])
        else:
            np.testing.assert_array_equal(o, eo)
            np.testing.assert_array_equal(no, eno)
        np.testing.assert_array_equal(b.action[i].numpy(), ea)
        assert b.reward[i, 0].item() == pytest.approx(er, rel=1e-5, abs=1e-5)
        assert b.discount[i, 0].item() == pytest.approx(ed, rel=1e-6, abs=1e-7)
        seen.add(key)
    if len(exp) <= draws // 8:
        assert seen == set(exp), "uniform sampling should reach every sampleable transition"


def _run_random(seed, capacity, stack, nstep, obs_kind="pixels", discrete=False, episodes=12, check_every=7,
                draws=400):
    rng = np.random.default_rng(seed)
    env = FakeEnv(np.random.default_rng(seed + 1000), stack, obs_kind, discrete)
    gamma = 0.9
    buf = ReplayBuffer(env.observation_space, env.action_space, capacity, frame_stack=stack, nstep=nstep,
                       discount=gamma, seed=seed)
    ref = NaiveReplay(capacity, stack, nstep, gamma)
    step = 0
    for _ in range(episodes):
        obs = env.reset()
        buf.add_first(obs)
        ref.add_first(env.ep, obs)
        length = int(rng.integers(1, 15))
        end = rng.choice(["term", "trunc", "reset"])
        for t in range(length):
            a, r, obs = env.step()
            last = t == length - 1
            te, tr = bool(last and end == "term"), bool(last and end == "trunc")
            buf.add(a, r, obs, te, tr)
            ref.add(env.ep, a, r, obs, te, tr)
            step += 1
            if step % check_every == 0:
                _check_against(buf, ref, draws, obs_kind)
    _check_against(buf, ref, draws, obs_kind)
    return buf, ref


# ---------------------------------------------------------------------------- brute force vs reference
@pytest.mark.parametrize("stack,nstep", [(3, 3), (1, 1), (3, 1), (2, 5)])
def test_matches_reference_without_eviction(stack, nstep):
    _run_random(seed=stack * 10 + nstep, capacity=10_000, stack=stack, nstep=nstep)


@pytest.mark.parametrize("capacity", [1, 2, 5, 13, 40])
def test_matches_reference_with_eviction(capacity):
    _run_random(seed=capacity, capacity=capacity, stack=3, nstep=3, episodes=15, check_every=3, draws=300)


def test_dict_observations_and_discrete_actions():
    buf, _ = _run_random(seed=7, capacity=30, stack=3, nstep=3, obs_kind="dict", discrete=True)
    b = buf.sample(8)
    assert set(b.obs) == {"pixels", "state"}
    assert b.obs["pixels"].shape == (8, 9, H, W) and b.obs["pixels"].dtype == torch.uint8
    assert b.obs["state"].shape == (8, 5) and b.obs["state"].dtype == torch.float32
    assert b.action.shape == (8,) and b.action.dtype == torch.int64


def test_state_observations():
    buf, _ = _run_random(seed=3, capacity=25, stack=3, nstep=2, obs_kind="state")
    b = buf.sample(4)
    assert b.obs.shape == (4, 5) and b.obs.dtype == torch.float32
    assert b.action.shape == (4, 2) and b.action.dtype == torch.float32


# ---------------------------------------------------------------------------- hand-written semantics
def _fill(buf, env, lengths_ends):
    for length, end in lengths_ends:
        buf.add_first(env.reset())
        for t in range(length):
            a, r, obs = env.step()
            last = t == length - 1
            buf.add(a, r, obs, last and end == "term", last and end == "trunc")


def _all_samples(buf, n=2000):
    b = buf.sample(n)
    out = {}
    for i in range(n):
        out[_ident(b.obs[i].numpy())] = (b.obs[i].numpy(), b.reward[i, 0].item(), b.discount[i, 0].item(),
                                         _ident(b.next_obs[i].numpy()), b.next_obs[i].numpy())
    return out


def test_stacks_repeat_first_frame_never_previous_episode():
    env = FakeEnv(np.random.default_rng(0), 3)
    buf = ReplayBuffer(env.observation_space, env.action_space, 100, frame_stack=3, nstep=1)
    _fill(buf, env, [(4, "term"), (4, "trunc")])
    s = _all_samples(buf)
    assert set(s) == {(e, t) for e in (0, 1) for t in range(4)}
    for (ep, t), (obs, *_rest) in s.items():
        frames = [(int(obs[i * C, 0, 0]), int(obs[i * C + 1, 0, 0])) for i in range(3)]
        assert frames == [(ep, max(0, t - 2)), (ep, max(0, t - 1)), (ep, t)]


def test_nstep_terminal_truncated_and_in_progress():
    env = FakeEnv(np.random.default_rng(1), 3)
    buf = ReplayBuffer(env.observation_space, env.action_space, 100, frame_stack=3, nstep=3, discount=0.5)
    # Rewards are random; recompute them from a reference to check exact sums.
    ref = NaiveReplay(100, 3, 3, 0.5)
    for length, end in [(5, "term"), (5, "trunc"), (6, None)]:
        obs = env.reset()
        buf.add_first(obs)
        ref.add_first(env.ep, obs)
        for t in range(length):
            a, r, obs = env.step()
            last = t == length - 1
            buf.add(a, r, obs, last and end == "term", last and end == "trunc")
            ref.add(env.ep, a, r, obs, last and end == "term", last and end == "trunc")
    s = _all_samples(buf)
    # episode 0 terminated after 5 steps: t=0..4 sampleable; t=2 sums 3 steps (gamma^3), t=3,4 hit the end: 0.
    assert {k: v[2] for k, v in s.items() if k[0] == 0} == {(0, 0): 0.125, (0, 1): 0.125, (0, 2): 0.0,
                                                           (0, 3): 0.0, (0, 4): 0.0}
    # episode 1 truncated: shorter sums bootstrap with gamma^m.
    assert {k: v[2] for k, v in s.items() if k[0] == 1} == {(1, 0): 0.125, (1, 1): 0.125, (1, 2): 0.125,
                                                           (1, 3): 0.25, (1, 4): 0.5}
    # next obs is obs_{t+m}
    assert s[(1, 3)][3] == (1, 5) and s[(0, 4)][3] == (0, 5) and s[(0, 0)][3] == (0, 3)
    # episode 2 in progress with 6 steps: only t <= 3 have 3 steps after them.
    assert sorted(k for k in s if k[0] == 2) == [(2, 0), (2, 1), (2, 2), (2, 3)]
    exp = ref.expected()
    for k, v in s.items():
        assert v[1] == pytest.approx(exp[k][2], abs=1e-5)
    assert len(buf) == 16 and buf.num_sampleable() == 14


def test_sample_before_anything_sampleable_raises():
    env = FakeEnv(np.random.default_rng(2), 3)
    buf = ReplayBuffer(env.observation_space, env.action_space, 100, nstep=3)
    with pytest.raises(ConfigError):
        buf.sample(2)
    _fill(buf, env, [(2, None)])
    assert len(buf) == 2 and buf.num_sampleable() == 0
    with pytest.raises(ConfigError):
        buf.sample(2)
    with pytest.raises(ConfigError):
        ReplayBuffer(env.observation_space, env.action_space, 0)


def test_add_without_add_first_raises():
    env = FakeEnv(np.random.default_rng(2), 3)
    buf = ReplayBuffer(env.observation_space, env.action_space, 100)
    env.reset()
    a, r, o = env.step()
    with pytest.raises(ConfigError):
        buf.add(a, r, o, False, False)
    with pytest.raises(ConfigError):
        buf.add_first(np.zeros((9, H + 1, W), np.uint8))


def test_eviction_keeps_stacks_valid_long_run():
    """Long single episodes through a small ring: every sampled stack is exactly the env's stack."""
    _run_random(seed=11, capacity=7, stack=4, nstep=2, episodes=30, check_every=5, draws=200)


def test_sampler_uses_own_rng_and_seed():
    env = FakeEnv(np.random.default_rng(5), 3)
    bufs = []
    for _ in range(2):
        env = FakeEnv(np.random.default_rng(5), 3)
        b = ReplayBuffer(env.observation_space, env.action_space, 50, seed=3)
        _fill(b, env, [(10, "term"), (10, None)])
        bufs.append(b)
    np.random.seed(0)
    torch.manual_seed(0)
    x = bufs[0].sample(16)
    np.random.seed(1)
    torch.manual_seed(1)
    y = bufs[1].sample(16)
    assert torch.equal(x.obs, y.obs) and torch.equal(x.action, y.action)


def test_batch_type_and_layout():
    env = FakeEnv(np.random.default_rng(6), 3)
    buf = ReplayBuffer(env.observation_space, env.action_space, 50)
    _fill(buf, env, [(10, "term")])
    b = buf.sample(5)
    assert isinstance(b, Batch) and len(b) == 5
    assert b.obs.shape == (5, 9, H, W) and b.obs.dtype == torch.uint8 and b.obs.device.type == "cpu"


# ---------------------------------------------------------------------------- memory
def test_bytes_per_transition_below_goal():
    space = spaces.Box(0, 255, (9, 84, 84), np.uint8)
    act = spaces.Box(-1, 1, (6,), np.float32)
    cap = 2000
    buf = ReplayBuffer(space, act, cap)
    frame = np.zeros((9, 84, 84), np.uint8)
    for _ in range(4):  # 4 episodes of 500 steps fill the ring (first/last obs take slots too)
        buf.add_first(frame)
        for t in range(500):
            buf.add(np.zeros(6, np.float32), 0.0, frame, False, t == 499)
    assert len(buf) >= cap - 5
    per = buf.nbytes / len(buf)
    assert 84 * 84 * 3 <= per <= 22_000, per


# ---------------------------------------------------------------------------- save / load
def _make_filled(seed=0, capacity=40, episodes=None, obs_kind="pixels", discrete=False):
    env = FakeEnv(np.random.default_rng(seed), 3, obs_kind, discrete)
    buf = ReplayBuffer(env.observation_space, env.action_space, capacity, seed=seed)
    _fill(buf, env, episodes or [(9, "term"), (7, "trunc"), (12, None)])
    return env, buf


def _same_batches(a: ReplayBuffer, b: ReplayBuffer, n=3, bs=32):
    for _ in range(n):
        x, y = a.sample(bs), b.sample(bs)
        for f in ("obs", "next_obs"):
            xo, yo = getattr(x, f), getattr(y, f)
            if isinstance(xo, dict):
                assert xo.keys() == yo.keys() and all(torch.equal(xo[k], yo[k]) for k in xo)
            else:
                assert torch.equal(xo, yo)
        for f in ("action", "reward", "discount"):
            assert torch.equal(getattr(x, f), getattr(y, f))


def _fresh_like(env, capacity=40, seed=123):
    return ReplayBuffer(env.observation_space, env.action_space, capacity, seed=seed)


def test_save_load_identical_samples(tmp_path):
    env, buf = _make_filled()
    buf.sample(10)  # advance the sampler RNG: its state must be saved
    buf.save(tmp_path / "r")
    other = _fresh_like(env)
    other.load(tmp_path / "r")
    assert len(other) == len(buf) and other.num_sampleable() == buf.num_sampleable()
    _same_batches(buf, other)


@pytest.mark.parametrize("obs_kind,discrete", [("dict", True), ("state", False)])
def test_save_load_dict_and_state(tmp_path, obs_kind, discrete):
    env, buf = _make_filled(obs_kind=obs_kind, discrete=discrete)
    buf.save(tmp_path)
    other = ReplayBuffer(env.observation_space, env.action_space, 40, seed=9)
    other.load(tmp_path)
    _same_batches(buf, other)


def test_incremental_save_appends_and_drops_evicted_chunks(tmp_path):
    env, buf = _make_filled(capacity=40)
    d = tmp_path / "r"
    buf.save(d)
    files1 = sorted(p.name for p in d.glob("chunk_*.npz"))
    size1 = {p.name: p.stat().st_size for p in d.glob("chunk_*.npz")}
    # add a few steps to the open episode, save again: one new chunk, old chunk untouched
    for _ in range(3):
        buf.add(*env.step(), False, False)
    buf.save(d)
    files2 = sorted(p.name for p in d.glob("chunk_*.npz"))
    assert files2[: len(files1)] == files1 and len(files2) == len(files1) + 1
    assert all((d / f).stat().st_size == size1[f] for f in files1)
    man = json.loads((d / "manifest.json").read_text())
    assert [c["file"] for c in man["chunks"]] == files2
    other = _fresh_like(env)
    other.load(d)
    _same_batches(buf, other)
    # the loaded buffer continues: add more, save incrementally, load again
    env2 = env
    for _ in range(2):
        a, r, o = env2.step()
        buf.add(a, r, o, False, False)
        other.add(a, r, o, False, False)
    other.save(d)
    third = _fresh_like(env)
    third.load(d)
    _same_batches(buf, third)
    # fill far beyond capacity: the first chunks leave the manifest, and are deleted one save later
    _fill(buf, env, [(30, "term"), (30, "trunc")])
    buf.save(d)
    man = json.loads((d / "manifest.json").read_text())
    assert files1[0] not in [c["file"] for c in man["chunks"]] and (d / files1[0]).exists()
    buf.save(d)
    assert not (d / files1[0]).exists()
    fourth = _fresh_like(env)
    fourth.load(d)
    _same_batches(buf, fourth)


def test_save_to_new_directory_is_full(tmp_path):
    env, buf = _make_filled()
    buf.save(tmp_path / "a")
    buf.add(*env.step(), False, False)
    buf.save(tmp_path / "b")
    other = _fresh_like(env)
    other.load(tmp_path / "b")
    _same_batches(buf, other)


def test_interrupted_save_leaves_previous_save_loadable(tmp_path):
    env, buf = _make_filled()
    d = tmp_path / "r"
    buf.save(d)
    snapshot = _fresh_like(env)
    snapshot.load(d)
    # simulate a later save killed after writing its chunk (and a tmp manifest) but before the manifest rename
    for _ in range(4):
        buf.add(*env.step(), False, False)
    (d / "chunk_000099.npz").write_bytes(b"partial")
    (d / "chunk_000100.npz.tmp").write_bytes(b"partial")
    (d / "manifest.json.tmp").write_text("{")
    restored = _fresh_like(env)
    restored.load(d)
    _same_batches(snapshot, restored)
    # the next save cleans the leftovers up
    restored.save(d)
    assert not (d / "chunk_000099.npz").exists() and not (d / "manifest.json.tmp").exists()


def _saved(tmp_path):
    env, buf = _make_filled()
    d = tmp_path / "r"
    buf.save(d)
    buf.add(*env.step(), False, False)
    buf.save(d)  # two chunks
    return env, buf, d


def _assert_load_fails(env, d, name_part):
    victim = _fresh_like(env)
    before = (len(victim), victim.num_sampleable())
    with pytest.raises(CorruptFileError) as ei:
        victim.load(d)
    assert name_part in str(ei.value.path)
    assert (len(victim), victim.num_sampleable()) == before  # nothing half-loaded


def test_corrupt_chunk_detected(tmp_path):
    env, _, d = _saved(tmp_path)
    chunk = sorted(d.glob("chunk_*.npz"))[0]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    _assert_load_fails(env, d, chunk.name)


def test_truncated_chunk_detected(tmp_path):
    env, _, d = _saved(tmp_path)
    chunk = sorted(d.glob("chunk_*.npz"))[-1]
    data = chunk.read_bytes()
    chunk.write_bytes(data[: len(data) // 3])
    _assert_load_fails(env, d, chunk.name)


def test_missing_chunk_detected(tmp_path):
    env, _, d = _saved(tmp_path)
    chunk = sorted(d.glob("chunk_*.npz"))[0]
    chunk.unlink()
    _assert_load_fails(env, d, chunk.name)


def test_corrupt_manifest_detected(tmp_path):
    env, _, d = _saved(tmp_path)
    m = d / "manifest.json"
    doc = json.loads(m.read_text())
    doc["hi"] += 1  # still valid JSON, but the checksum no longer matches
    m.write_text(json.dumps(doc))
    _assert_load_fails(env, d, "manifest.json")
    m.write_text(m.read_text()[:50])  # truncated
    _assert_load_fails(env, d, "manifest.json")


def test_chunk_with_consistent_checksum_but_wrong_content_detected(tmp_path):
    """A chunk replaced by a valid npz of other shape, with the manifest re-signed, is still rejected."""
    import hashlib

    env, _, d = _saved(tmp_path)
    m = d / "manifest.json"
    doc = json.loads(m.read_text())
    c = doc["chunks"][0]
    with open(d / c["file"], "wb") as f:
        np.savez(f, action=np.zeros(3, np.float32))
    c["bytes"] = (d / c["file"]).stat().st_size
    c["sha256"] = hashlib.sha256((d / c["file"]).read_bytes()).hexdigest()
    body = {k: v for k, v in doc.items() if k != "checksum"}
    doc["checksum"] = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    m.write_text(json.dumps(doc))
    _assert_load_fails(env, d, c["file"])


def test_load_into_buffer_with_other_config_raises(tmp_path):
    env, buf = _make_filled()
    buf.save(tmp_path)
    other = ReplayBuffer(env.observation_space, env.action_space, 41)
    with pytest.raises(ConfigError):
        other.load(tmp_path)


def test_no_pickle_in_chunks(tmp_path):
    env, buf = _make_filled(obs_kind="dict", discrete=True)
    buf.save(tmp_path)
    for p in tmp_path.glob("chunk_*.npz"):
        with np.load(p, allow_pickle=False) as z:
            for k in z.files:
                assert z[k].dtype != object


def test_state_dict_roundtrip():
    env, buf = _make_filled(capacity=20, episodes=[(9, "term"), (7, "trunc"), (12, None)])
    sd = buf.state_dict()
    json.dumps(sd["meta"])
    other = _fresh_like(env, capacity=20)
    other.load_state_dict(sd)
    _same_batches(buf, other)


def test_chunks_split_and_ring_wraps(tmp_path, monkeypatch):
    import pixelrl.data.replay as replay_mod

    monkeypatch.setattr(replay_mod, "MAX_CHUNK_SLOTS", 5)
    env, buf = _make_filled(capacity=17, episodes=[(9, "term"), (7, "trunc"), (12, None)])  # wrapped ring
    buf.save(tmp_path)
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert all(c["stop"] - c["start"] <= 5 for c in man["chunks"]) and len(man["chunks"]) >= 4
    other = _fresh_like(env, capacity=17)
    other.load(tmp_path)
    _same_batches(buf, other)


def test_previous_manifest_stays_loadable_after_eviction(tmp_path):
    """A trainer may record the manifest with its checkpoint and put it back if killed before the next one."""
    env, buf = _make_filled(capacity=20)
    d = tmp_path / "r"
    buf.save(d)
    manifest_a = (d / "manifest.json").read_text()
    snapshot = _fresh_like(env, capacity=20)
    snapshot.load(d)
    _fill(buf, env, [(30, "term")])  # evicts everything saved in A
    buf.save(d)
    (d / "manifest.json").write_text(manifest_a)  # roll back to A
    restored = _fresh_like(env, capacity=20)
    restored.load(d)
    _same_batches(snapshot, restored)
    # continuing from A works and stays incremental; files only A needed are removed one save later
    _fill(restored, env, [(25, "trunc")])
    restored.save(d)
    restored.save(d)
    man = json.loads((d / "manifest.json").read_text())
    assert sorted(p.name for p in d.glob("chunk_*.npz")) == sorted(c["file"] for c in man["chunks"])
    again = _fresh_like(env, capacity=20)
    again.load(d)
    _same_batches(restored, again)


# ---------------------------------------------------------------------------- action sequences (extras)
def _seq_buffer(capacity, nstep, episodes, discrete=False, seed=0):
    """State obs ``[ep, t]``; the action of step t of episode ep identifies it: ``[ep + t/10, -(ep + t/10)]``
    (discrete: ``10*ep + t``). Returns the buffer and {(ep, t): action}."""
    obs_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
    act_space = spaces.Discrete(100) if discrete else spaces.Box(-100, 100, (2,), np.float32)
    buf = ReplayBuffer(obs_space, act_space, capacity, frame_stack=1, nstep=nstep, discount=0.9, seed=seed)
    actions = {}
    for ep, (length, end) in enumerate(episodes):
        buf.add_first(np.array([ep, 0], np.float32))
        for t in range(length):
            a = np.int64(10 * ep + t) if discrete else np.array([ep + t / 10, -(ep + t / 10)], np.float32)
            actions[(ep, t)] = a
            last = t == length - 1
            buf.add(a, 1.0, np.array([ep, t + 1], np.float32), last and end == "term", last and end == "trunc")
    return buf, actions


@pytest.mark.parametrize("capacity", [100, 9])  # 9: the ring wraps and evicts
@pytest.mark.parametrize("discrete", [False, True])
def test_action_seq_equals_stored_actions_zero_padded_at_episode_end(capacity, discrete):
    n = 3
    episodes = [(5, "term"), (4, "trunc"), (2, "term"), (6, None)]
    buf, actions = _seq_buffer(capacity, n, episodes, discrete)
    lengths = [length for length, _ in episodes]
    b = buf.sample(2000, action_seq=True)
    seq, mask = b.extras["action_seq"], b.extras["seq_mask"]
    a_shape = () if discrete else (2,)
    assert seq.shape == (2000, n, *a_shape) and mask.shape == (2000, n)
    assert seq.dtype == (torch.int64 if discrete else torch.float32) and mask.dtype == torch.float32
    torch.testing.assert_close(seq[:, 0], b.action)  # a_t is the batch's action
    seen = set()
    for i in range(2000):
        ep, t = int(b.obs[i, 0]), int(b.obs[i, 1])
        seen.add((ep, t))
        m = min(n, lengths[ep] - t)  # steps of the window inside the episode
        assert mask[i].tolist() == [1.0] * m + [0.0] * (n - m)
        for k in range(n):
            want = actions[(ep, t + k)] if k < m else np.zeros(a_shape, np.float32)
            np.testing.assert_array_equal(seq[i, k].numpy(), want)
    # windows cut by an episode end were sampled (so the padding was exercised) when the buffer holds them
    assert any(lengths[ep] - t < n for ep, t in seen)


def test_action_seq_does_not_change_the_draw():
    buf1, _ = _seq_buffer(50, 3, [(7, "term"), (5, None)], seed=4)
    buf2, _ = _seq_buffer(50, 3, [(7, "term"), (5, None)], seed=4)
    for _ in range(3):
        b1, b2 = buf1.sample(16), buf2.sample(16, action_seq=True)
        assert b1.extras == {} and set(b2.extras) == {"action_seq", "seq_mask"}
        for x, y in [(b1.obs, b2.obs), (b1.action, b2.action), (b1.reward, b2.reward),
                     (b1.discount, b2.discount), (b1.next_obs, b2.next_obs)]:
            torch.testing.assert_close(x, y)


def test_extras_names_are_sample_keywords():
    """Every name in EXTRAS is a keyword of sample (the trainer passes agent.batch_extras that way)."""
    buf, _ = _seq_buffer(50, 3, [(5, "term")])
    for name in EXTRAS:
        assert name in buf.sample(4, **{name: True}).extras
