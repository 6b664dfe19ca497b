"""RL fine-tuning of the locally trained image generator on CPU: each algorithm's reward (and held-out reward) vs
training wall time, for JPEG compressibility and for the verifiable shapes reward.

Models (``pixelrl.genrl``): the small pixel-space DDPM trained here on generated coloured-shape images
(``--generator``), the consistency model distilled from it (``--lcm``) and the shapes detector behind the verifiable
reward (``--verifier``). A path not given is trained first into ``--work/`` (``pixelrl genrl`` commands of the
models; minutes on CPU).

Arms (each a fresh ``pixelrl genrl train`` process with ``--time-budget-min``, one after the other; the machine may
be shared, so the JSON records its load average before and after each arm):

* ``ddpo-jpeg``       DDPO, reward jpeg-compressibility, held-out: the shapes verifier;
* ``rlcm-jpeg``       RLCM on the consistency model, the same rewards;
* ``grpo-verifier``   group-relative (GRPO) on the shapes verifier, held-out: jpeg-compressibility;
* ``prdp-jpeg``, ``preference-jpeg``, ``parrot-jpeg+verifier`` (``--all``): the other algorithms, shorter budget.

Goals: DDPO raises the compressibility reward clearly (its last-3-epoch mean above the first epoch's by more than
3 standard errors of the first epoch's mean) within 15 minutes on 2 cores; RLCM reaches DDPO's final reward in
<= 1/4 of DDPO's wall time; the verifier's success rate (all requested counts right) under GRPO reaches >= 2x its
base rate (the first epoch's, sampled before any update).

Sampling as the authors: the DDPO arm samples DDPO's 50 DDIM steps with eta 1 and classifier-free guidance
(``--ddpo-steps``, ``--ddpo-guidance``; default the generator's recommended scale, else DDPO's 5), the RLCM arm RLCM's
8 LCM steps. (Results before this change ran the DDPO arm with 10 DDIM steps and no guidance, which made a DDPO epoch
as cheap as an RLCM one: the RLCM/DDPO wall-time ratio of 0.9 measured that, not RLCM's few-step advantage.)
CPU-sized settings (named deviations from the authors, who sample 8 GPUs' worth per epoch): 16 images per epoch
(``--batches`` 2 of ``--batch`` 8, one update per batch; GRPO: groups of 4); the other DDIM arms' ``--ddim-steps``
(default 20); RLCM's 8 LCM steps, 4 batches of 4 (its config's per-GPU batch). The result names the machine and is labelled
``reduced`` when the budget is below the goal's 15 minutes. ``--group-size``, ``--train-batch`` and ``--grad-accum``
give the GRPO arm Visual-RFT's groups of 8 and more images per optimizer step (e.g. ``--batch 16 --batches 4
--grad-accum 4``: one step per 64 images, in the memory of 16).

``--verifier-check`` trains nothing: it measures the verifier's precision and recall on a generator's images, judged
by a second, rule-based labeller (``pixelrl.genrl.verifier_check``), and on degraded rendered scenes.

    python benchmarks/genrl_cpu.py --threads 2                                    # the full comparison (~1 h)
    python benchmarks/genrl_cpu.py --generator G --lcm L --verifier V --minutes 5 --out benchmarks/results/genrl_cpu_reduced.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cli import run_pixelrl  # noqa: E402

GOAL_MINUTES = 15.0


def write_prompts(path: Path, n: int, seed: int, generator: str) -> list[str]:
    """Up to ``n`` distinct single-group shapes prompts ("two red circles") of the generator's vocabulary."""
    from pixelrl.genrl.generator import read_generator_info
    from pixelrl.genrl.shapes_data import ShapesVocabulary, prompt_of, sample_groups

    vocab = read_generator_info(generator).get("prompt_vocabulary")
    vocab = ShapesVocabulary.from_dict(vocab) if isinstance(vocab, dict) else ShapesVocabulary()
    rng = np.random.default_rng(seed)
    prompts = sorted({prompt_of(g) for g in sample_groups(4 * n, rng, vocab, num_groups=1)})[:n]
    path.write_text("\n".join(prompts) + "\n")
    return prompts


def build_models(work: Path, args) -> tuple[str, str | None, str]:
    """Train the generator, distil the consistency model and train the verifier where no path was given (the
    consistency model only when the rlcm arm runs)."""
    gen, lcm, ver = args.generator, args.lcm, args.verifier
    needs_lcm = not args.arms or "rlcm-jpeg" in args.arms
    task = ["--task", args.task] if args.task else []
    if gen is None:
        gen = str(work / "generator")
        if not (Path(gen) / "model_index.json").exists():
            run_pixelrl(["genrl", "pretrain-generator", "--out", gen, *task], work / "pretrain-generator.log")
    if lcm is None and needs_lcm:
        lcm = str(work / "lcm")
        if not (Path(lcm) / "model_index.json").exists():
            run_pixelrl(["genrl", "distill", "--teacher", gen, "--out", lcm], work / "distill.log")
    if ver is None:
        ver = str(work / "verifier")
        if not (Path(ver) / "detector.json").exists():
            run_pixelrl(["genrl", "pretrain-verifier", "--out", ver, *task], work / "pretrain-verifier.log")
    return gen, lcm, ver


