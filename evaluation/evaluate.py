"""Scores a trained model per patient on converted folds and draws what it did.

The reader yields a fold in evaluation order (each patient's slices together, in slice
order), so patients are scored one at a time: memory holds one patient, whatever the
fold's size. Material for the pictures is parked in a temporary folder until the worst,
median and best patients are known.
"""

import csv
import dataclasses
import io
import os
import shutil
import tempfile

import numpy as np
import tqdm

from data_prep import atomic
from data_prep import overlays as overlays_lib
from evaluation import pictures
from evaluation import volume_metrics
from input_pipeline import decode
from input_pipeline import manifests
from input_pipeline import reader

THRESHOLD = 0.5
CSV_COLUMNS = ("patient_id", "region", "dice", "iou", "hd95_mm", "sensitivity", "specificity",
               "precision", "gt_voxels", "pred_voxels")


class EvaluationError(ValueError):
  """Missing model, empty fold, mismatched image size: printed as one line."""


def load_model(model_dir=None, model_path=None):
  """Loads best_model.keras (or `model_path`) without compiling it."""
  import keras
  import model  # noqa: F401  registers the custom losses and metrics
  path = model_path or os.path.join(model_dir, "best_model.keras")
  if not os.path.isfile(path):
    raise EvaluationError(f"{path}: no trained model there (train_main.py writes best_model.keras)")
  try:
    return keras.models.load_model(path, compile=False)
  except Exception as error:  # a truncated or foreign file
    raise EvaluationError(f"{path}: cannot be loaded as a Keras model ({error})") from None


def task_of(model):
  outputs = model.output_shape[-1]
  for task in decode.TASKS:
    if decode.num_targets(task) == outputs:
      return task
  raise EvaluationError(f"the model has {outputs} outputs; expected 1 (whole_tumor) or 3 (regions)")


@dataclasses.dataclass
class PatientStack:
  """One patient's evaluated slices, in slice order."""
  patient_id: str
  slice_indices: np.ndarray  # [S]
  images: np.ndarray  # [S, H, W, C]
  probability: np.ndarray  # [S, H, W, K] float32
  target: np.ndarray  # [S, H, W, K] uint8


def patient_stacks(model, dataset):
  """Predicts batch by batch and yields one `PatientStack` per patient, in reading order."""
  pending = {"patient_id": None, "parts": []}

  def finish():
    parts = pending["parts"]
    order = np.argsort(np.concatenate([p[0] for p in parts]), kind="stable")
    stack = [np.concatenate([p[i] for p in parts])[order] for i in range(4)]
    return PatientStack(pending["patient_id"], stack[0], stack[1], stack[2], stack[3])

  for batch in dataset:
    probability = np.asarray(model.predict_on_batch(batch["image"]), np.float32)
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
      pending["parts"].append((indices[start:end], images[start:end], probability[start:end],
                               targets[start:end]))
      start = end
  if pending["parts"]:
    yield finish()


def _grid(stack, entry, image_size):
  """Places the slices at their source indices (missing slices empty); returns the
  volumes [D, H, W, K], the images [D, H, W], the voxel spacing and the diagonal in mm."""
  depth = int(stack.slice_indices.max()) + 1
  shape = (depth,) + stack.probability.shape[1:]
  predicted = np.zeros(shape, bool)
  truth = np.zeros(shape, bool)
  predicted[stack.slice_indices] = stack.probability > THRESHOLD
  truth[stack.slice_indices] = stack.target > 0
  spacing = entry.get("spacing_mm") or [1.0, 1.0, 1.0]
  source_shape = entry.get("source_shape") or [image_size, image_size, depth]
  voxel = (spacing[2], spacing[0] * source_shape[0] / image_size,
           spacing[1] * source_shape[1] / image_size)
  diagonal = volume_metrics.volume_diagonal_mm(source_shape, spacing)
  return truth, predicted, voxel, diagonal


def _save_npz(path, **arrays):
  buffer = io.BytesIO()
  np.savez_compressed(buffer, **arrays)
  atomic.write_bytes(path, buffer.getvalue())


