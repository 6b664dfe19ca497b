"""A tiny, randomly initialised CLIP saved as a transformers model folder, so that tests load it through the real
``from_pretrained`` path (no weights can be downloaded here). Its tokenizer is
:func:`pixelrl.rewards.vlm.write_byte_tokenizer`'s: CLIP's byte-level BPE with the 256 byte symbols (and their
``</w>`` forms) as the whole vocabulary and no merges, written as ``vocab.json`` + ``merges.txt`` and re-saved by
``CLIPTokenizer.save_pretrained`` with the tokenizer.json / tokenizer_config.json a real checkpoint has."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="transformers not installed (pip install 'pixelrl[rewards]')")

IMAGE_SIZE = 32


def save_tiny_clip(folder: Path, *, seed: int = 0, image_size: int = IMAGE_SIZE) -> Path:
    """Write a tiny random CLIP (2-layer towers, width 32, 16-d embeddings) and its tokenizer to ``folder``."""
    import torch
    import transformers as tf

    from pixelrl.rewards.vlm import write_byte_tokenizer

    folder = Path(folder)
    tok = write_byte_tokenizer(folder)
    config = tf.CLIPConfig(
        text_config=dict(vocab_size=tok["vocab_size"], hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=tok["bos_token_id"],
                         eos_token_id=tok["eos_token_id"], pad_token_id=tok["eos_token_id"]),
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
