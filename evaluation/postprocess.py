"""Post-processing of a predicted tumour mask by 3D connected components.

Small isolated blobs in a prediction are often false positives, but a brain can also hold
small true lesions, so no rule is applied blindly: `choose_rule` scores a few candidate rules
on held-out cases and keeps one only when it raises the mean Dice and helps more patients than
it harms, as nnU-Net keeps a post-processing step only when it raises the cross-validation
Dice. Dice follows the project's empty-mask policy (both masks empty: 1).

For the regions task, `min_enhancing_voxels` is nnU-Net's BraTS rule (Isensee et al. 2018):
a predicted enhancing tumour smaller than that in the whole volume becomes tumour core
(label 1). ET is absent in some patients, and there a few false ET voxels cost the whole
Dice (a patient without ET scores 1 only when nothing is predicted), while a real ET that
small is rare; `choose_enhancing_rule` keeps the rule only on evidence, like the others.

Components are 26-connected (`generate_binary_structure(3, 3)`): voxels touching by a corner
or an edge belong to one lesion, so a tumour with a thin diagonal bridge is not cut into
small pieces that a size rule would then drop.
"""

from collections.abc import Iterable, Mapping, Sequence
import dataclasses
from typing import Any

import numpy as np
from scipy import ndimage

_CONNECTIVITY = ndimage.generate_binary_structure(3, 3)


@dataclasses.dataclass(frozen=True)
class PostProcessing:
  """Drops the 3D components of a mask smaller than an absolute or a relative size; for
  regions, also turns a predicted enhancing tumour smaller than `min_enhancing_voxels` into
  core."""

  min_component_voxels: int = 0  # drop components with fewer voxels than this
  min_relative_size: float = 0.0  # drop components smaller than this fraction of the largest
  min_enhancing_voxels: int = 0  # regions: a smaller ET (whole volume) becomes core

  def __post_init__(self):
    if self.min_component_voxels < 0:
      raise ValueError(f"min_component_voxels must be >= 0, got {self.min_component_voxels}")
    if not 0.0 <= self.min_relative_size <= 1.0:
      raise ValueError(f"min_relative_size must be in [0, 1], got {self.min_relative_size}")
    if self.min_enhancing_voxels < 0:
      raise ValueError(f"min_enhancing_voxels must be >= 0, got {self.min_enhancing_voxels}")

  def to_json(self) -> dict[str, int | float]:
    return {
      "min_component_voxels": int(self.min_component_voxels),
      "min_relative_size": float(self.min_relative_size),
      "min_enhancing_voxels": int(self.min_enhancing_voxels),
    }

  @classmethod
  def from_json(cls, entry: Mapping[str, Any] | None) -> "PostProcessing":
    """The rule saved by `to_json`; None (nothing saved) means no post-processing."""
    if entry is None:
      return cls()
    unknown = set(entry) - {field.name for field in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f"unknown post-processing fields {sorted(unknown)}")
    return cls(
      min_component_voxels=int(entry.get("min_component_voxels", 0)),
      min_relative_size=float(entry.get("min_relative_size", 0.0)),
      min_enhancing_voxels=int(entry.get("min_enhancing_voxels", 0)),
    )

  def on_voxels_of(self, volume_ratio: float) -> "PostProcessing":
    """The same rule on a grid whose voxels hold `volume_ratio` source voxels each (the
    stored grid): the minimum sizes, counted in source voxels, are converted."""

    def convert(count):
      return 0 if count == 0 else max(1, round(count / volume_ratio))

    return dataclasses.replace(
      self,
      min_component_voxels=convert(self.min_component_voxels),
      min_enhancing_voxels=convert(self.min_enhancing_voxels),
    )

  def describe(self) -> str:
    """One line for logs and tables."""
    parts = []
    if self.min_relative_size >= 1.0:
      parts.append("keep the largest component only")
    elif self.min_relative_size > 0:
      parts.append(f"drop components < {self.min_relative_size * 100:g}% of the largest")
    if self.min_component_voxels > 0:
      parts.append(f"drop components < {self.min_component_voxels} voxels")
    if self.min_enhancing_voxels > 0:
      parts.append(f"enhancing tumour < {self.min_enhancing_voxels} voxels becomes core")
    return " and ".join(parts) or "no post-processing"

  def apply_enhancing(self, enhancing: np.ndarray) -> np.ndarray:
    """The enhancing-tumour mask after the ET rule: emptied when smaller than the minimum."""
    enhancing = np.asarray(enhancing, bool)
    if np.count_nonzero(enhancing) < self.min_enhancing_voxels:
      return np.zeros_like(enhancing)
    return enhancing.copy()

  def kept_labels(self, sizes: np.ndarray) -> np.ndarray:
    """Which labels survive, from the voxel count of each label (label 0 is the background).

    Components as large as the threshold are kept, so "largest only" keeps every component
    that ties for largest.
    """
    threshold = float(self.min_component_voxels)
    if len(sizes) > 1:
      threshold = max(threshold, self.min_relative_size * sizes[1:].max())
    keep = sizes >= threshold
    keep[0] = False
    return keep

  def apply(self, mask: np.ndarray) -> np.ndarray:
    """A new bool mask [D, H, W] without the dropped components (an empty mask stays empty)."""
    mask = np.asarray(mask, bool)
    if self.min_component_voxels == 0 and self.min_relative_size == 0:
      return mask.copy()
    labels, sizes = _components(mask)
    return self.kept_labels(sizes)[labels]


