"""Post-processing by 3D components on volumes whose components have known sizes, and the
choice of a rule that must help more patients than it harms."""

import json

import numpy as np
import pytest

from evaluation import postprocess
from evaluation.postprocess import PostProcessing

SHAPE = (20, 40, 40)


def _box(start, size, shape=SHAPE):
  mask = np.zeros(shape, bool)
  mask[tuple(slice(s, s + n) for s, n in zip(start, size))] = True
  return mask


def _components_of_known_sizes():
  """Separate components of 1000, 200, 90, 54 and 8 voxels; the 54 are two cubes of 27 that
  touch only by a corner, one component with 26-connectivity."""
  parts = {
    1000: _box((1, 1, 1), (10, 10, 10)),
    200: _box((1, 20, 1), (5, 5, 8)),
    90: _box((1, 30, 20), (2, 5, 9)),
    54: _box((14, 2, 20), (3, 3, 3)) | _box((17, 5, 23), (3, 3, 3)),
    8: _box((15, 35, 35), (2, 2, 2)),
  }
  for size, part in parts.items():
    assert np.count_nonzero(part) == size
  return parts


def _union(parts, sizes):
  mask = np.zeros(SHAPE, bool)
  for size in sizes:
    mask |= parts[size]
  return mask


def _dice(truth, prediction):
  total = np.count_nonzero(truth) + np.count_nonzero(prediction)
  return 1.0 if total == 0 else 2 * np.count_nonzero(truth & prediction) / total


def test_apply_drops_exactly_the_components_below_the_size():
  parts = _components_of_known_sizes()
  mask = _union(parts, parts)
  kept = PostProcessing(min_component_voxels=54).apply(mask)
  np.testing.assert_array_equal(kept, _union(parts, (1000, 200, 90, 54)))
  # the corner-touching cubes are one component of 54: a threshold of 28 would drop two 27s
  np.testing.assert_array_equal(
    PostProcessing(min_component_voxels=28).apply(mask), _union(parts, (1000, 200, 90, 54))
  )
  np.testing.assert_array_equal(
    PostProcessing(min_component_voxels=55).apply(mask), _union(parts, (1000, 200, 90))
  )
  assert kept is not mask and np.array_equal(mask, _union(parts, parts))  # input untouched


def test_relative_rule_and_largest_only():
  parts = _components_of_known_sizes()
  mask = _union(parts, parts)
  np.testing.assert_array_equal(
    PostProcessing(min_relative_size=0.1).apply(mask), _union(parts, (1000, 200))
  )
  # a component exactly at the threshold (200 = 20% of 1000) is kept
  np.testing.assert_array_equal(
    PostProcessing(min_relative_size=0.2).apply(mask), _union(parts, (1000, 200))
  )
  np.testing.assert_array_equal(PostProcessing(min_relative_size=1.0).apply(mask), parts[1000])
  both = PostProcessing(min_component_voxels=95, min_relative_size=0.05)  # 50 and 95 voxels
  np.testing.assert_array_equal(both.apply(mask), _union(parts, (1000, 200)))


def test_empty_mask_and_no_rule():
  empty = np.zeros(SHAPE, bool)
  for rule in postprocess.candidate_rules():
    assert not rule.apply(empty).any()
  parts = _components_of_known_sizes()
  mask = _union(parts, parts)
  unchanged = PostProcessing().apply(mask)
  assert unchanged is not mask and np.array_equal(unchanged, mask)


def test_json_round_trip_and_description():
  for rule in postprocess.candidate_rules():
    assert PostProcessing.from_json(json.loads(json.dumps(rule.to_json()))) == rule
  assert PostProcessing.from_json(None) == PostProcessing()
  assert PostProcessing().describe() == "no post-processing"
  assert PostProcessing(min_component_voxels=200).describe() == "drop components < 200 voxels"
  assert PostProcessing(min_relative_size=0.05).describe() == (
    "drop components < 5% of the largest"
  )
  assert PostProcessing(min_relative_size=1.0).describe() == "keep the largest component only"
  with pytest.raises(ValueError):
    PostProcessing.from_json({"min_voxels": 3})
  with pytest.raises(ValueError):
    PostProcessing(min_relative_size=1.5)


def test_candidate_rules_are_the_fixed_short_list():
  rules = postprocess.candidate_rules()
  assert rules[0] == PostProcessing()
  assert [r.min_component_voxels for r in rules[1:5]] == [50, 200, 1000, 3000]
  assert [r.min_relative_size for r in rules[5:]] == [0.05, 0.1, 0.2, 1.0]


def _ball(shape, center, radius):
  grid = np.ogrid[tuple(slice(0, n) for n in shape)]
  return sum((g - c) ** 2 for g, c in zip(grid, center)) <= radius**2


CASE_SHAPE = (24, 48, 48)


def _tumor(shift):
  return _ball(CASE_SHAPE, (12, 24 + shift, 24), 8)  # 2,109 voxels


