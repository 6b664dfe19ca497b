"""A learned preference reward (RL-VLM-F's ensemble, Bradley-Terry fit and PEBBLE schedule) vs the true reward, on
dmc/cartpole-swingup from pixels with DrQ-v2's cpu-fast settings; the scripted oracle (the true return of each
frame, noise and "equal" rate 0 as in RL-VLM-F's runs) stands in for the VLM.

Online arms (each a fresh ``pixelrl train`` process, one after the other; the machine may be shared):

* ``true``      -- DrQ-v2 on the env's reward;
* ``prefs-N``   -- DrQ-v2 on ``--reward prefs:scripted`` with a budget of N queries (``--queries``, default 200 and
  1000): 50 pairs per round (RL-VLM-F's cartpole ``reward_batch``), the first round when the 500 warm-up steps end,
  then rounds spread so that the budget is spent by half of the run (``query_every`` = (half the agent steps -
  warm-up) / rounds; RL-VLM-F's 5000-step spacing would fit only a round or two in a CPU-sized run).

* ``prefs-N-segK`` (``--segment K``; ``--segment 1 K`` runs both kinds of arm) -- the same, but the oracle compares segments of K
  consecutive agent steps of one episode by their true returns and the model scores a segment by the sum of its
  per-step rewards (PEBBLE's scripted teacher, ``--reward.pref-segment K``). PEBBLE (BPref ``train_PEBBLE.yaml``),
  SURF and RL-VLM-F's PEBBLE baselines use 50-step segments at action repeat 1: 50 env frames. Deviation: at
  cpu-fast's action repeat 8 the same span is about 6 agent steps, so the runs here use K = 6 (48 env frames, a
  twentieth of a 125-step episode) -- 50 agent steps would be 400 frames, 40% of an episode, and would make every
  fit 8x dearer (a fit's cost grows with K; see the docs' measurements). The net still sees one frame per step.

* ``--pref-frames K`` / ``--pref-actions`` -- the prefs arms' reward nets read the K newest frames of the
  observation stack and/or the action (``--reward.pref-frames``, ``--reward.pref-actions``; our deviations from
  RL-VLM-F's single newest frame, named in the docs); the arms are named with ``-fK`` / ``-a`` / ``-fKa`` appended
  (e.g. ``prefs-1000-f3``).

* ``--query-span F`` -- the prefs arms' rounds are spread over the first F of the run's agent steps instead of half
  (1.0: a constant rate to the end, as RL-VLM-F's cartpole, whose budget outlasts its run); arms named ``-spanF``.
* ``--pref-logit-scale T`` -- the prefs (and frozen) arms' fits scale the Bradley-Terry logits by T
  (``--reward.pref-logit-scale``, our deviation: with tanh steps and single-step pairs, T = 1 fits a threshold
  reward); arms named ``-TT``.
* ``frozen-N`` (``--frozen N ...``) -- a model fitted once on N scripted pairs drawn uniformly from the true arm's
  whole replay (its good behaviour included), then DrQ-v2 trained on it with ``--reward prefs:DIR``: what the learned
  reward gives when neither the schedule nor the coverage of the labels stands in the way. Its ``fit`` records the
  held-out pair accuracy and the model's reward per decile of the env's (``by_true_decile``).

Reported per arm and seed: evaluation return vs env frames (the env's own return in every arm), the final return,
``ratio`` = final return of ``prefs-N`` / ``true`` (goal: >= 0.9), the query-efficiency curve (final return vs N),
and for the ``prefs`` arms the fit accuracy and how often the oracle's label agreed with the model's ordering.

Offline protocol (``--offline``): a dataset collected by the ``true`` arm's final policy with action noise
(``--offline-episodes``, ``--offline-noise``), a preference model fitted on N pairs of its frames labelled by the
scripted oracle (:func:`pixelrl.rewards.preference.fit_from_dataset`), the dataset relabelled with it
(``pixelrl dataset relabel --reward prefs:DIR``), and IQL (``--offline-steps`` updates) on the relabelled vs the
original dataset.

The JSON names the machine and is rewritten after every arm (``"complete": false`` and ``"done"`` listing the arms
finished until the last one is in), so a run cut short leaves its finished arms. ``--resume WORK`` continues such a
run in its work folder: finished arms are read back, an arm with a checkpoint continues with ``pixelrl resume``, the
rest run. Budget knobs: ``--frames``, ``--seeds``, ``--queries``, ``--offline-steps``.

    MUJOCO_GL=egl python benchmarks/preference_reward.py --frames 100000 --seeds 1 2 3 --offline   # the comparison
    MUJOCO_GL=egl python benchmarks/preference_reward.py --frames 3000 --queries 100 --offline --offline-steps 200 \\
        --offline-episodes 2 --eval-every 1000 --out /tmp/smoke.json                                    # smoke test
    MUJOCO_GL=egl python benchmarks/preference_reward.py ... --resume runs/bench-preference/20261207-161000  # go on
    MUJOCO_GL=egl python benchmarks/preference_reward.py --frames 100000 --seeds 1 --segment 1 6   # + segments
    MUJOCO_GL=egl python benchmarks/preference_reward.py --fit-ceiling --ceiling-skip-frames \
        --ceiling-segments 1 3 12 25 50 6 --segment 6 --out ceiling_segments.json     # what segments can tell
    MUJOCO_GL=egl python benchmarks/preference_reward.py --fit-ceiling --ceiling-skip-frames \
        --ceiling-inputs 1 3 3a --out ceiling_inputs.json              # stacked frames / the action as inputs
    MUJOCO_GL=egl python benchmarks/preference_reward.py --frames 100000 --queries 1000 --pref-frames 3   # online
    MUJOCO_GL=egl python benchmarks/preference_reward.py --frames 100000 --queries --frozen 1000 10000 \
        --pref-frames 3                                                       # rewards fitted on the true arm's data
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from _cli import cpu_fast_arm, run_pixelrl

ENV = "dmc/cartpole-swingup"
QUERY_BATCH = 50
WARMUP = 500  # cpu-fast's num_seed_steps
ACTION_REPEAT = 8  # cpu-fast


def common(frames: int, seed: int, run: Path, eval_every: int, eval_episodes: int) -> list[str]:
    return cpu_fast_arm(ENV, frames, seed, run, eval_every, eval_episodes)


def schedule(frames: int, queries: int, span: float = 0.5) -> dict:
    """Rounds of 50 pairs from the end of the warm-up until ``span`` of the run's agent steps (0.5: half the run,
    every file measured before ``--query-span`` existed; 1.0: a constant rate to the end, as RL-VLM-F's cartpole,
    whose 50 pairs every 5000 steps over 500k steps never reach its 10000-query budget)."""
    steps = frames // ACTION_REPEAT
    rounds = max(1, math.ceil(queries / QUERY_BATCH))
    every = max(1, (int(steps * span) - WARMUP) // rounds)
    return {"query_batch": QUERY_BATCH, "query_every": every, "max_queries": queries, "rounds": rounds,
            "span": span}


INPUTS = {"frames": 1, "actions": False, "span": 0.5, "logit_scale": 1.0}
"""What the prefs arms' reward nets read (``--pref-frames``, ``--pref-actions``; RL-VLM-F: one frame, no action), how
far into the run their queries go (``--query-span``) and their fit's logit scale (``--pref-logit-scale``)."""


