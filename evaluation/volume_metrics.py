"""Per-patient overlap and distance metrics on a whole stack of slices, with an explicit
empty-mask policy (a missed tumour must never drop out of an average as NaN).

HD95 follows BraTS and MONAI (`compute_hausdorff_distance(percentile=95)`): the larger of the
two directed 95th percentiles, prediction surface -> truth surface and truth surface ->
prediction surface, in mm with the voxel spacing. Pooling both directions into one percentile
would let a large, well-placed surface hide a false-positive blob on the other side.

Policy: when both masks are empty, Dice, IoU, sensitivity and precision are 1 and HD95 is
0 mm; when exactly one is empty, they are 0 and HD95 is the diagonal of the image volume in
mm (373.1 mm for 240x240x155 at 1 mm). Any other ratio whose denominator is 0 follows the
same rule.
"""

from collections.abc import Sequence
import dataclasses
import math

import numpy as np
from scipy import ndimage

METRIC_NAMES = ("dice", "iou", "hd95_mm", "sensitivity", "specificity", "precision")
# Background kept around the masks when cropping for HD95, so the surface test at the box's
# edge sees the same neighbours as in the whole volume.
_CROP_MARGIN_VOXELS = 2


@dataclasses.dataclass(frozen=True)
class VolumeScores:
  dice: float
  iou: float
  hd95_mm: float
  sensitivity: float
  specificity: float
  precision: float
  gt_voxels: int
  pred_voxels: int


def _ratio(numerator, denominator, both_empty):
  if denominator == 0:
    return 1.0 if both_empty else 0.0
  return numerator / denominator


def _surface(mask):
  """Voxels of `mask` that touch the background (6-connectivity)."""
  return mask & ~ndimage.binary_erosion(
    mask, structure=ndimage.generate_binary_structure(3, 1), border_value=0
  )


def _directed_percentile(from_surface, to_surface, spacing_mm, percentile):
  """Percentile of the distances from each voxel of one surface to the nearest of the other."""
  to_nearest = ndimage.distance_transform_edt(~to_surface, sampling=spacing_mm)
  return float(np.percentile(to_nearest[from_surface], percentile))


def _hd95_of(truth, prediction, spacing_mm):
  """HD95 on the arrays as given, without cropping (the reference the cropped path must match)."""
  truth_surface, pred_surface = _surface(truth), _surface(prediction)
  return max(
    _directed_percentile(pred_surface, truth_surface, spacing_mm, 95),
    _directed_percentile(truth_surface, pred_surface, spacing_mm, 95),
  )


def _bounding_box(mask, margin):
  """Slices around the non-zero voxels of `mask`, widened by `margin` and clipped to the volume."""
  box = []
  for axis in range(mask.ndim):
    others = tuple(a for a in range(mask.ndim) if a != axis)
    occupied = np.flatnonzero(mask.any(axis=others))
    stop = min(occupied[-1] + 1 + margin, mask.shape[axis])
    box.append(slice(max(occupied[0] - margin, 0), stop))
  return tuple(box)


def hd95(truth: np.ndarray, prediction: np.ndarray, spacing_mm: Sequence[float]) -> float:
  """Larger directed 95th percentile of surface distances in mm (both masks non-empty).

  Both surfaces lie inside the bounding box of the two masks, so each nearest surface voxel
  does too: distance transforms over that box (with a margin) give the same distances as over
  the whole volume, at a fraction of the cost.
  """
  truth, prediction = np.asarray(truth, bool), np.asarray(prediction, bool)
  box = _bounding_box(truth | prediction, _CROP_MARGIN_VOXELS)
  return _hd95_of(truth[box], prediction[box], spacing_mm)


def volume_diagonal_mm(shape: Sequence[int], spacing_mm: Sequence[float]) -> float:
  return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing_mm))))


def dice(truth: np.ndarray, prediction: np.ndarray) -> float:
  """Dice alone, by the empty-mask policy of `score`, without the cost of HD95."""
  truth, prediction = np.asarray(truth, bool), np.asarray(prediction, bool)
  gt, pred = int(np.count_nonzero(truth)), int(np.count_nonzero(prediction))
  return _ratio(2 * int(np.count_nonzero(truth & prediction)), gt + pred, gt == pred == 0)


def score(
  truth: np.ndarray,
  prediction: np.ndarray,
  spacing_mm: Sequence[float],
  diagonal_mm: float | None = None,
) -> VolumeScores:
  """Scores one binary volume [S, H, W] against the truth.

  Args:
    truth, prediction: bool arrays of the same shape (slices first).
    spacing_mm: voxel size (slice, row, column) in mm.
    diagonal_mm: HD95 when exactly one mask is empty (default: this volume's diagonal).
  """
  truth, prediction = np.asarray(truth, bool), np.asarray(prediction, bool)
  if truth.shape != prediction.shape:
    raise ValueError(f"truth {truth.shape} and prediction {prediction.shape} differ in shape")
  tp = int(np.count_nonzero(truth & prediction))
  fp = int(np.count_nonzero(~truth & prediction))
  fn = int(np.count_nonzero(truth & ~prediction))
  tn = truth.size - tp - fp - fn
  gt, pred = tp + fn, tp + fp
  both_empty = gt == 0 and pred == 0
  if both_empty:
    distance = 0.0
  elif gt == 0 or pred == 0:
    distance = (
      diagonal_mm if diagonal_mm is not None else volume_diagonal_mm(truth.shape, spacing_mm)
    )
  else:
    distance = hd95(truth, prediction, spacing_mm)
  return VolumeScores(
    dice=_ratio(2 * tp, gt + pred, both_empty),
    iou=_ratio(tp, tp + fp + fn, both_empty),
    hd95_mm=distance,
    sensitivity=_ratio(tp, gt, both_empty),
    specificity=_ratio(tn, tn + fp, both_empty),
    precision=_ratio(tp, pred, both_empty),
    gt_voxels=gt,
    pred_voxels=pred,
  )


def summarize(values: Sequence[float]) -> dict[str, float]:
  """Mean, median and standard deviation of a list of per-patient values."""
  array = np.asarray(values, dtype=np.float64)
  return {"mean": float(array.mean()), "median": float(np.median(array)), "std": float(array.std())}
