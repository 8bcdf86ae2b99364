"""Segments new patients: source files in, `<case>_pred.nii.gz` on the source grid out.

A case is prepared by exactly the converter's code (`readers.read_patient` and
`preprocessing.preprocess_volume`, with the modalities and normalization rule the model
was trained with), predicted slice by slice, and the probabilities are resized back to the
source's in-plane size before thresholding, so the mask lines up with the source volume.
"""

import dataclasses
import gzip
import json
import os

import nibabel as nib
import numpy as np
import tqdm

from data_prep import atomic
from data_prep import patient_conversion
from data_prep import preprocessing
from data_prep import readers
from data_prep import sources as sources_lib
from data_prep.errors import BadInputError
from evaluation import pictures
from evaluation.evaluate import THRESHOLD, task_of
from training.trainer import DATASET_INFO

# Kaggle h5 slices carry no affine; predictions get the one of the official 1 mm volumes.
BRATS_AFFINE = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])


@dataclasses.dataclass
class CaseResult:
  case_id: str
  output_path: str
  gif_path: str | None
  tumor_voxels: int
  dice: dict | None  # region -> Dice at full resolution, when the case has a segmentation


def load_dataset_info(model, model_dir):
  """The training data's layout (model_dir/dataset.json), or FLAIR-only defaults."""
  path = os.path.join(model_dir, DATASET_INFO) if model_dir else None
  if path and os.path.isfile(path):
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  return {"task": task_of(model), "image_size": model.input_shape[1],
          "channels": model.input_shape[-1], "modalities": ["flair"][:model.input_shape[-1]]}


def label_map(probability, task, scheme):
  """Probabilities [D, H, W, K] -> uint8 labels: 1 tumour (whole_tumor); BraTS labels for
  regions (2 edema, 1 necrotic core, 4 or 3 enhancing per the source's scheme)."""
  masks = probability > THRESHOLD
  labels = np.zeros(probability.shape[:3], np.uint8)
  if task == "whole_tumor":
    labels[masks[..., 0]] = 1
    return labels
  labels[masks[..., 0]] = 2
  labels[masks[..., 1]] = 1
  labels[masks[..., 2]] = 3 if scheme == "brats2023" else 4
  return labels


def _dice(truth, prediction):
  total = truth.sum() + prediction.sum()
  return 1.0 if total == 0 else float(2 * np.logical_and(truth, prediction).sum() / total)


def _full_resolution_dice(labels, unified, task, scheme):
  """Dice per region against the case's own segmentation (unified label map)."""
  if task == "whole_tumor":
    return {"whole_tumor": _dice(unified > 0, labels > 0)}
  et = labels == (3 if scheme == "brats2023" else 4)
  return {"whole_tumor": _dice(unified > 0, labels > 0),
          "tumor_core": _dice(np.isin(unified, (1, 3)), (labels == 1) | et),
          "enhancing_tumor": _dice(unified == 3, et)}


def _write_nifti(path, labels_hwd, affine, header):
  image = nib.Nifti1Image(labels_hwd, affine, header=header)
  image.set_data_dtype(np.uint8)
  image.header.set_slope_inter(1.0, 0.0)
  atomic.write_bytes(path, gzip.compress(image.to_bytes(), compresslevel=6))


def predict_case(model, source, info, output_dir, *, batch_size=32, gif=True):
  """Predicts one case and writes its NIfTI mask (and GIF). Raises BadInputError."""
  volume = readers.read_patient(source, tuple(info["modalities"]), require_labels=False)
  options = patient_conversion.ConversionOptions(image_size=info["image_size"],
                                                 modalities=tuple(info["modalities"]))
  slices = preprocessing.preprocess_volume(volume.image, volume.labels,
                                           image_size=info["image_size"],
                                           normalization=options.normalization_for(source.format))
  if not len(slices.slice_indices):
    raise BadInputError(volume.source_files[0]["path"], "no slice contains brain")
  probability = np.concatenate([
      np.asarray(model.predict_on_batch(slices.images[i:i + batch_size]), np.float32)
      for i in range(0, len(slices.images), batch_size)])
  height, width = volume.image.shape[1:3]
  full = np.zeros((volume.image.shape[0], height, width, probability.shape[-1]), np.float32)
  full[slices.slice_indices] = preprocessing.resize_images(probability, height, width)
  task = info["task"]
  labels = label_map(full, task, source.label_scheme)  # [S, H, W], S = stacked source slices

  depth = volume.source_shape[2] if len(volume.source_shape) == 3 else labels.shape[0]
  volume_labels = np.zeros((depth, height, width), np.uint8)
  volume_labels[volume.slice_indices] = labels
  os.makedirs(output_dir, exist_ok=True)
  output_path = os.path.join(output_dir, f"{source.patient_id}_pred.nii.gz")
  _write_nifti(output_path, np.transpose(volume_labels, (1, 2, 0)),
               volume.affine if volume.affine is not None else BRATS_AFFINE, volume.header)

  gif_path = None
  if gif:
    gif_path = os.path.join(output_dir, f"{source.patient_id}_pred.gif")
    truth = None if slices.labels is None else slices.labels > 0
    pictures.volume_gif(gif_path, slices.images[..., 0], truth, probability[..., 0] > THRESHOLD)
  dice = None if volume.labels is None else _full_resolution_dice(labels, volume.labels, task,
                                                                  source.label_scheme)
  return CaseResult(source.patient_id, output_path, gif_path, int((volume_labels > 0).sum()), dice)


def predict_all(model, input_path, output_dir, info, *, input_format="auto", batch_size=32,
                gif=True, strict=False, progress=True, on_result=None):
  """Predicts every case under `input_path`; bad cases are skipped and returned.

  Returns:
    (list of CaseResult, list of BadInputError).
  Raises:
    BadInputError: with `strict`, at the first bad case; or when `input_path` is unusable.
  """
  found, bad = sources_lib.discover(input_path, input_format)
  if strict and bad:
    raise bad[0]
  results = []
  for source in tqdm.tqdm(found, unit="case", desc="predicting", disable=not progress):
    try:
      result = predict_case(model, source, info, output_dir, batch_size=batch_size, gif=gif)
    except BadInputError as error:
      if strict:
        raise
      bad.append(error)
      tqdm.tqdm.write(f"bad input: {error}")
      continue
    results.append(result)
    if on_result:
      on_result(result)
  return results, bad
