"""Batched training (``--seeds``): K agents as one computation give each agent the updates it gets alone; the
trainer writes one single-run folder per seed and resumes after a kill exactly."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
import torch

from pixelrl.agents.batched import BatchedDrQv2
from pixelrl.agents.drqv2 import DrQv2Agent, DrQv2Config
from pixelrl.data.batch import Batch
from pixelrl.errors import ConfigError
from pixelrl.train.config import TrainConfig, parse_seeds
from pixelrl.train.logger import TIMING_COLUMNS, read_rows

SEEDS = (1, 2, 3)
B, A = 8, 2
PIX = (6, 12, 12)
TINY = dict(batch_size=B, feature_dim=8, hidden_dim=16, encoder_channels=(4, 4), encoder_strides=(2, 1), lr=1e-3,
            precision="fp32", num_seed_steps=0, stddev_schedule="linear(1.0,0.1,100)", augment_pad=2)


def _space(kind):
    pixels = gym.spaces.Box(0, 255, PIX, np.uint8)
    state = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
    return {"pixels": pixels, "state": state, "dict": gym.spaces.Dict({"pixels": pixels, "state": state})}[kind]


def _batches(kind, seed, n):
    g = torch.Generator().manual_seed(100 + seed)

    def obs():
        px = torch.randint(0, 256, (B, *PIX), dtype=torch.uint8, generator=g)
        st = torch.randn(B, 5, generator=g)
        return {"pixels": px, "state": st, "dict": {"pixels": px, "state": st}}[kind]

    return [Batch(obs=obs(), action=torch.rand(B, A, generator=g) * 2 - 1, reward=torch.rand(B, 1, generator=g),
                  discount=torch.full((B, 1), 0.97), next_obs=obs()) for _ in range(n)]


def _act_obs(kind, seed, dtype):
    rng = np.random.default_rng(seed)
    px = rng.integers(0, 256, PIX).astype(dtype)  # float pixels: the encoder then runs in the parameters' dtype
    st = rng.standard_normal(5).astype(np.float32)
    return {"pixels": px, "state": st, "dict": {"pixels": px, "state": st}}[kind]


def _agent(kind, seed, cfg):
    torch.manual_seed(seed)
    return DrQv2Agent(_space(kind), gym.spaces.Box(-1, 1, (A,), np.float32), cfg)


def _batched(kind, cfg):
    """The K agents and their generators, each started where a single run's global RNG is after building it."""
    agents, gens = [], []
    for s in SEEDS:
        agents.append(_agent(kind, s, cfg))
        gens.append(torch.Generator().manual_seed(0))
        gens[-1].set_state(torch.get_rng_state())
    return agents, gens


def _params(agent):
    return [p.detach() for m in (agent.encoder, agent.actor, agent.critic, agent.target_critic) for p in m.parameters()]


def _train_alone_and_batched(kind, cfg, n, obs_dtype):
    """``n`` steps of act + update: each seed alone (global RNG), then all seeds in one BatchedDrQv2."""
    data = {s: _batches(kind, s, n) for s in SEEDS}
    obs = {s: _act_obs(kind, s, obs_dtype) for s in SEEDS}
    alone = {}
    for s in SEEDS:
        agent = _agent(kind, s, cfg)
        acts = [(agent.act(obs[s], step=i, eval_mode=False), agent.update(data[s][i], step=i)) for i in range(n)]
        alone[s] = (agent, acts)
    agents, gens = _batched(kind, cfg)
    learner = BatchedDrQv2(agents, gens)
    together = []
    for i in range(n):
        acts = learner.act([obs[s] for s in SEEDS], step=i)
        together.append((acts, learner.update([data[s][i] for s in SEEDS], step=i)))
    learner.export_to_agents()
    return alone, agents, together


