"""U-Net++ (Zhou et al. 2018): the U-Net's skips replaced by nested, densely connected paths.

Node X^{i,j} (level i, column j) is a conv block over the concatenation of X^{i,0..j-1} and the
upsampled X^{i+1,j-1}; column 0 is the U-Net encoder (X^{depth,0} its bottleneck) and
X^{0,depth} feeds the head. The intermediate nodes narrow the semantic gap between encoder and
decoder features before they are joined.

Deep supervision: the paper trains with a loss on each head of X^{0,1..depth} and averages the
heads at inference ("accurate mode"). To keep a single output [B, H, W, num_outputs] (so the
losses, metrics and inference code stay as they are), the model outputs the average of those
sigmoid heads in training and inference alike; the loss therefore sees the average of the heads,
not the average of their losses, which still sends a gradient straight to every column.
"""

import keras
from keras import layers

from model import blocks


def build(config, name="unet_plus_plus"):
  """Builds U-Net++; outputs sigmoid probabilities [B, H, W, num_outputs]."""
  config.validate()
  inputs = blocks.image_input(config)
  bottleneck, skips = blocks.encoder(inputs, config)
  nodes = [[skip] for skip in skips] + [[bottleneck]]  # nodes[i][j] is X^{i,j}
  for j in range(1, config.depth + 1):
    for i in range(config.depth - j + 1):
      filters = blocks.filters_at(config, i)
      up = blocks.upsample(nodes[i + 1][j - 1], filters, config, f"x{i}_{j}")
      x = layers.Concatenate(name=f"x{i}_{j}_concat")(nodes[i][:j] + [up])
      nodes[i].append(blocks.conv_block(x, filters, config, f"x{i}_{j}"))
  if not config.deep_supervision or config.depth == 1:
    return keras.Model(inputs, blocks.head(nodes[0][-1], config), name=name)
  heads = [
    blocks.head(nodes[0][j], config, name=f"x0_{j}_probabilities")
    for j in range(1, config.depth + 1)
  ]
  outputs = layers.Average(dtype="float32", name="probabilities")(heads)
  return keras.Model(inputs, outputs, name=name)
