"""Scores a model (or an ensemble) per patient and draws what it did.

By default each patient is scored at the source resolution on the source grid, on exactly
the mask `predict_main.py` writes: the source files the manifest records go through
`inference.Segmenter` (recipe, members, TTA, pasting back, post-processing) and are
compared with the source segmentation. When those files are gone, evaluation says so and
scores on the stored grid of the TFRecords (labelled "stored" in metrics.json).
Material for the pictures is parked in a temporary folder until the worst, median and
best patients are known.
"""

from collections.abc import Iterator, Sequence
import csv
import dataclasses
import hashlib
import io
import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

from absl import logging
import numpy as np
import tqdm

from data_prep import atomic
from data_prep import overlays as overlays_lib
from data_prep import preprocessing
from data_prep import readers
from data_prep import sources as sources_lib
from data_prep.errors import BadInputError
from evaluation import inference
from evaluation import pictures
from evaluation import report
from evaluation import volume_metrics
from input_pipeline import decode
from input_pipeline import manifests
from input_pipeline import reader

if TYPE_CHECKING:
  import tensorflow as tf

EvaluationError = inference.EvaluationError
CSV_COLUMNS = (
  "patient_id",
  "region",
  "dice",
  "iou",
  "hd95_mm",
  "sensitivity",
  "specificity",
  "precision",
  "gt_voxels",
  "pred_voxels",
)
STRESS_COLUMNS = ("patient_id", "condition", "region", "dice", "hd95_mm")


@dataclasses.dataclass
class PatientStack:
  """One patient's evaluated slices, in slice order."""

  patient_id: str
  slice_indices: np.ndarray  # [S]
  images: np.ndarray  # [S, H, W, C]
  probability: np.ndarray  # [S, H, W, K] float32
  target: np.ndarray  # [S, H, W, K] uint8


def patient_stacks(
  segmenter: inference.Segmenter, dataset: "tf.data.Dataset"
) -> Iterator[PatientStack]:
  """Predicts batch by batch and yields one `PatientStack` per patient, in reading order."""
  pending = {"patient_id": None, "parts": []}

  def finish():
    parts = pending["parts"]
    order = np.argsort(np.concatenate([p[0] for p in parts]), kind="stable")
    stack = [np.concatenate([p[i] for p in parts])[order] for i in range(4)]
    return PatientStack(pending["patient_id"], stack[0], stack[1], stack[2], stack[3])

  for batch in dataset:
    probability, _ = segmenter.network_probabilities(batch["image"].numpy())
    ids = batch["patient_id"].numpy()
    indices = batch["slice_index"].numpy()
    images, targets = batch["image"].numpy(), batch["target"].numpy().astype(np.uint8)
    start = 0
    for end in range(1, len(ids) + 1):
      if end < len(ids) and ids[end] == ids[start]:
        continue
      patient_id = ids[start].decode("utf-8")
      if pending["patient_id"] not in (None, patient_id):
        yield finish()
        pending["parts"] = []
      pending["patient_id"] = patient_id
      pending["parts"].append(
        (indices[start:end], images[start:end], probability[start:end], targets[start:end])
      )
      start = end
  if pending["parts"]:
    yield finish()


def _grid(stack, entry, image_size):
  """Places the slices at their source indices (missing slices empty); returns the truth
  mask and the probabilities [D, H, W, K], the voxel spacing and the diagonal in mm."""
  depth = int(stack.slice_indices.max()) + 1
  shape = (depth,) + stack.probability.shape[1:]
  probability = np.zeros(shape, np.float32)
  truth = np.zeros(shape, bool)
  probability[stack.slice_indices] = stack.probability
  truth[stack.slice_indices] = stack.target > 0
  spacing = _spacing(entry)
  source_shape = entry.get("source_shape") or [image_size, image_size, depth]
  voxel = (
    spacing[2],
    spacing[0] * source_shape[0] / image_size,
    spacing[1] * source_shape[1] / image_size,
  )
  diagonal = volume_metrics.volume_diagonal_mm(source_shape, spacing)
  return truth, probability, voxel, diagonal