@pytest.fixture
def fp64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("extra", [{}, {"actor_pre_tanh_penalty": 1e-3, "num_q": 3, "critic_layernorm": True}])
def test_batched_updates_equal_single_agent_updates_fp64(fp64, extra):
    n = 25
    cfg = DrQv2Config(**TINY, **extra)
    alone, agents, together = _train_alone_and_batched("pixels", cfg, n, np.float64)
    for k, s in enumerate(SEEDS):
        single, steps = alone[s]
        diff = max((p - q).abs().max().item() for p, q in zip(_params(single), _params(agents[k])))
        assert diff < 1e-10, f"seed {s}: parameters differ by {diff} after {n} updates"
        for i, ((act1, m1), (acts, ms)) in enumerate(zip(steps, together)):
            np.testing.assert_allclose(acts[k], act1, atol=1e-6)  # float32 actions
            assert m1.keys() == ms[k].keys()
            np.testing.assert_allclose([ms[k][key] for key in m1], list(m1.values()), rtol=1e-5, atol=1e-6)
        # optimizer state and counters in the single-run checkpoint form, equal to the single agent's
        st1, st2 = single.state_dict(), agents[k].state_dict()
        assert st1.keys() == st2.keys() and st1["counters"] == st2["counters"] == {"num_updates": n}
        for opt in ("critic_opt", "actor_opt"):
            assert st1[opt]["param_groups"] == st2[opt]["param_groups"]
            for i, s1 in st1[opt]["state"].items():
                for key, v in s1.items():
                    assert torch.allclose(v.double(), st2[opt]["state"][i][key].double(), atol=1e-12), (opt, i, key)
    # the agents did not all learn the same thing (each has its own data, weights and noise)
    assert (_params(agents[0])[0] - _params(agents[1])[0]).abs().max() > 1e-3


@pytest.mark.parametrize("kind, extra", [("state", {}), ("dict", {}), ("pixels", {"augment_impl": "grid_sample"})])
def test_batched_matches_single_fp32(kind, extra):
    """What fp64 cannot run in the single agent (state inputs and grid_sample are cast to float32): fp32, close."""
    alone, agents, _ = _train_alone_and_batched(kind, DrQv2Config(**TINY, **extra), 10, np.float32)
    for k, s in enumerate(SEEDS):
        diff = max((p - q).abs().max().item() for p, q in zip(_params(alone[s][0]), _params(agents[k])))
        assert diff < 1e-4, f"{kind} seed {s}: {diff}"


def test_export_then_import_continues_exactly():
    """A checkpoint round trip through the agents' single-run state dicts (what resume does) changes nothing."""
    cfg = DrQv2Config(**TINY)
    data = {s: _batches("pixels", s, 4) for s in SEEDS}
    agents, gens = _batched("pixels", cfg)
    learner = BatchedDrQv2(agents, gens)
    for i in range(3):
        learner.update([data[s][i] for s in SEEDS], step=i)
    learner.export_to_agents()
    states = [a.state_dict() for a in agents]
    fresh, _ = _batched("pixels", cfg)
    for a, st in zip(fresh, states):
        a.load_state_dict(st)
    gens2 = [torch.Generator().manual_seed(0) for _ in SEEDS]
    for g, g2 in zip(gens, gens2):
        g2.set_state(g.get_state())
    resumed = BatchedDrQv2(fresh, gens2)
    m1 = learner.update([data[s][3] for s in SEEDS], step=3)
    m2 = resumed.update([data[s][3] for s in SEEDS], step=3)
    assert m1 == m2
    for name, p in learner.params.items():
        assert torch.equal(p, resumed.params[name]), name


def test_check_finite_names_the_diverged_agent():
    from pixelrl.errors import DivergenceError

    agents, gens = _batched("pixels", DrQv2Config(**TINY))
    learner = BatchedDrQv2(agents, gens)
    learner.check_finite("now", SEEDS)
    with torch.no_grad():
        learner.params["critic.trunk.0.weight"][1, 0, 0] = float("nan")
    with pytest.raises(DivergenceError, match=r"agent\(s\) 2 \(critic.trunk.0.weight\) are not finite now"):
        learner.check_finite("now", SEEDS)


