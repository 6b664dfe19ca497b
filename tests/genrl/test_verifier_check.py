"""pixelrl.genrl.verifier_check: the rule-based second labeller reads rendered one-shape scenes (sharp and degraded)
as the data generator drew them, calls a wrong prompt wrong, and precision/recall count as defined."""

from __future__ import annotations

import numpy as np
import pytest

from pixelrl.genrl.shapes_data import TASKS, prompt_of, render_groups, sample_batch
from pixelrl.genrl.verifier_check import degrade_images, precision_recall, rule_labels


def test_rule_labels_read_rendered_and_degraded_one_shape_scenes():
    vocab = TASKS["one-shape"].generator
    rng = np.random.default_rng(3)
    img, prompts, groups = sample_batch(48, rng, vocab)
    labels = rule_labels(img, vocab)
    assert [lab["groups"] for lab in labels] == groups
    assert all(lab["clear"] for lab in labels)
    soft = degrade_images(img / 255.0, rng, blur=1.5, jitter=0.2, noise=0.05).numpy()
    right = [lab["clear"] and lab["groups"] == g for lab, g in zip(rule_labels(soft, vocab), groups)]
    assert np.mean(right) >= 0.95


def test_rule_labels_see_no_shape_on_a_blank_image_and_two_apart():
    vocab = TASKS["one-shape"].verifier
    blank = np.full((1, 3, 32, 32), 128, np.uint8)
    assert rule_labels(blank, vocab)[0]["groups"] == {}
    two = {("red", "circle"): 1, ("blue", "triangle"): 1}
    found = [lab["groups"] for lab in rule_labels(render_groups([two] * 8, np.random.default_rng(0), vocab), vocab)]
    assert sum(f == two for f in found) >= 6  # two shapes that touch merge into one unclear region


def test_precision_recall_counts():
    pr = precision_recall([True, True, False, False, True], [True, False, True, False, True])
    assert (pr["true_pos"], pr["false_pos"], pr["false_neg"]) == (2, 1, 1)
    assert pr["precision"] == pytest.approx(2 / 3) and pr["recall"] == pytest.approx(2 / 3)
    assert precision_recall([False], [False])["precision"] is None
    assert prompt_of({("red", "circle"): 1}) == "one red circle"