def _spacing(entry):
  """The source voxel spacing in mm the manifest records (1 mm when it records none)."""
  return entry.get("spacing_mm") or [1.0, 1.0, 1.0]


def _save_npz(path, **arrays):
  buffer = io.BytesIO()
  np.savez_compressed(buffer, **arrays)
  atomic.write_bytes(path, buffer.getvalue())


def source_of(entry: dict[str, Any], source_format: str | None) -> sources_lib.PatientSource | None:
  """The patient's source files as the manifest records them, or None when any is gone."""
  paths = [f["path"] for f in entry.get("source_files", [])]
  if not paths or not all(os.path.isfile(p) for p in paths):
    return None
  return sources_lib.source_of_files(source_format, paths)


def patient_sources(layout: manifests.DataLayout) -> dict[str, sources_lib.PatientSource | None]:
  """{patient_id: PatientSource or None (files gone)} for the patients of `layout`."""
  formats = {name: entry.get("source_format") for name, entry in layout.normalization.items()}
  return {
    pid: source_of(entry, formats[entry["drop"]]) for pid, entry in sorted(layout.patients.items())
  }


def stress_seed(patient_id: str, condition: str) -> int:
  """The same perturbation of a patient in every run (and in eval and cross-validation)."""
  return int.from_bytes(hashlib.sha256(f"{patient_id}/{condition}".encode()).digest()[:4], "little")


def score_regions(
  truth: np.ndarray, masks: np.ndarray, spacing: Sequence[float], diagonal: float
) -> list[dict[str, Any]]:
  """One dict of `volume_metrics.VolumeScores` fields per region (last axis)."""
  return [
    dataclasses.asdict(volume_metrics.score(truth[..., k], masks[..., k], spacing, diagonal))
    for k in range(truth.shape[-1])
  ]


@dataclasses.dataclass
class ScoredCase:
  """A patient read from its source files, with what scoring on its grid needs."""

  patient_id: str
  volume: object  # readers.PatientVolume
  truth: np.ndarray  # bool [S, H, W, K]
  spacing: tuple  # mm per (slice, row, column), the arrays' axis order
  diagonal: float  # HD95 when exactly one mask is empty

  def score(self, masks: np.ndarray) -> list[dict[str, Any]]:
    return score_regions(self.truth, masks, self.spacing, self.diagonal)

  def perturbed(self, condition: str) -> np.ndarray:
    """The source image after a site-like change (the stress test), the same in every run."""
    from evaluation import site_shift  # numpy only; imported when a stress test runs

    return site_shift.perturb(self.volume.image, condition, stress_seed(self.patient_id, condition))


def read_scored_case(
  patient_id: str, source: sources_lib.PatientSource, recipe: preprocessing.Recipe, task: str
) -> ScoredCase:
  """Reads a patient's source files for scoring; bad or unlabelled files are one-line errors."""
  try:
    volume = readers.read_patient(source, recipe.modalities)
  except BadInputError as error:
    raise EvaluationError(str(error)) from None
  if volume.labels is None:
    raise EvaluationError(f"{source.paths[0]}: {patient_id} has no segmentation to score against")
  row, column, depth = volume.spacing_mm
  return ScoredCase(
    patient_id,
    volume,
    inference.truth_masks(volume.labels, task),
    (depth, row, column),
    volume_metrics.volume_diagonal_mm(volume.source_shape, volume.spacing_mm),
  )