def test_unsupported_mechanisms_are_refused_in_one_error():
    from pixelrl.mechanisms.hl_gauss import HLGaussConfig

    cfg = DrQv2Config(**TINY, critic="hl-gauss", aux=("taco",), exploration="awakened",
                      hl_gauss=HLGaussConfig(v_min=-10, v_max=210))
    agents = [DrQv2Agent(_space("pixels"), gym.spaces.Box(-1, 1, (A,), np.float32), cfg) for _ in range(2)]
    with pytest.raises(ConfigError) as e:
        BatchedDrQv2(agents, [torch.Generator() for _ in agents])
    msg = str(e.value)
    assert "critic='hl-gauss'" in msg and "aux=('taco',)" in msg and "exploration='awakened'" in msg


def test_precision_auto_and_its_resolved_value_batch_together():
    """The first seed's 'auto' decides; later seeds get the resolved value in their config (as the trainer does)."""
    first = _agent("pixels", 1, DrQv2Config(**{**TINY, "precision": "auto"}))
    second = _agent("pixels", 2, DrQv2Config(**{**TINY, "precision": first.precision}))
    learner = BatchedDrQv2([first, second], [torch.Generator(), torch.Generator()])
    assert len(learner.update([_batches("pixels", s, 1)[0] for s in (1, 2)], step=0)) == 2
    other = "bf16" if first.precision == "fp32" else "fp32"
    third = _agent("pixels", 3, DrQv2Config(**{**TINY, "precision": other}))
    with pytest.raises(ConfigError, match="precision"):
        BatchedDrQv2([first, third], [torch.Generator(), torch.Generator()])


def test_trainer_refuses_before_starting_envs(tmp_path):
    from pixelrl.train.batched import BatchedTrainer
    from pixelrl.train.setup import build_config

    for agent, named in (("drm", "exploration='awakened'"), ("sac", "--agent sac")):
        cfg = build_config("dmc/cartpole-swingup", agent, "none", "cpu", run_dir=str(tmp_path / "r"))
        with pytest.raises(ConfigError, match=f"DrQ-v2 core only.*{named}"):
            BatchedTrainer(cfg, [1, 2])
        assert not (tmp_path / "r").exists()


def test_resume_of_a_batched_run_in_use_is_refused_before_anything_changes(tmp_path):
    from pixelrl.errors import RunInUseError
    from pixelrl.train.batched import BATCH_FILE, BatchedTrainer
    from pixelrl.train.setup import build_config
    from pixelrl.utils.dataclass_io import to_dict

    run = tmp_path / "batch"
    ckpts = run / "s1" / "checkpoints"
    for name in ("frames_000000001000", "frames_000000002000"):
        (ckpts / name).mkdir(parents=True)
        (ckpts / name / "manifest.json").write_text("{}")
    (ckpts / "latest.json").write_text(json.dumps({"name": "frames_000000002000"}))
    cfg = build_config("dmc/cartpole-swingup", "drqv2", "none", "cpu", run_dir=str(run))
    (run / BATCH_FILE).write_text(json.dumps({"seeds": [1, 2], "config": to_dict(cfg)}))
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pixelrl.utils.atomic import RunLock; "
                               f"lock = RunLock({str(run)!r}); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunInUseError, match="in use by another pixelrl process"):
            BatchedTrainer.resume(run)
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in ckpts.iterdir()) == ["frames_000000001000", "frames_000000002000", "latest.json"]


def test_parse_seeds():
    assert parse_seeds("1-5") == (1, 2, 3, 4, 5)
    assert parse_seeds("1,3,7") == (1, 3, 7)
    assert parse_seeds("1-3,7") == (1, 2, 3, 7)
    for bad in ("", "5-1", "x", "1,1", "-2"):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)
    assert TrainConfig().seeds is None


# ------------------------------------------------------------------------------------------ end to end (CLI)

