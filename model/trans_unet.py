"""TransUNet (Chen et al. 2021): the U-Net with transformer blocks over its bottleneck.

Convolutions see a few pixels at a time; self-attention over the bottleneck tokens (one per
pixel of the 1/2**depth map) lets every position see the whole slice, e.g. the other
hemisphere, before the decoder restores the resolution from the skips. The paper's ResNet
encoder is replaced by the U-Net's own (model/blocks.py) and the tokens keep the bottleneck's
width, so the model is the U-Net plus the transformer and a comparison measures the latter.
"""

import keras
from keras import layers
from keras import ops

from model import blocks

MLP_RATIO = 4  # MLP width over token width, as in ViT
LAYER_NORM_EPSILON = 1e-6  # as in ViT


@keras.saving.register_keras_serializable(package="brats_unet")
class PositionEmbedding(layers.Layer):
  """Adds a learned vector per token position to tokens [B, N, D] (ViT); self-attention is
  blind to order without it. Keras has no stock layer for it. Registered, so a saved model
  reloads with plain `keras.models.load_model` after `import model.serializable`."""

  def __init__(self, stddev=0.02, **kwargs):
    super().__init__(**kwargs)
    self.stddev = stddev

  def build(self, input_shape):
    self.embedding = self.add_weight(
      name="embedding",
      shape=tuple(input_shape[1:]),
      initializer=keras.initializers.TruncatedNormal(stddev=self.stddev),
    )

  def call(self, tokens):
    return tokens + ops.cast(self.embedding, tokens.dtype)

  def get_config(self):
    return {**super().get_config(), "stddev": self.stddev}


def transformer_block(tokens, config, name):
  """Pre-norm block (ViT): tokens + MHSA(LN(tokens)), then + MLP(LN(.)) with GELU."""
  width, heads = tokens.shape[-1], config.transformer_heads
  x = layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name=f"{name}_norm1")(tokens)
  x = layers.MultiHeadAttention(heads, key_dim=max(1, width // heads), name=f"{name}_attention")(
    x, x
  )
  tokens = layers.Add(name=f"{name}_add1")([tokens, x])
  x = layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name=f"{name}_norm2")(tokens)
  x = layers.Dense(MLP_RATIO * width, activation="gelu", name=f"{name}_mlp1")(x)
  x = layers.Dense(width, name=f"{name}_mlp2")(x)
  if config.dropout:
    x = layers.Dropout(config.dropout, name=f"{name}_dropout")(x)
  return layers.Add(name=f"{name}_add2")([tokens, x])


def build(config, name="trans_unet"):
  """Builds TransUNet; outputs sigmoid probabilities [B, H, W, num_outputs]."""
  config.validate()
  inputs = blocks.image_input(config)
  x, skips = blocks.encoder(inputs, config)
  side, width = x.shape[1], x.shape[-1]
  tokens = layers.Reshape((side * side, width), name="tokens")(x)
  tokens = PositionEmbedding(name="position_embedding")(tokens)
  for i in range(config.transformer_layers):
    tokens = transformer_block(tokens, config, f"transformer{i}")
  tokens = layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="transformer_norm")(tokens)
  x = layers.Reshape((side, side, width), name="feature_map")(tokens)
  x = blocks.decoder(x, skips, config)
  return keras.Model(inputs, blocks.head(x, config), name=name)
