"""Per-patient metrics against hand-computed volumes, including the empty-mask policy."""

import math

import numpy as np
import pytest

from evaluation import volume_metrics


def _cube(shape, start, size):
  mask = np.zeros(shape, bool)
  mask[tuple(slice(s, s + size) for s in start)] = True
  return mask


def test_overlap_metrics_on_two_shifted_cubes():
  truth = _cube((10, 10, 10), (2, 2, 2), 4)  # 64 voxels
  prediction = _cube((10, 10, 10), (2, 2, 3), 4)  # shifted by one along the last axis
  scores = volume_metrics.score(truth, prediction, (1.0, 1.0, 1.0))
  assert scores.gt_voxels == 64 and scores.pred_voxels == 64
  assert scores.dice == pytest.approx(2 * 48 / 128)
  assert scores.iou == pytest.approx(48 / 80)
  assert scores.sensitivity == pytest.approx(48 / 64)
  assert scores.precision == pytest.approx(48 / 64)
  assert scores.specificity == pytest.approx((1000 - 80) / (1000 - 64))


def test_hd95_of_a_shift_is_the_shift_in_millimetres():
  truth = _cube((12, 20, 20), (3, 5, 5), 6)
  shifted = _cube((12, 20, 20), (3, 5, 7), 6)  # two voxels along the last axis
  # every surface voxel lies at most 2 voxels from the other surface, most of them closer
  assert volume_metrics.score(truth, shifted, (1, 1, 1)).hd95_mm == pytest.approx(2.0)
  assert volume_metrics.score(truth, shifted, (1, 1, 1.5)).hd95_mm == pytest.approx(3.0)
  assert volume_metrics.score(truth, truth, (1, 1, 1)).hd95_mm == 0.0


def test_empty_mask_policy():
  empty = np.zeros((4, 8, 8), bool)
  tumour = _cube((4, 8, 8), (1, 2, 2), 2)
  both = volume_metrics.score(empty, empty, (1.0, 2.0, 2.0))
  assert (both.dice, both.iou, both.hd95_mm, both.sensitivity, both.precision) == (1, 1, 0, 1, 1)
  diagonal = math.sqrt(4 ** 2 + 16 ** 2 + 16 ** 2)
  missed = volume_metrics.score(tumour, empty, (1.0, 2.0, 2.0))
  assert (missed.dice, missed.iou, missed.sensitivity, missed.precision) == (0, 0, 0, 0)
  assert missed.hd95_mm == pytest.approx(diagonal)
  false_alarm = volume_metrics.score(empty, tumour, (1.0, 2.0, 2.0), diagonal_mm=374.0)
  assert false_alarm.dice == 0 and false_alarm.hd95_mm == 374.0
  assert false_alarm.specificity == pytest.approx(1 - 8 / 256)


def test_summary_never_hides_a_missed_patient():
  stats = volume_metrics.summarize([1.0, 0.0, 0.5])
  assert stats == {"mean": 0.5, "median": 0.5, "std": pytest.approx(np.std([1, 0, 0.5]))}