def model_info(gen: str, lcm: str | None, ver: str) -> dict:
    """What the JSON records of the models: each generator's training summary and the detector's accuracy."""
    from pixelrl.genrl.generator import read_generator_info

    info: dict = {}
    for name, folder in (("generator", gen), ("lcm", lcm)):
        if folder is None:
            continue
        try:
            g = read_generator_info(folder)
            # an LCM folder also keeps its teacher's train_loss; its own loss is distill_loss
            loss = "distill_loss" if g.get("kind") == "lcm" else "train_loss"
            info[name] = {"path": folder, "kind": g.get("kind"), "steps_trained": g.get("steps"), loss: g.get(loss)}
        except Exception as e:  # a folder not (yet) written: say so instead of failing the benchmark
            info[name] = {"path": folder, "error": str(e)}
    det = Path(ver) / "detector.json"
    d = json.loads(det.read_text()) if det.exists() else {}
    info["verifier"] = {"path": ver, **{k: d.get(k) for k in ("exact_match", "pair_accuracy", "held_out_images")},
                        "training": {k: (d.get("config") or {}).get(k) for k in ("steps", "pool_images", "noise",
                                                                                "blur", "jitter")}}
    return info


def arms(gen: str, lcm: str, ver: str, args) -> dict[str, tuple[list[str], float]]:
    v = f"shapes-verifier:{ver}"
    trained_v = f"shapes-verifier-partial:{ver}" if args.verifier_reward == "partial" else v
    batches = ["--sample-batch-size", str(args.batch), "--sample-batches", str(args.batches), "--train-batch-size",
               str(args.train_batch or args.batch), "--grad-accum", str(args.grad_accum)]
    ddim = ["--steps", str(args.ddim_steps), *batches]
    ddpo = ["--steps", str(args.ddpo_steps), *batches]  # eta 1 (the default) as DDPO's sample.eta
    if args.guidance is not None:
        ddim += ["--guidance-scale", str(args.guidance)]
    if args.ddpo_guidance is not None:
        ddpo += ["--guidance-scale", str(args.ddpo_guidance)]
    out = {
        "ddpo-jpeg": (["--model", gen, "--algo", "ddpo", "--reward", "jpeg-compressibility", "--heldout-reward", v,
                       *ddpo], args.minutes),
        "rlcm-jpeg": (["--model", lcm, "--algo", "rlcm", "--reward", "jpeg-compressibility", "--heldout-reward", v,
                       "--sample-batch-size", "4", "--sample-batches", "4"], args.minutes),
        "grpo-verifier": (["--model", gen, "--algo", "grpo", "--reward", trained_v, "--heldout-reward",
                           "jpeg-compressibility", *ddim, "--group-size", str(args.group_size)], args.minutes),
    }
    if args.all:
        out.update({
            "prdp-jpeg": (["--model", gen, "--algo", "prdp", "--reward", "jpeg-compressibility", "--heldout-reward", v,
                           *ddim, "--group-size", "4"], args.minutes_other),
            "preference-jpeg": (["--model", gen, "--algo", "preference", "--reward", "jpeg-compressibility",
                                 "--heldout-reward", v, *ddim, "--group-size", "4"], args.minutes_other),
            "parrot-jpeg+verifier": (["--model", gen, "--algo", "parrot", "--reward", "jpeg-compressibility", v,
                                      *ddim], args.minutes_other),
        })
    extra = args.train_args.split() if args.train_args else []
    return {k: (a + extra, m) for k, (a, m) in out.items() if not args.arms or k in args.arms}


def run_arm(name: str, extra: list[str], minutes: float, prompts: Path, work: Path, args) -> dict:
    from pixelrl.train.logger import read_rows

    run = work / "runs" / name
    load0 = os.getloadavg()
    wall = run_pixelrl(["genrl", "train", *extra, "--prompts", str(prompts), "--out", str(run), "--epochs", "100000",
                        "--time-budget-min", str(minutes), "--threads", str(args.threads), "--seed", str(args.seed),
                        "--device", args.device, "--no-progress", "--no-export"], work / f"{name}.log")
    cols = ("epoch", "images", "wall_s", "reward_mean", "reward_std", "heldout_reward", "success",
            "heldout_success", "kl_ref", "approx_kl", "pareto_frac", "grad_norm", "act_s", "env_s", "update_s")
    rows = [{k: r[k] for k in cols if k in r} for r in read_rows(run, "train")]
    res = {"args": extra, "minutes": minutes, "process_wall_s": wall, "loadavg_before": load0,
           "loadavg_after": os.getloadavg(), "rows": rows}
    if (run / "prompt_filter.json").is_file():  # --prompt-filter: the measured rates and the kept prompts
        res["prompt_filter"] = json.loads((run / "prompt_filter.json").read_text())
    return res


