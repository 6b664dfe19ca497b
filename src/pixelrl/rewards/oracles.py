"""Who compares the pairs a preference model learns from, behind one interface::

    labels = oracle.label(query)     # int64 [n]: 0 first better, 1 second better, -1 equal / unsure, -2 skipped

``query`` is a :class:`~pixelrl.rewards.preference.PairQuery` (both sides' net inputs, their true returns when
known, the round). Three oracles:

* :class:`ScriptedOracle` -- the true return of each side (the env's rewards summed over the segment), PEBBLE's
  ``get_label`` teacher: label 1 when the second side's return is larger, else 0; a ``noise`` share of labels flipped
  (``teacher_eps_mistake``) and an ``equal_rate`` share answered "equal" at random, as an unsure VLM does.
* :class:`VLMOracle` -- RL-VLM-F's two-stage query: an analysis of the two images against the goal, then a text-only
  question whose first line must be 0, 1 or -1; anything else is unparsable and dropped, pairs of identical images are
  dropped, -1 is kept as "equal" (the model drops it unless told otherwise). The VLM itself is any callable
  ``vlm(images, prompt) -> str`` (``images`` a list of ``uint8 [H, W, 3]``, empty for the text-only stage), or a local
  transformers model folder (:class:`TransformersVLM`) -- only when one is configured.
* :class:`PersonOracle` -- a person at ``pixelrl label QUEUE``: the pairs are written to the label queue
  (:mod:`pixelrl.rewards.queue`) and the oracle waits for their labels (left / right / equal / skip).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from pixelrl.errors import ConfigError, MissingExtraError, NotFoundError
from pixelrl.rewards.preference import EQUAL, SKIP, InputSpec, PairQuery

__all__ = ["ScriptedOracle", "VLMOracle", "PersonOracle", "TransformersVLM", "parse_vlm_label", "analysis_prompt",
           "summary_prompt", "ORACLES"]

ORACLES = ("scripted", "vlm", "person")


class ScriptedOracle:
    """The true return decides (see the module docstring). Draws from its own generator (``seed``), whose state is
    part of the online loop's checkpoint."""

    def __init__(self, noise: float = 0.0, equal_rate: float = 0.0, *, seed: int = 0) -> None:
        for name, v in (("noise", noise), ("equal_rate", equal_rate)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise ConfigError(f"the scripted oracle's {name} must be a probability in [0, 1], got {v!r}")
        self.noise, self.equal_rate = float(noise), float(equal_rate)
        self.rng = np.random.default_rng(np.random.SeedSequence([int(seed), 4]))

    def label(self, query: PairQuery) -> np.ndarray:
        if query.returns_first is None or query.returns_second is None:
            raise ConfigError("the scripted oracle compares true returns, and these pairs come without rewards "
                              "(a dataset without rewards?); use a VLM or a person")
        r1 = np.asarray(query.returns_first, dtype=np.float64)
        r2 = np.asarray(query.returns_second, dtype=np.float64)
        labels = (r1 < r2).astype(np.int64)  # PEBBLE: rational_labels = 1 * (sum_r_t_1 < sum_r_t_2)
        flip = self.rng.random(len(labels)) < self.noise
        labels[flip] = 1 - labels[flip]
        equal = self.rng.random(len(labels)) < self.equal_rate
        labels[equal] = EQUAL
        return labels

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        if state.get("rng") is not None:
            self.rng.bit_generator.state = state["rng"]


# ------------------------------------------------------------------------------------------- VLM


ANALYSIS_TEMPLATE = """
1. What is shown in Image 1?
2. What is shown in Image 2?
3. The goal is {goal}. Is there any difference between Image 1 and Image 2 in terms of achieving the goal?
"""
SUMMARY_TEMPLATE = """
Based on the text below to the questions:
1. What is shown in Image 1?
2. What is shown in Image 2?
3. The goal is {goal}. Is there any difference between Image 1 and Image 2 in terms of achieving the goal?
{analysis}

Is the goal better achieved in Image 1 or Image 2?
Reply a single line of 0 if the goal is better achieved in Image 1, or 1 if it is better achieved in Image 2.
Reply -1 if the text is unsure or there is no difference.
"""
"""RL-VLM-F's ``gemini_free_query_template`` and ``gemini_summary_template`` (prompt.py), verbatim."""


def analysis_prompt(goal: str) -> str:
    """Stage 1 (with both images): "Consider the following two images: Image 1: <img> Image 2: <img>" then this."""
    return ANALYSIS_TEMPLATE.format(goal=goal)


def summary_prompt(goal: str, analysis: str) -> str:
    """Stage 2 (text only), given stage 1's answer."""
    return SUMMARY_TEMPLATE.format(goal=goal, analysis=analysis)


def parse_vlm_label(reply: Any) -> Optional[int]:
    """RL-VLM-F's parsing of the stage-2 reply: its first line, stripped, as an integer in {0, 1, -1}; None
    (dropped) for anything else -- an empty reply, prose, another number."""
    if not isinstance(reply, str):
        return None
    lines = reply.strip().split("\n")
    try:
        value = int(lines[0].strip())
    except ValueError:
        return None
    return value if value in (0, 1, -1) else None


class VLMOracle:
    """RL-VLM-F's two-stage VLM labelling of single frames (segment = 1; a longer segment shows its last frame, as
    their ``vlm_label=1`` does). ``vlm(images, prompt) -> str`` answers both stages: stage 1 gets the two frames
    (``[img1, img2]``) and the prompt "Consider the following two images: Image 1: ... Image 2: ..." + the analysis
    questions, stage 2 gets no images and the summary prompt with stage 1's answer.

    Counts ``answered``, ``equal``, ``dropped`` (unparsable), ``identical`` over its life."""

    def __init__(self, vlm: Callable[[list, str], str], goal: str) -> None:
        if not callable(vlm):
            raise ConfigError("the VLM oracle needs a callable vlm(images, prompt) -> str")
        if not isinstance(goal, str) or not goal.strip():
            raise ConfigError("the VLM oracle needs a goal sentence (--reward.goal 'to balance the pole upright')")
        self.vlm, self.goal = vlm, goal.strip()
        self.counts = {"answered": 0, "equal": 0, "dropped": 0, "identical": 0}

    def check(self, spec: InputSpec) -> None:
        if not spec.pixel:
            raise ConfigError("prefs:vlm compares images and these observations are states; use pixel observations "
                              "or prefs:scripted")

    def label(self, query: PairQuery) -> np.ndarray:
        f1, f2 = query.frames()
        out = np.full(len(query), SKIP, dtype=np.int64)
        for i in range(len(query)):
            img1, img2 = f1[i, -1], f2[i, -1]
            if np.linalg.norm(img1.astype(np.float64) - img2.astype(np.float64)) < 1e-3:
                self.counts["identical"] += 1  # RL-VLM-F ignores a pair of identical images
                continue
            stage1 = "Consider the following two images:\nImage 1:\n<image>\nImage 2:\n<image>\n" + \
                analysis_prompt(self.goal)
            analysis = self.vlm([img1, img2], stage1)
            value = parse_vlm_label(self.vlm([], summary_prompt(self.goal, str(analysis))))
            if value is None:
                self.counts["dropped"] += 1
                continue
            out[i] = value
            self.counts["equal" if value == EQUAL else "answered"] += 1
        return out

    def state_dict(self) -> dict:
        return dict(self.counts)

    def load_state_dict(self, state: dict) -> None:
        self.counts.update({k: int(v) for k, v in state.items() if k in self.counts})


class TransformersVLM:
    """A local vision-language model in transformers format (a folder with a processor that has a chat template,
    e.g. Qwen2-VL, LLaVA, Idefics), used as ``vlm(images, prompt) -> str`` by :class:`VLMOracle`: the images go
    before the prompt's text in one user turn, greedy decoding (RL-VLM-F queries Gemini at temperature 0), only the
    new tokens are decoded. Nothing is downloaded: the folder must exist."""

    def __init__(self, folder: str, *, device: str = "cpu", max_new_tokens: int = 256) -> None:
        path = Path(folder)
        if not (path / "config.json").is_file():
            raise NotFoundError(f"VLM folder {folder} has no config.json; pass a local transformers vision-language "
                                "model folder (e.g. one downloaded with `hf download Qwen/Qwen2-VL-2B-Instruct "
                                "--local-dir DIR`) as --reward.vlm DIR")
        try:
            import transformers as tf
        except ImportError:
            raise MissingExtraError("the VLM oracle needs transformers: pip install 'pixelrl[rewards]'") from None
        auto = getattr(tf, "AutoModelForImageTextToText", None) or getattr(tf, "AutoModelForVision2Seq")
        self.processor = tf.AutoProcessor.from_pretrained(path)
        self.model = auto.from_pretrained(path).to(device).eval()
        self.device, self.max_new_tokens = device, int(max_new_tokens)

    def __call__(self, images: Sequence[np.ndarray], prompt: str) -> str:
        import torch
        from PIL import Image

        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": prompt.replace("<image>", "")}]
        text = self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        pil = [Image.fromarray(np.asarray(im)) for im in images] or None
        inputs = self.processor(text=[text], images=pil, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new = out[:, inputs["input_ids"].shape[1]:]
        return self.processor.batch_decode(new, skip_special_tokens=True)[0]


# ------------------------------------------------------------------------------------------- a person


class PersonOracle:
    """A person labelling at ``pixelrl label QUEUE``: each round's pairs become one batch of the queue (written
    once: a resumed run finds its batch there and does not write it again), and :meth:`label` waits until every
    pair of the batch has an answer, polling every ``poll_s`` seconds (``timeout_s`` None: for ever; Ctrl-C stops
    the run and the labels given so far stay on disk)."""

    def __init__(self, queue: Any, *, poll_s: float = 1.0, timeout_s: Optional[float] = None,
                 notify: Optional[Callable[[str], None]] = None, segment: int = 1, goal: Optional[str] = None) -> None:
        from pixelrl.rewards.queue import LabelQueue

        self.queue = queue if isinstance(queue, LabelQueue) else LabelQueue.open_or_create(queue, segment=segment,
                                                                                              goal=goal)
        if int(self.queue.meta.get("segment", 1)) != int(segment):
            raise ConfigError(f"label queue {self.queue.path} holds segments of {self.queue.meta.get('segment')} "
                              f"steps, this model compares {segment}; use another --reward.queue")
        self.poll_s, self.timeout_s = float(poll_s), timeout_s
        self.notify = notify if notify is not None else (lambda msg: print(msg, flush=True))

    def check(self, spec: InputSpec) -> None:
        if not spec.pixel:
            raise ConfigError("prefs:person shows clips to a person and these observations are states; use pixel "
                              "observations")
        self.queue.set_spec(spec.to_json())

    def label(self, query: PairQuery) -> np.ndarray:
        if not query.pixel:
            raise ConfigError("prefs:person shows clips to a person and these pairs are states")
        batch = self.queue.batch_ids(query.round)
        if batch is None:  # a resumed run re-asks its round: the batch (and any answers) are on disk already
            batch = self.queue.add_batch(query.first, query.second, batch=query.round)
        self.notify(f"{len(batch)} pairs wait for labels at `pixelrl label {self.queue.path}` "
                    f"({self.queue.num_labelled()}/{self.queue.num_pairs()} labelled)")
        t0 = time.monotonic()
        while True:
            labels = self.queue.labels()
            if all(i in labels for i in batch):
                return np.array([labels[i] for i in batch], dtype=np.int64)
            if self.timeout_s is not None and time.monotonic() - t0 > self.timeout_s:
                raise TimeoutError(f"no labels for pairs {[i for i in batch if i not in labels][:5]}... of "
                                   f"{self.queue.path} after {self.timeout_s:g} s")
            time.sleep(self.poll_s)
