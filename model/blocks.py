"""Pieces shared by every architecture: the conv block, the U-Net encoder and decoder, the head.

One definition, so the architectures differ only where their papers differ and a comparison
between them measures that difference. The builders take any object with the fields of
`unet.UNetConfig` (this module does not import it, so the architecture modules can be imported
by unet.py without a cycle).
"""

import keras
from keras import layers


def conv_block(x, filters, config, name):
  """Two 3x3 convolutions, each followed by the normalization layer (if any) and ReLU."""
  for i in (1, 2):
    x = layers.Conv2D(
      filters,
      3,
      padding="same",
      use_bias=config.norm_layer == "none",
      kernel_initializer="he_normal",
      name=f"{name}_conv{i}",
    )(x)
    x = norm(x, config, name, i)
    x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
  return x


def norm(x, config, block_name, index):
  """Batch norm (moving statistics of the training data at test time), instance norm
  (each slice's own statistics per channel, in training and at test time, as in nnU-Net:
  nothing learned about one site's intensities is frozen into the model), or none."""
  if config.norm_layer == "batch":
    return layers.BatchNormalization(
      momentum=0.9, synchronized=config.sync_batch_norm, name=f"{block_name}_bn{index}"
    )(x)
  if config.norm_layer == "instance":
    return layers.GroupNormalization(groups=-1, epsilon=1e-5, name=f"{block_name}_in{index}")(x)
  return x


def filters_at(config, level):
  return config.base_filters * 2**level


# Every layer the encoder makes is named down<level>_* or bottleneck_* (fine-tuning freezes them).
ENCODER_PREFIXES = ("down", "bottleneck")


def encoder(inputs, config):
  """The U-Net's contracting path and bottleneck.

  Returns:
    (bottleneck features at 1/2**depth of the image size, [skip of level 0, ..., depth - 1]).
  """
  x, skips = inputs, []
  for level in range(config.depth):
    x = conv_block(x, filters_at(config, level), config, f"down{level}")
    if config.dropout and level == config.depth - 1:
      x = layers.Dropout(config.dropout, name=f"down{level}_dropout")(x)
    skips.append(x)
    x = layers.MaxPooling2D(2, name=f"down{level}_pool")(x)
  x = conv_block(x, filters_at(config, config.depth), config, "bottleneck")
  if config.dropout:
    x = layers.Dropout(config.dropout, name="bottleneck_dropout")(x)
  return x, skips


def upsample(x, filters, config, name):
  """Doubles the resolution: a 2x2 transposed convolution, or bilinear then a 1x1 projection."""
  if config.upsampling == "transpose":
    return layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"{name}_up")(x)
  x = layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_up")(x)
  return layers.Conv2D(filters, 1, name=f"{name}_proj")(x)


def decoder(x, skips, config, gate=None):
  """The U-Net's expanding path. `gate(skip, coarse, level)`, if given, filters each skip with
  the coarser decoder features before the concatenation (attention gates)."""
  for level in reversed(range(config.depth)):
    skip = skips[level] if gate is None else gate(skips[level], x, level)
    x = upsample(x, filters_at(config, level), config, f"up{level}")
    x = layers.Concatenate(name=f"up{level}_concat")([x, skip])
    x = conv_block(x, filters_at(config, level), config, f"up{level}")
  return x


def head(x, config, name="probabilities"):
  """1x1 convolution to sigmoid probabilities, in float32 whatever the mixed-precision policy,
  so the probabilities and the loss stay accurate."""
  return layers.Conv2D(config.num_outputs, 1, activation="sigmoid", dtype="float32", name=name)(x)


def image_input(config):
  """[B, H, W, C]; H and W are None (any size) when `config.image_size` is None."""
  return keras.Input((config.image_size, config.image_size, config.channels), name="image")
