"""Networks: encoders, actor and critic heads, augmentation. Knows nothing of environments or files."""

from pixelrl.nets.actor import Actor, clamp_straight_through, sample_action
from pixelrl.nets.augment import RandomShift, random_shift, random_shift_index
from pixelrl.nets.critic import Critic, QHead, ScalarQHead
from pixelrl.nets.encoders import ConvEncoder, NatureCNN, ObsEncoder, conv_output_size, orthogonal_init
from pixelrl.nets.layers import EnsembleLinear, mlp, weight_init
from pixelrl.nets.moe import MoE, MoEConfig

__all__ = [
    "Actor",
    "ConvEncoder",
    "Critic",
    "EnsembleLinear",
    "MoE",
    "MoEConfig",
    "NatureCNN",
    "ObsEncoder",
    "QHead",
    "RandomShift",
    "ScalarQHead",
    "clamp_straight_through",
    "conv_output_size",
    "mlp",
    "orthogonal_init",
    "random_shift",
    "random_shift_index",
    "sample_action",
    "weight_init",
]