def input_suffix(frames: int = 1, actions: bool = False, span: float = 0.5, logit_scale: float = 1.0) -> str:
    """``''`` for RL-VLM-F's input, else ``-f3`` (3 stacked frames), ``-a`` (with the action), ``-f3a``...; then
    ``-T5`` etc. for a logit scale and ``-span1`` etc. when the queries go on past half the run."""
    tag = (f"f{frames}" if frames > 1 else "") + ("a" if actions else "")
    return (f"-{tag}" if tag else "") + (f"-T{logit_scale:g}" if logit_scale != 1.0 else "") + \
        (f"-span{span:g}" if span != 0.5 else "")


def arm_name(n: int, segment: int = 1) -> str:
    """The key of a prefs arm: ``prefs-N`` for single frames (RL-VLM-F), ``prefs-N-segK`` for segments of K, with
    ``-fJ`` / ``-a`` / ``-fJa`` appended when the nets read J stacked frames and/or the action."""
    base = f"prefs-{n}" if segment == 1 else f"prefs-{n}-seg{segment}"
    return base + input_suffix(INPUTS["frames"], INPUTS["actions"], INPUTS["span"], INPUTS["logit_scale"])


def frozen_name(n: int, segment: int = 1) -> str:
    """The key of a ``--frozen`` arm: ``frozen-N`` (``-segK``, ``-fJ``... as :func:`arm_name`)."""
    return (f"frozen-{n}" if segment == 1 else f"frozen-{n}-seg{segment}") + input_suffix(
        INPUTS["frames"], INPUTS["actions"], logit_scale=INPUTS["logit_scale"])


def finished(run: Path, frames: int | None = None) -> bool:
    """Whether a run folder holds a finished run (its ``summary.json``, written at the end; and its last evaluation
    at ``frames`` when given)."""
    if not (run / "summary.json").is_file():
        return False
    if frames is None:
        return True
    from pixelrl.train.logger import read_rows

    evals = read_rows(run, "eval")
    return bool(evals) and evals[-1]["frames"] >= frames


REPORT_ONLY = False
"""``--report-only``: train nothing, write the JSON from the arms in the work folder as they are (unfinished ones
marked ``partial``)."""


def run_wall(run: Path) -> float:
    """The wall seconds a run logged at its last evaluation (its own clock; NaN when it has none)."""
    from pixelrl.train.logger import read_rows

    evals = read_rows(run, "eval")
    return float(evals[-1].get("wall_s", float("nan"))) if evals else float("nan")


def train_or_resume(args: list[str], run: Path, log: Path, walls: Path, frames: int | None = None) -> float:
    """Train an arm, or (``--resume``) read back a finished one / continue one from its last checkpoint. Returns the
    arm's wall seconds, summed over the benchmark's processes that trained it (kept in ``walls``, a JSON file of the
    work folder; an arm trained outside them reports its own clock at its last evaluation)."""
    spent = json.loads(walls.read_text()) if walls.is_file() else {}
    key = run.name
    if finished(run, frames) or REPORT_ONLY:
        return float(spent.get(key, run_wall(run)))
    if (run / "checkpoints" / "latest.json").is_file():
        s = run_pixelrl(["resume", str(run)], log.with_name(log.stem + f"-resume{time.strftime('%H%M%S')}.log"))
    else:
        if run.exists():  # started but no checkpoint yet: start over
            import shutil

            shutil.rmtree(run)
        s = run_pixelrl(args, log)
    spent[key] = float(spent.get(key, 0.0)) + s
    walls.write_text(json.dumps(spent, indent=1))
    return spent[key]


def compare(arm: dict, true: dict) -> dict:
    """``ratio_to_true`` (final returns, both arms finished; else None) and ``ratio_at_common_frames``: the ratio at
    the last evaluation both arms reached (what a partial arm can say)."""
    out: dict = {"ratio_to_true": None, "ratio_at_common_frames": None}
    if not arm.get("partial") and not true.get("partial") and true["final_eval_return"]:
        out["ratio_to_true"] = arm["final_eval_return"] / true["final_eval_return"]
    te, ae = dict(true["eval"]), dict(arm["eval"])
    common_frames = sorted(set(te) & set(ae))
    if common_frames and te[common_frames[-1]]:
        f = common_frames[-1]
        out["ratio_at_common_frames"] = {"frames": f, "ratio": ae[f] / te[f], "true": te[f], "prefs": ae[f]}
    return out


def read_run(run: Path) -> dict:
    from pixelrl.train.logger import read_rows

    evals, train = read_rows(run, "eval"), read_rows(run, "train")
    out = {"partial": not finished(run), "eval": [[r["frames"], r["eval_return"]] for r in evals],
           "final_eval_return": evals[-1]["eval_return"] if evals else None,
           "frames": evals[-1]["frames"] if evals else 0}
    if train and "pref_sent" in train[-1]:
        out.update({"queries_sent": train[-1]["pref_sent"], "labels_kept": train[-1]["pref_labels"],
                    "fit_acc": [[r["frames"], r["pref_fit_acc"]] for r in train if r["pref_rounds"] > 0]})
    return out


def true_arm_replay(true_run: Path) -> dict:
    """A finished arm's saved replay (its whole run): the per-slot frames ``x``, ``first``, ``ep_start``, the env's
    per-step reward ``r_env`` (0 on each episode's first slot), the stacking ``floor`` of every slot, the raw
    ``arrays`` and the env's spaces."""
    from pixelrl.data.replay import ReplayBuffer
    from pixelrl.envs import make
    from pixelrl.train.setup import load_run_config

    cfg = load_run_config(true_run)
    env = make(cfg.env, seed=0, **cfg.env_kwargs())
    replay = ReplayBuffer(env.observation_space, env.action_space, cfg.agent.replay_capacity,
                          frame_stack=cfg.frame_stack or 3, nstep=cfg.agent.nstep,
                          discount=cfg.agent.discount)
    env.close()
    replay.load(true_run / "replay")
    state = replay.state_dict()
    arrays = state["arrays"]
    first, ep_start = arrays["first"], arrays["ep_start"]
    lo = int(state["meta"]["lo"])
    return {"x": arrays["obs_0"], "first": first, "ep_start": ep_start, "arrays": arrays,
            "r_env": np.where(first, 0.0, arrays["reward"].astype(np.float64)),
            "floor": np.maximum(ep_start.astype(np.int64) - lo, 0), "observation_space": env.observation_space,
            "action_space": env.action_space, "frame_stack": cfg.frame_stack or 3}


