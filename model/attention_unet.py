"""Attention U-Net (Oktay et al. 2018): the U-Net with an additive attention gate on each skip.

A gate weighs each skip pixel by a coefficient in (0, 1) computed from the skip and the
coarser decoder features (the gating signal), so the decoder can suppress skip features away
from the tumour instead of copying the whole encoder map. Everything else is the U-Net of
model/blocks.py, so a comparison measures the gates alone.
"""

import keras
from keras import layers

from model import blocks


def attention_gate(skip, gating, level):
  """alpha = sigmoid(psi(relu(theta(skip) + phi(gating)))), skip * alpha (paper eqs. 1-2).

  theta is a 2x2 convolution of stride 2, so it meets the gating signal at its coarser
  resolution as in the paper; alpha is resized back bilinearly. The intermediate width is
  half the skip's channels.
  """
  name = f"attention{level}"
  inter = max(1, skip.shape[-1] // 2)
  theta = layers.Conv2D(inter, 2, strides=2, use_bias=False, name=f"{name}_theta")(skip)
  phi = layers.Conv2D(inter, 1, name=f"{name}_phi")(gating)
  f = layers.Activation("relu", name=f"{name}_relu")(layers.Add(name=f"{name}_add")([theta, phi]))
  alpha = layers.Conv2D(1, 1, activation="sigmoid", name=f"{name}_psi")(f)
  alpha = layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_resample")(alpha)
  return layers.Multiply(name=f"{name}_gated")([skip, alpha])


def build(config, name="attention_unet"):
  """Builds the Attention U-Net; outputs sigmoid probabilities [B, H, W, num_outputs]."""
  config.validate()
  inputs = blocks.image_input(config)
  x, skips = blocks.encoder(inputs, config)
  x = blocks.decoder(x, skips, config, gate=attention_gate)
  return keras.Model(inputs, blocks.head(x, config), name=name)
