"""Replay memory and sampling speed: pixelrl's single-frame ReplayBuffer vs naive stacked storage.

Fills both with the same episodes of 84x84 RGB frames at frame_stack 3 (DrQ-v2's setting), then reports the bytes
each holds per stored transition (sum of its arrays' nbytes) and the median time of ``sample(256)``.
The naive peer stores the stacked ``obs`` and ``next_obs`` of every transition (as DrQ-v2-style replays that stack
in storage do) and gathers them with the same ``torch.index_select`` into one output tensor.

Usage: python benchmarks/replay_memory.py [--episodes 20] [--episode-len 500] [--repeats 30]
The last printed line is JSON; it is also written to benchmarks/results/replay_memory_cpu.json
(``_cuda.json`` when --device cuda).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from gymnasium import spaces

from pixelrl.data.replay import ReplayBuffer

STACK, C, H, W, A = 3, 3, 84, 84, 6


class NaiveReplay:
    """Stacked obs + next_obs per transition (1-step, no episode logic): the memory baseline."""

    def __init__(self, capacity: int, seed: int = 0) -> None:
        self.obs = np.empty((capacity, STACK * C, H, W), np.uint8)
        self.next_obs = np.empty((capacity, STACK * C, H, W), np.uint8)
        self.action = np.empty((capacity, A), np.float32)
        self.reward = np.empty((capacity, 1), np.float32)
        self.discount = np.empty((capacity, 1), np.float32)
        self.obs_t, self.next_obs_t = torch.from_numpy(self.obs), torch.from_numpy(self.next_obs)
        self.capacity, self.size, self.ptr = capacity, 0, 0
        self.rng = np.random.Generator(np.random.PCG64(seed))

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.obs, self.next_obs, self.action, self.reward, self.discount))

    def add(self, obs, action, reward, discount, next_obs) -> None:
        i = self.ptr
        self.obs[i], self.next_obs[i], self.action[i] = obs, next_obs, action
        self.reward[i], self.discount[i] = reward, discount
        self.ptr = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, device: torch.device):
        idx = self.rng.integers(0, self.size, size=batch_size)
        index = torch.from_numpy(idx)
        pin = device.type == "cuda"
        out = torch.empty((2 * batch_size, STACK * C, H, W), dtype=torch.uint8, pin_memory=pin)
        torch.index_select(self.obs_t, 0, index, out=out[:batch_size])
        torch.index_select(self.next_obs_t, 0, index, out=out[batch_size:])
        pix = out.to(device, non_blocking=True)
        return (pix[:batch_size], torch.from_numpy(self.action[idx]).to(device),
                torch.from_numpy(self.reward[idx]).to(device), torch.from_numpy(self.discount[idx]).to(device),
                pix[batch_size:])


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def median_ms_interleaved(fns, repeats: int, device: torch.device) -> list[float]:
    """Median wall time (ms) of each function; calls alternate so machine noise hits both alike."""
    for fn in fns:
        fn()  # warm-up
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[i].append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(t) for t in times]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--episode-len", type=int, default=500, help="agent steps per episode")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--device", default="cpu")
    p.add_argument("--storage-device", default="cpu")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    n_trans = args.episodes * args.episode_len
    obs_space = spaces.Box(0, 255, (STACK * C, H, W), np.uint8)
    act_space = spaces.Box(-1, 1, (A,), np.float32)
    buf = ReplayBuffer(obs_space, act_space, n_trans, frame_stack=STACK, nstep=3, device=device,
                       storage_device=args.storage_device)
    naive = NaiveReplay(n_trans)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (64, C, H, W), dtype=np.uint8)  # cheap varied frames

    t0 = time.perf_counter()
    add_s = 0.0
    for ep in range(args.episodes):
        frames = [base[(ep * 7) % 64]] * STACK
        obs = np.concatenate(frames)
        ta = time.perf_counter()
        buf.add_first(obs)
        add_s += time.perf_counter() - ta
        for t in range(args.episode_len):
            frames = frames[1:] + [base[(ep * 7 + t + 1) % 64]]
            nxt = np.concatenate(frames)
            action = rng.uniform(-1, 1, A).astype(np.float32)
            reward = float(rng.standard_normal())
            last = t == args.episode_len - 1
            ta = time.perf_counter()
            buf.add(action, reward, nxt, False, last)
            add_s += time.perf_counter() - ta
            naive.add(obs, action, reward, 0.99, nxt)
            obs = nxt
    fill_s = time.perf_counter() - t0

    bpt = buf.nbytes / len(buf)
    naive_bpt = naive.nbytes / naive.size
    sample_ms, naive_ms = median_ms_interleaved(
        [lambda: buf.sample(args.batch_size), lambda: naive.sample(args.batch_size, device)], args.repeats, device
    )
    # save: a full first save, then an incremental one after 500 more steps (what periodic checkpoints cost)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        buf.save(tmp)
        full_save_s = time.perf_counter() - t0
        buf.add_first(np.concatenate([base[0]] * STACK))
        for t in range(500):
            buf.add(np.zeros(A, np.float32), 0.0, np.concatenate([base[t % 64]] * STACK), False, False)
        t0 = time.perf_counter()
        buf.save(tmp)
        inc_save_s = time.perf_counter() - t0

    machine = f"{_cpu_name()}, {torch.get_num_threads()} torch threads"
    if device.type == "cuda":
        machine += f", {torch.cuda.get_device_name(device)}"

    rows = [
        ("transitions stored", f"{len(buf):,}", f"{naive.size:,}"),
        ("bytes held", f"{buf.nbytes:,}", f"{naive.nbytes:,}"),
        ("bytes / transition", f"{bpt:,.0f}", f"{naive_bpt:,.0f}"),
        (f"sample({args.batch_size}) median ms", f"{sample_ms:.2f}", f"{naive_ms:.2f}"),
    ]
    print(f"{'':28s} {'pixelrl':>16s} {'naive stacked':>16s}")
    for name, a, b in rows:
        print(f"{name:28s} {a:>16s} {b:>16s}")
    print(f"save: full {full_save_s:.2f} s, incremental after 500 steps {inc_save_s:.3f} s")
    print(f"add() mean {add_s / (n_trans + args.episodes) * 1e6:.1f} us per call (fill total {fill_s:.1f} s)")
    result = {
        "bytes_per_transition": round(bpt, 1),
        "naive_bytes_per_transition": round(naive_bpt, 1),
        "ratio": round(naive_bpt / bpt, 3),
        "sample_ms": round(sample_ms, 3),
        "naive_sample_ms": round(naive_ms, 3),
        "add_us": round(add_s / (n_trans + args.episodes) * 1e6, 1),
        "full_save_s": round(full_save_s, 3),
        "incremental_save_500_steps_s": round(inc_save_s, 3),
        "batch_size": args.batch_size,
        "transitions": len(buf),
        "device": str(device),
        "storage_device": args.storage_device,
        "machine": machine,
    }
    out = Path(args.out) if args.out else (
        Path(__file__).parent / "results" / f"replay_memory_{'cuda' if device.type == 'cuda' else 'cpu'}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