def model_inputs(d: dict, rows: np.ndarray, spec) -> tuple[np.ndarray, np.ndarray | None]:
    """The net inputs (the slot's frame or its K stacked frames) and, for nets that read them, the actions of these
    replay rows (any shape) of :func:`true_arm_replay`'s data."""
    from pixelrl.rewards.preference import stack_slots

    xs = stack_slots(d["x"], rows, d["floor"], spec.frames) if spec.frames > 1 else d["x"][rows]
    acts = None
    if spec.action_dim:
        acts = d["arrays"]["action"][rows].astype(np.float32).reshape(*np.shape(rows), spec.action_dim)
    return xs, acts


def replay_rewards(d: dict, model) -> np.ndarray:
    """A model's reward of every slot of :func:`true_arm_replay`'s data (0 on each episode's first slot)."""
    r = np.zeros(len(d["x"]))
    steps = np.flatnonzero(~d["first"])
    for s in range(0, steps.size, 1024):  # the model's inputs (K stacked frames, actions) for every stored step
        rows = steps[s:s + 1024]
        r[rows] = model.rewards(*model_inputs(d, rows, model.spec))
    return r


def fit_on_true_arm(true_run: Path, queries: int, segment: int, seed: int, out: Path, **model_kwargs) -> dict:
    """The ``--frozen`` arms' reward: a preference model (RL-VLM-F's ensemble and fit; the inputs of
    ``--pref-frames`` / ``--pref-actions``) fitted once on ``queries`` pairs of ``segment``-step segments drawn
    uniformly from a finished true arm's whole replay and labelled by the scripted oracle (noiseless), saved to
    ``out``. The pairs cover everything that arm's agent did, its best behaviour included -- what the online arms'
    queries cannot see before their agent gets there. Returns the fit's record, the held-out pair accuracy (2000
    further pairs of the same replay) and :func:`reward_by_decile`. ``model_kwargs`` go to the model (e.g. fewer
    ``epochs`` in the tests)."""
    from pixelrl.rewards.oracles import ScriptedOracle
    from pixelrl.rewards.preference import PreferenceRewardModel, draw_pairs, load_preference_model

    d = true_arm_replay(true_run)
    if (out / "preference_model.json").is_file():  # fitted by an earlier (resumed) process
        model = load_preference_model(out)
        return {"queries": queries, "segment": segment, "model": str(out), "logit_scale": model.logit_scale,
                **model.history[-1].get("bench", {}), "by_true_decile": reward_by_decile(d, model)}
    model = PreferenceRewardModel(seed=seed, segment=segment, frames=INPUTS["frames"], actions=INPUTS["actions"],
                                  logit_scale=INPUTS["logit_scale"], **model_kwargs)
    model.bind(d["observation_space"], d["frame_stack"], d["action_space"])
    oracle = ScriptedOracle(seed=seed)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))

    def pairs(n: int) -> tuple:
        q = draw_pairs(model, d["first"], d["ep_start"], d["r_env"], lambda rows: model_inputs(d, rows, model.spec),
                       n, rng)
        if q is None:
            raise SystemExit(f"the replay of {true_run} has no {segment} consecutive steps of one episode")
        return q, oracle.label(q)

    t0 = time.perf_counter()
    for sent in range(0, queries, QUERY_BATCH):
        q, y = pairs(min(QUERY_BATCH, queries - sent))
        model.add_labels(q.first, q.second, y, actions_first=q.actions_first, actions_second=q.actions_second)
    fit = model.fit()
    q, y = pairs(2000)
    held = model.accuracy(q.first, q.second, y, actions_first=q.actions_first, actions_second=q.actions_second)
    bench = {"fit_acc": float(fit["acc"]), "fit_epochs": int(fit["epochs"]), "held_out_acc": float(held),
             "fit_s": time.perf_counter() - t0, "true_run": str(true_run)}
    model.history[-1]["bench"] = bench
    model.save(out, extra={"true_run": str(true_run), "queries": queries})
    return {"queries": queries, "segment": segment, "model": str(out), "logit_scale": model.logit_scale, **bench,
            "by_true_decile": reward_by_decile(d, model)}


def reward_by_decile(d: dict, model) -> dict:
    """How a model's per-step reward follows the env's over a replay (:func:`true_arm_replay`): the env's per-step
    reward cut at its deciles, and per decile the model reward's mean and std -- a threshold reward shows as -1 below
    the median and +1 above it -- plus the Spearman correlation over all steps."""
    from scipy.stats import spearmanr

    steps = np.flatnonzero(~d["first"])
    r, t = replay_rewards(d, model)[steps], d["r_env"][steps]
    edges = np.quantile(t, np.linspace(0, 1, 11))
    rows = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        k = (t >= lo) & ((t < hi) if i < 9 else (t <= hi))
        rows.append({"env_reward": [float(lo), float(hi)], "steps": int(k.sum()),
                     "model_mean": float(r[k].mean()) if k.any() else None,
                     "model_std": float(r[k].std()) if k.any() else None})
    return {"deciles": rows, "spearman": float(spearmanr(r, t).statistic)}


