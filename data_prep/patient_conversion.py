"""The per-patient work of the converter, as one pure function.

`convert_patient` takes a `PatientSource` and options and returns serialized examples
plus what the manifest needs. It touches no shared state, so the same function runs
in the local process pool and in an Apache Beam `Map`.
"""

import dataclasses

import numpy as np

from data_prep import example_codec
from data_prep import folds
from data_prep import preprocessing
from data_prep import readers
from data_prep.errors import BadInputError


@dataclasses.dataclass(frozen=True)
class ConversionOptions:
  """How to convert a patient: the preprocessing recipe's settings (their defaults are the
  recipe's) plus how the slices are stored."""

  image_size: int = preprocessing.Recipe.image_size
  modalities: tuple = preprocessing.Recipe.modalities
  image_dtype: str = "float16"
  num_folds: int = 5
  normalization_scope: str = preprocessing.Recipe.normalization_scope
  normalization: str = preprocessing.Recipe.normalization
  crop: str = preprocessing.Recipe.crop
  context_slices: int = preprocessing.Recipe.context_slices

  @property
  def recipe(self):
    return preprocessing.Recipe(
      image_size=self.image_size,
      modalities=self.modalities,
      normalization=self.normalization,
      normalization_scope=self.normalization_scope,
      crop=self.crop,
      context_slices=self.context_slices,
    )

  def normalization_for(self, source_format):
    return self.recipe.normalization_for(source_format)


@dataclasses.dataclass
class PatientResult:
  """What one patient contributes to a drop. `error` is set when the patient was skipped."""

  patient_id: str
  fold: int
  examples: list = dataclasses.field(default_factory=list)  # serialized Example bytes
  slice_indices: list = dataclasses.field(default_factory=list)
  tumor_slices: int = 0
  source_files: list = dataclasses.field(default_factory=list)
  source_shape: tuple = ()
  spacing_mm: tuple = ()
  crop: dict | None = None  # preprocessing.CropBox.to_json()
  bad_files: list = dataclasses.field(default_factory=list)  # BadInputError, slice level
  error: BadInputError | None = None
  warnings: list = dataclasses.field(default_factory=list)  # "<file>: <reason>", converted anyway
  overlays: list = dataclasses.field(default_factory=list)  # [(image [H, W], labels, slice_index)]
  # Set instead of `examples` when a worker process wrote them framed to a file (convert.py).
  records_file: str | None = None
  record_sizes: list = dataclasses.field(default_factory=list)

  def manifest_entry(self):
    return {
      "fold": self.fold,
      "slices": len(self.slice_indices),
      "tumor_slices": self.tumor_slices,
      "slice_indices": [int(k) for k in self.slice_indices],
      "source_shape": list(self.source_shape),
      "spacing_mm": list(self.spacing_mm),
      "crop": self.crop,
      "source_files": self.source_files,
    }


def convert_patient(source, options):
  """Reads, preprocesses and serializes every brain slice of one patient."""
  fold = folds.fold_of(source.patient_id, options.num_folds)
  try:
    volume = readers.read_patient(source, options.modalities)
  except BadInputError as error:
    return PatientResult(source.patient_id, fold, bad_files=list(error.bad_files), error=error)
  if volume.labels is None:
    return PatientResult(
      source.patient_id,
      fold,
      bad_files=volume.bad_files,
      error=BadInputError(volume.source_files[0]["path"], "has no labels"),
    )

  slices = options.recipe.preprocess(volume.image, volume.labels, source.format)
  source_indices = volume.slice_indices[slices.slice_indices]
  result = PatientResult(
    source.patient_id,
    fold,
    slice_indices=source_indices.tolist(),
    source_files=volume.source_files,
    source_shape=volume.source_shape,
    spacing_mm=volume.spacing_mm,
    crop=slices.crop.to_json(),
    bad_files=volume.bad_files,
    warnings=volume.warnings,
  )
  if not len(source_indices):
    result.error = BadInputError(volume.source_files[0]["path"], "no slice contains brain")
    return result

  tumor_pixels = (slices.labels > 0).sum(axis=(1, 2))
  result.tumor_slices = int(np.count_nonzero(tumor_pixels))
  for image, label, slice_index in zip(slices.images, slices.labels, source_indices):
    result.examples.append(
      example_codec.encode_slice(
        image,
        label,
        patient_id=source.patient_id,
        slice_index=int(slice_index),
        fold=fold,
        image_dtype=options.image_dtype,
      )
    )
  result.overlays = _overlay_slices(
    slices.images, slices.labels, source_indices, tumor_pixels, len(options.modalities)
  )
  return result


def _overlay_slices(images, labels, source_indices, tumor_pixels, num_modalities, count=3):
  """Up to `count` tumour slices for inspection: the largest tumour first, then spread out."""
  tumor = np.flatnonzero(tumor_pixels)
  if not len(tumor):
    return []
  largest = int(tumor[np.argmax(tumor_pixels[tumor])])
  spread = tumor[np.linspace(0, len(tumor) - 1, count + 2)[1:-1].round().astype(int)]
  chosen = list(dict.fromkeys([largest, *map(int, spread)]))[:count]
  centre = images.shape[-1] // 2 // num_modalities * num_modalities  # first channel of slice 0
  return [(images[i, :, :, centre], labels[i], int(source_indices[i])) for i in chosen]
