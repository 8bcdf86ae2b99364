"""Per-patient metrics against hand-computed volumes, including the empty-mask policy."""

import math
import warnings

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
  # in each direction a whole face (a quarter of the surface) lies 2 voxels from the other
  # surface and no voxel farther, so both directed 95th percentiles, and their maximum, are 2
  assert volume_metrics.score(truth, shifted, (1, 1, 1)).hd95_mm == pytest.approx(2.0)
  assert volume_metrics.score(truth, shifted, (1, 1, 1.5)).hd95_mm == pytest.approx(3.0)
  assert volume_metrics.score(truth, truth, (1, 1, 1)).hd95_mm == 0.0


def _ball(shape, center, radius):
  grid = np.ogrid[tuple(slice(0, n) for n in shape)]
  return sum((g - c) ** 2 for g, c in zip(grid, center)) <= radius**2


def _tumor_and_prediction(seed, shape=(32, 40, 40)):
  """A lobed tumour and a shifted prediction that grows one lobe and misses another."""
  rng = np.random.default_rng(seed)
  middle = np.array(shape) / 2
  truth = np.zeros(shape, bool)
  for _ in range(3):
    truth |= _ball(shape, middle + rng.uniform(-4, 4, 3), rng.uniform(5, 9))
  prediction = np.roll(truth, tuple(rng.integers(-2, 3, 3)), axis=(0, 1, 2))
  prediction |= _ball(shape, middle + rng.uniform(-8, 8, 3), rng.uniform(3, 6))
  prediction &= ~_ball(shape, middle + rng.uniform(-8, 8, 3), rng.uniform(3, 6))
  return truth, prediction


def _surface_points_mm(mask, spacing_mm):
  """Coordinates (mm) of voxels with a 6-neighbour outside the mask, found by padding."""
  padded = np.pad(mask, 1)
  inner = tuple(slice(1, -1) for _ in range(3))
  interior = mask.copy()
  for axis in range(3):
    for step in (-1, 1):
      interior &= np.roll(padded, step, axis=axis)[inner]
  return np.argwhere(mask & ~interior) * np.asarray(spacing_mm)


def _brute_force_directed_95(from_points, to_points):
  nearest = np.linalg.norm(from_points[:, None, :] - to_points[None, :, :], axis=-1).min(axis=1)
  return float(np.percentile(nearest, 95)), nearest


def test_hd95_is_the_larger_directed_percentile_not_the_pooled_one():
  shape, spacing = (30, 30, 40), (1.0, 1.0, 2.0)
  truth = _cube(shape, (10, 10, 5), 10)  # 488 surface voxels
  # a 2x2x10 rod far along the last axis: 40 surface voxels, 7.6% of the prediction's surface
  # but only 3.9% of both surfaces together
  rod = np.zeros(shape, bool)
  rod[14:16, 14:16, 25:35] = True
  prediction = truth | rod
  truth_points = _surface_points_mm(truth, spacing)
  pred_points = _surface_points_mm(prediction, spacing)
  pred_to_truth, forward = _brute_force_directed_95(pred_points, truth_points)
  truth_to_pred, backward = _brute_force_directed_95(truth_points, pred_points)
  pooled = float(np.percentile(np.concatenate([forward, backward]), 95))
  assert pooled == 0.0 and truth_to_pred == 0.0 and pred_to_truth > 10.0
  assert volume_metrics.hd95(truth, prediction, spacing) == pytest.approx(pred_to_truth)
  assert volume_metrics.hd95(prediction, truth, spacing) == pytest.approx(pred_to_truth)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (3.0, 0.8, 1.5)])