CLI = [
    "--env", "dmc/cartpole-swingup", "--preset", "none", "--size", "32", "--action-repeat", "8",
    "--fast-render", "--frames", "3000", "--eval-every-frames", "1000", "--eval-episodes", "1",
    "--threads", "1", "--device", "cpu", "--no-progress", "--no-tensorboard", "--no-video",
    "--agent.batch-size", "32", "--agent.hidden-dim", "32", "--agent.feature-dim", "16",
    "--agent.encoder-channels", "8", "8", "8", "8", "--agent.num-seed-steps", "60",
    "--agent.update-every-steps", "1", "--agent.replay-capacity", "5000", "--agent.precision", "fp32",
]


def _env():
    env = dict(os.environ)
    env.setdefault("MUJOCO_GL", "egl")
    env["PYTHONHASHSEED"] = "0"
    return env


def _pixelrl(*args):
    return subprocess.run([sys.executable, "-m", "pixelrl.cli.main", *args], env=_env(), capture_output=True,
                          text=True, check=False)


def _comparable(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


def _latest(run, seed):
    p = run / f"s{seed}" / "checkpoints" / "latest.json"
    return json.loads(p.read_text())["name"] if p.exists() else None


@pytest.mark.slow
def test_seeds_run_folders_and_resume_after_kill(tmp_path):
    pytest.importorskip("dm_control")
    ref = tmp_path / "ref"
    p = _pixelrl("train", "--seeds", "1,2", *CLI, "--run-dir", str(ref))
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads((ref / "batch.json").read_text())["seeds"] == [1, 2]
    assert (ref / "curve.png").exists() and len(json.loads((ref / "summary.json").read_text())["runs"]) == 2
    for s in (1, 2):
        run = ref / f"s{s}"
        for name in ("config.json", "train.csv", "eval.csv", "metrics.jsonl", "curve.png", "summary.json",
                     "checkpoints/latest.json", "replay/manifest.json"):
            assert (run / name).exists(), (s, name)
        cfg = json.loads((run / "config.json").read_text())
        assert cfg["seed"] == s and cfg["seeds"] is None and cfg["run_dir"] == str(run)
        assert [r["frames"] for r in read_rows(run, "eval")] == [0, 1000, 2000, 3000]
        assert any("critic_loss" in r for r in read_rows(run, "train"))
    assert _comparable(read_rows(ref / "s1")) != _comparable(read_rows(ref / "s2"))

    # seed 1 of the batch follows the single run of seed 1 (same draws; only the kernels' rounding differs)
    single = tmp_path / "single"
    p = _pixelrl("train", "--seed", "1", *CLI, "--run-dir", str(single))
    assert p.returncode == 0, p.stderr[-3000:]
    row1, row2 = (next(r for r in read_rows(d, "train") if "critic_loss" in r) for d in (single, ref / "s1"))
    assert row1.keys() == row2.keys()
    for key in ("episode_return", "critic_loss", "actor_loss", "critic_q1", "batch_reward"):
        assert row2[key] == pytest.approx(row1[key], rel=1e-4), key
    # a seed folder is a single run: a copy of it resumes alone (here: extended by one more evaluation)
    alone = tmp_path / "s2_alone"
    shutil.copytree(ref / "s2", alone)
    p = _pixelrl("resume", str(alone), "--frames", "4000")
    assert p.returncode == 0, p.stderr[-3000:]
    assert [r["frames"] for r in read_rows(alone, "eval")] == [0, 1000, 2000, 3000, 4000]

    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "pixelrl.cli.main", "train", "--seeds", "1,2", *CLI,
                             "--run-dir", str(run)], env=_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline:  # until both seeds have their checkpoint at 2000 frames, then kill mid-episode
        if _latest(run, 2) == "frames_000000002000":
            break
        if proc.poll() is not None:
            pytest.fail(f"training exited early: {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "summary.json").exists(), "the run finished before it could be killed"
    # as if the kill had come between the two seeds' checkpoints: seed 2 is one checkpoint behind seed 1
    ckpts = run / "s2" / "checkpoints"
    shutil.rmtree(ckpts / "frames_000000002000")
    (ckpts / "latest.json").write_text(json.dumps({"name": "frames_000000001000"}))

    r = _pixelrl("resume", str(run))
    assert r.returncode == 0, r.stderr[-3000:]
    for s in (1, 2):
        assert _comparable(read_rows(run / f"s{s}")) == _comparable(read_rows(ref / f"s{s}")), s


@pytest.mark.slow
def test_seeds_run_ended_by_the_time_budget_exits_cleanly_and_says_so(tmp_path):
    pytest.importorskip("dm_control")
    run = tmp_path / "budget"
    args = [a if a != "3000" else "200000" for a in CLI]
    p = _pixelrl("train", "--seeds", "1,2", *args, "--run-dir", str(run), "--time-budget-min", "0.05")
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["ended_by"] == "time_budget" and summary["frames"] < 200_000
    assert summary["target_frames"] == 200_000 and summary["time_budget_min"] == 0.05
    assert "time budget" in " ".join(p.stdout.split())


TINIER = [
    "--env", "dmc/cartpole-swingup", "--preset", "none", "--size", "32", "--action-repeat", "8", "--fast-render",
    "--frames", "1000", "--eval-every-frames", "1000", "--eval-episodes", "1", "--no-eval-random", "--threads", "1",
    "--device", "cpu", "--no-progress", "--no-video", "--no-tensorboard", "--no-async-env",
    "--agent.batch-size", "16", "--agent.hidden-dim", "16", "--agent.feature-dim", "8",
    "--agent.encoder-channels", "4", "4", "4", "4", "--agent.num-seed-steps", "60",
    "--agent.update-every-steps", "2", "--agent.replay-capacity", "5000", "--agent.precision", "fp32",
]


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != ".lock"}


