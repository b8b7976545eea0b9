"""The paper's networks as functional `flax.linen` modules (NHWC)."""

from flax_gradnet.models.ablations import GENERATOR_ABLATIONS, Ablation
from flax_gradnet.models.critic import PatchCritic, conv_as_matmul
from flax_gradnet.models.factory import generator_from_config
from flax_gradnet.models.generator import (
    Generator,
    GeneratorWithoutGradientNet,
    GeneratorWithoutMBRBs,
    GeneratorWithoutRGCL,
    GradientNet,
    pixel_shuffle,
)
from flax_gradnet.models.layers import MBRB, RGCL, ChannelAttention, PaddedConv, PlainPath

__all__ = [
    "GENERATOR_ABLATIONS", "Ablation",
    "ChannelAttention", "RGCL", "MBRB", "PlainPath", "PaddedConv", "GradientNet", "Generator",
    "GeneratorWithoutRGCL", "GeneratorWithoutMBRBs", "GeneratorWithoutGradientNet",
    "PatchCritic", "conv_as_matmul", "pixel_shuffle", "generator_from_config",
]