def _last_mean(rows: list[dict], key: str, k: int = 3) -> float:
    vals = [r[key] for r in rows[-k:] if key in r]
    return float(np.mean(vals)) if vals else float("nan")


def _first_mean(rows: list[dict], key: str, k: int = 3) -> float:
    vals = [r[key] for r in rows[:k] if key in r]
    return float(np.mean(vals)) if vals else float("nan")


def goals(results: dict) -> dict:
    out: dict = {}
    d = results.get("ddpo-jpeg")
    if d and d["rows"]:
        first = d["rows"][0]
        se = first["reward_std"] / np.sqrt(max(first["images"], 1))
        last = _last_mean(d["rows"], "reward_mean")
        out["ddpo_raises_compressibility"] = {
            "first_epoch_reward": first["reward_mean"], "last3_reward": last, "first_epoch_se": se,
            "minutes": d["rows"][-1]["wall_s"] / 60, "met": bool(last - first["reward_mean"] > 3 * se)}
        r = results.get("rlcm-jpeg")
        if r and r["rows"]:
            # the two models start from different rewards, so the goal compares gains: the first time RLCM's
            # 3-epoch running mean has gained what DDPO gained (its last-3 mean minus its first epoch)
            gain, t_ddpo = last - first["reward_mean"], d["rows"][-1]["wall_s"]
            base = r["rows"][0]["reward_mean"]
            run = [(x["wall_s"], float(np.mean([y["reward_mean"] for y in r["rows"][max(0, i - 2):i + 1]])))
                   for i, x in enumerate(r["rows"])]
            reached = next((t for i, (t, m) in enumerate(run) if i >= 2 and m - base >= gain), None) \
                if gain > 0 else None
            out["rlcm_reaches_ddpo_gain"] = {
                "ddpo_gain": gain, "ddpo_wall_s": t_ddpo, "rlcm_first_epoch_reward": base,
                "rlcm_last3_gain": _last_mean(r["rows"], "reward_mean") - base,
                "rlcm_wall_s_to_reach": reached, "ratio": None if reached is None else reached / t_ddpo,
                "met": reached is not None and reached <= t_ddpo / 4}
    for name, g in results.items():  # grpo-verifier and variants merged under other names (grpo-verifier-...)
        if not name.startswith("grpo-verifier") or not g["rows"] or "success" not in g["rows"][0]:
            continue
        key = "grpo_verifier_success" + ("" if name == "grpo-verifier" else "_" + name[len("grpo-verifier-"):])
        base = g["rows"][0]["success"]
        last = _last_mean(g["rows"], "success")
        rows = g["rows"]
        k = max(1, min(10, len(rows) // 3))
        first_k, last_k = _first_mean(rows, "success", k), _last_mean(rows, "success", k)
        out[key] = {"base_rate": base, "last3_rate": last, "ratio": last / base if base > 0 else None,
                    "met": bool(last >= 2 * base) if base > 0 else bool(last > 0),
                    f"first{k}_rate": first_k, f"last{k}_rate": last_k,
                    "epochs": len(rows), "images_per_epoch": rows[0]["images"]}
        pf = g.get("prompt_filter")
        if pf:  # the base rate measured by --prompt-filter on the kept prompts (more images than one epoch)
            kept = [r for r in pf["rates"] if r["prompt"] in set(pf["kept"])]
            out[key]["filter_base_rate"] = float(np.mean([r["success"] for r in kept]))
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, res in results.items():
        rows = res["rows"]
        if not rows:
            continue
        t = [r["wall_s"] / 60 for r in rows]
        jpeg_trained = "jpeg" in name.split("-", 1)[1]
        ax = axes[0] if jpeg_trained else axes[1]
        line, = ax.plot(t, [r["reward_mean"] if jpeg_trained else r.get("success", np.nan) for r in rows],
                        label=f"{name} (success)" if not jpeg_trained else name)
        if not jpeg_trained:  # the trained verifier reward beside its success rate
            ax.plot(t, [r["reward_mean"] for r in rows], ls="--", color=line.get_color(), label=f"{name} (reward)")
        if "heldout_reward" in rows[0]:
            axes[2].plot(t, [r.get("heldout_success", r["heldout_reward"]) for r in rows], label=f"{name} (held-out)")
    axes[0].set(title="trained: JPEG compressibility (-KB)", xlabel="training wall time (min)", ylabel="reward")
    axes[1].set(title="trained: shapes verifier success (solid), reward (dashed)", xlabel="training wall time (min)")
    axes[2].set(title="held-out reward (verifier success / JPEG)", xlabel="training wall time (min)")
    for ax in axes:
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _provenance() -> dict:
    """Machine, CPU flags, load average and command line of this process (for every result file)."""
    from pixelrl.utils.machine import machine_description
    from pixelrl.utils.precision import cpu_flags

    return {"machine": machine_description(),
            "cpu_flags": sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}),
            "loadavg_start": os.getloadavg(), "command": " ".join(["python", *sys.argv])}


