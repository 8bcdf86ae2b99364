"""Segmentation losses, registered as Keras serializable so saved models load without
custom_objects (importing `model.serializable` registers them)."""

import keras
from keras import ops

from model.config import LOSS_NAMES

_PACKAGE = "brats_unet"
# Tversky's weight on missed tumour (Salehi et al. 2017: 0.7 for small lesions); 0.5 is Dice.
TVERSKY_FALSE_NEGATIVE_WEIGHT = 0.7


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SoftDiceLoss(keras.losses.Loss):
  """1 - soft Dice, per target channel over the whole batch, averaged over channels.

  Pooling the batch keeps the loss defined for tumour-free slices (a per-slice Dice of two
  empty masks is 0/0); `smooth` keeps it finite when the whole batch is empty.
  `region_weights` (one per channel, e.g. WT, TC, ET) weight the average, so a small region
  such as the enhancing tumour can count for more than its share.
  `false_negative_weight` above 0.5 makes it the Tversky loss, which charges missed tumour
  more than invented tumour: 2TP / (2TP + 2(1 - w) FP + 2w FN), Dice at w = 0.5.
  """

  def __init__(
    self,
    smooth=1.0,
    region_weights=None,
    false_negative_weight=0.5,
    name="soft_dice",
    reduction="sum_over_batch_size",
    **kwargs,
  ):
    super().__init__(name=name, reduction=reduction, **kwargs)
    if not 0.0 < false_negative_weight < 1.0:
      raise ValueError(f"false_negative_weight must lie in (0, 1), got {false_negative_weight}")
    self.smooth = smooth
    self.region_weights = None if region_weights is None else [float(w) for w in region_weights]
    self.false_negative_weight = float(false_negative_weight)

  def call(self, y_true, y_pred):
    y_true = ops.cast(y_true, y_pred.dtype)
    axes = tuple(range(len(y_pred.shape) - 1))  # all but the channel axis
    intersection = ops.sum(y_true * y_pred, axis=axes)
    missed = ops.sum(y_true, axis=axes) - intersection
    invented = ops.sum(y_pred, axis=axes) - intersection
    w = self.false_negative_weight
    total = 2.0 * intersection + 2.0 * (1.0 - w) * invented + 2.0 * w * missed
    dice = (2.0 * intersection + self.smooth) / (total + self.smooth)
    if self.region_weights is None:
      return 1.0 - ops.mean(dice)
    weights = ops.convert_to_tensor(self.region_weights, dtype=dice.dtype)
    return 1.0 - ops.sum(dice * weights) / ops.sum(weights)

  def get_config(self):
    return {
      **super().get_config(),
      "smooth": self.smooth,
      "region_weights": self.region_weights,
      "false_negative_weight": self.false_negative_weight,
    }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BceDiceLoss(keras.losses.Loss):
  """Binary cross-entropy plus soft Dice (or Tversky): BCE gives dense per-pixel gradients,
  Dice counters the background/tumour imbalance."""

  def __init__(
    self,
    smooth=1.0,
    region_weights=None,
    false_negative_weight=0.5,
    name="bce_dice",
    reduction="sum_over_batch_size",
    **kwargs,
  ):
    super().__init__(name=name, reduction=reduction, **kwargs)
    self.smooth = smooth
    self._dice = SoftDiceLoss(
      smooth=smooth, region_weights=region_weights, false_negative_weight=false_negative_weight
    )

  def call(self, y_true, y_pred):
    y_true = ops.cast(y_true, y_pred.dtype)
    bce = ops.mean(keras.losses.binary_crossentropy(y_true, y_pred))
    return bce + self._dice.call(y_true, y_pred)

  def get_config(self):
    return {
      **super().get_config(),
      "smooth": self.smooth,
      "region_weights": self._dice.region_weights,
      "false_negative_weight": self._dice.false_negative_weight,
    }


def get_loss(name, region_weights=None):
  """The loss `name`; `region_weights` weight the Dice term per output channel."""
  if name == "bce":
    return keras.losses.BinaryCrossentropy(name="bce")
  if name == "dice":
    return SoftDiceLoss(region_weights=region_weights)
  if name == "bce_dice":
    return BceDiceLoss(region_weights=region_weights)
  if name == "bce_tversky":
    return BceDiceLoss(
      region_weights=region_weights,
      false_negative_weight=TVERSKY_FALSE_NEGATIVE_WEIGHT,
      name="bce_tversky",
    )
  raise ValueError(f"unknown loss {name!r}; expected one of {LOSS_NAMES}")