def reward_on_true_arm(prefs_run: Path, true_run: Path, segment: int, seed: int = 0) -> dict:
    """How the learned reward of a finished prefs arm (its model after the last round) ranks what the true arm's
    agent did: on every step of the true arm's saved replay (its whole run, env rewards), the Spearman correlation
    of the model's and the env's per-episode return, and the share of 2000 random pairs of steps and of segments of
    ``segment`` steps (one episode each) that the model orders as the oracle would -- over the whole replay and over
    the episodes of the run's last quarter, where the true arm's agent is best; and the model's mean return of those
    last-quarter episodes beside the one the prefs arm's own agent collected in its last quarter (``train.csv``'s
    ``reward_model_return``): higher on the true arm's episodes means the learned reward did prefer the better
    behaviour and the prefs agent did not find it. Only the true arm's own data."""
    from scipy.stats import spearmanr

    from pixelrl.rewards.preference import load_preference_model, sample_segment_starts, segment_rows

    d = true_arm_replay(true_run)
    x, first, ep_start, r_env = d["x"], d["first"], d["ep_start"], d["r_env"]
    r_model = replay_rewards(d, load_preference_model(prefs_run))
    episodes = np.unique(ep_start)
    ret_env = np.array([r_env[ep_start == e].sum() for e in episodes])
    ret_model = np.array([r_model[ep_start == e].sum() for e in episodes])
    rng = np.random.default_rng(seed)
    late = np.isin(ep_start, episodes[int(len(episodes) * 0.75):])
    out: dict = {"episodes": int(len(episodes)), "steps": int((~first).sum()),
                 "episode_return_spearman": float(spearmanr(ret_model, ret_env).statistic),
                 "last_quarter_mean_env_return": float(ret_env[int(len(episodes) * 0.75):].mean()),
                 "last_quarter_mean_model_return": float(ret_model[int(len(episodes) * 0.75):].mean())}
    from pixelrl.train.logger import read_rows

    own = [r["reward_model_return"] for r in read_rows(prefs_run, "train")][-int(len(episodes) * 0.25):]
    out["prefs_agent_last_quarter_mean_model_return"] = float(np.mean(own)) if own else None
    for k in sorted({1, segment}):
        for where, mask in (("all", np.ones(len(x), bool)), ("last_quarter", late)):
            # rows outside `mask` act as episode starts, so no segment reaches into them
            a0 = sample_segment_starts(first | ~mask, ep_start, 2000, k, rng)
            b0 = sample_segment_starts(first | ~mask, ep_start, 2000, k, rng)
            ra, rb = segment_rows(a0, k), segment_rows(b0, k)
            y = (r_env[ra].sum(1) < r_env[rb].sum(1)).astype(np.int64)
            acc = float(((r_model[rb].sum(1) > r_model[ra].sum(1)).astype(np.int64) == y).mean())
            out[f"pair_acc_K{k}_{where}"] = acc
    return out


def offline(args, work: Path, seed: int, policy_run: Path) -> dict:
    """Collect -> fit a preference model on N labelled pairs -> relabel -> IQL, vs IQL on the true reward."""
    from pixelrl.data.dataset import load_dataset
    from pixelrl.rewards.oracles import ScriptedOracle
    from pixelrl.rewards.preference import fit_from_dataset

    data = work / f"offline-s{seed}" / "data"
    data.parent.mkdir(parents=True, exist_ok=True)
    walls = work / "walls.json"
    out: dict = {}
    done = data.parent / "collected.json"  # written once the dataset is complete
    if done.is_file():
        out["collect_s"] = json.loads(done.read_text())["collect_s"]
    else:
        if data.exists():
            import shutil

            shutil.rmtree(data)
        out["collect_s"] = run_pixelrl(["collect", "--policy", str(policy_run), "--episodes", str(args.offline_episodes),
                                "--noise-std", str(args.offline_noise), "--seed", str(seed), "--out", str(data),
                                "--no-progress", "--device", "cpu"], data.parent / "collect.log")
        done.write_text(json.dumps({"collect_s": out["collect_s"]}))
    ds = load_dataset(data)
    returns = [float(np.sum(e["rewards"])) for e in ds.iter_episodes()]
    out["dataset"] = {"episodes": len(returns), "transitions": ds.num_transitions, "mean_return": float(np.mean(returns))}
    for n in args.queries:
        model_dir = data.parent / f"rm-{n}"
        relabelled = data.parent / f"data-prefs-{n}"
        arm_file = data.parent / f"prefs-{n}.json"
        if arm_file.is_file():  # fitted and relabelled by an earlier process of this work folder
            out[f"prefs-{n}"] = json.loads(arm_file.read_text())
            continue
        if REPORT_ONLY:
            continue
        t0 = time.perf_counter()
        model = fit_from_dataset(ds, ScriptedOracle(seed=seed), queries=n, out=model_dir, seed=seed)
        arm = {"fit": model.history[-1], "fit_s": time.perf_counter() - t0}
        if relabelled.exists():
            import shutil

            shutil.rmtree(relabelled)
        arm["relabel_s"] = run_pixelrl(["dataset", "relabel", str(data), "--out", str(relabelled), "--reward",
                                    f"prefs:{model_dir}", "--device", "cpu", "--no-progress"],
                                   data.parent / f"relabel-{n}.log")
        arm_file.write_text(json.dumps(arm))
        out[f"prefs-{n}"] = arm
    for name, path in [("true", data)] + [(f"prefs-{n}", data.parent / f"data-prefs-{n}") for n in args.queries]:
        run = data.parent / f"iql-{name}"
        if REPORT_ONLY and not finished(run):
            continue
        s = train_or_resume(["train", "--dataset", str(path), "--agent", "iql", "--preset", "none", "--size", "48",
                     "--action-repeat", str(ACTION_REPEAT), "--fast-render", "--offline-steps", str(args.offline_steps),
                     "--eval-every-frames", str(10 ** 9), "--eval-episodes", str(args.eval_episodes),
                     "--seed", str(seed), "--no-video", "--no-tensorboard", "--no-progress", "--run-dir", str(run)],
                    run, data.parent / f"iql-{name}.log", walls)
        from pixelrl.train.logger import read_rows

        evals = read_rows(run, "eval")
        out.setdefault(name, {})["iql_final_eval_return"] = evals[-1]["eval_return"] if evals else None
        out[name]["iql_s"] = s
    base = out.get("true", {}).get("iql_final_eval_return")
    for n in args.queries:
        r = out.get(f"prefs-{n}", {}).get("iql_final_eval_return")
        if r is None:
            continue
        out[f"prefs-{n}"]["ratio_to_true"] = (r / base) if base else None
    return out


def swingup_action(physics, rng: np.random.Generator, noise: float) -> np.ndarray:
    """A scripted cart-pole controller for the fit-ceiling frames: pump energy (push along the pole's swing) until
    the pole is near upright, then a damping push; ``noise`` Gaussian std added. Not a good policy -- it only makes
    frames from hanging to upright."""
    cos, vel, x = float(physics.pole_angle_cosine()[0]), float(physics.angular_vel()[0]), float(physics.cart_position())
    a = -3.0 * vel - 0.5 * x if cos > 0.8 else (1.0 if vel * cos <= 0 else -1.0)
    return np.clip(np.array([a]) + rng.normal(0.0, noise, 1), -1, 1).astype(np.float32)


