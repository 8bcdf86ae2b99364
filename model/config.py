"""The configuration of every architecture, without TensorFlow: the flags of `train_main.py`
take their defaults from here, so `--help` and flag errors need no TensorFlow start-up."""

import dataclasses

from data_prep.preprocessing import Recipe

LOSS_NAMES = ("bce", "dice", "bce_dice", "bce_tversky")  # model/losses.py
UPSAMPLING_MODES = ("transpose", "bilinear")
NORM_LAYERS = ("batch", "instance", "none")  # after every convolution of the conv blocks
ARCHITECTURES = ("unet", "unet_plus_plus", "attention_unet", "trans_unet")


@dataclasses.dataclass(frozen=True)
class UNetConfig:
  """Hyperparameters. The defaults train well on 128x128 FLAIR slices."""

  # The converter's default slice size; None: any size that divides by 2**depth (a model
  # trained on patches and applied to whole slices; not trans_unet, whose tokens are fixed).
  image_size: int | None = Recipe.image_size
  channels: int = 1
  num_outputs: int = 1
  depth: int = 4  # poolings; the image size must divide by 2**depth
  base_filters: int = 32  # doubled at each level
  norm_layer: str = "batch"  # one of NORM_LAYERS; instance: per slice and channel, at test time too
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
    if self.image_size is None and self.architecture == "trans_unet":
      raise ValueError("trans_unet needs a fixed image_size (its position embedding is per token)")
    if self.image_size is not None and self.image_size % (2**self.depth):
      raise ValueError(f"image_size {self.image_size} must divide by 2**depth = {2**self.depth}")
    if self.norm_layer not in NORM_LAYERS:
      raise ValueError(f"norm_layer must be one of {NORM_LAYERS}, got {self.norm_layer!r}")
    if self.upsampling not in UPSAMPLING_MODES:
      raise ValueError(f"upsampling must be one of {UPSAMPLING_MODES}, got {self.upsampling!r}")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
    if self.transformer_layers < 1 or self.transformer_heads < 1:
      raise ValueError(
        "transformer_layers and transformer_heads must be at least 1, got "
        f"{self.transformer_layers} and {self.transformer_heads}"
      )
