"""The 2D U-Net and the config of every architecture: `build_model(config)` builds any of them.

Symmetric encoder and decoder with skip connections (Ronneberger et al. 2015). The other
architectures (U-Net++, Attention U-Net, TransUNet; docs/architectures.md) reuse its encoder,
decoder and head from model/blocks.py and change only what their papers change. The output
layer runs in float32 whatever the mixed-precision policy, so sigmoid probabilities and the
loss stay accurate.
"""

import dataclasses

import keras

from model import attention_unet
from model import blocks
from model import trans_unet
from model import unet_plus_plus

UPSAMPLING_MODES = ("transpose", "bilinear")
ARCHITECTURES = ("unet", "unet_plus_plus", "attention_unet", "trans_unet")


@dataclasses.dataclass(frozen=True)
class UNetConfig:
  """Hyperparameters. The defaults train well on 128x128 FLAIR slices."""

  image_size: int = 128
  channels: int = 1
  num_outputs: int = 1
  depth: int = 4  # poolings; the image size must divide by 2**depth
  base_filters: int = 32  # doubled at each level
  batch_norm: bool = True
  sync_batch_norm: bool = False  # batch statistics over all replicas (costs an all-reduce)
  dropout: float = 0.1  # at the bottleneck and the deepest encoder level
  upsampling: str = "transpose"
  architecture: str = "unet"  # one of ARCHITECTURES
  deep_supervision: bool = False  # unet_plus_plus: average the heads of X^{0,1..depth}
  transformer_layers: int = 2  # trans_unet: blocks over the bottleneck tokens
  transformer_heads: int = 4  # trans_unet: attention heads per block

  def validate(self):
    if self.architecture not in ARCHITECTURES:
      raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
    if self.image_size % (2**self.depth):
      raise ValueError(f"image_size {self.image_size} must divide by 2**depth = {2**self.depth}")
    if self.upsampling not in UPSAMPLING_MODES:
      raise ValueError(f"upsampling must be one of {UPSAMPLING_MODES}, got {self.upsampling!r}")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
    if self.transformer_layers < 1 or self.transformer_heads < 1:
      raise ValueError(
        "transformer_layers and transformer_heads must be at least 1, got "
        f"{self.transformer_layers} and {self.transformer_heads}"
      )


TINY = UNetConfig(image_size=32, depth=2, base_filters=4, dropout=0.0)  # for tests


def build_unet(config=UNetConfig(), name="unet"):
  """Builds the classic U-Net of `config` (its `architecture` field is `build_model`'s to
  read); outputs sigmoid probabilities [B, H, W, num_outputs]."""
  config.validate()
  inputs = blocks.image_input(config)
  x, skips = blocks.encoder(inputs, config)
  x = blocks.decoder(x, skips, config)
  return keras.Model(inputs, blocks.head(x, config), name=name)


def build_model(config=UNetConfig()):
  """The one entry point: builds `config.architecture`, named after it."""
  config.validate()
  builders = {
    "unet": build_unet,
    "unet_plus_plus": unet_plus_plus.build,
    "attention_unet": attention_unet.build,
    "trans_unet": trans_unet.build,
  }
  return builders[config.architecture](config, name=config.architecture)
