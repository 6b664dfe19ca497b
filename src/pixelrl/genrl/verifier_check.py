"""How well the shapes verifier judges a generator's images: a second, independent labeller and precision/recall.

The verifier (:class:`~pixelrl.genrl.rewards.ShapesVerifierReward`) is a CNN trained on rendered scenes; a
generator's images are softer, tinted and grainier, so its success rate on them may be a biased estimate of "the
image shows what the prompt asks". :func:`rule_labels` labels images without any learning, by rules that read the
same things a person does on the flat-background tasks (``one-shape``): the shapes are the connected regions of
saturated pixels on a grey background, each region's colour is the palette hue nearest its mean hue, and its shape
the one whose rendered template (the data generator's own sprites at the task's scale, searched over a few positions
and sizes) overlaps it best (intersection over union). An image is *right* by these rules when every region is
clearly one of the shapes (IoU at least ``min_iou``) and the counts equal the prompt's request exactly.

:func:`precision_recall` compares the verifier's ``success`` with such labels (or with the ground truth of rendered
scenes): precision = right among those the verifier accepts, recall = accepted among the right ones.
"""

from __future__ import annotations

import colorsys
from typing import Any, Sequence

import numpy as np

from pixelrl.genrl.shapes_data import ShapesVocabulary

__all__ = ["rule_labels", "precision_recall", "degrade_images"]

_HUE = {"red": 0.0, "yellow": 60.0, "green": 120.0, "cyan": 180.0, "blue": 240.0}


def _templates(vocab: ShapesVocabulary, size: int, scales: Sequence[float]) -> dict:
    """Coverage ``float[S, S]`` of every shape centred in the image, for each scale factor and Gaussian blur (a
    generator draws soft edges: without blurred templates a soft square reads as a circle)."""
    from scipy import ndimage

    from pixelrl.envs.builtin.shapes import SHAPES, render_scenes

    out = {}
    for s in vocab.shapes:
        for f in scales:
            img = render_scenes(np.array([[3]]), np.array([[SHAPES.index(s)]]), np.array([[vocab.scale * f]]),
                                np.array([[[0.5, 0.5]]]), size=size, supersample=4)  # red: channel 0 is coverage
            cover = img[0, 0].astype(np.float64) / 255.0
            for sigma in (0.0, 0.7, 1.2, 1.7):
                out[(s, f, sigma)] = ndimage.gaussian_filter(cover, sigma) if sigma else cover
    return out


def _hue_name(rgb: np.ndarray, colors: Sequence[str]) -> str:
    h, _, _ = colorsys.rgb_to_hsv(*np.clip(rgb, 0, 1))
    h *= 360.0
    return min(colors, key=lambda c: min(abs(h - _HUE[c]), 360 - abs(h - _HUE[c])))


def rule_labels(images, vocab: ShapesVocabulary, *, min_sat: float = 0.2, min_area: int = 12,
                min_iou: float = 0.6, scales: Sequence[float] = (0.8, 0.9, 1.0, 1.1, 1.2)) -> list[dict[str, Any]]:
    """Label images ``[B, 3, S, S]`` (uint8, or float in [0, 1]) of a flat-background shapes task by rules (module
    docstring). Returns per image ``{"groups": {(colour, shape): n}, "clear": bool, "objects": [(colour, shape,
    iou, area)]}``; ``clear`` is False when a region matches no shape with a soft IoU (sum of minima over sum of
    maxima of the region's saturation, scaled to [0, 1], and the template's coverage) >= ``min_iou``. ``min_sat``: the
    saturation (max - min channel, in [0, 1]) above the background's that makes a pixel part of a shape;
    ``min_area``: regions of fewer pixels are ignored (specks); ``scales``: sizes tried, relative to the task's."""
    from scipy import ndimage

    x = np.asarray(images)
    x = x.astype(np.float64) / 255.0 if x.dtype == np.uint8 else x.astype(np.float64)
    B, _, S, _ = x.shape
    if not all(c in _HUE for c in vocab.colors):
        raise ValueError(f"rule_labels reads the hues of {', '.join(_HUE)}, not {vocab.colors}")
    tmpl = _templates(vocab, S, scales)
    c = S // 2
    out = []
    for b in range(B):
        img = x[b].transpose(1, 2, 0)
        sat = img.max(-1) - img.min(-1)
        border = np.concatenate([sat[0], sat[-1], sat[:, 0], sat[:, -1]])
        fg = sat > np.median(border) + min_sat
        lab, n = ndimage.label(fg, structure=np.ones((3, 3)))
        objects, clear = [], True
        for k in range(1, n + 1):
            m = lab == k
            if m.sum() < min_area:
                continue
            # cut the region at half its own saturation (a soft edge is half in, as a rendered sprite's is)
            base = np.median(border)
            peak = np.percentile(sat[m], 90)
            region = ndimage.binary_dilation(m, iterations=3)
            soft = np.where(region, np.clip((sat - base) / max(peak - base, 1e-6), 0, 1), 0.0)
            m = region & (soft > 0.5)
            area = int(m.sum())
            colour = _hue_name(img[m].mean(0), vocab.colors)
            cy, cx = (int(round(v)) for v in ndimage.center_of_mass(m))
            best: dict[str, float] = {}
            for (s, _, _), t in tmpl.items():
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        sh = np.roll(np.roll(t, cy - c + dy, 0), cx - c + dx, 1)
                        iou = float(np.minimum(sh, soft).sum() / max(np.maximum(sh, soft).sum(), 1e-6))
                        best[s] = max(best.get(s, 0.0), iou)
            shape = max(best, key=best.get)
            objects.append((colour, shape, best[shape], area))
            clear &= best[shape] >= min_iou
        groups: dict = {}
        for colour, shape, _, _ in objects:
            groups[(colour, shape)] = groups.get((colour, shape), 0) + 1
        out.append({"groups": groups, "clear": bool(clear), "objects": objects})
    return out


def precision_recall(accepted: Sequence[bool], right: Sequence[bool]) -> dict[str, Any]:
    """Precision (right among accepted), recall (accepted among right) and the counts behind them."""
    a, r = np.asarray(accepted, bool), np.asarray(right, bool)
    tp, fp, fn = int((a & r).sum()), int((a & ~r).sum()), int((~a & r).sum())
    return {"images": int(len(a)), "right": int(r.sum()), "accepted": int(a.sum()), "true_pos": tp,
            "false_pos": fp, "false_neg": fn, "precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / (tp + fn) if tp + fn else None}


def degrade_images(x, rng: np.random.Generator, *, blur: float = 1.0, jitter: float = 0.1, noise: float = 0.05):
    """Rendered images ``float [B, 3, S, S]`` in [0, 1] degraded as a generator's samples look (the verifier's
    augmentation of :func:`~pixelrl.genrl.rewards.augment_images` with its own strengths, flips off): a test set
    with exact ground truth."""
    import torch

    from pixelrl.genrl.rewards import VerifierConfig, augment_images

    cfg = VerifierConfig(noise=noise, blur=blur, jitter=jitter, task="one-shape")
    g = torch.Generator().manual_seed(int(rng.integers(2 ** 31)))
    return augment_images(torch.as_tensor(x, dtype=torch.float32), cfg, g)
