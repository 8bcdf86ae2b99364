"""Segments new patients: source files in, `<case>_pred.nii.gz` on the source grid out.

A case goes through `inference.Segmenter` (the training recipe, the members, TTA, pasting
back into the source grid, threshold and post-processing), the same path evaluation
scores, so the mask written here is the mask that was scored.
"""

from collections.abc import Callable
import dataclasses
import gzip
import os

import nibabel as nib
import numpy as np
import numpy.typing as npt
import tqdm

from data_prep import atomic
from data_prep import readers
from data_prep import sources as sources_lib
from data_prep.errors import BadInputError
from evaluation import inference
from evaluation import pictures
from evaluation import volume_metrics
from input_pipeline import decode

# Kaggle h5 slices carry no affine; predictions get the one of the official 1 mm volumes.
BRATS_AFFINE = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])


@dataclasses.dataclass
class CaseResult:
  case_id: str
  output_path: str
  gif_path: str | None
  tumor_voxels: int
  dice: dict | None  # region -> Dice at full resolution, when the case has a segmentation


def _write_nifti(path, data_hwd, affine, header, dtype=np.uint8):
  image = nib.Nifti1Image(data_hwd, affine, header=header)
  image.set_data_dtype(dtype)
  image.header.set_slope_inter(1.0, 0.0)
  atomic.write_bytes(path, gzip.compress(image.to_bytes(), compresslevel=6))


def volume_grid(volume: readers.PatientVolume, stacked: np.ndarray) -> np.ndarray:
  """Stacked slices [S, H, W, ...] -> the source volume's [D, H, W, ...] (missing slices 0)."""
  depth = volume.source_shape[2] if len(volume.source_shape) == 3 else stacked.shape[0]
  full = np.zeros((depth,) + stacked.shape[1:], stacked.dtype)
  full[volume.slice_indices] = stacked
  return full


def write_volume(
  path: str, volume: readers.PatientVolume, data_dhw: np.ndarray, dtype: npt.DTypeLike
) -> None:
  _write_nifti(
    path,
    np.moveaxis(data_dhw, 0, 2).astype(dtype),
    volume.affine if volume.affine is not None else BRATS_AFFINE,
    volume.header,
    dtype,
  )


def write_label_map(
  path: str, volume: readers.PatientVolume, masks: np.ndarray, task: str, label_scheme: str
) -> np.ndarray:
  """Writes the masks [S, H, W, K] as the case's label map on its source grid; returns it."""
  labels = volume_grid(volume, inference.label_map(masks, task, label_scheme))
  write_volume(path, volume, labels, np.uint8)
  return labels


def predict_case(
  segmenter: inference.Segmenter,
  source: sources_lib.PatientSource,
  output_dir: str,
  *,
  gif: bool = True,
  save_probabilities: bool = False,
) -> CaseResult:
  """Predicts one case and writes its NIfTI mask (and GIF). Raises BadInputError."""
  volume = readers.read_patient(source, segmenter.recipe.modalities, require_labels=False)
  segmentation = inference.require_brain(
    segmenter.segment(volume.image, volume.labels, source.format), volume.source_files[0]["path"]
  )
  os.makedirs(output_dir, exist_ok=True)
  output_path = os.path.join(output_dir, f"{source.patient_id}_pred.nii.gz")
  volume_labels = write_label_map(
    output_path, volume, segmentation.masks, segmenter.task, source.label_scheme
  )
  if save_probabilities:
    write_volume(
      os.path.join(output_dir, f"{source.patient_id}_prob.nii.gz"),
      volume,
      volume_grid(volume, segmentation.probability),
      np.float32,
    )
    if segmentation.spread is not None:
      write_volume(
        os.path.join(output_dir, f"{source.patient_id}_uncertainty.nii.gz"),
        volume,
        volume_grid(volume, segmentation.spread),
        np.float32,
      )

  gif_path = None
  if gif:
    gif_path = os.path.join(output_dir, f"{source.patient_id}_pred.gif")
    slices, recipe, task = segmentation.slices, segmenter.recipe, segmenter.task
    centre = recipe.context_slices * len(recipe.modalities)  # the first channel of the slice
    backgrounds = [centre + m for m in pictures.background_modalities(recipe.modalities, task)]
    pictures.volume_gif(
      gif_path,
      slices.images[..., backgrounds],
      None if slices.labels is None else inference.truth_masks(slices.labels, task),
      segmentation.network_probability > segmenter.rules.threshold,
      task,
    )
  dice = None
  if volume.labels is not None:
    truth = inference.truth_masks(volume.labels, segmenter.task)
    names = decode.REGION_NAMES[segmenter.task]
    dice = {
      name: volume_metrics.dice(truth[..., k], segmentation.masks[..., k])
      for k, name in enumerate(names)
    }
  return CaseResult(source.patient_id, output_path, gif_path, int((volume_labels > 0).sum()), dice)


def predict_all(
  segmenter: inference.Segmenter,
  input_path: str,
  output_dir: str,
  *,
  input_format: str = "auto",
  gif: bool = True,
  save_probabilities: bool = False,
  strict: bool = False,
  progress: bool = True,
  on_result: Callable[[CaseResult], None] | None = None,
) -> tuple[list[CaseResult], list[BadInputError]]:
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
      result = predict_case(
        segmenter, source, output_dir, gif=gif, save_probabilities=save_probabilities
      )
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