def _load_for_base_rate(path: str):
    """A generator folder, or a ``pixelrl genrl train`` run folder fine-tuned with ``--no-lora``: its model with the
    weights of its latest checkpoint. Returns ``(generator, pretraining steps of the model)``."""
    from pixelrl.genrl.generator import read_generator_info
    from pixelrl.genrl.model import load_generator
    from pixelrl.utils.checkpoint import latest_checkpoint, load_checkpoint

    run = Path(path)
    if not (run / "config.json").is_file() or (run / "model_index.json").is_file():
        return load_generator(path), read_generator_info(path).get("steps")
    cfg = json.loads((run / "config.json").read_text())
    if cfg.get("lora"):
        raise SystemExit(f"{run}: a LoRA run; export its generator (pixelrl genrl train ... --export) and give that")
    gen = load_generator(cfg["model"])
    state = load_checkpoint(latest_checkpoint(run / "checkpoints"))["trainable"]
    missing = set(state) ^ set(dict(gen.unet.named_parameters()))
    if missing:
        raise SystemExit(f"{run}: the checkpoint does not match the unet of {cfg['model']}")
    gen.unet.load_state_dict(state, strict=False)
    return gen, read_generator_info(cfg["model"]).get("steps")


def _measure_prompts(args, work: Path) -> list[str]:
    """The prompts of --base-rate and --verifier-check: --prompt-file's, else --prompts drawn for the first of
    --base-generators (written to WORK/prompts.txt)."""
    if args.prompt_file:
        from pixelrl.genrl.trainer import read_prompts

        return read_prompts(args.prompt_file)
    return write_prompts(work / "prompts.txt", args.prompts, args.seed, args.base_generators[0])


def base_rates(args) -> dict:
    """``--base-rate``: how often each generator already satisfies the verifiable reward, per prompt, before any RL:
    ``--per-prompt`` images of each of the benchmark's prompts (the GRPO arm's DDIM sampler: ``--ddim-steps``,
    eta 1) at every ``--guidances`` scale, each image scored by every ``--base-verifiers`` detector, strict
    (success: every count exact) and with Flow-GRPO's partial credit (``shapes-verifier-partial``)."""
    import torch

    from pixelrl.genrl.curriculum import prompt_success, summary
    from pixelrl.genrl.rewards import ShapesVerifierReward
    from pixelrl.genrl.sampler import make_schedule

    torch.set_num_threads(args.threads)
    prov = _provenance()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    prompts = _measure_prompts(args, work)
    vers = {Path(v).name: v for v in args.base_verifiers}
    others = {}
    for name, folder in vers.items():
        others[name] = ShapesVerifierReward(folder)
        others[name + "-partial"] = ShapesVerifierReward(folder, partial=True)
    first = next(iter(others.values()))
    rows = []
    for g in args.base_generators:
        gen, steps_trained = _load_for_base_rate(g)
        sched = make_schedule(gen, args.ddim_steps, 1.0)
        for w in args.guidances:
            t0 = time.perf_counter()
            stats = prompt_success(gen, sched, first, prompts, per_prompt=args.per_prompt, guidance=w,
                                   seed=args.seed, batch_size=32, others=others)
            wall = time.perf_counter() - t0
            per_ver = {}
            for name in vers:
                st = [{"prompt": x["prompt"], "success": x[name + "_success"], "reward": x[name + "-partial"]}
                      for x in stats]
                sm = summary(st, group_size=4)
                per_ver[name] = {"success": sm["success"], "partial_reward": sm["reward"],
                                 "mixed_frac": sm["mixed_frac"], "signal_groups_g4": sm["signal_groups"],
                                 "prompts_in_10_90": sum(0.1 <= x["success"] <= 0.9 for x in st)}
            rows.append({"generator": g, "generator_steps": steps_trained, "guidance": w, "images": len(stats) *
                         args.per_prompt, "wall_s": wall, "verifiers": per_ver, "per_prompt": stats})
            line = "; ".join(f"{n}: success {v['success']:.3f} partial {v['partial_reward']:.3f} signal-groups "
                             f"{v['signal_groups_g4']:.3f} prompts-in-[0.1,0.9] {v['prompts_in_10_90']}"
                             for n, v in per_ver.items())
            print(f"generator {steps_trained} steps, guidance {w:g} ({wall:.0f}s): {line}", flush=True)
    split = {}
    if args.heldout_prompt_file:  # success on the prompts a run trained on vs the ones it kept out
        from pixelrl.genrl.trainer import read_prompts

        held = set(read_prompts(args.heldout_prompt_file))
        for row in rows:
            key = f"{row['generator']} (guidance {row['guidance']:g})"
            split[key] = {}
            for name in vers:
                part = {}
                for label, want in (("trained_prompts", False), ("heldout_prompts", True)):
                    st = [x for x in row["per_prompt"] if (x["prompt"] in held) == want]
                    n = round(sum(x[name + "_success"] * x["images"] for x in st))
                    images = sum(x["images"] for x in st)
                    part[label] = {"successes": n, "images": images, "success": n / images if images else None}
                split[key][name] = part
    return {"benchmark": "genrl_base_rate", **prov, "loadavg_end": os.getloadavg(),
            "split_summary": split, "heldout_prompts": sorted(held) if args.heldout_prompt_file else [],
            "note": f"per-prompt success of generators before RL; {args.per_prompt} images per prompt, "
                    f"{len(prompts)} prompts, DDIM {args.ddim_steps} steps eta 1 (the GRPO arm's sampler); "
                    "success = every predicted count equals the request (the strict reward of grpo-verifier); "
                    "partial_reward = shapes-verifier-partial; signal_groups_g4 = expected share of groups of 4 "
                    "whose successes differ",
            "verifiers": {n: {"path": v, **{k: json.loads((Path(v) / "detector.json").read_text()).get(k) for k in
                                            ("exact_match", "pair_accuracy", "held_out_images")},
                              "augmentation": {k: json.loads((Path(v) / "detector.json").read_text())["config"].get(k)
                                               for k in ("noise", "blur", "jitter", "steps", "pool_images")}}
                          for n, v in vers.items()},
            "prompts": prompts, "rows": rows}


