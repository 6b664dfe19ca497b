"""The trainer end to end on a tiny 2-step pipeline on CPU: every algorithm updates the generator; the CLI trains,
continues after an interruption with the same rows, exports a loadable generator; bad input is one line."""

from __future__ import annotations

import json

import pytest
import torch

from pixelrl.cli.main import main
from pixelrl.errors import ConfigError
from pixelrl.genrl.config import GenRLConfig
from pixelrl.train.logger import read_rows

PROMPTS = ["a red circle", "two blue squares", "a green triangle"]


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    p.write_text("\n".join(PROMPTS) + "\n\n")
    return p


def _trainable(out):
    from pixelrl.utils.checkpoint import latest_checkpoint, load_checkpoint

    return load_checkpoint(latest_checkpoint(out / "checkpoints"))["trainable"]


@pytest.mark.parametrize("algo", ["ddpo", "rlcm", "grpo", "prdp", "parrot", "preference"])
def test_every_algorithm_updates_the_generator(algo, tmp_path, tiny_generator, tiny_lcm_generator, prompt_file):
    from pixelrl.genrl.trainer import train

    # parrot: two rewards that agree, so the Pareto set is the single best image (JPEG sizes rarely tie)
    rewards = ("jpeg-compressibility",) * (2 if algo == "parrot" else 1)
    cfg = GenRLConfig(model=str(tiny_lcm_generator if algo == "rlcm" else tiny_generator), prompts=str(prompt_file),
                      algo=algo, reward=rewards, out=str(tmp_path / algo), epochs=1, steps=2, sample_batch_size=4,
                      sample_batches=1, train_batch_size=2, grad_accum=1, group_size=2, lr=1e-3, progress=False,
                      export=False, heldout_reward="jpeg-incompressibility", parrot_normalize=False)
    summary = train(cfg, log=lambda s: None)
    row = summary["last"]
    assert row["images"] == 4 and row["frames"] == 8 and row["updates"] == 2
    assert row["heldout_reward"] == pytest.approx(-row["reward_mean"])  # computed on the same images
    assert "kl_ref" in row and row["kl_ref"] == 0.0  # sampled before any update: the policy is the reference
    if algo == "parrot":
        assert row["pareto_frac"] == 0.25
    lora_b = [v for k, v in _trainable(tmp_path / algo).items() if "lora_B" in k]
    assert lora_b and any(float(v.abs().max()) > 0 for v in lora_b)  # LoRA B starts at 0: it moved


def _cli(*args):
    return main(["genrl", "train", *map(str, args)])


def test_cli_trains_resumes_with_the_same_rows_and_exports(tmp_path, tiny_generator, prompt_file, capsys):
    common = ["--model", tiny_generator, "--prompts", prompt_file, "--reward", "jpeg-compressibility", "--algo",
              "ddpo", "--steps", "2", "--sample-batch-size", "4", "--sample-batches", "1", "--train-batch-size", "2",
              "--heldout-reward", "jpeg-incompressibility", "--no-progress", "--stat-min-count", "2"]
    assert _cli(*common, "--epochs", "3", "--out", tmp_path / "straight") == 0
    # an interrupted run: two epochs, a half-written row from the process that died, then the same command again
    assert _cli(*common, "--epochs", "2", "--out", tmp_path / "cut", "--no-export") == 0
    with open(tmp_path / "cut" / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "epoch": 3, "rew')
    assert _cli(*common, "--epochs", "3", "--out", tmp_path / "cut") == 0
    timing = ("wall_s", "act_s", "env_s", "update_s")

    def rows(run):
        return [{k: v for k, v in r.items() if k not in timing} for r in read_rows(tmp_path / run, "train")]

    straight, cut = rows("straight"), rows("cut")
    assert len(straight) == 3 and [r["epoch"] for r in straight] == [1, 2, 3]
    assert cut == straight
    assert _trainable(tmp_path / "cut").keys() == _trainable(tmp_path / "straight").keys()
    for k, v in _trainable(tmp_path / "straight").items():
        assert torch.equal(v, _trainable(tmp_path / "cut")[k])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["epochs"] == 3 and summary["generator"]
    # the exported generator loads without peft's wrappers and samples
    from pixelrl.genrl.model import load_generator
    from pixelrl.genrl.sampler import make_schedule, sample

    g = load_generator(summary["generator"])
    assert not any("lora" in k for k in g.unet.state_dict())
    t = sample(g, make_schedule(g, 2), PROMPTS[:2], guidance=1.0, generator=torch.Generator().manual_seed(0))
    assert t.images.shape[0] == 2 and torch.isfinite(t.log_probs).all()


def test_cli_bad_input_is_one_line(tmp_path, tiny_generator, prompt_file, capsys):
    assert _cli("--model", tiny_generator, "--prompts", prompt_file, "--algo", "ppo", "--out", tmp_path / "x") == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--algo must be one of ddpo, rlcm" in err
    assert _cli("--model", tiny_generator, "--prompts", prompt_file, "--algo", "rlcm", "--out", tmp_path / "y") == 1
    assert "use --algo ddpo" in capsys.readouterr().err
    assert _cli("--model", tiny_generator, "--prompts", tmp_path / "none.txt", "--out", tmp_path / "z") == 1
    assert "prompt file" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="parrot"):
        GenRLConfig(model="m", prompts="p", algo="parrot")