def fit_ceiling(args) -> dict:
    """How well can one frame order pairs that the scripted oracle labels? Frames at the cpu-fast settings (48x48,
    action repeat 8, fast render) from ``--ceiling-episodes`` episodes (a third each: uniform random actions, the
    scripted swing-up controller, the controller with noise 0.5); 1000 pairs to fit and 2000 held out, labelled by
    the oracle (the env's reward summed over the agent step's 8 frames). Measured: the share of near-ties, the
    held-out accuracy of orderings that use only what the last frame shows (pole upright and cart position: the
    DMC reward's visible factors; an MLP on them) or also the angular velocity, and the CNN ensemble's train and
    held-out accuracy after 50 passes (RL-VLM-F's ``reward_update``) and after 200."""
    import torch

    from pixelrl.envs import make
    from pixelrl.rewards.preference import InputSpec, PreferenceRewardModel

    torch.manual_seed(0)
    env = make(ENV, seed=0, action_repeat=ACTION_REPEAT, frame_stack=3, size=48, fast_render=True)
    physics = env.unwrapped.physics
    rng = np.random.default_rng(0)
    frames, rewards, states, episode, stacks, actions = [], [], [], [], [], []
    for ep in range(args.ceiling_episodes):
        env.reset(seed=ep)
        done = False
        while not done:
            episode.append(ep)
            a = rng.uniform(-1, 1, 1).astype(np.float32) if ep % 3 == 0 else \
                swingup_action(physics, rng, 0.0 if ep % 3 == 1 else 0.5)
            obs, r, term, trunc, _ = env.step(a)
            done = term or trunc
            frames.append(obs[-3:])
            stacks.append(obs)  # the whole 3-frame stack (for --ceiling-inputs)
            actions.append(a)
            rewards.append(r)
            states.append([physics.pole_angle_cosine()[0], float(physics.cart_position()),
                           physics.angular_vel()[0]])
    env.close()
    X, R, S = np.stack(frames), np.asarray(rewards), np.asarray(states, dtype=np.float32)
    n = len(R)
    a, b = rng.integers(0, n, 1000), rng.integers(0, n, 1000)
    ta, tb = rng.integers(0, n, 2000), rng.integers(0, n, 2000)
    y, ty = (R[a] < R[b]).astype(np.int64), (R[ta] < R[tb]).astype(np.int64)
    dr = np.abs(R[ta] - R[tb])
    out: dict = {"frames": int(n), "episodes": args.ceiling_episodes, "fit_pairs": 1000, "heldout_pairs": 2000,
                 "reward_per_agent_step": {"min": float(R.min()), "mean": float(R.mean()), "max": float(R.max())},
                 "heldout_share_abs_diff_below_0.1": float((dr < 0.1).mean()),
                 "heldout_share_abs_diff_below_0.3": float((dr < 0.3).mean())}
    visible = (S[:, 0] + 1) / 2 * (1 + np.exp(-S[:, 1] ** 2)) / 2
    out["heldout_acc_order_by_last_frame_upright_x_centered"] = float(((visible[tb] > visible[ta]) == ty).mean())
    for name, cols in (() if args.ceiling_skip_frames else
                       (("last_frame_cos_and_cart_x", [0, 1]), ("plus_angular_velocity", [0, 1, 2]))):
        m = PreferenceRewardModel(InputSpec(None, False, (len(cols),)), seed=0, epochs=200)
        m.add_labels(S[a][:, cols], S[b][:, cols], y)
        f = m.fit()
        out[f"state_mlp_{name}"] = {"train_acc": f["acc"], "heldout_acc": m.accuracy(S[ta][:, cols], S[tb][:, cols], ty)}
    for epochs in (() if args.ceiling_skip_frames else (50, 200)):
        t0 = time.perf_counter()
        m = PreferenceRewardModel(InputSpec(None, True, (3, 48, 48)), seed=0, epochs=epochs)
        m.add_labels(X[a], X[b], y)
        f = m.fit()
        out[f"cnn_{epochs}_passes"] = {"train_acc": f["acc"], "heldout_acc": m.accuracy(X[ta], X[tb], ty),
                                       "seconds": time.perf_counter() - t0}
        print(json.dumps(out, indent=1), flush=True)
    if args.ceiling_segments:
        out["segments"] = segment_ceiling(args, X, R, S, np.asarray(episode), rng)
        print(json.dumps(out, indent=1), flush=True)
    if args.ceiling_inputs:
        out["inputs"] = input_ceiling(args, np.stack(stacks), np.stack(actions).astype(np.float32), R, S,
                                      np.asarray(episode), a, b, ta, tb)
        print(json.dumps(out, indent=1), flush=True)
    return out


def parse_input(tag: str) -> tuple[int, bool]:
    """``'1'`` -> (1 frame, no action), ``'3'`` -> (3 frames, no action), ``'3a'`` -> (3 frames, with the action)."""
    actions = tag.endswith("a")
    try:
        k = int(tag[:-1] if actions else tag)
    except ValueError:
        raise SystemExit(f"--ceiling-inputs takes K or Ka (K stacked frames, a: with the action), got {tag!r}")
    if not 1 <= k <= 3:
        raise SystemExit(f"--ceiling-inputs: K must be 1..3 (the env stacks 3 frames), got {tag!r}")
    return k, actions