def verifier_check(args) -> dict:
    """``--verifier-check``: precision and recall of each ``--base-verifiers`` detector's success (every count
    exact) on (a) ``--per-prompt`` images of every prompt from each ``--base-generators`` generator (the GRPO arm's
    sampler: ``--ddim-steps``, eta 1, ``--guidances[0]``, noise from ``--seed``), against the labels of a second,
    learning-free method (:func:`pixelrl.genrl.verifier_check.rule_labels`: saturated regions on the grey
    background, the nearest palette hue, the best-overlapping rendered shape template); (b) rendered scenes of the
    generator's vocabulary, degraded by blur, colour jitter and noise at several strengths (exact ground truth),
    each scored against its own prompt (right) and against another prompt (wrong). Writes ``--out`` and, per
    generator, a grid ``--out`` stem + ``_<generator>.png`` (rows: prompts; frame: green when the rules say right,
    red when wrong, grey when unclear; one corner mark per verifier, white when it accepts)."""
    import torch
    from PIL import Image, ImageDraw

    from pixelrl.genrl.generator import read_generator_info
    from pixelrl.genrl.rewards import ShapesVerifierReward
    from pixelrl.genrl.sampler import make_schedule, sample
    from pixelrl.genrl.shapes_data import ShapesVocabulary, parse_prompt, prompt_of, sample_batch
    from pixelrl.genrl.verifier_check import degrade_images, precision_recall, rule_labels

    torch.set_num_threads(args.threads)
    prov = _provenance()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    vers = {Path(v).name: ShapesVerifierReward(v) for v in args.base_verifiers}
    marked = list(vers)  # the grid marks each folder's own decision rule
    for v in args.base_verifiers:  # and the table also other count thresholds of the same detectors
        for t in args.check_thresholds or []:
            vers[f"{Path(v).name}@{t:g}"] = ShapesVerifierReward(v, threshold=t)
    first = Path(args.base_generators[0])  # a generator folder, or a run folder: the model it fine-tuned
    if (first / "config.json").is_file() and not (first / "model_index.json").is_file():
        first = Path(json.loads((first / "config.json").read_text())["model"])
    vocab_d = read_generator_info(first).get("prompt_vocabulary")
    vocab = ShapesVocabulary.from_dict(vocab_d) if isinstance(vocab_d, dict) else ShapesVocabulary()
    prompts = _measure_prompts(args, work)
    out_json = Path(args.out)
    gens = []
    for g in args.base_generators:
        gen, steps_trained = _load_for_base_rate(g)
        sched = make_schedule(gen, args.ddim_steps, 1.0)
        todo = [p for p in prompts for _ in range(args.per_prompt)]
        noise = torch.Generator().manual_seed(int(args.seed))
        t0 = time.perf_counter()
        imgs = torch.cat([sample(gen, sched, todo[i:i + 32], guidance=args.guidances[0], generator=noise).images
                          for i in range(0, len(todo), 32)]).clamp(0, 1)
        labels = rule_labels(imgs.numpy(), vocab)
        right = [lab["clear"] and lab["groups"] == parse_prompt(p, vocab) for lab, p in zip(labels, todo)]
        row = {"generator": g, "generator_steps": steps_trained, "guidance": args.guidances[0],
               "images": len(todo), "rules_right": int(sum(right)),
               "rules_unclear": int(sum(not lab["clear"] for lab in labels)), "verifiers": {},
               "sample_s": time.perf_counter() - t0}
        acc = {}
        for name, v in vers.items():
            v(imgs, todo)
            acc[name] = v.last_info["success"].numpy()
            pr = precision_recall(acc[name], right)
            # todo holds each prompt per_prompt times in a row
            r_k = np.asarray(right).reshape(len(prompts), args.per_prompt)
            a_k = acc[name].reshape(len(prompts), args.per_prompt)
            per_prompt = {p: {"right": int(r_k[k].sum()), "accepted": int(a_k[k].sum()),
                              "accepted_right": int((a_k[k] & r_k[k]).sum())} for k, p in enumerate(prompts)}
            row["verifiers"][name] = {**pr, "success_rate": float(acc[name].mean()), "per_prompt": per_prompt}
            print(f"{Path(g).name}: {name} precision {pr['precision']} recall {pr['recall']} "
                  f"(accepted {pr['accepted']}, right by the rules {pr['right']} of {pr['images']})", flush=True)
        # the grid to check the rules by eye
        k_img = min(args.per_prompt, 16)
        cell, pad = 96, 6
        canvas = Image.new("RGB", (k_img * (cell + 2 * pad), len(prompts) * (cell + 2 * pad)), (255, 255, 255))
        draw = ImageDraw.Draw(canvas)
        for pi in range(len(prompts)):
            for j in range(k_img):
                i = pi * args.per_prompt + j
                x0, y0 = j * (cell + 2 * pad), pi * (cell + 2 * pad)
                frame = (0, 170, 0) if right[i] else ((150, 150, 150) if not labels[i]["clear"] else (220, 0, 0))
                draw.rectangle([x0, y0, x0 + cell + 2 * pad - 1, y0 + cell + 2 * pad - 1], fill=frame)
                tile = (imgs[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                canvas.paste(Image.fromarray(tile).resize((cell, cell), Image.NEAREST), (x0 + pad, y0 + pad))
                for vi, name in enumerate(marked):
                    colour = (255, 255, 255) if acc[name][i] else (0, 0, 0)
                    draw.rectangle([x0 + pad + vi * 12, y0 + pad, x0 + pad + vi * 12 + 9, y0 + pad + 9], fill=colour)
        grid = out_json.with_name(f"{out_json.stem}_{Path(g).name}.png")
        canvas.save(grid)
        row["grid"] = str(grid)
        row["rule_labels"] = [{"prompt": p, "right": bool(r), "clear": lab["clear"],
                               "objects": [[c, s, round(iou, 3), a] for c, s, iou, a in lab["objects"]],
                               **{f"accepted_{n}": bool(acc[n][i]) for n in marked}}
                              for i, (p, r, lab) in enumerate(zip(todo, right, labels))]
        gens.append(row)
    # rendered scenes with exact ground truth, degraded as a generator's images look
    rng = np.random.default_rng(args.seed + 11)
    rendered = []
    for blur, jitter, pix in ((0.0, 0.0, 0.0), (1.0, 0.1, 0.05), (1.5, 0.2, 0.08), (2.0, 0.3, 0.1)):
        img, own, groups = sample_batch(512, rng, vocab)
        x = degrade_images(img / 255.0, rng, blur=blur, jitter=jitter, noise=pix) if blur or jitter or pix \
            else torch.from_numpy(img / 255.0).float()
        all_p = sorted({prompt_of({k: 1}) for k in vocab.pairs})
        other = [all_p[(all_p.index(p) + 1 + int(rng.integers(len(all_p) - 1))) % len(all_p)] for p in own]
        res = {"blur": blur, "jitter": jitter, "noise": pix, "images": len(own), "verifiers": {}}
        for name, v in vers.items():
            v(x, own)
            a_own = v.last_info["success"].numpy()
            v(x, other)
            a_other = v.last_info["success"].numpy()
            res["verifiers"][name] = precision_recall(np.concatenate([a_own, a_other]),
                                                      np.concatenate([np.ones(len(own), bool),
                                                                      np.zeros(len(own), bool)]))
        rendered.append(res)
        print(f"rendered blur {blur} jitter {jitter} noise {pix}: " + "; ".join(
            f"{n} P {r['precision']:.3f} R {r['recall']:.3f}" for n, r in res["verifiers"].items()), flush=True)
    det = {n: json.loads((Path(v) / "detector.json").read_text()) for n, v in zip(marked, args.base_verifiers)}
    return {"benchmark": "genrl_verifier_check", **prov, "loadavg_end": os.getloadavg(),
            "note": "precision = right among the images the verifier accepts (success: every count exact); recall = "
                    "accepted among the right ones. Generator images: right by the rules of "
                    "pixelrl.genrl.verifier_check.rule_labels (no learning); rendered: exact ground truth, each "
                    "scene against its own prompt (right) and another one-group prompt (wrong)." +
                    (f" {args.note}" if args.note else ""),
            "verifiers": {n: {"path": v, "exact_match": det[n].get("exact_match"),
                              "count_threshold": vers[n].threshold,
                              "training": {k: det[n]["config"].get(k) for k in ("steps", "pool_images", "noise",
                                                                                "blur", "jitter", "seed")}}
                          for n, v in zip(marked, args.base_verifiers)},
            "thresholds_checked": args.check_thresholds or [],
            "prompts": prompts, "per_prompt": args.per_prompt, "seed": args.seed, "generators": gens,
            "rendered": rendered}


def main() -> None:
    from pixelrl.utils.atomic import write_json_atomic

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", help="trained DDPM generator folder (default: train one into WORK/generator)")
    p.add_argument("--lcm", help="distilled consistency model folder (default: distil one into WORK/lcm)")
    p.add_argument("--verifier", help="shapes detector folder (default: train one into WORK/verifier)")
    p.add_argument("--work", default="runs/genrl_cpu", help="folder for models, runs and logs")
    p.add_argument("--task", choices=("scenes", "one-shape"), help="task family of the models trained here "
                   "(pixelrl genrl pretrain-generator / pretrain-verifier --task; default: their default, scenes)")
    p.add_argument("--minutes", type=float, default=GOAL_MINUTES, help="training budget of the main arms")
    p.add_argument("--minutes-other", type=float, default=5.0, help="budget of the other algorithms (--all)")
    p.add_argument("--all", action="store_true", help="also run prdp, preference and parrot")
    p.add_argument("--arms", nargs="*", help="only these arms")
    p.add_argument("--ddpo-steps", type=int, default=50, help="DDIM steps (eta 1) of the ddpo-jpeg arm (DDPO's "
                   "sample.num_steps: 50; the RLCM arm samples RLCM's 8 LCM steps)")
    p.add_argument("--ddpo-guidance", type=float, help="guidance scale of the ddpo-jpeg arm (default: the "
                   "generator's recommended one, else DDPO's 5.0, used in sampling and in the training pass)")
    p.add_argument("--ddim-steps", type=int, default=20, help="DDIM steps of the other DDPM arms (grpo, prdp, "
                   "preference, parrot) and of --base-rate (a CPU-sized choice: DDPO 50, Flow-GRPO trains on 10)")
    p.add_argument("--batch", type=int, default=8, help="images per sample batch and per update (DDIM arms)")
    p.add_argument("--batches", type=int, default=2, help="sample batches per epoch (DDIM arms)")
    p.add_argument("--train-batch", type=int, help="samples per training minibatch (default: --batch)")
    p.add_argument("--grad-accum", type=int, default=1, help="minibatches accumulated per optimizer step: with "
                   "--batches B and --train-batch equal to --batch, --grad-accum B makes one update of the epoch's "
                   "B x --batch images (more images per update in the memory of one batch)")
    p.add_argument("--group-size", type=int, default=4, help="images per prompt in a group of the grpo-verifier arm "
                   "(Visual-RFT's G = 8; 4 by default here, a CPU-sized choice); --batch must be a multiple of it")
    p.add_argument("--guidance", type=float, help="guidance scale of the other DDIM arms (default: the generator's)")
    p.add_argument("--prompts", type=int, default=32, help="number of training prompts")
    p.add_argument("--train-args", default="", help="more `pixelrl genrl train` options for every arm, e.g. "
                   "'--no-lora --lr 1e-5'")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto", help="device of every arm (`pixelrl genrl train --device`: auto, cpu "
                   "or cuda; benchmarks/gpu_genrl.sh passes cuda so that a broken GPU fails instead of falling back)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/genrl_cpu.json")
    p.add_argument("--append", action="store_true", help="keep the arms already in --out and add these")
    p.add_argument("--summarize", action="store_true", help="only recompute the goals and plot of --out")
    p.add_argument("--base-rate", action="store_true", help="measure the per-prompt success of --base-generators "
                   "under --base-verifiers before any RL (no training) and write --out")
    p.add_argument("--base-generators", nargs="+", help="generator folders for --base-rate (e.g. snapshots after "
                   "several pretraining steps), or --no-lora `pixelrl genrl train` run folders (their latest "
                   "checkpoint on their model: the success after RL on the same noise)")
    p.add_argument("--base-verifiers", nargs="+", help="verifier folders for --base-rate")
    p.add_argument("--guidances", nargs="+", type=float, default=[1.0, 3.0, 5.0], help="guidance scales (--base-rate)")
    p.add_argument("--per-prompt", type=int, default=8, help="images per prompt (--base-rate)")
    p.add_argument("--heldout-prompts", type=int, default=0, help="keep this many of the drawn prompts out of "
                   "training (written to WORK/heldout_prompts.txt; measure them before and after with --base-rate "
                   "--prompt-file)")
    p.add_argument("--note", default="", help="a sentence added to the result's note (what the models are)")
    p.add_argument("--prompt-file", help="--base-rate: these prompts (one per line) instead of --prompts drawn ones")
    p.add_argument("--verifier-reward", choices=("strict", "partial"), default="strict",
                   help="the grpo-verifier arm's trained reward: shapes-verifier (strict) or shapes-verifier-partial")
    p.add_argument("--verifier-check", action="store_true", help="train nothing: the precision and recall of "
                   "--base-verifiers on images of --base-generators (labelled by a rule-based second method) and on "
                   "degraded rendered scenes; writes --out and a grid png per generator")
    p.add_argument("--heldout-prompt-file", help="--base-rate: the prompts a run kept out of training (its "
                   "WORK/heldout_prompts.txt); adds split_summary: successes on the trained vs the held-out prompts")
    p.add_argument("--check-thresholds", nargs="*", type=float, help="--verifier-check: also measure each verifier "
                   "at these count thresholds (pixelrl.genrl.rewards.VerifierConfig.count_threshold)")
    args = p.parse_args()
    out = Path(args.out)
    for flag, measure in (("--verifier-check", verifier_check), ("--base-rate", base_rates)):
        if getattr(args, flag[2:].replace("-", "_")):
            if not args.base_generators or not args.base_verifiers:
                p.error(f"{flag} needs --base-generators and --base-verifiers")
            write_json_atomic(out, measure(args))
            print(f"wrote {out}")
            return
    if args.summarize:  # recompute the goals and the plot of an existing result
        summary = json.loads(out.read_text())
        summary["goals"] = goals(summary["arms"])
        write_json_atomic(out, summary)
        plot(summary["arms"], out.with_suffix(".png"))
        print(json.dumps(summary["goals"], indent=1))
        return
    prov = _provenance()
    work = Path(args.work)
    (work / "runs").mkdir(parents=True, exist_ok=True)
    gen, lcm, ver = build_models(work, args)
    prompts_path = work / "prompts.txt"
    prompts = write_prompts(prompts_path, args.prompts, args.seed, gen)
    heldout_prompts: list[str] = []
    if args.heldout_prompts:  # kept out of training: the base-rate mode measures them before and after RL
        if not 0 < args.heldout_prompts < len(prompts):
            p.error(f"--heldout-prompts must be in 1..{len(prompts) - 1} ({len(prompts)} prompts)")
        pick = set(np.random.default_rng(args.seed + 1).choice(len(prompts), args.heldout_prompts, replace=False))
        heldout_prompts = [q for i, q in enumerate(prompts) if i in pick]
        prompts = [q for i, q in enumerate(prompts) if i not in pick]
        prompts_path.write_text("\n".join(prompts) + "\n")
        (work / "heldout_prompts.txt").write_text("\n".join(heldout_prompts) + "\n")
    results: dict = json.loads(out.read_text())["arms"] if args.append and out.exists() else {}
    t0 = time.time()
    for name, (extra, minutes) in arms(gen, lcm, ver, args).items():
        print(f"[{time.time() - t0:6.0f}s] {name}: {minutes:g} min", flush=True)
        results[name] = run_arm(name, extra, minutes, prompts_path, work, args)
        rows = results[name]["rows"]
        if rows:
            print(f"   epochs {rows[-1]['epoch']}, reward {rows[0]['reward_mean']:.4f} -> {rows[-1]['reward_mean']:.4f}"
                  + (f", success {rows[0]['success']:.3f} -> {rows[-1]['success']:.3f}" if "success" in rows[0] else ""),
                  flush=True)
    reduced = args.minutes < GOAL_MINUTES
    summary = {
        "benchmark": "genrl_cpu", **prov, "reduced": reduced,
        "note": ("REDUCED: budgets below the goal's 15 minutes per arm; " if reduced else "")
        + f"shared machine, load averages recorded per arm; DDPO arm {args.ddpo_steps} DDIM steps, other DDIM arms "
        f"{args.ddim_steps}, "
        f"{args.batch * args.batches} images/epoch (DDIM arms), 16 (RLCM)" + (f". {args.note}" if args.note else ""),
        "models": model_info(gen, lcm, ver), "prompts": prompts, "heldout_prompts": heldout_prompts,
        "settings": {k: v for k, v in vars(args).items() if k not in ("generator", "lcm", "verifier")},
        "goals": goals(results), "arms": results, "total_wall_s": time.time() - t0}
    write_json_atomic(out, summary)
    plot(results, out.with_suffix(".png"))
    print(json.dumps(summary["goals"], indent=1))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