def _components(mask):
  """26-connected labels of `mask` and the voxel count of each label (0 = background)."""
  labels, count = ndimage.label(mask, structure=_CONNECTIVITY)
  return labels, np.bincount(labels.ravel(), minlength=count + 1)


def candidate_rules() -> list[PostProcessing]:
  """The rules `choose_rule` tries by default, mildest first within each kind."""
  return (
    [PostProcessing()]
    + [PostProcessing(min_component_voxels=n) for n in (50, 200, 1000, 3000)]
    + [PostProcessing(min_relative_size=f) for f in (0.05, 0.1, 0.2)]
    + [PostProcessing(min_relative_size=1.0)]
  )


def _dice_per_rule(truth, prediction, rules):
  """Dice of each rule's output against the truth, from one labelling of the prediction.

  Components partition the prediction, so a rule's true positives and predicted voxels are
  sums over the components it keeps: no post-processed volume is ever built.
  """
  truth, prediction = np.asarray(truth, bool), np.asarray(prediction, bool)
  if truth.shape != prediction.shape:
    raise ValueError(f"truth {truth.shape} and prediction {prediction.shape} differ in shape")
  labels, sizes = _components(prediction)
  overlaps = np.bincount(labels[truth], minlength=len(sizes))  # truth voxels per component
  truth_voxels = int(np.count_nonzero(truth))
  scores = []
  for rule in rules:
    keep = rule.kept_labels(sizes)
    denominator = truth_voxels + int(sizes[keep].sum())
    scores.append(1.0 if denominator == 0 else 2 * int(overlaps[keep].sum()) / denominator)
  return scores


def describe_inference(tta: bool, threshold: float, rule: PostProcessing) -> str:
  """One line for logs and tables: 'TTA on, threshold 0.4, post-processing: drop components
  < 1000 voxels' (here, not in inference.py, so that scripts can print it without
  TensorFlow)."""
  processing = rule.describe()
  if rule != PostProcessing():
    processing = f"post-processing: {processing}"
  return f"TTA {'on' if tta else 'off'}, threshold {threshold:g}, {processing}"


def worth_it(gains, min_gain: float = 0.0) -> bool:
  """nnU-Net's test for an inference rule, from each patient's change of Dice: it raises the
  mean by more than `min_gain` and helps more patients than it hurts."""
  gains = np.asarray(gains)
  return bool(gains.mean() > min_gain and (gains > 0).sum() > (gains < 0).sum())