def slot_layout(episode: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The steps laid out like replay slots, one "first" row (the reset observation, never a step) per episode:
    ``rows`` (the step index of each slot, -1 for a first row), ``first`` and ``ep_start`` (the slot of each slot's
    episode start), as :func:`pixelrl.rewards.preference.sample_segment_starts` reads them."""
    rows, first, ep_start, pos = [], [], [], 0
    for ep in np.unique(episode):
        idx = np.flatnonzero(episode == ep)
        rows += [-1, *idx.tolist()]
        first += [True] + [False] * len(idx)
        ep_start += [pos] * (len(idx) + 1)
        pos += len(idx) + 1
    return np.asarray(rows), np.asarray(first), np.asarray(ep_start)


def input_ceiling(args, stacks: np.ndarray, A: np.ndarray, R: np.ndarray, S: np.ndarray, episode: np.ndarray,
                  a: np.ndarray, b: np.ndarray, ta: np.ndarray, tb: np.ndarray) -> dict:
    """What the reward net's opt-in inputs can tell (``--ceiling-inputs``, e.g. ``1 3 3a``: the newest frame, the
    3 stacked frames, and those plus the action -- ``--reward.pref-frames`` / ``--reward.pref-actions``): for each
    segment length of ``--ceiling-input-segments`` the CNN ensemble fitted for ``--ceiling-cnn-passes`` passes on
    1000 oracle-labelled pairs and its held-out accuracy on 2000. Segment 1 reuses the single-frame measurement's
    pairs (``a``, ``b``, ``ta``, ``tb``), so its ``1`` entry repeats ``cnn_50_passes``; longer segments draw their
    own pairs once (``sample_segment_starts``, the same for every input). Also the state MLP on (cos, cart x,
    angular velocity) plus the action, the best a net reading velocity and action could do."""
    from pixelrl.rewards.preference import InputSpec, PreferenceRewardModel, sample_segment_starts, segment_rows

    rng = np.random.default_rng(1)
    rows, first, ep_start = slot_layout(episode)
    out: dict = {"passes": args.ceiling_cnn_passes}
    for k in args.ceiling_input_segments:
        if k == 1:
            pa, pb, qa, qb = a[:, None], b[:, None], ta[:, None], tb[:, None]
        else:
            pa, pb, qa, qb = (rows[segment_rows(sample_segment_starts(first, ep_start, n, k, rng), k)]
                              for n in (1000, 1000, 2000, 2000))
        y = (R[pa].sum(1) < R[pb].sum(1)).astype(np.int64)
        ty = (R[qa].sum(1) < R[qb].sum(1)).astype(np.int64)
        res: dict = {}
        cols = [0, 1, 2]
        m = PreferenceRewardModel(InputSpec(None, False, (3,), 1, A.shape[1]), seed=0, epochs=args.ceiling_cnn_passes,
                                  segment=k, actions=True)
        m.add_labels(S[pa][..., cols], S[pb][..., cols], y, actions_first=A[pa], actions_second=A[pb])
        f = m.fit()
        res["state_mlp_cos_x_angular_velocity_and_action"] = {
            "train_acc": f["acc"], "passes": f["epochs"],
            "heldout_acc": m.accuracy(S[qa][..., cols], S[qb][..., cols], ty, actions_first=A[qa],
                                      actions_second=A[qb])}
        for tag in args.ceiling_inputs:
            frames, actions = parse_input(tag)
            t0 = time.perf_counter()
            spec = InputSpec(None, True, (3, 48, 48), frames, A.shape[1] if actions else 0)
            m = PreferenceRewardModel(spec, seed=0, epochs=args.ceiling_cnn_passes, segment=k, frames=frames,
                                      actions=actions)
            X = stacks[:, -3 * frames:]
            kw = {"actions_first": A[pa], "actions_second": A[pb]} if actions else {}
            m.add_labels(X[pa], X[pb], y, **kw)
            f = m.fit()
            kw = {"actions_first": A[qa], "actions_second": A[qb]} if actions else {}
            res[f"cnn_{tag}"] = {"frames": frames, "actions": actions, "train_acc": f["acc"], "passes": f["epochs"],
                                 "heldout_acc": m.accuracy(X[qa], X[qb], ty, **kw),
                                 "seconds": time.perf_counter() - t0}
            print(f"inputs, segment {k}: {json.dumps(res)}", flush=True)
        out[f"K{k}"] = res
    return out


def segment_ceiling(args, X: np.ndarray, R: np.ndarray, S: np.ndarray, episode: np.ndarray,
                    rng: np.random.Generator) -> dict:
    """The same question for segments of K consecutive agent steps of one episode (PEBBLE's scripted teacher: the
    oracle labels a pair by the segments' true returns, the model scores a segment by the sum of its per-step
    rewards). For each K of ``--ceiling-segments``: 1000 fit and 2000 held-out pairs of segments drawn with
    :func:`pixelrl.rewards.preference.sample_segment_starts` (never across episodes) and the held-out accuracy of
    the visible-factor ordering summed over the segment; for K = ``--segment`` also the state MLP on (cos, cart x)
    and on (cos, cart x, angular velocity) and (K > 1) the CNN ensemble, each fitted for ``--ceiling-cnn-passes``
    passes (RL-VLM-F's ``reward_update`` is 50; a fit stops when its training accuracy exceeds 0.97: the passes it
    ran are reported) -- a fit's cost grows with K, so only the K the online arms use is fitted."""
    from pixelrl.rewards.preference import InputSpec, PreferenceRewardModel, sample_segment_starts, segment_rows

    rows, first, ep_start = slot_layout(episode)
    visible = (S[:, 0] + 1) / 2 * (1 + np.exp(-S[:, 1] ** 2)) / 2
    out: dict = {}
    for k in args.ceiling_segments:
        def pairs(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            a = rows[segment_rows(sample_segment_starts(first, ep_start, n, k, rng), k)]
            b = rows[segment_rows(sample_segment_starts(first, ep_start, n, k, rng), k)]
            assert (a >= 0).all() and (b >= 0).all() and (episode[a] == episode[a][:, :1]).all()
            return a, b, (R[a].sum(1) < R[b].sum(1)).astype(np.int64)

        a, b, y = pairs(1000)
        ta, tb, ty = pairs(2000)
        dr = np.abs(R[ta].sum(1) - R[tb].sum(1))
        res: dict = {"heldout_share_abs_diff_below_0.1": float((dr < 0.1).mean()),
                     "heldout_acc_order_by_visible_factors_summed": float(
                         ((visible[tb].sum(1) > visible[ta].sum(1)) == ty).mean())}
        if k not in args.segment:
            out[f"K{k}"] = res
            print(f"segment {k}: {json.dumps(res)}", flush=True)
            continue
        for name, cols in (("cos_and_cart_x", [0, 1]), ("plus_angular_velocity", [0, 1, 2])):
            m = PreferenceRewardModel(InputSpec(None, False, (len(cols),)), seed=0, epochs=args.ceiling_cnn_passes,
                                      segment=k)
            m.add_labels(S[a][..., cols], S[b][..., cols], y)
            f = m.fit()
            res[f"state_mlp_{name}"] = {"train_acc": f["acc"], "passes": f["epochs"],
                                        "heldout_acc": m.accuracy(S[ta][..., cols], S[tb][..., cols], ty)}
        print(f"segment {k}: {json.dumps(res)}", flush=True)
        if k > 1:
            t0 = time.perf_counter()
            m = PreferenceRewardModel(InputSpec(None, True, (3, 48, 48)), seed=0, epochs=args.ceiling_cnn_passes,
                                      segment=k)
            m.add_labels(X[a], X[b], y)
            f = m.fit()
            res[f"cnn_{args.ceiling_cnn_passes}_passes"] = {
                "train_acc": f["acc"], "passes": f["epochs"], "heldout_acc": m.accuracy(X[ta], X[tb], ty),
                "seconds": time.perf_counter() - t0}
        out[f"K{k}"] = res
        print(f"segment {k}: {json.dumps(res)}", flush=True)
    return out


def plot(result: dict, out: Path) -> Path:
    """Two panels from a result JSON: evaluation return vs env frames of every online arm (dashed: unfinished), and
    the query-efficiency curve (final return vs N, finished arms only) against the true reward's final return."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pixelrl.train.plot import save_figure

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for seed, arms in result["online"].items():
        for name, arm in arms.items():
            if not arm["eval"]:
                continue
            xs, ys = zip(*arm["eval"])
            a1.plot(xs, ys, "--" if arm.get("partial") else "-", marker="o", ms=3,
                    label=f"{name} {seed}" + (" (unfinished)" if arm.get("partial") else ""))
    a1.set_xlabel("env frames")
    a1.set_ylabel("eval return (true reward)")
    a1.legend(fontsize=8)
    curve = result.get("query_efficiency") or []
    for seg in sorted({c.get("segment", 1) for c in curve}):
        pts = [c for c in curve if c.get("segment", 1) == seg]
        a2.plot([c["queries"] for c in pts], [c["mean_final_return"] for c in pts], "o-",
                label="prefs:scripted" + (f", segments of {seg} steps" if seg > 1 else ", single frames"))
    if result.get("true_mean_final_return") is not None:
        a2.axhline(result["true_mean_final_return"], color="k", ls=":", label="true reward")
        a2.axhline(0.9 * result["true_mean_final_return"], color="grey", ls="--", lw=0.8, label="goal: 0.9 of true")
    a2.set_xlabel("queries N")
    a2.set_ylabel("final eval return")
    if a2.get_legend_handles_labels()[0]:
        a2.legend(fontsize=8)
    else:
        a2.text(0.5, 0.5, "no finished prefs arm yet", ha="center", transform=a2.transAxes)
    frames = result["config"]["frames"]
    fig.suptitle(f"{result['env']}, DrQ-v2 cpu-fast, {frames // 1000}k frames, {len(result['online'])} seed(s); "
                 f"{result['machine']}" + ("" if result.get("complete") else " -- partial"), fontsize=9)
    return save_figure(fig, out)


def cpu_flags() -> list[str]:
    """The SIMD flags of this CPU that decide torch's kernels (empty where /proc/cpuinfo is unreadable)."""
    from pixelrl.utils.precision import cpu_flags as all_flags

    return sorted(all_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"})


def summarise(result: dict, queries: list[int], segments: Sequence[int] = (1,)) -> None:
    """The query-efficiency curve (final return vs N, one per segment length, mean over the seeds whose arm
    finished -- partial arms are left out; N = 0 is not run: no reward at all) and the true arm's mean, from the
    arms done so far."""
    curve = []
    for segment, n in ((k, n) for k in segments for n in queries):
        key = arm_name(n, segment)
        arms = [result["online"][s][key] for s in result["online"]
                if key in result["online"][s] and not result["online"][s][key].get("partial")]
        if not arms:
            continue
        ratios = [a["ratio_to_true"] for a in arms if a.get("ratio_to_true") is not None]
        curve.append({"queries": n, "segment": segment, "seeds": len(arms),
                      "mean_final_return": float(np.mean([a["final_eval_return"] for a in arms])),
                      "mean_ratio_to_true": float(np.mean(ratios)) if ratios else None})
    result["query_efficiency"] = curve
    trues = [result["online"][s]["true"]["final_eval_return"] for s in result["online"]
             if "true" in result["online"][s] and not result["online"][s]["true"].get("partial")]
    result["true_mean_final_return"] = float(np.mean(trues)) if trues else None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=100_000, help="env frames per online run")
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--queries", type=int, nargs="*", default=[200, 1000],
                   help="query budgets N of the prefs arms (none: no prefs arms, e.g. with --frozen)")
    p.add_argument("--query-span", type=float, default=0.5,
                   help="share of the run's agent steps over which the prefs arms' rounds are spread (0.5: by half "
                        "the run; 1.0: a constant rate to the end, as RL-VLM-F's cartpole); arms named -spanF")
    p.add_argument("--frozen", type=int, nargs="*", default=[], metavar="N",
                   help="also run frozen-N arms: a model fitted once on N scripted pairs drawn from the true arm's "
                        "whole replay (fit_on_true_arm), then DrQ-v2 trained on it with --reward prefs:DIR -- what "
                        "the learned reward can give when its labels cover the good behaviour")
    p.add_argument("--eval-every", type=int, default=10_000)
    p.add_argument("--eval-episodes", type=int, default=5)
    p.add_argument("--offline", action="store_true", help="also run the offline protocol (IQL)")
    p.add_argument("--offline-episodes", type=int, default=20)
    p.add_argument("--offline-noise", type=float, default=0.3)
    p.add_argument("--offline-steps", type=int, default=20_000)
    p.add_argument("--work", default="runs/bench-preference", help="folder for the runs (a timestamped subfolder)")
    p.add_argument("--resume", default=None, metavar="WORK",
                   help="continue the benchmark in this work folder (the timestamped one an earlier run made): "
                        "finished arms are read back, unfinished ones resume from their last checkpoint")
    p.add_argument("--report-only", action="store_true",
                   help="with --resume: train nothing, write the JSON from the arms as they are (unfinished ones "
                        "marked partial, compared with the true arm at the last evaluation both reached)")
    p.add_argument("--plot", default=None, metavar="PNG", help="also draw the result JSON (--out) into this PNG")
    p.add_argument("--fit-ceiling", action="store_true",
                   help="instead of the RL arms, measure how well single frames can order scripted-oracle pairs "
                        "(see fit_ceiling) and write that JSON")
    p.add_argument("--ceiling-episodes", type=int, default=24)
    p.add_argument("--ceiling-segments", type=int, nargs="*", default=[],
                   help="with --fit-ceiling: also measure pairs of segments of these lengths K (agent steps)")
    p.add_argument("--ceiling-cnn-passes", type=int, default=50,
                   help="with --fit-ceiling --segment K: most passes of the MLP and CNN fits on segments of K")
    p.add_argument("--ceiling-inputs", nargs="*", default=[], metavar="K[a]",
                   help="with --fit-ceiling: also fit the CNN on these inputs -- K stacked frames, 'a': plus the "
                        "action (e.g. 1 3 3a; --reward.pref-frames / --reward.pref-actions)")
    p.add_argument("--ceiling-input-segments", type=int, nargs="+", default=[1],
                   help="with --ceiling-inputs: the segment lengths to fit them on")
    p.add_argument("--pref-frames", type=int, default=1,
                   help="stacked frames the prefs arms' reward nets read (--reward.pref-frames; RL-VLM-F: 1)")
    p.add_argument("--pref-logit-scale", type=float, default=1.0,
                   help="the prefs and frozen arms' fits scale the Bradley-Terry logits by this "
                        "(--reward.pref-logit-scale; RL-VLM-F: 1); arms named -T<scale>")
    p.add_argument("--pref-actions", action="store_true",
                   help="the prefs arms' reward nets also read the action (--reward.pref-actions)")
    p.add_argument("--ceiling-skip-frames", action="store_true",
                   help="with --fit-ceiling: skip the single-frame MLP and CNN fits (measured before)")
    p.add_argument("--segment", type=int, nargs="+", default=[1],
                   help="steps per compared segment of the prefs arms (--reward.pref-segment; PEBBLE's scripted "
                        "teacher); one set of arms per value, K > 1 named prefs-N-segK")
    p.add_argument("--out", default="benchmarks/results/preference_reward.json")
    p.add_argument("--label", default="", help="a note stored in the JSON (e.g. 'reduced configuration')")
    args = p.parse_args()

    from pixelrl.utils.machine import machine_description

    if args.fit_ceiling:
        result = {"benchmark": "preference_reward --fit-ceiling", "env": ENV, "machine": machine_description(),
                  "cpu_flags": cpu_flags(), "load_average_start": os.getloadavg(), "label": args.label,
                  "config": vars(args)}
        result["ceiling"] = fit_ceiling(args)
        result["load_average_end"] = os.getloadavg()
        Path(args.out).write_text(json.dumps(result, indent=1))
        return 0
    if min(args.segment) < 1:
        raise SystemExit(f"--segment must be >= 1, got {min(args.segment)}")
    if not 1 <= args.pref_frames <= 3:
        raise SystemExit(f"--pref-frames must be 1..3 (the env stacks 3 frames), got {args.pref_frames}")
    if not 0 < args.query_span <= 1:
        raise SystemExit(f"--query-span must be in (0, 1], got {args.query_span}")
    if not args.pref_logit_scale > 0:
        raise SystemExit(f"--pref-logit-scale must be > 0, got {args.pref_logit_scale}")
    INPUTS.update(frames=args.pref_frames, actions=bool(args.pref_actions), span=float(args.query_span),
                  logit_scale=float(args.pref_logit_scale))
    if args.offline and (args.pref_frames > 1 or args.pref_actions):
        raise SystemExit("--offline compares single-frame models; run it without --pref-frames / --pref-actions")
    if args.offline and max(args.segment) > 1:
        raise SystemExit("--offline compares single-frame models (fit_from_dataset's default); run it without --segment")
    global REPORT_ONLY
    REPORT_ONLY = bool(args.report_only)
    if REPORT_ONLY and not args.resume:
        raise SystemExit("--report-only reads a work folder: pass --resume WORK")
    if args.resume:
        work = Path(args.resume)
        if not work.is_dir():
            raise SystemExit(f"--resume {work}: no such work folder")
    else:
        work = Path(args.work) / time.strftime("%Y%m%d-%H%M%S")
        work.mkdir(parents=True)
    walls = work / "walls.json"
    result: dict = {"benchmark": "preference_reward", "env": ENV, "machine": machine_description(),
                    "cpu_flags": cpu_flags(), "load_average_start": os.getloadavg(), "label": args.label, "config": vars(args), "work": str(work), "complete": False, "done": [],
                    "online": {}, "offline": {}}
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def save(done: str, partial: bool = False) -> None:  # after every arm: a run cut short keeps what finished
        if not partial:
            result["done"].append(done)
        result.setdefault("load_average_after_arm", {})[done] = os.getloadavg()
        summarise(result, args.queries, args.segment)
        out_path.write_text(json.dumps(result, indent=1))

    for seed in args.seeds:
        arms = result["online"].setdefault(f"seed{seed}", {})
        true_run = work / f"true-s{seed}"
        wall = train_or_resume(["train", *common(args.frames, seed, true_run, args.eval_every, args.eval_episodes)],
                               true_run, work / f"true-s{seed}.log", walls, args.frames)
        arms["true"] = {"wall_s": wall, **read_run(true_run)}
        save(f"seed{seed}/true", arms["true"]["partial"])
        for seg, n in ((k, n) for k in args.segment for n in args.queries):
            sched = schedule(args.frames, n, args.query_span)
            name = arm_name(n, seg)
            run = work / f"{name.replace('-', '', 1)}-s{seed}"
            extra = ["--reward", "prefs:scripted", "--reward.query-batch", str(sched["query_batch"]),
                     "--reward.query-every", str(sched["query_every"]), "--reward.max-queries", str(n)]
            if seg > 1:
                extra += ["--reward.pref-segment", str(seg)]
            if args.pref_frames > 1:
                extra += ["--reward.pref-frames", str(args.pref_frames)]
            if args.pref_actions:
                extra += ["--reward.pref-actions"]
            if args.pref_logit_scale != 1.0:
                extra += ["--reward.pref-logit-scale", f"{args.pref_logit_scale:g}"]
            wall = train_or_resume(["train", *common(args.frames, seed, run, args.eval_every, args.eval_episodes),
                                    *extra], run, work / f"{run.name}.log", walls, args.frames)
            if REPORT_ONLY and not run.exists():
                continue
            arm = {"wall_s": wall, "schedule": sched, **read_run(run)}
            arm.update(compare(arm, arms["true"]))
            if not arm["partial"] and not arms["true"]["partial"] and (true_run / "replay").is_dir():
                arm["reward_on_true_arm_replay"] = reward_on_true_arm(run, true_run, seg, seed)
            arms[name] = arm
            save(f"seed{seed}/{name}", arm["partial"])
        for seg, n in ((k, n) for k in args.segment for n in args.frozen):
            name = frozen_name(n, seg)
            run, model_dir = work / f"{name}-s{seed}", work / f"{name}-s{seed}-model"
            if arms["true"]["partial"] or (REPORT_ONLY and not run.exists()):
                continue
            fit = fit_on_true_arm(true_run, n, seg, seed, model_dir)
            print(f"{name} seed {seed}: fitted on {n} pairs of the true arm's replay, training accuracy "
                  f"{fit.get('fit_acc', float('nan')):.3f}, held out {fit.get('held_out_acc', float('nan')):.3f}",
                  flush=True)
            wall = train_or_resume(["train", *common(args.frames, seed, run, args.eval_every, args.eval_episodes),
                                    "--reward", f"prefs:{model_dir}"], run, work / f"{run.name}.log", walls,
                                   args.frames)
            arm = {"wall_s": wall, "fit": fit, **read_run(run)}
            arm.update(compare(arm, arms["true"]))
            arms[name] = arm
            save(f"seed{seed}/{name}", arm["partial"])
        if args.offline and not (REPORT_ONLY and not (work / f"offline-s{seed}" / "collected.json").is_file()):
            result["offline"][f"seed{seed}"] = offline(args, work, seed, true_run)
            off = result["offline"][f"seed{seed}"]
            save(f"seed{seed}/offline", any(off.get(a, {}).get("iql_final_eval_return") is None
                                            for a in ["true", *(f"prefs-{n}" for n in args.queries)]))
    result["complete"] = not any(a.get("partial") for s in result["online"].values() for a in s.values()) and \
        not (args.offline and (len(result["offline"]) < len(args.seeds) or any(
            result["offline"][s].get(a, {}).get("iql_final_eval_return") is None
            for s in result["offline"] for a in ["true", *(f"prefs-{n}" for n in args.queries)])))
    summarise(result, args.queries, args.segment)
    out_path.write_text(json.dumps(result, indent=1))
    if args.plot:
        plot(result, Path(args.plot))
    print(json.dumps({"query_efficiency": result["query_efficiency"], "true": result["true_mean_final_return"]},
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