def evaluate(
  segmenter: inference.Segmenter,
  data_dir: str,
  *,
  folds: Sequence[int] | None = None,
  drops: Sequence[str] | None = None,
  output_dir: str,
  overlays: bool = True,
  gif: str = "selected",
  save_predictions: bool = False,
  batch_size: int = 64,
  progress: bool = True,
  gif_scale: int = 2,
  stress: Sequence[str] = (),
  grid: str = "auto",
) -> dict[str, Any]:
  """Scores every patient of `folds`; writes metrics.json, per_patient.csv and pictures.

  Args:
    segmenter: an `inference.Segmenter`.
    stress: names of `site_shift.PERTURBATIONS`; each patient is also scored after each
      (full resolution only), into stress.csv and metrics.json["stress"].
    grid: "auto" (source when every source file is there), "source" or "stored".
  Returns:
    The metrics.json dictionary.
  """
  task = segmenter.task
  regions = decode.REGION_NAMES[task]
  try:
    layout = manifests.load_layout(data_dir, folds, drops)
  except manifests.DataError as error:
    raise EvaluationError(str(error)) from None
  if layout.preprocessing != segmenter.recipe.to_json():
    expected = (segmenter.recipe.image_size, segmenter.recipe.image_size, segmenter.recipe.channels)
    held = (layout.image_size, layout.image_size, layout.channels)
    detail = (
      f"the model takes {expected} slices but {data_dir} holds {held}"
      if held != expected
      else f"the model was trained on {segmenter.recipe.to_json()}, {data_dir} holds "
      f"{layout.preprocessing}"
    )
    raise EvaluationError(detail)
  sources = patient_sources(layout)
  gone = [pid for pid, source in sources.items() if source is None]
  if grid == "source" and gone:
    raise EvaluationError(f"source files of {len(gone)} patients are gone (first: {gone[0]})")
  use_source = grid == "source" or (grid == "auto" and not gone)
  if not use_source and grid == "auto":
    logging.warning(
      "source files of %d of %d patients are gone (first: %s): scoring on the "
      "stored %dx%d grid instead of the source grid",
      len(gone),
      len(sources),
      gone[0],
      layout.image_size,
      layout.image_size,
    )
  os.makedirs(output_dir, exist_ok=True)
  scratch = tempfile.mkdtemp(prefix=".eval-", dir=output_dir)
  rows, stress_rows, num_slices = [], [], 0
  try:
    if use_source:
      cases = _source_cases(segmenter, sources, layout, regions, stress, stress_rows, progress)
    else:
      cases = _stored_cases(segmenter, data_dir, folds, drops, layout, task, batch_size, progress)
    for case in cases:
      num_slices += case["slices"]
      for region, scores in zip(regions, case["scores"]):
        rows.append({"patient_id": case["patient_id"], "region": region, **scores})
      if save_predictions:
        os.makedirs(os.path.join(output_dir, "predictions"), exist_ok=True)
        _save_npz(
          os.path.join(output_dir, "predictions", f"{case['patient_id']}.npz"),
          probability=case["probability"],
          target=case["target"].astype(np.uint8),
          slice_index=case["slice_index"],
        )
      if overlays or gif != "none":
        _save_npz(os.path.join(scratch, f"{case['patient_id']}.npz"), **case["picture"])
    if not rows:
      raise EvaluationError(f"{data_dir}: no slices in folds {folds}")
    metrics = _metrics(task, rows, regions, num_slices, segmenter.rules.threshold)
    metrics["grid"] = "source" if use_source else "stored"
    metrics["inference"] = {"members": len(segmenter.members), **segmenter.rules.to_json()}
    if stress_rows:
      metrics["stress"] = _stress_metrics(stress_rows, regions)
    _write_outputs(output_dir, rows, metrics, stress_rows)
    overlay_files, gif_files = _draw(output_dir, scratch, rows, task, overlays, gif, gif_scale)
    run_dirs = [
      m.path if os.path.isdir(m.path) else os.path.dirname(m.path) for m in segmenter.members
    ]
    report.write_report(
      output_dir,
      metrics,
      rows,
      overlays=overlay_files,
      gifs=gif_files,
      curves=report.copy_curves(output_dir, run_dirs),
    )
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  return metrics


def _brain_scaled(image):
  """A source volume scaled by its brain's 99.5th percentile, so it keeps in float16."""
  brain = image[image > 0]
  return image / max(float(np.percentile(brain, 99.5)) if brain.size else 1.0, 1e-6)


def _picture(images, truth, prediction, slice_index):
  """What the overlays and GIFs need of a patient: images [S, H, W, K] (each region's
  background) and truth and prediction masks [S, H, W, K]."""
  return {
    "image": images.astype(np.float16),
    "truth": truth,
    "prediction": prediction,
    "slice_index": slice_index,
  }