def summary_row(dice, baseline_dice) -> dict[str, Any]:
  """A candidate's line in a rule table: its Dice over the patients against the baseline's."""
  dice = np.asarray(dice)
  return {
    "mean_dice": float(dice.mean()),
    "median_dice": float(np.median(dice)),
    "worst_dice": float(dice.min()),
    "patients_improved": int(np.count_nonzero(dice > baseline_dice)),
    "patients_worsened": int(np.count_nonzero(dice < baseline_dice)),
  }


def choose_rule(
  cases: Iterable[tuple[np.ndarray, np.ndarray]],
  candidates: Iterable[PostProcessing] | None = None,
  min_gain: float = 0.0,
) -> tuple[PostProcessing, list[dict[str, Any]]]:
  """The candidate with the best mean Dice over `cases`, if it is worth applying.

  Args:
    cases: iterable of (truth, prediction) bool volumes, one per patient, read once (a
      generator keeps a single patient in memory).
    candidates: rules to try (default: `candidate_rules()`).
    min_gain: mean Dice the best rule must add over no post-processing.

  Returns:
    (rule, table): the best rule, or `PostProcessing()` unless it beats no post-processing
    by more than `min_gain` and improves more patients than it worsens; and one summary dict
    per candidate (rule, mean_dice, median_dice, worst_dice, patients_improved,
    patients_worsened).
  """
  candidates = list(candidate_rules() if candidates is None else candidates)
  if not candidates:
    raise ValueError("no candidate rules")
  rules = [PostProcessing()] + candidates  # column 0 is the baseline
  dice = np.array([_dice_per_rule(truth, prediction, rules) for truth, prediction in cases])
  if dice.size == 0:
    raise ValueError("no cases to choose a post-processing rule on")
  baseline = dice[:, 0]
  table = [
    {"rule": rule.describe(), **summary_row(dice[:, 1 + i], baseline)}
    for i, rule in enumerate(candidates)
  ]
  best = int(np.argmax([row["mean_dice"] for row in table]))
  keep = worth_it(dice[:, 1 + best] - baseline, min_gain)
  return (candidates[best] if keep else PostProcessing()), table


ENHANCING_CANDIDATES = (50, 100, 200, 500, 1000)


def choose_enhancing_rule(
  cases: Iterable[tuple[np.ndarray, np.ndarray]], candidates: Sequence[int] = ENHANCING_CANDIDATES
) -> tuple[int, list[dict[str, Any]]]:
  """The ET minimum (voxels) with the best mean ET Dice over `cases`, if it is worth applying.

  Args:
    cases: iterable of (truth, prediction) bool enhancing-tumour volumes, one per patient.
    candidates: minima to try.

  Returns:
    (minimum, table): the best minimum, or 0 unless it raises the mean ET Dice and improves
    more patients than it worsens; and one summary dict per candidate (as `choose_rule`).
  """
  dice, predicted, truth_empty = [], [], []
  for truth, prediction in cases:
    truth, prediction = np.asarray(truth, bool), np.asarray(prediction, bool)
    total = int(np.count_nonzero(truth)) + int(np.count_nonzero(prediction))
    overlap = int(np.count_nonzero(truth & prediction))
    dice.append(1.0 if total == 0 else 2 * overlap / total)
    predicted.append(int(np.count_nonzero(prediction)))
    truth_empty.append(not np.any(truth))
  if not dice:
    raise ValueError("no cases to choose an enhancing-tumour rule on")
  baseline, predicted = np.array(dice), np.array(predicted)
  removed_dice = np.where(truth_empty, 1.0, 0.0)  # ET emptied: 1 without ET, 0 with it
  dice = [np.where(predicted < minimum, removed_dice, baseline) for minimum in candidates]
  table = [
    {"rule": PostProcessing(min_enhancing_voxels=minimum).describe(), **summary_row(d, baseline)}
    for minimum, d in zip(candidates, dice)
  ]
  best = int(np.argmax([row["mean_dice"] for row in table]))
  return (candidates[best] if worth_it(dice[best] - baseline) else 0), table
