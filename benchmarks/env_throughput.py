"""Env throughput: frames/s of a pixel DMC env, single env vs vector env, default vs fast rendering.

Frames are simulator frames (agent steps x action_repeat), summed over the vector env's workers. Random
actions, no learning. Every configuration is measured ``--repeats`` times in interleaved rounds and the
median is reported, so a noisy machine shifts all configurations alike; ratios are the numbers to quote.

    MUJOCO_GL=egl python benchmarks/env_throughput.py --env dmc/cartpole-swingup --seconds 3

Prints a table and, as the last line, a JSON summary (also written to
``benchmarks/results/env_throughput_<device>.json``). Top-level numbers are for the first ``--sizes`` entry.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from pixelrl.envs import make, make_vector  # noqa: E402


def machine_info() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "mujoco_gl": os.environ.get("MUJOCO_GL"),
        "gl_renderer": gl_renderer(),
    }


def gl_renderer() -> str | None:
    """The OpenGL renderer string (e.g. 'llvmpipe' = Mesa software rendering), if it can be read."""
    try:
        env = make("dmc/cartpole-swingup", size=16, frame_stack=1)
        env.reset(seed=0)
        physics = env.unwrapped.physics
        from OpenGL import GL

        with physics.contexts.gl.make_current() as ctx:
            name = ctx.call(GL.glGetString, GL.GL_RENDERER)
        env.close()
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception as e:  # informational only
        return f"unknown ({type(e).__name__})"


def measure_single(env, seconds: float) -> float:
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    shape = env.action_space.shape
    frames, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _, _, term, trunc, info = env.step(rng.uniform(-1, 1, shape).astype(np.float32))
        frames += info["frames"]
        if term or trunc:
            env.reset()
    return frames / (time.perf_counter() - t0)


def measure_vector(vec, seconds: float) -> float:
    rng = np.random.default_rng(0)
    vec.reset(seed=list(range(vec.num_envs)))
    shape = vec.action_space.shape
    frames, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _, _, _, _, info = vec.step(rng.uniform(-1, 1, shape).astype(np.float32))
        # autoreset steps (after an episode end) execute no frames: info["frames"] is 0 there, or absent
        # when every sub-env reset in that step
        frames += int(np.sum(info.get("frames", 0)))
    return frames / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="dmc/cartpole-swingup")
    p.add_argument("--seconds", type=float, default=3.0, help="measuring time per configuration and repeat")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the median is reported")
    p.add_argument("--sizes", type=int, nargs="+", default=[84, 64])
    p.add_argument("--num-envs", type=int, default=2, help="vector env workers")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "env_throughput_cpu.json"))
    args = p.parse_args()

    configs = [(size, mode, fast) for size in args.sizes for mode in ("single", "vector") for fast in (False, True)]
    envs = {}
    for size, mode, fast in configs:  # build everything first: startup is not throughput
        if mode == "single":
            envs[(size, mode, fast)] = make(args.env, size=size, fast_render=fast)
        else:
            envs[(size, mode, fast)] = make_vector(args.env, args.num_envs, size=size, fast_render=fast)
    samples: dict = {c: [] for c in configs}
    for _ in range(args.repeats):
        for c in configs:
            fn = measure_single if c[1] == "single" else measure_vector
            samples[c].append(fn(envs[c], args.seconds))
    for env in envs.values():
        env.close()

    med = {c: statistics.median(v) for c, v in samples.items()}
    print(f"{'size':>5} {'mode':>8} {'render':>8} {'frames/s (median)':>18}  samples")
    for size, mode, fast in configs:
        vals = ", ".join(f"{x:.0f}" for x in samples[(size, mode, fast)])
        print(f"{size:>5} {mode:>8} {'fast' if fast else 'default':>8} {med[(size, mode, fast)]:>18.1f}  [{vals}]")

    def summary(size: int) -> dict:
        s, v = med[(size, "single", False)], med[(size, "vector", False)]
        sf, vf = med[(size, "single", True)], med[(size, "vector", True)]
        return {
            "size": size, "single_fps": round(s, 1), "vector_fps": round(v, 1), "single_fast_fps": round(sf, 1),
            "vector_fast_fps": round(vf, 1), "ratio_vector": round(v / s, 3), "ratio_fast": round(sf / s, 3),
            "ratio_vector_fast": round(vf / sf, 3),
        }

    first = summary(args.sizes[0])
    result = {
        "env": args.env,
        **first,
        "by_size": {str(size): summary(size) for size in args.sizes},
        "num_envs": args.num_envs,
        "seconds": args.seconds,
        "repeats": args.repeats,
        "statistic": "median",
        "samples": {f"{size}/{mode}/{'fast' if fast else 'default'}": [round(x, 1) for x in samples[(size, mode, fast)]]
                    for size, mode, fast in configs},
        "machine": machine_info(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