def test_hd95_on_the_bounding_box_equals_hd95_on_the_whole_volume(spacing):
  truth, prediction = _tumor_and_prediction(seed=3, shape=(32, 40, 40))
  prediction[0:2, 0:3, 35:40] = True  # a blob on the volume's border, clipping the margin
  prediction[30:32, 37:40, 0:2] = True  # and one in the opposite corner
  truth[10:12, 0:2, 0:40] = True  # a bar across the whole last axis
  whole = volume_metrics._hd95_of(truth, prediction, spacing)
  assert volume_metrics.hd95(truth, prediction, spacing) == whole
  small_truth, small_prediction = _tumor_and_prediction(seed=5, shape=(32, 40, 40))
  assert volume_metrics.hd95(small_truth, small_prediction, spacing) == (
    volume_metrics._hd95_of(small_truth, small_prediction, spacing)
  )


@pytest.mark.parametrize("seed", range(5))
def test_hd95_agrees_with_deepmind_surface_distance(seed):
  surface_distance = pytest.importorskip("surface_distance")
  truth, prediction = _tumor_and_prediction(seed)
  spacing = tuple(
    float(s) for s in np.random.default_rng(100 + seed).choice([0.8, 1.0, 1.5, 2.5, 3.0], 3)
  )
  with warnings.catch_warnings():  # it imports from scipy.ndimage's deprecated submodules
    warnings.simplefilter("ignore", DeprecationWarning)
    distances = surface_distance.compute_surface_distances(truth, prediction, spacing)
  theirs = surface_distance.compute_robust_hausdorff(distances, 95)
  # Their surface is made of surfels on the voxel corners, weighted by surfel area, and their
  # percentile takes the next value without interpolation; ours (as MONAI's) is the centres
  # of boundary voxels, each counted once, with linear interpolation. Both measure the same
  # boundaries, half a voxel apart at most, so they agree within one voxel diagonal.
  voxel_diagonal = math.sqrt(sum(s**2 for s in spacing))
  assert volume_metrics.hd95(truth, prediction, spacing) == pytest.approx(
    theirs, abs=voxel_diagonal
  )


def test_volume_diagonal_of_a_brats_volume():
  assert round(volume_metrics.volume_diagonal_mm((240, 240, 155), (1, 1, 1)), 1) == 373.1


def test_empty_mask_policy():
  empty = np.zeros((4, 8, 8), bool)
  tumor = _cube((4, 8, 8), (1, 2, 2), 2)
  both = volume_metrics.score(empty, empty, (1.0, 2.0, 2.0))
  assert (both.dice, both.iou, both.hd95_mm, both.sensitivity, both.precision) == (1, 1, 0, 1, 1)
  diagonal = math.sqrt(4**2 + 16**2 + 16**2)
  missed = volume_metrics.score(tumor, empty, (1.0, 2.0, 2.0))
  assert (missed.dice, missed.iou, missed.sensitivity, missed.precision) == (0, 0, 0, 0)
  assert missed.hd95_mm == pytest.approx(diagonal)
  false_alarm = volume_metrics.score(empty, tumor, (1.0, 2.0, 2.0), diagonal_mm=374.0)
  assert false_alarm.dice == 0 and false_alarm.hd95_mm == 374.0
  assert false_alarm.specificity == pytest.approx(1 - 8 / 256)


def test_summary_never_hides_a_missed_patient():
  stats = volume_metrics.summarize([1.0, 0.0, 0.5])
  assert stats == {"mean": 0.5, "median": 0.5, "std": pytest.approx(np.std([1, 0, 0.5]))}


def test_dice_alone_follows_the_policy_of_score():
  rng = np.random.default_rng(3)
  truth = rng.random((4, 12, 12)) > 0.7
  prediction = rng.random((4, 12, 12)) > 0.6
  empty = np.zeros_like(truth)
  for a, b in ((truth, prediction), (truth, empty), (empty, prediction), (empty, empty)):
    assert volume_metrics.dice(a, b) == volume_metrics.score(a, b, (1, 1, 1)).dice
  assert volume_metrics.dice(empty, empty) == 1.0 and volume_metrics.dice(truth, empty) == 0.0
