"""Scores the folds of a cross-validation at full resolution and picks the inference rules.

Each fold's model scores that fold's patients on their source files through
`inference.Segmenter` (the path predict_main.py takes), without and with test-time
augmentation, and after each site-like perturbation of the input (the stress test).
A fold's scores are written once (`fold<k>/cv_scores.json`), so a rerun only scores what is
missing. The rules (TTA on or off, the threshold, post-processing) are then chosen on all
patients at once and recorded in the folder's dataset.json, which makes it a fold ensemble
for predict_main.py.
"""

from collections.abc import Iterable, Sequence
import dataclasses
import io
import json
import os
from typing import Any

import numpy as np

from data_prep import atomic
from data_prep import machine
from evaluation import evaluate
from evaluation import inference
from evaluation import postprocess
from evaluation import volume_metrics
from input_pipeline import decode

SCORES = "cv_scores.json"
PROBABILITIES = "cv_probabilities"  # a fold folder's stored probabilities
PLAIN, TTA = "plain", "tta"
# Thresholds tried against the contract's 0.5: every cross-validation row gained a little at
# 0.4, by trading over- for under-segmented patients (docs/accuracy.md, Table 12).
THRESHOLD_CANDIDATES = (0.4,)


def probabilities_suffix(variant: str) -> str:
  """How a variant's stored probabilities end ("stress:noise" -> "_stress_noise.npz")."""
  return f"_{variant.replace(':', '_')}.npz"


def stored_probabilities(run_dir: str, variant: str) -> dict[str, str]:
  """{patient id: path} of a fold's stored probabilities of `variant`, in patient order."""
  directory = os.path.join(run_dir, PROBABILITIES)
  if not os.path.isdir(directory):
    return {}
  suffix = probabilities_suffix(variant)
  return {
    name[: -len(suffix)]: os.path.join(directory, name)
    for name in sorted(os.listdir(directory))
    if name.endswith(suffix)
  }


def _save_probabilities(path, probability, truth, spacing, diagonal):
  """Compact copies for choosing rules later: probabilities as uint8 (1/255 steps)."""
  buffer = io.BytesIO()
  np.savez_compressed(
    buffer,
    probability=np.round(probability * 255).astype(np.uint8),
    truth=truth,
    spacing=np.asarray(spacing),
    diagonal=diagonal,
  )
  atomic.write_bytes(path, buffer.getvalue())


def load_probabilities(path):
  with np.load(path) as data:
    return (
      data["probability"].astype(np.float32) / 255,
      data["truth"],
      tuple(data["spacing"]),
      float(data["diagonal"]),
    )


def score_fold(
  members: Sequence[inference.Member],
  data_dir: str,
  fold: int,
  run_dir: str,
  *,
  stress: Sequence[str] = (),
  progress: bool = True,
  batch_size: int = 32,
) -> list[dict[str, Any]]:
  """Scores fold `fold` with `members`; writes and returns the fold's rows."""
  from input_pipeline import manifests

  segmenter = inference.Segmenter(
    members, inference.InferenceRules(tta=True), batch_size=batch_size
  )
  without_tta = inference.Segmenter(
    members, inference.InferenceRules(tta=False), batch_size=batch_size
  )
  layout = manifests.load_layout(data_dir, [fold])
  regions = decode.REGION_NAMES[segmenter.task]
  probabilities_dir = os.path.join(run_dir, PROBABILITIES)
  os.makedirs(probabilities_dir, exist_ok=True)
  rows = []
  for patient_id, source in evaluate.patient_sources(layout).items():
    if source is None:
      raise inference.EvaluationError(
        f"{patient_id}: its source files are gone; cross-validation scores on the source grid only"
      )
    case = evaluate.read_scored_case(patient_id, source, segmenter.recipe, segmenter.task)

    def keep(segmentation, variant):
      """Scores a variant (an empty mask when nothing was segmented) and stores its
      probabilities, for thresholds and rules chosen later."""
      masks = np.zeros_like(case.truth) if segmentation is None else segmentation.masks
      for region, result in zip(regions, case.score(masks)):
        rows.append(
          {
            "patient_id": patient_id,
            "fold": fold,
            "variant": variant,
            "region": region,
            **{k: result[k] for k in ("dice", "hd95_mm", "gt_voxels", "pred_voxels")},
          }
        )

      if segmentation is not None:
        _save_probabilities(
          os.path.join(probabilities_dir, patient_id + probabilities_suffix(variant)),
          segmentation.probability,
          case.truth,
          case.spacing,
          case.diagonal,
        )

    plain, tta = segmenter.segment_with_and_without_tta(case.volume.image, source.format)
    keep(plain, PLAIN)
    keep(tta, TTA)
    for condition in stress:  # the stress test runs without TTA
      shifted = without_tta.segment(case.perturbed(condition), None, source.format)
      keep(shifted, f"stress:{condition}")
    if progress:
      mine = [r for r in rows if r["patient_id"] == patient_id]
      line = ", ".join(f"{r['variant']} {r['dice']:.3f}" for r in mine if r["region"] == regions[0])
      others = [
        f"{r['region']} tta {r['dice']:.3f}"
        for r in mine
        if r["variant"] == TTA and r["region"] != regions[0]
      ]
      print(f"  fold {fold} {patient_id}: " + "; ".join([line, *others]), flush=True)
  atomic.write_json(os.path.join(run_dir, SCORES), {"fold": fold, "rows": rows})
  return rows


