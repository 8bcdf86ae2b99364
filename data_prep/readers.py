"""Reads one patient's source files into arrays, checking everything a bad file can get wrong.

Each file is read once: the bytes are hashed (for the manifest) and then parsed from
memory. Every failure becomes a `BadInputError` naming the file and the reason.
"""

import collections
import dataclasses
import gzip
import hashlib
import io
import zlib

import h5py
import nibabel as nib
import numpy as np

from data_prep import labels as labels_lib
from data_prep import storage
from data_prep.errors import BadInputError
from data_prep.sources import H5_CHANNELS

KAGGLE_IMAGE_CHANNELS = 4
KAGGLE_MASK_CHANNELS = 3
KAGGLE_SLICE_SIZE = (240, 240)  # (height, width) of every slice of the Kaggle release


@dataclasses.dataclass(frozen=True)
class PatientVolume:
  """One patient in memory, slices first."""

  patient_id: str
  image: np.ndarray  # float32 [S, H, W, C] in the order of `modalities`
  labels: np.ndarray | None  # uint8 [S, H, W] unified label map
  slice_indices: np.ndarray  # int64 [S], index k in the source volume
  spacing_mm: tuple  # (row, column, slice) spacing of the source grid
  source_files: list  # [{"path", "sha256"}]
  bad_files: list  # BadInputError for single slices that were skipped (h5)
  affine: np.ndarray | None = None  # NIfTI affine, to write predictions back
  header: object = None  # NIfTI header of the first modality, likewise
  source_shape: tuple = ()  # (H, W, D) of the source volume
  warnings: list = dataclasses.field(default_factory=list)  # "<file>: <reason>", converted anyway


def read_bytes(path):
  """Returns (bytes, sha256 hex); empty files are bad input."""
  try:
    data = storage.read_bytes(path)
  except OSError as error:
    raise BadInputError(path, f"cannot be read ({error.strerror or error})") from None
  if not data:
    raise BadInputError(path, "is empty")
  return data, hashlib.sha256(data).hexdigest()


def _check_finite(array, path):
  if not np.all(np.isfinite(array)):
    raise BadInputError(path, "holds NaN or infinite intensities")


# ---------------------------------------------------------------- NIfTI


def load_nifti(path):
  """Returns (nibabel image with data in memory, sha256); corrupt files are bad input."""
  data, digest = read_bytes(path)
  if data[:2] == b"\x1f\x8b":
    try:
      data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
      raise BadInputError(path, f"truncated or corrupt gzip ({error})") from None
  try:
    image = nib.Nifti1Image.from_bytes(data)
    array = np.asanyarray(image.dataobj)
  except Exception as error:  # nibabel raises many types for foreign or cut files
    reason = (
      "is not a NIfTI-1 file"
      if len(data) < 348 or data[344:348] not in (b"n+1\0", b"ni1\0")
      else f"truncated or corrupt NIfTI ({type(error).__name__}: {error})"
    )
    raise BadInputError(path, reason) from None
  if array.ndim == 4 and array.shape[3] == 1:
    array = array[..., 0]
  if array.ndim != 3:
    raise BadInputError(path, f"has shape {array.shape}, expected a 3D volume")
  return image, array, digest


def read_nifti_patient(source, modalities, *, require_labels=True):
  """Loads the chosen modalities (and seg) of a NIfTI case folder."""
  files = dict(source.files)
  missing = [m for m in modalities if m not in files]
  if require_labels and "seg" not in files:
    missing.append("seg")
  if missing:
    some_file = next(iter(files.values()))
    raise BadInputError(
      some_file.rsplit("/", 1)[0], f"{source.patient_id} has no {', '.join(missing)} file"
    )
  volume, source_files, reference = None, [], None
  for channel, modality in enumerate(modalities):
    path = files[modality]
    image, array, digest = load_nifti(path)
    _check_finite(array, path)
    if reference is None:
      reference = (path, array.shape, image)
      # [D, H, W, C], C-contiguous: every later step reads the volume whole, and on the
      # strided view the earlier code kept they all ran 2-3x slower.
      volume = np.empty(
        (array.shape[2], array.shape[0], array.shape[1], len(modalities)), np.float32
      )
    elif array.shape != reference[1]:
      raise BadInputError(path, f"shape {array.shape} differs from {reference[0]} {reference[1]}")
    volume[..., channel] = np.transpose(array, (2, 0, 1))
    source_files.append({"path": path, "sha256": digest})

  label_map = None
  if "seg" in files:
    path = files["seg"]
    _, seg, digest = load_nifti(path)
    if seg.shape != reference[1]:
      raise BadInputError(path, f"label shape {seg.shape} differs from image {reference[1]}")
    label_map = np.ascontiguousarray(
      np.transpose(labels_lib.unify_labels(seg, source.label_scheme, path), (2, 0, 1))
    )
    source_files.append({"path": path, "sha256": digest})

  nifti = reference[2]
  return PatientVolume(
    patient_id=source.patient_id,
    image=volume,
    labels=label_map,
    slice_indices=np.arange(volume.shape[0], dtype=np.int64),
    spacing_mm=tuple(float(z) for z in nifti.header.get_zooms()[:3]),
    source_files=source_files,
    bad_files=[],
    affine=nifti.affine,
    header=nifti.header,
    source_shape=tuple(int(s) for s in reference[1]),
  )


