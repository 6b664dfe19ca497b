"""pixelrl.genrl.curriculum: per-prompt success rates, the prompt filter's band, the expected share of groups with a
learning signal, and --prompt-filter in the trainer (measured once, kept in the run folder, one line when nothing
is left)."""

from __future__ import annotations

import json

import pytest
import torch

from pixelrl.errors import ConfigError
from pixelrl.genrl.curriculum import filter_prompts, prompt_success, summary


class _FakeVerifier:
    """Success iff the prompt mentions red; reward 0.5 + success / 2; counts the images it scored."""

    name = "fake"

    def __init__(self) -> None:
        self.seen = 0
        self.last_info: dict = {}

    def __call__(self, images, prompts):
        self.seen += len(images)
        ok = torch.tensor(["red" in p for p in prompts])
        self.last_info = {"success": ok}
        return 0.5 + ok.float() / 2


def test_prompt_success_scores_every_prompt_per_prompt_times(tiny_generator):
    from pixelrl.genrl.model import load_generator
    from pixelrl.genrl.sampler import make_schedule

    gen = load_generator(tiny_generator)
    sched = make_schedule(gen, 2, 1.0)
    fn, other = _FakeVerifier(), _FakeVerifier()
    stats = prompt_success(gen, sched, fn, ["a red circle", "two blue squares", "red"], per_prompt=3, guidance=1.0,
                           seed=0, batch_size=4, others={"o": other})
    assert fn.seen == 9 and other.seen == 9
    assert [s["success"] for s in stats] == [1.0, 0.0, 1.0] and [s["reward"] for s in stats] == [1.0, 0.5, 1.0]
    assert [s["o_success"] for s in stats] == [1.0, 0.0, 1.0] and all(s["images"] == 3 for s in stats)

    class _NoSuccess:
        name = "jpeg"

        def __call__(self, images, prompts):
            return torch.zeros(len(images))

    with pytest.raises(ConfigError, match="no per-image success"):
        prompt_success(gen, sched, _NoSuccess(), ["a"], per_prompt=1, guidance=1.0, seed=0)


def test_filter_band_and_signal_groups():
    stats = [{"prompt": p, "success": s, "reward": s} for p, s in [("a", 0.0), ("b", 0.25), ("c", 0.9), ("d", 1.0)]]
    assert filter_prompts(stats, 0.1, 0.9) == ["b", "c"]
    assert filter_prompts(stats, 0.0, 1.0) == ["a", "b", "c", "d"]
    with pytest.raises(ConfigError, match="kept 0 of 4") as e:
        filter_prompts(stats, 0.3, 0.5)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="LOW <= HIGH"):
        filter_prompts(stats, 0.6, 0.5)
    sm = summary(stats, group_size=2)
    # groups of 2 differ with probability 2 p (1 - p): 0, 0.375, 0.18, 0
    assert sm["signal_groups"] == pytest.approx((0.375 + 0.18) / 4)
    assert sm["mixed_frac"] == 0.5 and sm["success"] == pytest.approx(2.15 / 4)


@pytest.fixture(scope="module")
def red_blue_verifier(tmp_path_factory):
    from pixelrl.genrl.rewards import VerifierConfig, train_verifier
    from pixelrl.genrl.shapes_data import ShapesVocabulary

    vocab = ShapesVocabulary(colors=("red", "blue"), shapes=("square",), max_count=2, max_groups=1)
    out = tmp_path_factory.mktemp("verifier")
    train_verifier(out, VerifierConfig(steps=20, batch_size=16, pool_images=64, width=4, eval_images=16,
                                       vocabulary=vocab), progress=False)
    return out


def test_trainer_prompt_filter_is_measured_once_and_refuses_an_empty_band(tmp_path, tiny_generator,
                                                                          red_blue_verifier):
    from pixelrl.genrl.config import GenRLConfig
    from pixelrl.genrl.trainer import train

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("one red square\ntwo blue squares\n")
    common = dict(model=str(tiny_generator), prompts=str(prompts), algo="grpo",
                  reward=(f"shapes-verifier:{red_blue_verifier}",), steps=2, sample_batch_size=2, sample_batches=1,
                  train_batch_size=2, grad_accum=1, group_size=2, progress=False, export=False,
                  prompt_filter_samples=2)
    out = tmp_path / "all"
    train(GenRLConfig(**common, out=str(out), epochs=1, prompt_filter=(0.0, 1.0)), log=lambda s: None)
    saved = json.loads((out / "prompt_filter.json").read_text())
    assert saved["kept"] == ["one red square", "two blue squares"] and saved["band"] == [0.0, 1.0]
    assert [r["images"] for r in saved["rates"]] == [2, 2]
    # continuing reads the file back instead of measuring again (a marker in it survives)
    saved["marker"] = 1
    (out / "prompt_filter.json").write_text(json.dumps(saved))
    train(GenRLConfig(**common, out=str(out), epochs=2, prompt_filter=(0.0, 1.0)), log=lambda s: None)
    assert json.loads((out / "prompt_filter.json").read_text())["marker"] == 1
    # a random tiny generator is never counted right: a band above 0 keeps nothing, which is one line
    with pytest.raises(ConfigError, match="prompt filter") as e:
        train(GenRLConfig(**common, out=str(tmp_path / "none"), epochs=1, prompt_filter=(0.5, 1.0)),
              log=lambda s: None)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="prompt-filter"):
        GenRLConfig(**common, prompt_filter=(0.9, 0.1))