def read_fold_scores(run_dir: str) -> list[dict[str, Any]] | None:
  path = os.path.join(run_dir, SCORES)
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)["rows"]


def _dice_by_patient(rows, variant, region):
  return {
    r["patient_id"]: r["dice"] for r in rows if r["variant"] == variant and r["region"] == region
  }


def choose_threshold(
  cases: Iterable[tuple[np.ndarray, np.ndarray]],
  task: str,
  candidates: Sequence[float] = THRESHOLD_CANDIDATES,
) -> tuple[float, list[dict[str, Any]]]:
  """The threshold with the best mean Dice over `cases` ((probability, truth) per patient;
  each patient's Dice is the mean over the task's nested regions, without post-processing),
  kept only when it beats the contract's threshold by nnU-Net's test."""
  thresholds = [inference.THRESHOLD, *candidates]
  none = postprocess.PostProcessing()
  dice = []
  for probability, truth in cases:
    dice.append(
      [
        np.mean([volume_metrics.dice(truth[..., k], masks[..., k]) for k in range(truth.shape[-1])])
        for masks in (
          inference.region_masks(probability, task, none, threshold) for threshold in thresholds
        )
      ]
    )
  if not dice:
    raise ValueError("no cases to choose a threshold on")
  dice = np.array(dice)
  baseline = dice[:, 0]
  table = [
    {"threshold": threshold, **postprocess.summary_row(dice[:, i], baseline)}
    for i, threshold in enumerate(thresholds)
  ]
  best = int(np.argmax(dice.mean(axis=0)))
  keep = postprocess.worth_it(dice[:, best] - baseline)
  return (thresholds[best] if keep else thresholds[0]), table


def choose_rules(
  rows: Sequence[dict[str, Any]], fold_dirs: Sequence[str], task: str
) -> tuple[inference.InferenceRules, dict[str, list[dict[str, Any]]]]:
  """TTA if it raises the mean Dice and helps more patients than it hurts (on the whole
  tumour); then, on the chosen probabilities, the threshold and the post-processing rule that
  pass the same test (nnU-Net's rule); for regions, then the enhancing-tumour rule on the ET
  Dice. Returns the rules and the tables they were chosen from."""
  region = decode.REGION_NAMES[task][0]
  plain, tta = _dice_by_patient(rows, PLAIN, region), _dice_by_patient(rows, TTA, region)
  use_tta = postprocess.worth_it([tta[p] - plain[p] for p in plain])
  variant = TTA if use_tta else PLAIN

  def volumes():
    for run_dir in fold_dirs:
      for path in stored_probabilities(run_dir, variant).values():
        yield load_probabilities(path)[:2]

  threshold, threshold_table = choose_threshold(volumes(), task)
  rule, table = postprocess.choose_rule(
    (truth[..., 0], probability[..., 0] > threshold) for probability, truth in volumes()
  )
  if task == "regions":
    minimum, enhancing_table = postprocess.choose_enhancing_rule(
      (truth[..., 2], inference.region_masks(probability, "regions", rule, threshold)[..., 2])
      for probability, truth in volumes()
    )
    rule = dataclasses.replace(rule, min_enhancing_voxels=minimum)
    table += enhancing_table
  rules = inference.InferenceRules(tta=use_tta, postprocessing=rule, threshold=threshold)
  return rules, {"threshold_candidates": threshold_table, "postprocessing_candidates": table}


def apply_rule_rows(
  fold_dirs: Sequence[str], rules: inference.InferenceRules, regions: Sequence[str], task: str
) -> list[dict[str, Any]]:
  """Rows of the final variant: the chosen TTA setting with the chosen post-processing."""
  variant = TTA if rules.tta else PLAIN
  final = []
  for run_dir in fold_dirs:
    fold = int(os.path.basename(run_dir)[len("fold") :])
    for patient_id, path in stored_probabilities(run_dir, variant).items():
      probability, truth, spacing, diagonal = load_probabilities(path)
      masks = inference.region_masks(probability, task, rules.postprocessing, rules.threshold)
      for k, region in enumerate(regions):
        result = volume_metrics.score(truth[..., k], masks[..., k], spacing, diagonal)
        final.append(
          {
            "patient_id": patient_id,
            "fold": fold,
            "variant": "final",
            "region": region,
            "dice": result.dice,
            "hd95_mm": result.hd95_mm,
            "gt_voxels": result.gt_voxels,
            "pred_voxels": result.pred_voxels,
          }
        )
  return final