@pytest.mark.slow
def test_a_failed_batched_resume_changes_no_file(tmp_path, capsys):
    """`pixelrl resume RUN --frames N` of a --seeds run loads every seed (config.json, the checkpoint all seeds have,
    replay, log) before it writes anything: a seed that fails to load leaves every file as it was (no new frame
    budget in batch.json or config.json, no checkpoint of another seed deleted, no log cut back); once repaired, the
    same resume works and records the new budget."""
    pytest.importorskip("dm_control")
    from pixelrl.cli.main import main

    run = tmp_path / "batch"
    assert main(["train", "--seeds", "1,2", *TINIER, "--run-dir", str(run)]) == 0
    capsys.readouterr()
    # seed 2 one checkpoint behind seed 1 (killed between the two seeds' checkpoints at 1000 frames), and seed 2's
    # older checkpoint damaged: seed 1 loads first, then seed 2 fails
    ckpts2 = run / "s2" / "checkpoints"
    shutil.rmtree(ckpts2 / "frames_000000001000")
    (ckpts2 / "latest.json").write_text(json.dumps({"name": "frames_000000000000"}))
    tensors = ckpts2 / "frames_000000000000" / "tensors.safetensors"
    good = tensors.read_bytes()
    tensors.write_bytes(good[:-50])
    before = _files(run)
    assert main(["resume", str(run), "--frames", "2000"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "tensors.safetensors" in err[0] and "Traceback" not in err[0], err
    assert _files(run) == before

    batch = run / "batch.json"
    batch_text = batch.read_text()
    batch.write_text(batch_text[:40])
    assert main(["resume", str(run), "--frames", "2000"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "batch.json" in err[0] and "not valid JSON" in err[0], err
    batch.write_text(batch_text)

    tensors.write_bytes(good)
    assert main(["resume", str(run), "--frames", "2000"]) == 0, capsys.readouterr().err
    assert json.loads(batch.read_text())["config"]["frames"] == 2000
    for s in (1, 2):
        assert json.loads((run / f"s{s}" / "config.json").read_text())["frames"] == 2000
        assert [r["frames"] for r in read_rows(run / f"s{s}", "eval")] == [0, 1000, 2000]
