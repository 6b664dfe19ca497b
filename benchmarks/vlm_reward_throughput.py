"""VLM-RM reward throughput: reward frames/s of ViT-B/32- and ViT-L/14-sized CLIPs, batched vs one frame at a time.

Sizes of the arms: ``--frames`` and ``--per-frame-frames`` are per model; a chunk size above the frames of the batched
arm is the whole batch. The JSON records the machine, its CPU flags and a matmul probe (GFLOP/s at the start), since
the machine may be shared.

The models are transformers ``CLIPModel``s built from ``CLIPConfig``s with the real sizes of
openai/clip-vit-base-patch32 and openai/clip-vit-large-patch14 and random weights: the same compute as the trained
models (no weights can be downloaded here), through the reward code the trainer uses
(:class:`pixelrl.rewards.vlm.VLMRewardModel`: the authors' preprocessing, cached prompt embeddings, chunks of
``batch_size`` under ``torch.inference_mode``; fp16 autocast on CUDA). Frames are 84x84 RGB frame stacks (DMC's
default), resized to 224x224 as the authors do.

Arms per model: ``batched`` (``--frames`` frames in one call, split into chunks of each ``--batch-sizes`` value) and
``per_frame`` (the same reward code called once per frame: what a per-step wrapper without batching does). Every
arm is measured ``--rounds`` times in interleaved rounds and the median reported, so a noisy (shared) machine shifts
all arms alike; the ratios are the numbers to quote.

    python benchmarks/vlm_reward_throughput.py                    # CPU: ViT-B/32 and ViT-L/14, a few minutes
    python benchmarks/vlm_reward_throughput.py --device cuda --batch-sizes 64 256 1600 --frames 3200 3200

Prints a table and, as the last line, a JSON summary, also written to
``benchmarks/results/vlm_reward_throughput_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pixelrl.rewards.vlm import CLIPEmbedder, VLMRewardModel, write_byte_tokenizer
from pixelrl.utils.atomic import write_json_atomic
from pixelrl.utils.machine import machine_description
from pixelrl.utils.precision import cpu_flags

SIZES = {
    # openai/clip-vit-base-patch32 and openai/clip-vit-large-patch14 (their config.json)
    "ViT-B/32": dict(text=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
                     vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                                 patch_size=32),
                     projection_dim=512),
    "ViT-L/14": dict(text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
                     vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                 num_attention_heads=16, patch_size=14),
                     projection_dim=768),
}
FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def build(name: str, device: torch.device, tok_dir: Path) -> VLMRewardModel:
    import transformers as tf

    s = SIZES[name]
    tok = write_byte_tokenizer(tok_dir)
    config = tf.CLIPConfig(
        text_config=dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=tok["bos_token_id"],
                         eos_token_id=tok["eos_token_id"], pad_token_id=tok["eos_token_id"], **s["text"]),
        vision_config=dict(image_size=224, **s["vision"]), projection_dim=s["projection_dim"])
    torch.manual_seed(0)
    model = tf.CLIPModel(config)
    tokenizer = tf.CLIPTokenizer.from_pretrained(tok_dir)
    embedder = CLIPEmbedder(model, tokenizer, device=device, autocast=True, source=f"random {name}")
    return VLMRewardModel(embedder, ["a pole standing upright"], ["a cartpole"], alpha=0.5)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model: VLMRewardModel, frames: np.ndarray, batch_size: int, device: torch.device) -> float:
    """Reward frames/s of one call over ``frames`` (``batch_size`` 0: one call per frame)."""
    sync(device)
    t0 = time.perf_counter()
    if batch_size:
        model.batch_size = batch_size
        r = model(next_obs=frames)
    else:
        model.batch_size = 1
        r = np.concatenate([model(next_obs=frames[i:i + 1]) for i in range(len(frames))])
    sync(device)
    assert np.isfinite(r).all()
    return len(frames) / (time.perf_counter() - t0)


def matmul_gflops(device: torch.device) -> float:
    """fp32 2048^3 matmul GFLOP/s now (how much compute the shared machine gave this run), median of 5."""
    x = torch.randn(2048, 2048, device=device)
    out = []
    for _ in range(5):
        sync(device)
        t0 = time.perf_counter()
        x @ x
        sync(device)
        out.append(2 * 2048 ** 3 / (time.perf_counter() - t0) / 1e9)
    return round(statistics.median(out), 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--device", default="cpu", help="cpu, cuda, or auto (cuda if available)")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[16, 64],
                   help="chunk sizes of the batched arm (the reward's --reward.batch-size)")
    p.add_argument("--frames", nargs="+", type=int, default=[64, 8],
                   help="frames per batched measurement, one value per model (in --models order)")
    p.add_argument("--per-frame-frames", nargs="+", type=int, default=[8, 2],
                   help="frames per one-at-a-time measurement, one value per model")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/vlm_reward_throughput_<device>.json)")
    a = p.parse_args()
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if a.device == "auto" else a.device))
    results: dict[str, dict] = {}
    started = time.perf_counter()
    gflops = matmul_gflops(device)
    rng = np.random.default_rng(0)
    for i, name in enumerate(a.models):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            model = build(name, device, Path(tmp))
            build_s = time.perf_counter() - t0
        n_batched = a.frames[min(i, len(a.frames) - 1)]
        n_single = a.per_frame_frames[min(i, len(a.per_frame_frames) - 1)]
        frames = rng.integers(0, 256, (max(n_batched, n_single), 9, 84, 84), dtype=np.uint8)
        arms = {f"batched_{min(b, n_batched)}": (min(b, n_batched), frames[:n_batched]) for b in a.batch_sizes}
        arms["per_frame"] = (0, frames[:n_single])
        measure(model, frames[:2], 2, device)  # warm-up (first-call allocations, cuDNN / kernel choice)
        samples: dict[str, list[float]] = {k: [] for k in arms}
        for r in range(a.rounds):
            for k, (b, f) in (arms.items() if r % 2 == 0 else reversed(list(arms.items()))):
                samples[k].append(measure(model, f, b, device))
        med = {k: statistics.median(v) for k, v in samples.items()}
        best = max((k for k in med if k.startswith("batched")), key=med.get)
        results[name] = {
            "params_vision_M": round(sum(p.numel() for p in model.embedder.model.vision_model.parameters()) / 1e6, 1),
            "build_s": round(build_s, 1),
            "frames_per_s_median": {k: round(v, 2) for k, v in med.items()},
            "frames_per_s_samples": {k: [round(x, 2) for x in v] for k, v in samples.items()},
            "frames": {k: len(f) for k, (_, f) in arms.items()},
            "best_batched": best,
            "batched_over_per_frame": round(med[best] / med["per_frame"], 2),
        }
        del model
        print(f"{name}: " + ", ".join(f"{k} {v:.1f} frames/s" for k, v in med.items())
              + f"; {best} / per_frame = {results[name]['batched_over_per_frame']:.2f}x", flush=True)
    flags = cpu_flags()
    summary = {
        "benchmark": "vlm_reward_throughput",
        "machine": machine_description(),
        "device": str(device) if device.type == "cpu" else f"{device} {torch.cuda.get_device_name(device)}",
        "cpu_flags": sorted(f for f in FLAGS if f in flags),
        "torch_threads": torch.get_num_threads(),
        "matmul_gflops_fp32_at_start": gflops,
        "precision": "fp16 autocast" if device.type == "cuda" else "fp32",
        "frame": "uint8 84x84 RGB (stack of 3), resized to 224x224",
        "rounds": a.rounds,
        "models": results,
        "wall_s": round(time.perf_counter() - started, 1),
        "note": "random weights with the real configs (same compute as the trained models); medians of interleaved "
                "rounds; the machine may be shared, so compare ratios within this file",
    }
    out = Path(a.out or Path(__file__).parent / "results" / f"vlm_reward_throughput_{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, summary)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