def _source_cases(segmenter, sources, layout, regions, stress, stress_rows, progress):
  """Scores each patient on its source files; yields one dict per patient."""
  recipe = segmenter.recipe
  for patient_id, source in tqdm.tqdm(
    sources.items(), unit="patient", desc="evaluating", disable=not progress
  ):
    case = read_scored_case(patient_id, source, recipe, segmenter.task)
    volume = case.volume
    segmentation = inference.require_brain(
      segmenter.segment(volume.image, volume.labels, source.format), source.paths[0]
    )
    for condition in stress:
      shifted = segmenter.segment(case.perturbed(condition), None, source.format)
      masks = np.zeros_like(case.truth) if shifted is None else shifted.masks
      for region, scores in zip(regions, case.score(masks)):
        stress_rows.append(
          {
            "patient_id": patient_id,
            "condition": condition,
            "region": region,
            "dice": scores["dice"],
            "hd95_mm": scores["hd95_mm"],
          }
        )
    backgrounds = [
      _brain_scaled(volume.image[..., m])
      for m in pictures.background_modalities(recipe.modalities, segmenter.task)
    ]
    yield {
      "patient_id": patient_id,
      "slices": len(volume.slice_indices),
      "scores": case.score(segmentation.masks),
      "probability": segmentation.probability,
      "target": case.truth,
      "slice_index": volume.slice_indices,
      "picture": _picture(
        np.stack(backgrounds, axis=-1), case.truth, segmentation.masks, volume.slice_indices
      ),
    }


def _stored_cases(segmenter, data_dir, folds, drops, layout, task, batch_size, progress):
  """Scores each patient on the stored slices (when the source files are gone)."""
  dataset = reader.build_dataset(
    data_dir,
    folds=folds,
    drops=drops,
    task=task,
    training=False,
    with_metadata=True,
    global_batch_size=batch_size,
  )
  recipe = segmenter.recipe
  centre = recipe.context_slices * len(recipe.modalities)  # the first channel of the slice itself
  backgrounds = [centre + m for m in pictures.background_modalities(recipe.modalities, task)]
  for stack in tqdm.tqdm(
    patient_stacks(segmenter, dataset),
    total=len(layout.patients),
    unit="patient",
    desc="evaluating",
    disable=not progress,
  ):
    entry = layout.patients[stack.patient_id]
    truth, probability, voxel, diagonal = _grid(stack, entry, layout.image_size)
    postprocessing = segmenter.rules.postprocessing.on_voxels_of(
      np.prod(voxel) / np.prod(_spacing(entry))
    )
    predicted = inference.region_masks(probability, task, postprocessing, segmenter.rules.threshold)
    yield {
      "patient_id": stack.patient_id,
      "slices": len(stack.slice_indices),
      "scores": score_regions(truth, predicted, voxel, diagonal),
      "probability": stack.probability,
      "target": stack.target,
      "slice_index": stack.slice_indices,
      "picture": _picture(
        stack.images[..., backgrounds],
        stack.target > 0,
        stack.probability > segmenter.rules.threshold,
        stack.slice_indices,
      ),
    }


def _stress_metrics(stress_rows, regions):
  summary = {}
  for condition in dict.fromkeys(r["condition"] for r in stress_rows):
    summary[condition] = {}
    for region in regions:
      dice = [
        r["dice"] for r in stress_rows if r["condition"] == condition and r["region"] == region
      ]
      summary[condition][region] = {
        "dice_mean": round(float(np.mean(dice)), 6),
        "dice_median": round(float(np.median(dice)), 6),
        "dice_worst": round(float(np.min(dice)), 6),
      }
  return summary


