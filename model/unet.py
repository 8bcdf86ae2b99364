"""The 2D U-Net: a function of its hyperparameters that returns a `keras.Model`.

Symmetric encoder and decoder with skip connections (Ronneberger et al. 2015). The
output layer runs in float32 whatever the mixed-precision policy, so sigmoid
probabilities and the loss stay accurate.
"""

import dataclasses

import keras
from keras import layers

UPSAMPLING_MODES = ("transpose", "bilinear")


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

  def validate(self):
    if self.image_size % (2 ** self.depth):
      raise ValueError(f"image_size {self.image_size} must divide by 2**depth = {2 ** self.depth}")
    if self.upsampling not in UPSAMPLING_MODES:
      raise ValueError(f"upsampling must be one of {UPSAMPLING_MODES}, got {self.upsampling!r}")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")


TINY = UNetConfig(image_size=32, depth=2, base_filters=4, dropout=0.0)  # for tests


def _conv_block(x, filters, config, name):
  for i in (1, 2):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=not config.batch_norm,
                      kernel_initializer="he_normal", name=f"{name}_conv{i}")(x)
    if config.batch_norm:
      x = layers.BatchNormalization(momentum=0.9, synchronized=config.sync_batch_norm,
                                    name=f"{name}_bn{i}")(x)
    x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
  return x


def build_unet(config=UNetConfig(), name="unet"):
  """Builds the U-Net for `config`; outputs sigmoid probabilities [B, H, W, num_outputs]."""
  config.validate()
  inputs = keras.Input((config.image_size, config.image_size, config.channels), name="image")
  x, skips = inputs, []
  for level in range(config.depth):
    x = _conv_block(x, config.base_filters * 2 ** level, config, f"down{level}")
    if config.dropout and level == config.depth - 1:
      x = layers.Dropout(config.dropout, name=f"down{level}_dropout")(x)
    skips.append(x)
    x = layers.MaxPooling2D(2, name=f"down{level}_pool")(x)
  x = _conv_block(x, config.base_filters * 2 ** config.depth, config, "bottleneck")
  if config.dropout:
    x = layers.Dropout(config.dropout, name="bottleneck_dropout")(x)
  for level in reversed(range(config.depth)):
    filters = config.base_filters * 2 ** level
    if config.upsampling == "transpose":
      x = layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"up{level}_up")(x)
    else:
      x = layers.UpSampling2D(2, interpolation="bilinear", name=f"up{level}_up")(x)
      x = layers.Conv2D(filters, 1, name=f"up{level}_proj")(x)
    x = layers.Concatenate(name=f"up{level}_concat")([x, skips[level]])
    x = _conv_block(x, filters, config, f"up{level}")
  outputs = layers.Conv2D(config.num_outputs, 1, activation="sigmoid", dtype="float32",
                          name="probabilities")(x)
  return keras.Model(inputs, outputs, name=name)
