"""Finds the patients of a BraTS drop on disk, without reading any pixels.

Discovery is cheap and single-process; loading (readers.py) is the parallel part.
Names that do not follow a known layout are reported as bad input, not guessed at.
"""

import collections
import dataclasses
import os
import re

from data_prep import storage
from data_prep.errors import BadInputError

MODALITIES = ("flair", "t1", "t1ce", "t2")
# Official file suffix of each modality, per naming generation.
NIFTI_SUFFIXES = {
  "brats2018": {"flair": "_flair", "t1": "_t1", "t1ce": "_t1ce", "t2": "_t2", "seg": "_seg"},
  "brats2023": {"flair": "-t2f", "t1": "-t1n", "t1ce": "-t1c", "t2": "-t2w", "seg": "-seg"},
}
# Kaggle BraTS2020 h5 channel of each modality.
H5_CHANNELS = {"flair": 0, "t1": 1, "t1ce": 2, "t2": 3}

_H5_NAME = re.compile(r"^volume_(\d+)_slice_(\d+)\.h5$")
_NIFTI_NAME = re.compile(
  r"^(?P<case>.+?)(?P<suffix>_flair|_t1ce|_t1|_t2|_seg|-t2f|-t1n|-t1c|-t2w|-seg)"
  r"\.nii(\.gz)?$"
)
_NIFTI_EXTENSIONS = (".nii", ".nii.gz")


@dataclasses.dataclass(frozen=True)
class PatientSource:
  """Where one patient's files are. `files` maps a modality (or 'seg') to a path (NIfTI)
  or a slice index to a path (h5)."""

  patient_id: str
  format: str  # "h5" or "nifti"
  label_scheme: str  # "brats2018" (labels 0,1,2,4), "brats2023" (0,1,2,3), "kaggle_onehot"
  files: tuple  # sorted (key, path) pairs

  @property
  def paths(self):
    return [path for _, path in self.files]


def kaggle_patient_id(volume_number):
  """Kaggle `volume_<N>` is patient `BraTS20_Training_<NNN>`."""
  return f"BraTS20_Training_{volume_number:03d}"


def detect_format(input_path):
  """'h5' or 'nifti', from the files under `input_path`; raises BadInputError when unclear."""
  has_h5 = has_nifti = False
  for path in storage.walk_files(input_path):
    has_h5 |= path.endswith(".h5")
    has_nifti |= path.endswith(_NIFTI_EXTENSIONS)
    if has_h5 and has_nifti:
      raise BadInputError(input_path, "holds both .h5 and NIfTI files; pass --input_format")
  if has_h5:
    return "h5"
  if has_nifti:
    return "nifti"
  raise BadInputError(input_path, "holds no .h5 or .nii/.nii.gz files")


def discover(input_path, input_format="auto"):
  """Lists patients under `input_path`.

  Returns:
    (sources sorted by patient id, list of BadInputError for files that fit no patient).
  """
  if not storage.isdir(input_path):
    raise BadInputError(input_path, "is not a folder")
  if input_format == "auto":
    input_format = detect_format(input_path)
  if input_format == "h5":
    return _h5_sources(storage.walk_files(input_path))
  if input_format == "nifti":
    return _nifti_sources(storage.walk_files(input_path))
  raise ValueError(f"unknown input format {input_format!r}")


def source_of_files(input_format, paths):
  """The one patient whose files are `paths` (as a manifest records them), or None when they
  do not make exactly one patient."""
  found, errors = (_h5_sources if input_format == "h5" else _nifti_sources)(sorted(paths))
  return found[0] if len(found) == 1 and not errors else None


def _h5_sources(paths):
  slices = collections.defaultdict(dict)
  errors = []
  for path in paths:
    if not path.endswith(".h5"):
      continue  # Kaggle ships CSV metadata beside the slices
    match = _H5_NAME.match(os.path.basename(path))
    if not match:
      errors.append(BadInputError(path, "name is not volume_<N>_slice_<k>.h5"))
      continue
    patient_id = kaggle_patient_id(int(match.group(1)))
    slice_index = int(match.group(2))
    if slice_index in slices[patient_id]:
      errors.append(
        BadInputError(
          path,
          f"{patient_id} slice {slice_index} seen twice (also {slices[patient_id][slice_index]})",
        )
      )
      continue
    slices[patient_id][slice_index] = path
  sources = [
    PatientSource(pid, "h5", "kaggle_onehot", tuple(sorted(files.items())))
    for pid, files in sorted(slices.items())
  ]
  return sources, errors


def _nifti_sources(paths):
  cases = collections.defaultdict(dict)  # (directory, case) -> {role: path}
  errors = []
  for path in paths:
    if not path.endswith(_NIFTI_EXTENSIONS):
      continue
    match = _NIFTI_NAME.match(os.path.basename(path))
    if not match:
      errors.append(BadInputError(path, "name has no BraTS modality suffix (_flair, -t2f, ...)"))
      continue
    role = _role_of_suffix(match.group("suffix"))
    key = (os.path.dirname(path), match.group("case"))
    if role in cases[key]:
      errors.append(
        BadInputError(
          path, f"second {role} file for {match.group('case')} (also {cases[key][role][1]})"
        )
      )
      continue
    cases[key][role] = (match.group("suffix"), path)

  sources, seen = [], {}
  for (directory, case), files in sorted(cases.items(), key=lambda item: item[0][1]):
    if case in seen:
      errors.append(BadInputError(directory, f"patient {case} seen twice (also in {seen[case]})"))
      continue
    seen[case] = directory
    naming = "brats2023" if files[next(iter(files))][0].startswith("-") else "brats2018"
    if any(suffix.startswith("-") != (naming == "brats2023") for suffix, _ in files.values()):
      errors.append(BadInputError(directory, f"{case} mixes 2018-2021 and 2023 file naming"))
      continue
    scheme = "brats2023" if naming == "brats2023" else "brats2018"
    sources.append(
      PatientSource(
        case, "nifti", scheme, tuple(sorted((role, path) for role, (_, path) in files.items()))
      )
    )
  return sources, errors


def _role_of_suffix(suffix):
  for naming in NIFTI_SUFFIXES.values():
    for role, known in naming.items():
      if known == suffix:
        return role
  raise AssertionError(suffix)