def test_choose_rule_removes_a_false_positive_blob():
  blobs = [_box((2, 2, x), (5, 5, 5), CASE_SHAPE) for x in (2, 20, 40)]  # 125 voxels each
  assert all(np.count_nonzero(blob) == 125 and not (blob & _tumor(1)).any() for blob in blobs)
  cases = [(_tumor(0), _tumor(shift) | blob) for shift, blob in zip((-1, 0, 1), blobs)]
  rule, table = postprocess.choose_rule(iter(cases), postprocess.candidate_rules())
  # 200 voxels is the mildest rule that drops the 125-voxel blob without touching the tumour
  assert rule == PostProcessing(min_component_voxels=200)
  for shift, blob in zip((-1, 0, 1), blobs):
    np.testing.assert_array_equal(rule.apply(_tumor(shift) | blob), _tumor(shift))
  rows = {row["rule"]: row for row in table}
  assert rows[rule.describe()]["patients_improved"] == 3
  assert rows["drop components < 3000 voxels"]["worst_dice"] == 0.0  # drops the tumour too
  for candidate, row in zip(postprocess.candidate_rules(), table):  # same Dice as apply()
    direct = [_dice(truth, candidate.apply(prediction)) for truth, prediction in cases]
    assert row["mean_dice"] == pytest.approx(np.mean(direct))
    assert row["median_dice"] == pytest.approx(np.median(direct))
    assert row["worst_dice"] == pytest.approx(np.min(direct))
  assert postprocess.choose_rule(cases, min_gain=0.5)[0] == PostProcessing()


def test_choose_rule_refuses_a_rule_that_deletes_small_true_tumors():
  satellite = _box((2, 2, 2), (5, 5, 5), CASE_SHAPE)  # a true 125-voxel lesion
  cases = [(_tumor(0) | satellite, _tumor(shift) | satellite) for shift in (-1, 0, 1)]
  rule, table = postprocess.choose_rule(cases, postprocess.candidate_rules())
  assert rule == PostProcessing()
  rows = {row["rule"]: row for row in table}
  assert rows["drop components < 200 voxels"]["patients_worsened"] == 3


def test_choose_rule_refuses_a_mean_gain_that_harms_most_patients():
  satellite = _box((2, 2, 2), (3, 3, 3), CASE_SHAPE)  # a true 27-voxel lesion
  false_alarm = _box((2, 2, 30), (5, 5, 7), CASE_SHAPE)  # a 175-voxel false positive
  cases = [
    (_tumor(0), _tumor(0) | false_alarm),  # Dice +0.040 once the blob is dropped
    (_tumor(0) | satellite, _tumor(0) | satellite),  # -0.006 each without the lesion
    (_tumor(0) | satellite, _tumor(0) | satellite),
  ]
  only = PostProcessing(min_component_voxels=200)
  rule, (row,) = postprocess.choose_rule(cases, [only])
  assert row["mean_dice"] > row["median_dice"]  # the mean rises, pulled up by one patient
  assert (row["patients_improved"], row["patients_worsened"]) == (1, 2)
  assert rule == PostProcessing()


def test_small_enhancing_tumor_becomes_core_in_the_label_map():
  from evaluation import inference

  probability = np.zeros((4, 8, 8, 3), np.float32)
  probability[1:3, 2:6, 2:6, :2] = 0.9  # WT and TC: 32 voxels
  probability[1, 3:5, 3:5, 2] = 0.9  # ET: 4 voxels, inside the core
  rule = PostProcessing(min_enhancing_voxels=5)
  labels = inference.label_map(
    inference.region_masks(probability, "regions", rule), "regions", "brats2018"
  )
  assert np.count_nonzero(labels == 4) == 0 and np.count_nonzero(labels == 1) == 32
  kept = inference.label_map(
    inference.region_masks(probability, "regions", PostProcessing(min_enhancing_voxels=4)),
    "regions",
    "brats2018",
  )
  assert np.count_nonzero(kept == 4) == 4 and np.count_nonzero(kept == 1) == 28
  assert PostProcessing.from_json(json.loads(json.dumps(rule.to_json()))) == rule
  assert "becomes core" in rule.describe()


def test_enhancing_rule_is_chosen_only_when_it_helps_more_patients_than_it_harms():
  no_et = np.zeros(SHAPE, bool)
  real_et = _box((1, 1, 1), (10, 10, 10))  # 1000 voxels
  # three patients without ET, each with a few false ET voxels; one with a real ET found
  cases = [
    (no_et, _box((1, 1, 1), (2, 2, 2))),
    (no_et, _box((5, 5, 5), (3, 3, 3))),
    (no_et, _box((2, 2, 2), (1, 1, 1))),
    (real_et, real_et),
  ]
  minimum, table = postprocess.choose_enhancing_rule(cases, candidates=(10, 30, 2000))
  assert minimum == 30  # empties the 8- and 27-voxel false ETs and the 1: three patients 0 -> 1
  rows = {row["rule"]: row for row in table}
  assert rows["enhancing tumour < 30 voxels becomes core"]["patients_improved"] == 3
  # 2000 also empties the real ET (1 -> 0): same gain minus one, so 30 wins
  assert rows["enhancing tumour < 2000 voxels becomes core"]["patients_worsened"] == 1
  # when the false ETs are as many as the small real ETs, the rule is not kept
  small_et = _box((1, 1, 1), (2, 2, 2))
  even = [(no_et, _box((1, 1, 1), (2, 2, 2))), (small_et, small_et)]
  assert postprocess.choose_enhancing_rule(even, candidates=(10,))[0] == 0


def test_minimum_sizes_are_converted_to_the_stored_grid():
  rule = postprocess.PostProcessing(
    min_component_voxels=300, min_relative_size=0.1, min_enhancing_voxels=500
  )
  coarse = rule.on_voxels_of(3.5)  # e.g. 240 -> 128 in-plane: each stored voxel ~3.5 source ones
  assert (coarse.min_component_voxels, coarse.min_enhancing_voxels) == (86, 143)
  assert coarse.min_relative_size == 0.1
  assert postprocess.PostProcessing().on_voxels_of(3.5) == postprocess.PostProcessing()
  tiny = postprocess.PostProcessing(min_component_voxels=1).on_voxels_of(3.5)
  assert tiny.min_component_voxels == 1  # a rule that was on stays on