def evaluate(model, data_dir, *, folds=None, drops=None, output_dir, overlays=True,
             gif="selected", save_predictions=False, batch_size=64, progress=True, gif_scale=2):
  """Scores every patient of `folds`; writes metrics.json, per_patient.csv and pictures.

  Returns:
    The metrics.json dictionary.
  """
  task = task_of(model)
  regions = decode.REGION_NAMES[task]
  try:
    layout = manifests.load_layout(data_dir, folds, drops)
  except manifests.DataError as error:
    raise EvaluationError(str(error)) from None
  expected = (layout.image_size, layout.image_size, layout.channels)
  if tuple(model.input_shape[1:]) != expected:
    raise EvaluationError(f"the model takes {tuple(model.input_shape[1:])} slices but {data_dir} "
                          f"holds {expected}")
  dataset = reader.build_dataset(data_dir, folds=folds, drops=drops, task=task, training=False,
                                 with_metadata=True, global_batch_size=batch_size)
  os.makedirs(output_dir, exist_ok=True)
  scratch = tempfile.mkdtemp(prefix=".eval-", dir=output_dir)
  rows, num_slices = [], 0
  try:
    stacks = patient_stacks(model, dataset)
    for stack in tqdm.tqdm(stacks, total=len(layout.patients), unit="patient", desc="evaluating",
                           disable=not progress):
      entry = layout.patients[stack.patient_id]
      num_slices += len(stack.slice_indices)
      truth, predicted, voxel, diagonal = _grid(stack, entry, layout.image_size)
      for k, region in enumerate(regions):
        scores = volume_metrics.score(truth[..., k], predicted[..., k], voxel, diagonal)
        rows.append({"patient_id": stack.patient_id, "region": region,
                     **dataclasses.asdict(scores)})
      if save_predictions:
        os.makedirs(os.path.join(output_dir, "predictions"), exist_ok=True)
        _save_npz(os.path.join(output_dir, "predictions", f"{stack.patient_id}.npz"),
                  probability=stack.probability, target=stack.target,
                  slice_index=stack.slice_indices)
      if overlays or gif != "none":
        _save_npz(os.path.join(scratch, f"{stack.patient_id}.npz"),
                  image=stack.images[..., 0].astype(np.float16),
                  truth=stack.target[..., 0] > 0, prediction=stack.probability[..., 0] > THRESHOLD,
                  slice_index=stack.slice_indices)
    if not rows:
      raise EvaluationError(f"{data_dir}: no slices in folds {folds}")
    metrics = _metrics(task, rows, regions, num_slices)
    _write_outputs(output_dir, rows, metrics)
    _draw(output_dir, scratch, rows, regions[0], overlays, gif, gif_scale)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  return metrics


def _metrics(task, rows, regions, num_slices):
  summary = {"task": task, "num_patients": len({r["patient_id"] for r in rows}),
             "num_slices": num_slices, "threshold": THRESHOLD, "regions": {}}
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


def _write_outputs(output_dir, rows, metrics):
  atomic.write_json(os.path.join(output_dir, "metrics.json"), metrics)
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
  writer.writeheader()
  for row in rows:
    writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})
  atomic.write_bytes(os.path.join(output_dir, "per_patient.csv"), buffer.getvalue().encode())


def ranked_patients(rows, region):
  """(worst, median, best) patient ids by Dice of `region`."""
  ranked = sorted((r["dice"], r["patient_id"]) for r in rows if r["region"] == region)
  ids = [pid for _, pid in ranked]
  return {"worst": ids[0], "median": ids[len(ids) // 2], "best": ids[-1]}


def _draw(output_dir, scratch, rows, region, overlays, gif, gif_scale):
  chosen = ranked_patients(rows, region)
  gif_patients = (sorted({r["patient_id"] for r in rows}) if gif == "all" else
                  list(dict.fromkeys(chosen.values())) if gif == "selected" else [])
  if overlays:
    os.makedirs(os.path.join(output_dir, "overlays"), exist_ok=True)
    for rank, patient_id in chosen.items():
      with np.load(os.path.join(scratch, f"{patient_id}.npz")) as data:
        area = (data["truth"] | data["prediction"]).sum(axis=(1, 2))
        i = int(np.argmax(area))
        picture = pictures.overlay_rgb(data["image"][i].astype(np.float32), data["truth"][i],
                                       data["prediction"][i], scale=2)
        name = f"{rank}_{patient_id}_slice{int(data['slice_index'][i]):03d}.png"
      overlays_lib.save_png(os.path.join(output_dir, "overlays", name), picture)
  if gif_patients:
    os.makedirs(os.path.join(output_dir, "gifs"), exist_ok=True)
    for patient_id in gif_patients:
      with np.load(os.path.join(scratch, f"{patient_id}.npz")) as data:
        pictures.volume_gif(os.path.join(output_dir, "gifs", f"{patient_id}.gif"),
                            data["image"].astype(np.float32), data["truth"], data["prediction"],
                            scale=gif_scale)


def summary_text(metrics):
  lines = [f"{metrics['num_patients']} patients, {metrics['num_slices']} slices, task "
           f"{metrics['task']}, threshold {metrics['threshold']}"]
  for region, entry in metrics["regions"].items():
    lines.append(f"  {region:16s} Dice {entry['dice_mean']:.3f} (median {entry['dice_median']:.3f},"
                 f" sd {entry['dice_std']:.3f})  IoU {entry['iou_mean']:.3f}  HD95 "
                 f"{entry['hd95_mean_mm']:.1f} mm  sensitivity {entry['sensitivity_mean']:.3f}  "
                 f"precision {entry['precision_mean']:.3f}")
  return "\n".join(lines)
