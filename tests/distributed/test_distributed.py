"""Scale-out on Ray (pixelrl.distributed), on a local Ray instance of 2 CPUs started once for the module: PPO on 2
workers writes the single-process run's rows; an off-policy run on 2 workers survives a killed worker (restart
counted, nothing counted twice) and resumes from its checkpoint; the staleness bound holds; the learner given the
same data in the same order makes the same updates as the single-process learner; bad settings are one line."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

pytest.importorskip("ray", reason="pip install 'pixelrl[ray]'")

import ray  # noqa: E402

from pixelrl.distributed import trainer_class as ray_trainer_class  # noqa: E402
from pixelrl.distributed.offpolicy import EpisodeAssembler, owed_updates  # noqa: E402
from pixelrl.errors import ConfigError  # noqa: E402
from pixelrl.train.logger import TIMING_COLUMNS, read_rows  # noqa: E402
from pixelrl.train.setup import build_config, trainer_class  # noqa: E402

ENV, EPISODE = "gym/Pendulum-v1", 25
"""A state task whose episodes are short (200 frames = 25 agent steps at action repeat 8), so episodes reach the
replay early."""
OFF_POLICY = dict(preset="none", device="cpu", progress=False, video=False, tensorboard=False, threads=1,
                  obs="state", eval_episodes=1, eval_random=False,
                  agent={"num_seed_steps": 40, "batch_size": 16, "hidden_dim": 32, "feature_dim": 16,
                         "replay_capacity": 10_000})


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _off_cfg(tmp_path, name, **kw):
    base = dict(OFF_POLICY, run_dir=str(tmp_path / name), workers=2, chunk_steps=8, action_repeat=8)
    base.update(kw)
    return build_config(ENV, "drqv2", **base)


def _strip(row):
    return {k: v for k, v in row.items() if k not in TIMING_COLUMNS}


def _ppo_cfg(tmp_path, name, **kw):
    base = dict(preset="paper", device="cpu", progress=False, video=False, tensorboard=False, threads=1, obs="state",
                frames=512, eval_every_frames=256, eval_episodes=1, run_dir=str(tmp_path / name),
                agent={"num_envs": 4, "rollout_steps": 32, "num_minibatches": 2, "update_epochs": 2})
    base.update(kw)
    return build_config("gym/CartPole-v1", "ppo", **base)


def test_ppo_on_two_workers_writes_the_single_process_rows(tmp_path):
    def cfg(name, **kw):
        return _ppo_cfg(tmp_path, name, **kw)

    one = cfg("one")
    trainer_class(one)(one).run()
    two = cfg("two", workers=2, max_staleness=0)  # 0: synchronous rollouts, as without --max-staleness
    trainer = ray_trainer_class(two)(two)
    assert type(trainer).__name__ == "RayOnPolicyTrainer"
    trainer.run()
    a, b = read_rows(tmp_path / "one", "train"), read_rows(tmp_path / "two", "train")
    assert len(a) == len(b) == 4
    for x, y in zip(a, b):
        assert _strip(x) == {k: v for k, v in _strip(y).items() if k in x}  # same losses, returns, counters
        assert y["workers"] == 2 and y["inference_batch"] == 4 and y["restarts"] == 0
        assert y["worker0_fps"] > 0 and y["worker1_fps"] > 0
    assert [_strip(r) for r in read_rows(tmp_path / "one", "eval")] == \
        [_strip(r) for r in read_rows(tmp_path / "two", "eval")]


def test_bounded_staleness_ppo_acts_ahead_of_the_learner_within_the_bound(tmp_path):
    """--max-staleness 2: rollout r acts with version max(0, r - 2) while the learner updates; every update's ratio is
    to the behaviour log-probs recorded at collection (those of the version that acted, not the learner's); the
    staleness logged is never above 2; the run is reproducible; an evaluation drains the pipeline."""
    from pixelrl.agents import make_agent

    agent = {"num_envs": 4, "rollout_steps": 32, "num_minibatches": 2, "update_epochs": 2, "anneal_lr": False}
    cfg = _ppo_cfg(tmp_path, "s2", workers=2, max_staleness=2, frames=1024, eval_every_frames=640, agent=agent)
    trainer = ray_trainer_class(cfg)(cfg)
    weights, seen = {}, []
    update = trainer.agent.update

    def spy(staged, *, step, progress):  # the learner thread: the weights at each version, the data each update got
        v = trainer.agent.num_updates
        weights[v] = {k: t.clone() for k, t in trainer.agent.net.state_dict().items()}
        ro = staged.rollout
        seen.append((v, int(staged.versions.min()), int(staged.versions.max()), ro.obs.clone(), ro.actions.clone(),
                     ro.logprobs.clone()))
        return update(staged, step=step, progress=progress)

    trainer.agent.update = spy
    trainer.run()
    rows = read_rows(tmp_path / "s2", "train")
    # 8 rollouts; the evaluation at 640 frames (after rollout 5) drains the pipeline, which starts again at rollout 5
    assert [r["staleness_max"] for r in rows] == [0, 1, 2, 2, 2, 0, 1, 2]
    assert [r["policy_version"] for r in rows] == [0, 0, 0, 1, 2, 5, 5, 5]
    assert [r["rollout"] for r in rows] == list(range(1, 9)) and max(r["staleness_max"] for r in rows) <= 2
    probe = make_agent("ppo", trainer.obs_space, trainer.action_space, cfg.agent, "cpu")
    stale = 0
    for v, lo, hi, obs, actions, logprobs in seen:
        assert lo == hi  # a rollout acts with one version, stamped on every row
        flat_obs, flat_a = obs.reshape(-1, *obs.shape[2:]), actions.reshape(-1)
        probe.net.load_state_dict(weights[hi])
        dist, _ = probe.net(flat_obs)
        torch.testing.assert_close(dist.log_prob(flat_a), logprobs.reshape(-1))  # behaviour log-probs stored
        if hi < v:  # stale data: the learner's policy is not the behaviour policy, so the ratio starts away from 1
            stale += 1
            probe.net.load_state_dict(weights[v])
            assert (probe.net(flat_obs)[0].log_prob(flat_a) - logprobs.reshape(-1)).abs().max() > 1e-4
    assert stale == 6
    # Reproducible, and resumed exactly: a run stopped at its checkpoint (640 frames, pipeline drained) and resumed
    # writes the uninterrupted run's rows (lr not annealed: the budget differs).
    first = _ppo_cfg(tmp_path, "s2b", workers=2, max_staleness=2, frames=640, eval_every_frames=640, agent=agent)
    ray_trainer_class(first)(first).run()
    again = _ppo_cfg(tmp_path, "s2b", workers=2, max_staleness=2, frames=1024, eval_every_frames=640, agent=agent)
    ray_trainer_class(again)(again, resume=True).run()
    def same(row):  # all but the timing columns (per-worker frames/s among them)
        return {k: v for k, v in _strip(row).items() if not (k.startswith("worker") and k.endswith("_fps"))}

    assert [same(r) for r in rows] == [same(r) for r in read_rows(tmp_path / "s2b", "train")]


def test_ppo_with_two_data_parallel_learners_and_bounded_staleness(tmp_path):
    """--learners 2 (gloo on CPU) with --max-staleness 1: the helper learner updates in step with the trainer's own
    (identical weights at the end), the updates are logged, and --learners refuses what it cannot run."""
    cfg = _ppo_cfg(tmp_path, "ddp", workers=2, learners=2, max_staleness=1, frames=512, eval_every_frames=10_000)
    trainer = ray_trainer_class(cfg)(cfg)
    close = trainer._close

    def check_then_close(**kw):  # before the learners stop: the helper holds the trainer's weights
        group = trainer.learner_group
        helper = group.helper_parameters(1)
        for k, v in trainer.agent.net.state_dict().items():
            assert torch.equal(helper[k], v), k
        close(**kw)

    trainer._close = check_then_close
    trainer.run()
    rows = read_rows(tmp_path / "ddp", "train")
    assert [r["staleness_max"] for r in rows] == [0, 1, 1, 1]
    assert all(np.isfinite(r["policy_loss"]) and r["epochs"] == 2 for r in rows)
    assert "2 data-parallel learners" in trainer.cfg.decisions["learners"]
    with pytest.raises(ConfigError, match="without weight perturbation"):
        off = _off_cfg(tmp_path, "x", learners=2, agent={**OFF_POLICY["agent"], "perturb": "dormant"})
        ray_trainer_class(off)(off)
    bad = _ppo_cfg(tmp_path, "bad", workers=2, learners=3)  # 128 rows in 2 minibatches do not split 3 ways
    with pytest.raises(ConfigError, match="--learners 3"):
        ray_trainer_class(bad)(bad)
    assert not (tmp_path / "bad").exists()


def test_off_policy_two_workers_survives_a_killed_worker_and_resumes(tmp_path):
    cfg = _off_cfg(tmp_path, "run", frames=2400, eval_every_frames=1200, broadcast_every=4)
    trainer = ray_trainer_class(cfg)(cfg)
    assert type(trainer).__name__ == "RayTrainer"
    victim = trainer.pool.pids()[0]
    killed = threading.Event()

    def kill_when_running():
        while trainer.counters["frames"] < 800 and not killed.is_set():
            time.sleep(0.05)
        os.kill(victim, signal.SIGKILL)
        killed.set()

    threading.Thread(target=kill_when_running, daemon=True).start()
    summary = trainer.run()
    assert killed.is_set()
    c = trainer.counters
    assert summary["frames"] >= 2400 and c["restarts"] >= 1
    rows = read_rows(tmp_path / "run", "train")
    assert rows[-1]["restarts"] == c["restarts"] >= 1
    assert rows[-1]["updates"] == c["updates"] > 0 and rows[-1]["episodes"] == c["episodes"] > 0
    # Every agent step counted is stored once, held in an unfinished episode, or was dropped with the dead worker.
    stored = len(trainer.replay)  # transitions stored
    assert stored + trainer.assembler.open_steps() + c["dropped_agent_steps"] == c["agent_steps"]
    assert c["frames"] == 8 * c["agent_steps"]  # action repeat 8, each counted once
    assert {"worker0_fps", "worker1_fps", "staleness_max", "queue_ready", "inflight", "updates_per_s"} <= set(
        rows[-1])
    # Without --max-staleness, an 8-step chunk of 2 workers sees several updates (one per 2 agent steps) pass while
    # it is collected and waits: what test_staleness_stays_within_the_bound bounds to 3.
    assert max(r["staleness_max"] for r in rows) > 3
    # The learner killed after its last checkpoint: `pixelrl resume` (a new trainer, resume=True) goes on from it.
    more = _off_cfg(tmp_path, "run", frames=3200, eval_every_frames=1200, broadcast_every=4)
    resumed = ray_trainer_class(more)(more, resume=True)
    assert resumed.counters["updates"] == c["updates"] and len(resumed.replay) == len(trainer.replay)
    summary = resumed.run()
    assert summary["frames"] >= 3200
    assert read_rows(tmp_path / "run", "train")[len(rows) - 1] == rows[-1]  # rows up to the checkpoint kept


def test_staleness_stays_within_the_bound(tmp_path):
    cfg = _off_cfg(tmp_path, "bounded", frames=1600, eval_every_frames=10_000, chunk_steps=16, broadcast_every=2,
                   max_staleness=3)
    trainer = ray_trainer_class(cfg)(cfg)
    trainer.run()
    rows = read_rows(tmp_path / "bounded", "train")
    assert max(r["staleness_max"] for r in rows) <= 3
    # the bound throttles the workers, not the learner: every update the replay ratio owes is done
    assert rows[-1]["updates"] >= owed_updates(rows[-1]["agent_steps"], seed_steps=40, update_every=2,
                                               updates_per_step=1) - 16


@pytest.mark.parametrize("env_id,episode,over", [
    (ENV, EPISODE, {}),
    # pixels: a chunk ships each observation's newest frame only, and the replay gets the same slots
    ("dmc/cartpole-swingup", 125, {"obs": "pixels", "size": 32, "fast_render": True, "frame_stack": 3})])
def test_learner_given_the_same_data_makes_the_same_updates(env_id, episode, over):
    """A worker's chunk, assembled into the replay, equals the single-process path (an in-process env stepped with
    the same actions, stored step by step): the same replay, hence the same batches and updates."""
    from pixelrl.agents import make_agent
    from pixelrl.data.replay import ReplayBuffer
    from pixelrl.distributed.worker import EnvWorker
    from pixelrl.envs import make
    from tests.helpers import assert_same_agents

    if env_id.startswith("dmc/"):
        pytest.importorskip("dm_control", reason="pip install 'pixelrl[dmc]'")
    kw = {k: v for k, v in OFF_POLICY.items()
          if k not in ("progress", "video", "tensorboard", "threads", "eval_episodes", "eval_random")}
    cfg = build_config(env_id, "drqv2", **{**kw, **over}, action_repeat=8, run_dir="unused")
    kw = cfg.env_kwargs()
    worker = EnvWorker(cfg.env, 1, kw, agent=(cfg.agent_name, cfg.agent), torch_seed=3)
    first = worker.reset([7])
    chunk = worker.chunk(episode + 15, step=0, version=0)  # an episode's end and a reset inside the chunk
    env = make(cfg.env, seed=7, **kw)
    obs_space, act_space = env.observation_space, env.action_space

    def replay():
        return ReplayBuffer(obs_space, act_space, 1000, frame_stack=cfg.frame_stack or 1, nstep=cfg.agent.nstep,
                            discount=cfg.agent.discount, seed=5)

    dist, single = replay(), replay()
    assembler = EpisodeAssembler(dist)
    assembler.start(0, first[0])
    assert len(assembler.add_chunk(0, chunk)) == 1
    obs, _ = env.reset(seed=7)
    np.testing.assert_array_equal(obs, first[0])
    single.add_first(obs)
    for t in range(episode):  # the single-process loop: act, step, store
        obs, r, term, trunc, _ = env.step(chunk["action"][t, 0])
        single.add(chunk["action"][t, 0], float(r), obs, term, trunc)
    assert len(dist) == len(single) == episode  # transitions
    agents = []
    for buf in (dist, single):
        torch.manual_seed(0)
        agent = make_agent(cfg.agent_name, obs_space, act_space, cfg.agent, torch.device("cpu"))
        for _ in range(3):
            agent.update(buf.sample(8), step=100)
        agents.append(agent)
    assert_same_agents(*agents, "after 3 updates")
    # and the unfinished second episode is held, not stored
    assert assembler.open_steps() == 15


@pytest.mark.parametrize("agent_name", ["drqv2", "sac"])
def test_learner_inference_acts_as_the_workers_would(agent_name):
    """--inference learner: one forward pass over two workers' envs, each worker's noise (and warm-up actions) from
    the generator it would use itself, gives the actions the two workers choose acting alone with the same weights."""
    from pixelrl.agents import make_agent
    from pixelrl.distributed.worker import EnvWorker, act_batch

    kw = {k: v for k, v in OFF_POLICY.items()
          if k not in ("progress", "video", "tensorboard", "threads", "eval_episodes", "eval_random")}
    cfg = build_config(ENV, agent_name, **kw, action_repeat=8, run_dir="unused")
    env_kw, K, seeds = cfg.env_kwargs(), 2, (11, 12)
    alone = [EnvWorker(cfg.env, K, env_kw, agent=(cfg.agent_name, cfg.agent), torch_seed=s) for s in seeds]
    driven = [EnvWorker(cfg.env, K, env_kw, torch_seed=99) for _ in seeds]  # no agent: the learner acts
    torch.manual_seed(0)
    learner = make_agent(cfg.agent_name, alone[0].vec.single_observation_space, alone[0].vec.single_action_space,
                         cfg.agent, torch.device("cpu"))
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    for w in range(2):
        alone[w].reset([2 * w, 2 * w + 1])
        driven[w].reset([2 * w, 2 * w + 1])
    for step in (0, 1000):  # the uniform warm-up (step < num_seed_steps = 40), then the policy's noisy actions
        want = [wk.chunk(6, step=step, version=0, weights=learner.state_dict())["action"] for wk in alone]
        got = [[], []]
        for _ in range(6):
            actions = act_batch(learner, np.concatenate([wk.obs for wk in driven]), step=step,
                                generators=[(g, K) for g in gens])
            for w, wk in enumerate(driven):
                got[w].append(actions[w * K:(w + 1) * K])
                wk.step(actions[w * K:(w + 1) * K])
        for w in range(2):
            np.testing.assert_allclose(np.stack(got[w]), want[w], rtol=0, atol=1e-5)
        assert not np.allclose(want[0], want[1])  # the workers' noise differs


def test_off_policy_run_with_inference_in_the_learner_and_two_learners(tmp_path):
    cfg = _off_cfg(tmp_path, "learner", frames=1600, eval_every_frames=10_000, inference="learner", learners=2)
    trainer = ray_trainer_class(cfg)(cfg)
    assert "inference in the learner" in trainer.cfg.decisions["distributed"]
    assert "2 data-parallel learners" in trainer.cfg.decisions["learners"]
    close = trainer._close

    def check_then_close(**kw):  # before the learners stop: the helper holds the trainer's weights
        helper = trainer.learner_group.helper_parameters(1)
        for k, v in trainer.agent.actor.state_dict().items():
            assert torch.equal(helper["actor"][k], v), k
        close(**kw)

    trainer._close = check_then_close
    trainer.run()
    rows = read_rows(tmp_path / "learner", "train")
    c = trainer.counters
    assert all(r["inference_batch"] == 2 for r in rows)  # 2 workers x 1 env, one forward pass
    assert rows[-1]["updates"] == c["updates"] >= owed_updates(c["agent_steps"], seed_steps=40, update_every=2,
                                                               updates_per_step=1) - 1
    assert len(trainer.replay) + trainer.assembler.open_steps() == c["agent_steps"]
    # acted with the weights of the moment: the data is as old as the updates run while its step was in flight, once
    # the first episodes are stored one update per step (1 update per 2 agent steps, 2 envs)
    assert rows[-1]["staleness_max"] == 1
    with pytest.raises(ConfigError, match="--inference learner acts with"):
        _off_cfg(tmp_path, "x", inference="learner", broadcast_every=4)
    with pytest.raises(ConfigError, match="--inference must be"):
        _off_cfg(tmp_path, "x", inference="gpu")


def test_update_cadence_is_the_single_process_loops():
    for seed_steps, every, per in ((0, 1, 1), (40, 2, 1), (7, 3, 2)):
        done = 0
        for steps in range(200):
            assert owed_updates(steps, seed_steps=seed_steps, update_every=every, updates_per_step=per) == done
            if steps >= seed_steps and steps % every == 0:  # what train_episode does at agent step `steps`
                done += per


def test_bad_settings_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="add --workers N"):
        build_config("dmc/cartpole-swingup", "drqv2", chunk_steps=4, run_dir=str(tmp_path / "x"))
    with pytest.raises(ConfigError, match="--max-staleness"):
        build_config("dmc/cartpole-swingup", "drqv2", workers=2, broadcast_every=5, max_staleness=2,
                     run_dir=str(tmp_path / "x"))
    with pytest.raises(ConfigError, match="--max-staleness must be"):
        build_config("gym/CartPole-v1", "ppo", preset="paper", obs="state", workers=2, max_staleness=-1,
                     run_dir=str(tmp_path / "x"))
    build_config("gym/CartPole-v1", "ppo", preset="paper", obs="state", workers=2, max_staleness=0,
                 run_dir=str(tmp_path / "x"))  # PPO: 0 is synchronous rollouts (off-policy runs need >= 1)
    with pytest.raises(ConfigError, match="--max-staleness"):
        build_config("dmc/cartpole-swingup", "drqv2", workers=2, max_staleness=0, run_dir=str(tmp_path / "x"))
    with pytest.raises(ConfigError, match="--workers must be"):
        build_config("dmc/cartpole-swingup", "drqv2", workers=0, run_dir=str(tmp_path / "x"))
    cfg = build_config("gym/CartPole-v1", "ppo", preset="paper", obs="state", workers=3, run_dir=str(tmp_path / "p"),
                       agent={"num_envs": 4})
    with pytest.raises(ConfigError, match="num_envs"):
        ray_trainer_class(cfg)(cfg)
    assert not (tmp_path / "p").exists()
