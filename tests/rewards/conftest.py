"""A tiny, randomly initialised CLIP saved as a transformers model folder, so that tests load it through the real
``from_pretrained`` path (no weights can be downloaded here).

The tokenizer is CLIP's byte-level BPE with the smallest vocabulary that encodes any text: the 256 byte symbols
(GPT-2's byte-to-unicode table), each also with CLIP's end-of-word suffix ``</w>``, plus ``<|startoftext|>`` and
``<|endoftext|>``, and no merges (``merges.txt`` holds only its version line). Every word becomes its characters;
``CLIPTokenizer.from_pretrained`` reads ``vocab.json`` + ``merges.txt`` and ``save_pretrained`` adds the
tokenizer.json / tokenizer_config.json a real checkpoint has."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="transformers not installed (pip install 'pixelrl[rewards]')")

IMAGE_SIZE = 32


def byte_symbols() -> list[str]:
    """GPT-2's / CLIP's reversible byte -> unicode table (``bytes_to_unicode``), as 256 symbols."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def save_tiny_clip(folder: Path, *, seed: int = 0, image_size: int = IMAGE_SIZE) -> Path:
    """Write a tiny random CLIP (2-layer towers, width 32, 16-d embeddings) and its tokenizer to ``folder``."""
    import torch
    import transformers as tf

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    symbols = byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    bos, eos = len(vocab), len(vocab) + 1
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = bos, eos
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    config = tf.CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=bos, eos_token_id=eos,
                         pad_token_id=eos),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=8),
        projection_dim=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tf.CLIPModel(config).save_pretrained(folder)
    tf.CLIPTokenizer.from_pretrained(folder).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")
