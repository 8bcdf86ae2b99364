"""Thresholded overlap metrics with explicit names, per region for the `regions` task.

Dice and IoU are accumulated over every pixel seen (intersection and sums), then
computed once: a ratio of sums, not a mean of per-batch ratios. Predictions are
thresholded first at the contract's THRESHOLD (MeanIoU on raw probabilities is
meaningless).
"""

import keras
from keras import ops

from model.contract import THRESHOLD

REGION_SHORT_NAMES = {"whole_tumor": "wt", "tumor_core": "tc", "enhancing_tumor": "et"}
_PACKAGE = "brats_unet"


class _Overlap(keras.metrics.Metric):
  """Accumulates intersection, predicted and true pixel counts of one channel (or all)."""

  def __init__(self, channel=None, threshold=THRESHOLD, name=None, dtype=None):
    super().__init__(name=name, dtype=dtype)
    self.channel = channel
    self.threshold = threshold
    self.intersection = self.add_variable((), initializer="zeros", name="intersection")
    self.predicted = self.add_variable((), initializer="zeros", name="predicted")
    self.actual = self.add_variable((), initializer="zeros", name="actual")

  def update_state(self, y_true, y_pred, sample_weight=None):
    if self.channel is not None:
      y_true, y_pred = y_true[..., self.channel], y_pred[..., self.channel]
    truth = ops.cast(ops.greater(ops.cast(y_true, "float32"), THRESHOLD), "float32")
    predicted = ops.cast(ops.greater(ops.cast(y_pred, "float32"), self.threshold), "float32")
    self.intersection.assign_add(ops.sum(truth * predicted))
    self.predicted.assign_add(ops.sum(predicted))
    self.actual.assign_add(ops.sum(truth))

  def reset_state(self):
    for variable in (self.intersection, self.predicted, self.actual):
      variable.assign(0.0)

  def get_config(self):
    return {**super().get_config(), "channel": self.channel, "threshold": self.threshold}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Dice(_Overlap):
  """2|P∩T| / (|P| + |T|); 1 when both are empty."""

  def result(self):
    total = self.predicted + self.actual
    return ops.where(total > 0, 2.0 * self.intersection / ops.maximum(total, 1.0), 1.0)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class IoU(_Overlap):
  """|P∩T| / |P∪T|; 1 when both are empty."""

  def result(self):
    union = self.predicted + self.actual - self.intersection
    return ops.where(union > 0, self.intersection / ops.maximum(union, 1.0), 1.0)


def build_metrics(region_names):
  """Named metrics for the target channels: dice, iou, accuracy (+ per region if several)."""
  metrics = [
    Dice(name="dice"),
    IoU(name="iou"),
    keras.metrics.BinaryAccuracy(threshold=THRESHOLD, name="accuracy"),
  ]
  if len(region_names) > 1:
    for channel, region in enumerate(region_names):
      short = REGION_SHORT_NAMES.get(region, region)
      metrics += [
        Dice(channel=channel, name=f"dice_{short}"),
        IoU(channel=channel, name=f"iou_{short}"),
      ]
  return metrics