def _metrics(task, rows, regions, num_slices, threshold):
  summary = {
    "task": task,
    "num_patients": len({r["patient_id"] for r in rows}),
    "num_slices": num_slices,
    "threshold": threshold,
    "regions": {},
  }
  for region in regions:
    region_rows = [r for r in rows if r["region"] == region]
    entry = {}
    for name in ("dice", "iou", "hd95_mm", "sensitivity", "specificity", "precision"):
      stats = volume_metrics.summarize([r[name] for r in region_rows])
      base = name[:-3] if name == "hd95_mm" else name
      suffix = "_mm" if name == "hd95_mm" else ""
      for stat, value in stats.items():
        entry[f"{base}_{stat}{suffix}"] = round(value, 6)
    summary["regions"][region] = entry
  return summary


def _csv_bytes(rows, columns):
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
  writer.writeheader()
  for row in rows:
    writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})
  return buffer.getvalue().encode()


def _write_outputs(output_dir, rows, metrics, stress_rows=()):
  atomic.write_json(os.path.join(output_dir, "metrics.json"), metrics)
  atomic.write_bytes(os.path.join(output_dir, "per_patient.csv"), _csv_bytes(rows, CSV_COLUMNS))
  if stress_rows:
    atomic.write_bytes(
      os.path.join(output_dir, "stress.csv"), _csv_bytes(stress_rows, STRESS_COLUMNS)
    )


def ranked_patients(rows: Sequence[dict[str, Any]], region: str) -> dict[str, str]:
  """(worst, median, best) patient ids by Dice of `region`."""
  ranked = sorted((r["dice"], r["patient_id"]) for r in rows if r["region"] == region)
  ids = [pid for _, pid in ranked]
  return {"worst": ids[0], "median": ids[len(ids) // 2], "best": ids[-1]}


def _draw(output_dir, scratch, rows, task, overlays, gif, gif_scale):
  """Draws the overlays and GIFs; returns the paths written, relative to `output_dir`."""
  chosen = ranked_patients(rows, decode.REGION_NAMES[task][0])
  overlay_files, gif_files = [], []
  gif_patients = (
    sorted({r["patient_id"] for r in rows})
    if gif == "all"
    else list(dict.fromkeys(chosen.values()))
    if gif == "selected"
    else []
  )
  if overlays:
    os.makedirs(os.path.join(output_dir, "overlays"), exist_ok=True)
    for rank, patient_id in chosen.items():
      with np.load(os.path.join(scratch, f"{patient_id}.npz")) as data:
        area = (data["truth"][..., 0] | data["prediction"][..., 0]).sum(axis=(1, 2))
        i = int(np.argmax(area))
        picture = pictures.region_panels(
          data["image"][i].astype(np.float32),
          data["truth"][i],
          data["prediction"][i],
          task,
          scale=2,
        )
        name = f"{rank}_{patient_id}_slice{int(data['slice_index'][i]):03d}.png"
      overlays_lib.save_png(os.path.join(output_dir, "overlays", name), picture)
      overlay_files.append(f"overlays/{name}")
  if gif_patients:
    os.makedirs(os.path.join(output_dir, "gifs"), exist_ok=True)
    for patient_id in gif_patients:
      with np.load(os.path.join(scratch, f"{patient_id}.npz")) as data:
        pictures.volume_gif(
          os.path.join(output_dir, "gifs", f"{patient_id}.gif"),
          data["image"].astype(np.float32),
          data["truth"],
          data["prediction"],
          task,
          scale=gif_scale,
        )
      gif_files.append(f"gifs/{patient_id}.gif")
  return overlay_files, gif_files


def summary_text(metrics: dict[str, Any]) -> str:
  lines = [
    f"{metrics['num_patients']} patients, {metrics['num_slices']} slices, task "
    f"{metrics['task']}, threshold {metrics['threshold']}"
  ]
  for region, entry in metrics["regions"].items():
    lines.append(
      f"  {region:16s} Dice {entry['dice_mean']:.3f} (median {entry['dice_median']:.3f},"
      f" sd {entry['dice_std']:.3f})  IoU {entry['iou_mean']:.3f}  HD95 "
      f"{entry['hd95_mean_mm']:.1f} mm  sensitivity {entry['sensitivity_mean']:.3f}  "
      f"precision {entry['precision_mean']:.3f}"
    )
  return "\n".join(lines)