# ---------------------------------------------------------------- Kaggle h5


def read_h5_slice(path, channels, *, require_labels=True):
  """Returns (image float32 [H, W, C], unified labels [H, W] or None, sha256) of one slice file."""
  data, digest = read_bytes(path)
  if not data.startswith(b"\x89HDF\r\n\x1a\n"):
    raise BadInputError(path, "is not an HDF5 file")
  try:
    with h5py.File(io.BytesIO(data), "r") as f:
      missing = [
        key for key in ("image", "mask") if key not in f and (key == "image" or require_labels)
      ]
      if missing:
        raise BadInputError(
          path, f"has no {' or '.join(repr(k) for k in missing)} dataset (keys: {sorted(f.keys())})"
        )
      image = f["image"][()]
      mask = f["mask"][()] if "mask" in f else None
  except BadInputError:
    raise
  except Exception as error:  # h5py raises OSError/KeyError/ValueError on cut files
    raise BadInputError(
      path, f"truncated or corrupt HDF5 ({type(error).__name__}: {error})"
    ) from None
  if image.ndim != 3 or image.shape[2] != KAGGLE_IMAGE_CHANNELS:
    raise BadInputError(
      path, f"image has shape {image.shape}, expected (H, W, {KAGGLE_IMAGE_CHANNELS})"
    )
  selected = image[:, :, channels].astype(np.float32)
  _check_finite(selected, path)
  label_map = None
  if mask is not None:
    if mask.shape != image.shape[:2] + (KAGGLE_MASK_CHANNELS,):
      raise BadInputError(
        path,
        f"mask has shape {mask.shape}, expected "
        f"{image.shape[:2] + (KAGGLE_MASK_CHANNELS,)} to match the image",
      )
    label_map = labels_lib.unify_onehot_mask(mask, path)
  return selected, label_map, digest


def read_h5_patient(source, modalities, *, require_labels=True):
  """Loads a patient's Kaggle slice files; a bad slice is skipped and listed, not fatal, but
  slices of mixed sizes refuse the patient (warnings name a size other than the release's)."""
  channels = [H5_CHANNELS[m] for m in modalities]
  images, label_maps, indices, source_files, bad_files = [], [], [], [], []
  for slice_index, path in source.files:
    try:
      image, label_map, digest = read_h5_slice(path, channels, require_labels=require_labels)
    except BadInputError as error:
      bad_files.append(error)
      continue
    images.append(image)
    label_maps.append(label_map)
    indices.append(slice_index)
    source_files.append({"path": path, "sha256": digest})
  if not images:  # each file keeps its own line: the last one raised, the others carried
    last = bad_files[-1]
    raise BadInputError(
      last.path,
      f"{last.reason}; none of the {len(bad_files)} slice files of {source.patient_id} is"
      " readable, the patient is skipped",
      bad_files=bad_files[:-1],
    )
  height, width = _slice_size(source.patient_id, images, source_files, bad_files)
  warnings = []
  if (height, width) != KAGGLE_SLICE_SIZE:
    warnings.append(
      f"{source_files[0]['path']}: the {len(images)} slices of {source.patient_id} are "
      f"{_size_text((height, width))}, not the release's {_size_text(KAGGLE_SLICE_SIZE)};"
      " converted anyway"
    )
  has_labels = all(m is not None for m in label_maps)
  return PatientVolume(
    patient_id=source.patient_id,
    image=np.stack(images),
    labels=np.stack(label_maps) if has_labels else None,
    slice_indices=np.asarray(indices, dtype=np.int64),
    spacing_mm=(1.0, 1.0, 1.0),
    source_files=source_files,
    bad_files=bad_files,
    source_shape=(height, width, max(indices) + 1),
    warnings=warnings,
  )


def _size_text(size):
  return f"{size[0]}x{size[1]}"


def _slice_size(patient_id, images, source_files, bad_files):
  """The (height, width) shared by a patient's slices. Slices of mixed sizes make no volume (nor
  one crop), so the patient is refused in one line naming the files off the most common size."""
  sizes = [image.shape[:2] for image in images]
  common, count = collections.Counter(sizes).most_common(1)[0]
  odd = [(f["path"], size) for f, size in zip(source_files, sizes) if size != common]
  if not odd:
    return common
  others = ", ".join(f"{path} ({_size_text(size)})" for path, size in odd[1:])
  raise BadInputError(
    odd[0][0],
    f"slice is {_size_text(odd[0][1])} but {count} of the {len(sizes)} readable slice files of"
    f" {patient_id} are {_size_text(common)}, the patient is skipped"
    + (f" (other slices of another size: {others})" if others else ""),
    bad_files=bad_files,
  )


def read_patient(source, modalities, *, require_labels=True):
  """Loads a patient of either format."""
  reader = read_h5_patient if source.format == "h5" else read_nifti_patient
  return reader(source, modalities, require_labels=require_labels)
