"""DrQ-v2 update throughput: pixelrl's agent vs a plain re-implementation of the reference update.

The reference side below follows the DrQ-v2 authors' code the naive way: NCHW, separate encoder / critic /
actor Adam optimizers (default, non-fused), two separate Q MLPs, (C,H,W) flatten, ``.item()`` calls for logging
every update, critic weight gradients computed (and discarded) by the actor loss, per-parameter EMA loop.
Both sides use the same network sizes, batch, and math. Same-run measurement: the ratio is what counts.

    python benchmarks/update_throughput.py                      # batch 256, 84x84, fp32, CPU
    python benchmarks/update_throughput.py --precision bf16     # ours in bf16 autocast (reference stays fp32)
    python benchmarks/update_throughput.py --ks 1,4,16 --batch 64 --size 48 --hidden-dim 128   # + batched agents

``--ks`` adds the many-agents measurement (pixelrl.agents.batched): for each K, updates/s per agent of K agents
updated as one batched computation (one process, ``torch.func.vmap``) against K separate processes each updating
one agent at the same time (each with ``threads // K`` torch threads, at least 1), measured in the same run.

The last printed line is JSON; it is also written to benchmarks/results/update_throughput_<device>.json
(``_<precision>`` appended for non-fp32 runs, ``_batched`` with ``--ks``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pixelrl.agents.drqv2 import DrQv2Agent, DrQv2Config
from pixelrl.data.batch import Batch
from pixelrl.utils.machine import machine_description

# ---------------------------------------------------------------------------------------------- reference


def ref_weight_init(m):
    if isinstance(m, nn.Linear):
        nn.init.orthogonal_(m.weight.data)
        m.bias.data.fill_(0.0)
    elif isinstance(m, nn.Conv2d):
        nn.init.orthogonal_(m.weight.data, nn.init.calculate_gain("relu"))
        m.bias.data.fill_(0.0)


class RefRandomShiftsAug(nn.Module):
    def __init__(self, pad):
        super().__init__()
        self.pad = pad

    def forward(self, x):
        n, c, h, w = x.size()
        x = F.pad(x, (self.pad,) * 4, "replicate")
        eps = 1.0 / (h + 2 * self.pad)
        arange = torch.linspace(-1.0 + eps, 1.0 - eps, h + 2 * self.pad, device=x.device, dtype=x.dtype)[:h]
        arange = arange.unsqueeze(0).repeat(h, 1).unsqueeze(2)
        base_grid = torch.cat([arange, arange.transpose(1, 0)], dim=2)
        base_grid = base_grid.unsqueeze(0).repeat(n, 1, 1, 1)
        shift = torch.randint(0, 2 * self.pad + 1, size=(n, 1, 1, 2), device=x.device, dtype=x.dtype)
        shift *= 2.0 / (h + 2 * self.pad)
        grid = base_grid + shift
        return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)


class RefEncoder(nn.Module):
    def __init__(self, in_ch, channels, strides):
        super().__init__()
        layers, c = [], in_ch
        for oc, s in zip(channels, strides):
            layers += [nn.Conv2d(c, oc, 3, stride=s), nn.ReLU()]
            c = oc
        self.convnet = nn.Sequential(*layers)
        self.apply(ref_weight_init)

    def forward(self, obs):
        obs = obs / 255.0 - 0.5
        h = self.convnet(obs)
        return h.view(h.shape[0], -1)


class RefActor(nn.Module):
    def __init__(self, repr_dim, action_dim, feature_dim, hidden_dim):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
        self.policy = nn.Sequential(
            nn.Linear(feature_dim, hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, action_dim),
        )
        self.apply(ref_weight_init)

    def forward(self, obs, std):
        h = self.trunk(obs)
        mu = torch.tanh(self.policy(h))
        return RefTruncatedNormal(mu, torch.ones_like(mu) * std)


class RefCritic(nn.Module):
    def __init__(self, repr_dim, action_dim, feature_dim, hidden_dim):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())

        def q():
            return nn.Sequential(
                nn.Linear(feature_dim + action_dim, hidden_dim), nn.ReLU(inplace=True),
                nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, 1),
            )

        self.Q1, self.Q2 = q(), q()
        self.apply(ref_weight_init)

    def forward(self, obs, action):
        h = self.trunk(obs)
        h_action = torch.cat([h, action], dim=-1)
        return self.Q1(h_action), self.Q2(h_action)


class RefTruncatedNormal(torch.distributions.Normal):
    def __init__(self, loc, scale, low=-1.0, high=1.0, eps=1e-6):
        super().__init__(loc, scale, validate_args=False)
        self.low, self.high, self.eps = low, high, eps

    def _clamp(self, x):
        clamped_x = torch.clamp(x, self.low + self.eps, self.high - self.eps)
        return x - x.detach() + clamped_x.detach()

    def sample(self, clip=None, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        eps *= self.scale
        if clip is not None:
            eps = torch.clamp(eps, -clip, clip)
        return self._clamp(self.loc + eps)


def ref_schedule(step, init=1.0, final=0.1, duration=500000):
    mix = np.clip(step / duration, 0.0, 1.0)
    return (1.0 - mix) * init + mix * final


class RefDrQV2:
    def __init__(self, obs_shape, action_dim, cfg: DrQv2Config, device):
        self.device = device
        self.cfg = cfg
        self.encoder = RefEncoder(obs_shape[0], cfg.encoder_channels, cfg.encoder_strides).to(device)
        with torch.no_grad():
            repr_dim = self.encoder(torch.zeros(1, *obs_shape, device=device)).shape[1]
        self.actor = RefActor(repr_dim, action_dim, cfg.feature_dim, cfg.hidden_dim).to(device)
        self.critic = RefCritic(repr_dim, action_dim, cfg.feature_dim, cfg.hidden_dim).to(device)
        self.critic_target = RefCritic(repr_dim, action_dim, cfg.feature_dim, cfg.hidden_dim).to(device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.encoder_opt = torch.optim.Adam(self.encoder.parameters(), lr=cfg.lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr)
        self.aug = RefRandomShiftsAug(cfg.augment_pad)

    def update_critic(self, obs, action, reward, discount, next_obs, step):
        metrics = {}
        with torch.no_grad():
            stddev = ref_schedule(step)
            dist = self.actor(next_obs, stddev)
            next_action = dist.sample(clip=self.cfg.stddev_clip)
            tq1, tq2 = self.critic_target(next_obs, next_action)
            target_q = reward + discount * torch.min(tq1, tq2)
        q1, q2 = self.critic(obs, action)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        metrics["critic_target_q"] = target_q.mean().item()
        metrics["critic_q1"] = q1.mean().item()
        metrics["critic_q2"] = q2.mean().item()
        metrics["critic_loss"] = critic_loss.item()
        self.encoder_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        self.encoder_opt.step()
        return metrics

    def update_actor(self, obs, step):
        metrics = {}
        stddev = ref_schedule(step)
        dist = self.actor(obs, stddev)
        action = dist.sample(clip=self.cfg.stddev_clip)
        log_prob = dist.log_prob(action).sum(-1, keepdim=True)
        q1, q2 = self.critic(obs, action)
        actor_loss = -torch.min(q1, q2).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        metrics["actor_loss"] = actor_loss.item()
        metrics["actor_logprob"] = log_prob.mean().item()
        metrics["actor_ent"] = dist.entropy().sum(dim=-1).mean().item()
        return metrics

    def update(self, obs, action, reward, discount, next_obs, step):
        metrics = {}
        obs, next_obs = obs.float(), next_obs.float()
        obs = self.aug(obs)
        next_obs = self.aug(next_obs)
        obs = self.encoder(obs)
        with torch.no_grad():
            next_obs = self.encoder(next_obs)
        metrics["batch_reward"] = reward.mean().item()
        metrics.update(self.update_critic(obs, action, reward, discount, next_obs, step))
        metrics.update(self.update_actor(obs.detach(), step))
        with torch.no_grad():
            for p, tp in zip(self.critic.parameters(), self.critic_target.parameters()):
                tp.data.copy_(self.cfg.critic_target_tau * p.data + (1 - self.cfg.critic_target_tau) * tp.data)
        return metrics


# ---------------------------------------------------------------------------------------------- harness


def make_batch(batch, size, channels, action_dim, device, gen):
    def px():
        return torch.randint(0, 256, (batch, channels, size, size), dtype=torch.uint8, generator=gen).to(device)

    return Batch(
        obs=px(),
        action=(torch.rand(batch, action_dim, generator=gen) * 2 - 1).to(device),
        reward=torch.rand(batch, 1, generator=gen).to(device),
        discount=torch.full((batch, 1), 0.99**3).to(device),
        next_obs=px(),
    )


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_it(fn, device, warmup, repeats):
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def make_config(args) -> DrQv2Config:
    return DrQv2Config(
        precision=args.precision, compile=args.compile, channels_last=not args.no_channels_last,
        hidden_dim=args.hidden_dim, feature_dim=args.feature_dim, batch_size=args.batch,
    )


def _agent_and_batch(args, seed):
    channels = 3 * args.frame_stack
    obs_space = gym.spaces.Box(0, 255, (channels, args.size, args.size), np.uint8)
    act_space = gym.spaces.Box(-1.0, 1.0, (args.action_dim,), np.float32)
    torch.manual_seed(seed)
    agent = DrQv2Agent(obs_space, act_space, make_config(args), args.device)
    gen = torch.Generator().manual_seed(seed)
    return agent, make_batch(args.batch, args.size, channels, args.action_dim, args.device, gen)


def _separate_worker(args, seed, threads, conn):
    """One of K separate processes: one agent; after ``warmup`` updates it times ``n`` updates whenever it is sent
    ``n`` (the K processes run their bursts at the same time), until it is sent None."""
    torch.set_num_threads(threads)
    agent, batch = _agent_and_batch(args, seed)
    for _ in range(args.warmup):
        agent.update(batch, step=100_000)
    conn.send("ready")
    while (n := conn.recv()) is not None:
        conn.send(time_it(lambda: agent.update(batch, step=100_000), args.device, 0, n))


def measure_many(args, k: int) -> dict:
    """Updates/s per agent of K agents as one batched computation (this process) and as K separate processes,
    measured in alternating bursts (``repeats`` updates each, ``rounds`` times) so that both see the same load."""
    import multiprocessing as mp

    from pixelrl.agents.batched import BatchedDrQv2

    threads = args.many_threads
    torch.set_num_threads(threads)
    agents, batches = zip(*(_agent_and_batch(args, seed) for seed in range(k)))
    gens = [torch.Generator(device=args.device).manual_seed(seed) for seed in range(k)]
    learner = BatchedDrQv2(list(agents), gens)

    def batched():
        learner.update(list(batches), step=100_000)

    time_it(batched, args.device, args.warmup, 0)
    ctx = mp.get_context("spawn")
    pipes = [ctx.Pipe() for _ in range(k)]
    procs = [ctx.Process(target=_separate_worker, args=(args, seed, threads, child), daemon=True)
             for seed, (_, child) in enumerate(pipes)]
    for p in procs:
        p.start()
    for parent, _ in pipes:
        parent.recv()
    batched_t, separate_t = [], [[] for _ in range(k)]
    for _ in range(args.rounds):
        batched_t += time_it(batched, args.device, 0, args.repeats)
        for parent, _ in pipes:
            parent.send(args.repeats)
        for i, (parent, _) in enumerate(pipes):
            separate_t[i] += parent.recv()
    for parent, _ in pipes:
        parent.send(None)
    for p in procs:
        p.join()
    ups = 1.0 / statistics.median(batched_t)
    per_process = [1.0 / statistics.median(t) for t in separate_t]
    return {
        "batched": {"per_agent_updates_per_s": round(ups, 4), "aggregate_updates_per_s": round(k * ups, 4),
                    "median_s": round(statistics.median(batched_t), 4), "threads": threads},
        "separate_processes": {"per_agent_updates_per_s": round(statistics.mean(per_process), 4),
                               "aggregate_updates_per_s": round(sum(per_process), 4),
                               "threads_per_process": threads},
        "ratio": round(ups / statistics.mean(per_process), 3),
        "aggregate_ratio": round(k * ups / sum(per_process), 3),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=84)
    ap.add_argument("--frame-stack", type=int, default=3)
    ap.add_argument("--action-dim", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=10, help="timed updates per side (after warm-up)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2, help="total timed updates per side = repeats * rounds")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="ours only; reference is fp32")
    ap.add_argument("--compile", action="store_true", help="torch.compile our update's loss computation")
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--hidden-dim", type=int, default=DrQv2Config.hidden_dim)
    ap.add_argument("--feature-dim", type=int, default=DrQv2Config.feature_dim)
    ap.add_argument("--ks", default="", help="comma-separated K values for the batched-agents measurement, e.g. 1,4,16")
    ap.add_argument("--many-threads", type=int, default=1,
                    help="torch threads of the batched process and of each separate process (--ks)")
    ap.add_argument("--out", default=None, help="result JSON path (default benchmarks/results/...)")
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    dev = args.device
    channels = 3 * args.frame_stack
    cfg = make_config(args)
    obs_space = gym.spaces.Box(0, 255, (channels, args.size, args.size), np.uint8)
    act_space = gym.spaces.Box(-1.0, 1.0, (args.action_dim,), np.float32)
    ours = DrQv2Agent(obs_space, act_space, cfg, dev)
    ref = RefDrQV2((channels, args.size, args.size), args.action_dim, cfg, dev)
    gen = torch.Generator().manual_seed(0)
    batch = make_batch(args.batch, args.size, channels, args.action_dim, dev, gen)
    step = 100_000

    def run_ours():
        ours.update(batch, step=step)

    def run_ref():
        ref.update(batch.obs, batch.action, batch.reward, batch.discount, batch.next_obs, step)

    # warm-up, then strictly alternate one reference and one pixelrl update so that both see the same machine
    # load (this box is shared); the paired per-update ratios are robust to load drifting during the run.
    time_it(run_ref, dev, args.warmup, 0)
    time_it(run_ours, dev, args.warmup, 0)
    ours_t, ref_t = [], []
    for _ in range(args.repeats * args.rounds):
        ref_t += time_it(run_ref, dev, 0, 1)
        ours_t += time_it(run_ours, dev, 0, 1)
    paired = [r / o for r, o in zip(ref_t, ours_t)]
    ours_ups = 1.0 / statistics.median(ours_t)
    ref_ups = 1.0 / statistics.median(ref_t)
    result = {
        "ours_updates_per_s": round(ours_ups, 4),
        "reference_updates_per_s": round(ref_ups, 4),
        "ratio": round(ours_ups / ref_ups, 3),
        "paired_ratio_median": round(statistics.median(paired), 3),
        "ours_median_s": round(statistics.median(ours_t), 4),
        "reference_median_s": round(statistics.median(ref_t), 4),
        "ours_min_s": round(min(ours_t), 4),
        "reference_min_s": round(min(ref_t), 4),
        "device": dev,
        "precision": args.precision,
        "reference_precision": "fp32",
        "compile": args.compile,
        "channels_last": not args.no_channels_last,
        "batch": args.batch,
        "size": args.size,
        "hidden_dim": args.hidden_dim,
        "feature_dim": args.feature_dim,
        "repeats": len(ours_t),
        "machine": machine_description(),
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
    }
    print(f"{'side':<12}{'median s/update':>18}{'updates/s':>12}")
    print(f"{'reference':<12}{result['reference_median_s']:>18.4f}{ref_ups:>12.3f}")
    print(f"{'pixelrl':<12}{result['ours_median_s']:>18.4f}{ours_ups:>12.3f}")
    print(f"ratio (pixelrl / reference): {result['ratio']:.2f}x  [{args.precision}, batch {args.batch}, {args.size}px, {dev}]")
    if args.ks:
        del ours, ref
        rows = {}
        print(f"{'K':>3}{'batched upd/s/agent':>22}{'separate upd/s/agent':>23}{'ratio':>8}")
        for k in (int(x) for x in args.ks.split(",")):
            row = rows[str(k)] = measure_many(args, k)
            b, sep = row["batched"], row["separate_processes"]
            print(f"{k:>3}{b['per_agent_updates_per_s']:>22.3f}{sep['per_agent_updates_per_s']:>23.3f}"
                  f"{row['ratio']:>7.2f}x")
        result["many_agents"] = rows
        result["many_agents_note"] = (
            f"K agents as one batched computation in one process vs K processes with one agent each, "
            f"{args.many_threads} torch thread(s) per process, in alternating bursts of {args.repeats} updates x "
            f"{args.rounds} rounds; ratio = per-agent updates/s batched / separate; the machine has "
            f"{os.cpu_count()} cpus, so the separate processes may use up to min(K, cpus) of them")
    out = args.out or (
        f"benchmarks/results/update_throughput_{dev.split(':')[0]}"
        + ("" if args.precision == "fp32" else f"_{args.precision}")
        + ("_compile" if args.compile else "")
        + ("_batched" if args.ks else "")
        + ".json"
    )
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
    assert math.isfinite(result["ratio"])
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