@dataclasses.dataclass
class Summary:
  json: dict
  heading: str  # "# <description>"
  body: str  # the tables

  def markdown(self, preamble: str = "") -> str:
    """The summary as Markdown; `preamble` (the regions overview) goes under the heading."""
    return f"{self.heading}\n\n{preamble}{self.body}"


def _stats(values, worst=np.min):
  """Mean, median and worst; the worst Dice is the lowest, the worst distance (`worst=np.max`)
  the largest."""
  values = np.asarray(values, np.float64)
  return {
    "mean": round(float(values.mean()), 4),
    "median": round(float(np.median(values)), 4),
    "worst": round(float(worst(values)), 4),
  }


def summarize(
  rows: Sequence[dict[str, Any]],
  rules: inference.InferenceRules,
  region: str,
  fold_info: dict[str, dict[str, Any]],
  description: str,
) -> Summary:
  """Per patient and per fold tables with mean, median and worst of every variant."""
  variants = list(dict.fromkeys(r["variant"] for r in rows))
  stress = [v for v in variants if v.startswith("stress:")]
  by = {v: _dice_by_patient(rows, v, region) for v in variants}
  hd95 = {
    r["patient_id"]: r["hd95_mm"] for r in rows if r["variant"] == "final" and r["region"] == region
  }
  fold_of = {r["patient_id"]: r["fold"] for r in rows}
  patients = sorted(by[PLAIN], key=lambda p: (fold_of[p], p))
  stress_mean = {p: float(np.mean([by[v][p] for v in stress])) for p in patients} if stress else {}
  summary = {
    "description": description,
    "region": region,
    "rules": rules.to_json(),
    "patients": len(patients),
    "cpu": machine.cpu_model(),
    "folds": fold_info,
    "dice": {v: _stats(list(by[v].values())) for v in variants},
    "hd95_mm_final": _stats(list(hd95.values()), worst=np.max) if hd95 else None,
    "per_patient": [
      {
        "patient_id": p,
        "fold": fold_of[p],
        **{v: round(by[v][p], 4) for v in variants},
        **({"stress_mean": round(stress_mean[p], 4)} if stress else {}),
        "hd95_mm_final": round(hd95.get(p, float("nan")), 2),
      }
      for p in patients
    ],
  }
  if stress:
    summary["dice"]["stress_mean"] = _stats(list(stress_mean.values()))
  columns = [PLAIN, TTA, "final"] + (["stress_mean"] if stress else []) + stress
  lines = [
    f"{len(patients)} patients, {region} Dice per patient at full resolution on the "
    f"source grid; final = {rules.describe()}. CPU: {summary['cpu']}.",
    "",
    "| | " + " | ".join(columns) + " |",
    "|---" * (len(columns) + 1) + "|",
  ]
  for stat in ("mean", "median", "worst"):
    lines.append(
      f"| {stat} | " + " | ".join(f"{summary['dice'][c][stat]:.3f}" for c in columns) + " |"
    )
  lines += [
    "",
    "| patient | fold | " + " | ".join(columns) + " | HD95 mm (final) |",
    "|---" * (len(columns) + 3) + "|",
  ]
  for entry in summary["per_patient"]:
    lines.append(
      f"| {entry['patient_id']} | {entry['fold']} | "
      + " | ".join(f"{entry[c]:.3f}" for c in columns)
      + f" | {entry['hd95_mm_final']:.1f} |"
    )
  lines += [
    "",
    "| fold | patients | training seconds | training CPU seconds | epochs |",
    "|---|---|---|---|---|",
  ]
  for fold, info in sorted(fold_info.items()):
    lines.append(
      f"| {fold} | {info['patients']} | {info.get('seconds') or 'n/a'} | "
      f"{info.get('cpu_seconds') or 'n/a'} | {info.get('epochs', 'n/a')} |"
    )
  return Summary(summary, f"# {description}", "\n".join(lines) + "\n")


def regions_overview(summaries: dict[str, Summary]) -> str:
  """One table of every region's final Dice and HD95 (mean / median / worst), put above the
  whole tumour's tables; each region's own tables are in summary_<region>.md."""
  lines = [
    "| region | final Dice mean / median / worst | HD95 mm mean / median / worst |",
    "|---|---|---|",
  ]
  for region, summary in summaries.items():
    dice, hd95 = summary.json["dice"]["final"], summary.json["hd95_mm_final"]
    lines.append(
      f"| {region} | {dice['mean']:.3f} / {dice['median']:.3f} / {dice['worst']:.3f}"
      f" | {hd95['mean']:.1f} / {hd95['median']:.1f} / {hd95['worst']:.1f} |"
    )
  return "\n".join(lines) + "\n\n"
