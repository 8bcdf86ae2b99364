"""The 2D U-Net and the config of every architecture: `build_model(config)` builds any of them.

Symmetric encoder and decoder with skip connections (Ronneberger et al. 2015). The other
architectures (U-Net++, Attention U-Net, TransUNet; docs/architectures.md) reuse its encoder,
decoder and head from model/blocks.py and change only what their papers change. The output
layer runs in float32 whatever the mixed-precision policy, so sigmoid probabilities and the
loss stay accurate.
"""

import keras

from model import attention_unet
from model import blocks
from model.config import UNetConfig
from model import trans_unet
from model import unet_plus_plus

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
