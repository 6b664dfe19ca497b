"""Generated training data for the local generator and the verifiable reward: coloured shapes on backgrounds, each
image with the prompt that describes it ("two red circles", "one blue square and three yellow triangles").

A *scene* is a set of groups ``{(colour, shape): count}`` (counts 1..``max_count``, at most ``max_groups`` groups of
distinct colour-shape pairs). :func:`sample_groups` draws scenes, :func:`prompt_of` writes their prompt,
:func:`parse_prompt` reads a prompt back (the verifiable reward needs the requested counts), and
:func:`render_groups` draws them: the sprites are rasterised by the shapes environment's NumPy renderer
(:func:`pixelrl.envs.builtin.shapes.render_scenes`, the Spriteworld polygons), placed uniformly without overlap
(centres at least the sum of the two bounding radii plus ``gap`` apart, inside the walls), then composited over a
background -- a flat grey, a vertical gradient between two greys, or grey with pixel noise -- and anti-aliased by
rendering ``supersample`` times larger and averaging blocks. Backgrounds are not named in prompts: they are the
detail a JPEG-compressibility reward can remove.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pixelrl.envs.builtin.shapes import _EXTENT, COLORS as ENV_COLORS, SHAPES as ENV_SHAPES, render_scenes
from pixelrl.errors import ConfigError

__all__ = ["BACKGROUNDS", "NUMBER_WORDS", "TASKS", "ShapesVocabulary", "ShapesTask", "counts_array", "parse_prompt",
           "prompt_of", "render_groups", "resolve_task", "sample_batch", "sample_groups"]

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five")
_PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "pentagon": "pentagons",
           "hexagon": "hexagons", "star_4": "stars"}
_SINGULAR_WORD = {"star_4": "star"}
BACKGROUNDS = ("flat", "gradient", "noise")


@dataclass(frozen=True)
class ShapesVocabulary:
    """What the generated images and prompts may contain."""

    colors: tuple[str, ...] = ("red", "green", "blue", "yellow")
    """Shape colours (names of the shapes environment's palette)."""
    shapes: tuple[str, ...] = ("circle", "square", "triangle")
    """Shapes (names of the shapes environment's Spriteworld sprites)."""
    max_count: int = 3
    """Objects per group: 1..max_count."""
    max_groups: int = 1
    """Colour-shape groups per image: 1..max_groups (2 gives prompts like "two red circles and one blue square")."""
    scale: float = 0.16
    """Sprite size as a fraction of the image side (a square's side; other shapes have the same area)."""
    gap: float = 0.02
    """Extra free space between two sprites' bounding circles, as a fraction of the image side."""
    backgrounds: tuple[str, ...] = BACKGROUNDS
    """Background kinds drawn uniformly: flat grey, vertical grey gradient, grey with pixel noise."""

    def __post_init__(self) -> None:
        for c in self.colors:
            if c not in ENV_COLORS:
                raise ConfigError(f"colour {c!r} is unknown; use some of {', '.join(ENV_COLORS)}")
        for s in self.shapes:
            if s not in ENV_SHAPES:
                raise ConfigError(f"shape {s!r} is unknown; use some of {', '.join(ENV_SHAPES)}")
        if not self.colors or not self.shapes or len(set(self.colors)) < len(self.colors) or \
                len(set(self.shapes)) < len(self.shapes):
            raise ConfigError("colors and shapes must be non-empty lists without repeats")
        if not 1 <= self.max_count < len(NUMBER_WORDS):
            raise ConfigError(f"max_count={self.max_count} must be in 1..{len(NUMBER_WORDS) - 1}")
        if not 1 <= self.max_groups <= len(self.colors) * len(self.shapes):
            raise ConfigError(f"max_groups={self.max_groups} must be in 1..{len(self.colors) * len(self.shapes)} "
                              "(colour-shape pairs)")
        if not 0.05 <= self.scale <= 0.4:
            raise ConfigError(f"scale={self.scale} must be in [0.05, 0.4] (fraction of the image side)")
        for b in self.backgrounds:
            if b not in BACKGROUNDS:
                raise ConfigError(f"background {b!r} is unknown; use some of {', '.join(BACKGROUNDS)}")
        if not self.backgrounds:
            raise ConfigError("backgrounds must not be empty")

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """Every (colour, shape) pair, colour-major: the cells of :func:`counts_array`."""
        return [(c, s) for c in self.colors for s in self.shapes]

    def to_dict(self) -> dict:
        return {"colors": list(self.colors), "shapes": list(self.shapes), "max_count": self.max_count,
                "max_groups": self.max_groups, "scale": self.scale, "gap": self.gap,
                "backgrounds": list(self.backgrounds)}

    @classmethod
    def from_dict(cls, d: dict) -> "ShapesVocabulary":
        d = dict(d)
        for k in ("colors", "shapes", "backgrounds"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


@dataclass(frozen=True)
class ShapesTask:
    """A named task family: the vocabulary a generator is trained on and the one its verifier is trained on (the
    verifier's must cover the generator's prompts and also show it a few wrong images: more groups per image)."""

    generator: ShapesVocabulary
    """What the generator's training images (and so its prompts) hold."""
    verifier: ShapesVocabulary
    """What the verifier's training images hold."""
    description: str
    """One line for the help and the docs."""


TASKS: dict[str, ShapesTask] = {
    "scenes": ShapesTask(
        ShapesVocabulary(), ShapesVocabulary(max_groups=2),
        "1-3 shapes of one colour and shape (4 colours x 3 shapes, sprite scale 0.16) on flat, gradient or noisy "
        "grey; the verifier sees up to 2 groups (the defaults)"),
    "one-shape": ShapesTask(
        ShapesVocabulary(max_count=1, scale=0.3, backgrounds=("flat",)),
        ShapesVocabulary(max_count=1, max_groups=2, scale=0.3, backgrounds=("flat",)),
        "one large shape (4 colours x 3 shapes: 12 prompts such as 'one red circle', sprite scale 0.3, about 10 "
        "pixels of a 32x32 image) on flat grey; the verifier also sees two shapes per image. A task a small "
        "generator learns in tens of minutes on one CPU thread, so the verifiable reward's base rate is not near 0"),
}
"""Named task families (``--task``): ``scenes`` (the default vocabularies) and ``one-shape``."""


def resolve_task(task: str | None, vocabulary: ShapesVocabulary, default: ShapesVocabulary, *,
                 role: str) -> ShapesVocabulary:
    """The vocabulary a config uses: its ``vocabulary`` when ``task`` is None, else the task's ``role``
    (``generator`` / ``verifier``) vocabulary. A ``vocabulary`` changed from ``default`` together with a ``task``
    that says otherwise is one error line (the two would disagree)."""
    if task is None:
        return vocabulary
    if task not in TASKS:
        raise ConfigError(f"--task {task!r} is unknown; use one of {', '.join(TASKS)}")
    chosen = getattr(TASKS[task], role)
    if vocabulary != default and vocabulary != chosen:
        raise ConfigError(f"--task {task} sets the vocabulary; drop the --vocabulary.* options (or --task)")
    return chosen


Groups = dict  # {(colour, shape): count}


def _word(shape: str, n: int) -> str:
    return _PLURAL[shape] if n != 1 else _SINGULAR_WORD.get(shape, shape)


def prompt_of(groups: Groups) -> str:
    """The prompt of a scene: ``"two red circles and one blue square"`` (groups in the given order)."""
    return " and ".join(f"{NUMBER_WORDS[n]} {c} {_word(s, n)}" for (c, s), n in groups.items())


def parse_prompt(prompt: str, vocab: ShapesVocabulary) -> Groups:
    """The requested ``{(colour, shape): count}`` of a prompt written by :func:`prompt_of` (case and extra spaces
    ignored; "a"/"an" count as one). Raises one-line :class:`ConfigError` for text outside the vocabulary."""
    text = " ".join(str(prompt).lower().replace(",", " ").split())
    parts = [p for p in re.split(r"\band\b", text)]
    words = {w: i for i, w in enumerate(NUMBER_WORDS)} | {"a": 1, "an": 1}
    names = {}
    for s in vocab.shapes:
        names[_word(s, 1)] = s
        names[_word(s, 2)] = s
    groups: Groups = {}
    for part in parts:
        tok = part.split()
        if len(tok) != 3 or tok[0] not in words or tok[1] not in vocab.colors or tok[2] not in names:
            raise ConfigError(
                f"prompt {prompt!r} is not a shapes prompt: write groups like 'two red circles and one blue square' "
                f"(counts {', '.join(NUMBER_WORDS[1:vocab.max_count + 1])}; colours {', '.join(vocab.colors)}; "
                f"shapes {', '.join(vocab.shapes)})")
        key = (tok[1], names[tok[2]])
        groups[key] = groups.get(key, 0) + words[tok[0]]
    return groups


def counts_array(groups_list: Sequence[Groups], vocab: ShapesVocabulary) -> np.ndarray:
    """``int64[B, len(vocab.pairs)]``: the count of every (colour, shape) pair (0 for absent pairs)."""
    idx = {p: i for i, p in enumerate(vocab.pairs)}
    out = np.zeros((len(groups_list), len(idx)), np.int64)
    for b, g in enumerate(groups_list):
        for key, n in g.items():
            out[b, idx[key]] = n
    return out


def sample_groups(n: int, rng: np.random.Generator, vocab: ShapesVocabulary,
                  num_groups: int | None = None) -> list[Groups]:
    """``n`` random scenes: a number of groups uniform in 1..max_groups (or ``num_groups``), distinct pairs uniform,
    counts uniform in 1..max_count."""
    pairs = vocab.pairs
    out = []
    for _ in range(n):
        k = int(num_groups) if num_groups is not None else int(rng.integers(1, vocab.max_groups + 1))
        chosen = rng.choice(len(pairs), size=k, replace=False)
        out.append({pairs[i]: int(rng.integers(1, vocab.max_count + 1)) for i in chosen})
    return out


def _place(half: np.ndarray, space: np.ndarray, rng: np.random.Generator, gap: float,
           tries: int = 200) -> np.ndarray:
    """Uniform centres in the unit square for sprites of bounding half-widths ``half`` (kept inside the walls) and
    spacing radii ``space``: centres at least ``space_i + space_j + gap`` apart. Rejection sampling, restarting the
    scene when a sprite finds no place."""
    for _ in range(tries):
        pos = np.zeros((len(half), 2))
        for k in range(len(half)):
            for _ in range(tries):
                p = rng.uniform(half[k], 1 - half[k], size=2)
                if (np.linalg.norm(pos[:k] - p, axis=1) >= space[:k] + space[k] + gap).all():
                    pos[k] = p
                    break
            else:
                break
        else:
            return pos
    raise ConfigError(f"could not place {len(half)} sprites without overlap; use a smaller scale, gap or max_count")


def _layout(groups_list: Sequence[Groups], rng: np.random.Generator, vocab: ShapesVocabulary, S: int):
    """Sprite arrays ``(color, shape, scale, pos)`` ``[B, K]`` of non-overlapping scenes (empty slots: -1).

    Spacing uses a radius halfway between a sprite's bounding half-width and the radius of the disc of its area (the
    bounding circle is too conservative to fit six triangles); scenes whose rendered sprites still touch (checked on
    each sprite's own mask at the rendering resolution ``S``) are placed again."""
    B = len(groups_list)
    K = max(1, max((sum(g.values()) for g in groups_list), default=0))
    color = -np.ones((B, K), np.int64)
    shape = -np.ones((B, K), np.int64)
    pos = np.zeros((B, K, 2))
    for b, g in enumerate(groups_list):
        items = [(ENV_COLORS.index(c), ENV_SHAPES.index(s)) for (c, s), n in g.items() for _ in range(n)]
        order = rng.permutation(len(items))
        color[b, :len(items)] = [items[i][0] for i in order]
        shape[b, :len(items)] = [items[i][1] for i in order]
    scale = np.full((B, K), vocab.scale)
    half = _EXTENT[np.maximum(shape, 0)] * vocab.scale
    space = 0.5 * (half + vocab.scale / np.sqrt(np.pi))
    todo = np.arange(B)
    for _ in range(100):
        for b in todo:
            n = int((shape[b] >= 0).sum())
            pos[b, :n] = _place(half[b, :n], space[b, :n], rng, vocab.gap)
        # each sprite alone: a pixel covered by two sprites of one scene is an overlap
        masks = render_scenes(color[todo].reshape(-1, 1), shape[todo].reshape(-1, 1), scale[todo].reshape(-1, 1),
                              pos[todo].reshape(-1, 1, 2), size=S).any(axis=1)
        cover = masks.reshape(len(todo), K, S, S).sum(axis=1)
        todo = todo[(cover > 1).any(axis=(1, 2))]
        if not len(todo):
            return color, shape, scale, pos
    raise ConfigError("could not place the sprites without overlap; use a smaller scale or max_count")


def _backgrounds(kinds: Sequence[str], rng: np.random.Generator, size: int) -> np.ndarray:
    out = np.empty((len(kinds), size, size, 3), np.float64)
    for b, kind in enumerate(kinds):
        g0 = rng.uniform(0, 255)
        if kind == "flat":
            out[b] = g0
        elif kind == "gradient":
            g1 = rng.uniform(0, 255)
            out[b] = np.linspace(g0, g1, size)[:, None, None]
        else:  # noise
            out[b] = np.clip(g0 + rng.normal(0, 30, size=(size, size, 1)), 0, 255)
    return out


def render_groups(groups_list: Sequence[Groups], rng: np.random.Generator, vocab: ShapesVocabulary, *,
                  size: int = 32, supersample: int = 2) -> np.ndarray:
    """Draw scenes as ``uint8[B, 3, size, size]`` (see the module docstring), in chunks of 512 (bounded memory)."""
    if len(groups_list) > 512:
        return np.concatenate([render_groups(groups_list[i:i + 512], rng, vocab, size=size, supersample=supersample)
                               for i in range(0, len(groups_list), 512)])
    B, S = len(groups_list), int(size) * int(supersample)
    sprites = render_scenes(*_layout(groups_list, rng, vocab, S), size=S).transpose(0, 2, 3, 1).astype(np.float64)
    mask = sprites.any(axis=-1, keepdims=True)  # every palette colour has a non-zero channel
    kinds = [vocab.backgrounds[i] for i in rng.integers(len(vocab.backgrounds), size=B)]
    img = np.where(mask, sprites, _backgrounds(kinds, rng, S))
    if supersample > 1:
        img = img.reshape(B, size, supersample, size, supersample, 3).mean(axis=(2, 4))
    return np.ascontiguousarray(np.clip(np.round(img), 0, 255).astype(np.uint8).transpose(0, 3, 1, 2))


def sample_batch(n: int, rng: np.random.Generator, vocab: ShapesVocabulary, *, size: int = 32,
                 supersample: int = 2) -> tuple[np.ndarray, list[str], list[Groups]]:
    """``(images uint8[n, 3, size, size], prompts, groups)`` of ``n`` random scenes."""
    groups = sample_groups(n, rng, vocab)
    return render_groups(groups, rng, vocab, size=size, supersample=supersample), [prompt_of(g) for g in groups], groups

