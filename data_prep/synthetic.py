"""Synthetic BraTS patients in the exact on-disk formats, so every code path runs without real data.

Each patient is a phantom that is deterministic per (seed, patient number): a textured
brain ellipsoid with ventricles and, in most patients, a tumour (edema around a core with
a necrotic centre and an enhancing rim) whose contrasts roughly follow real MRI. It is
written as official NIfTI cases (2018-2021 or 2023 naming) or as the Kaggle BraTS2020
h5 slice release. Every file appears atomically, so a reader never sees half of one.
"""

import dataclasses
import os
import shutil
from typing import Callable, Iterable, Iterator

import h5py
import nibabel as nib
import numpy as np

IMAGE_SIZE = 240
DEFAULT_NUM_SLICES = 155
MIN_NUM_SLICES = 8
MODALITIES = ("flair", "t1", "t1ce", "t2")  # also the channel order of the Kaggle h5 `image`
FORMATS = ("h5", "nifti")
NAMINGS = ("2018", "2023")

# BraTS 2018-2021 labels; the Kaggle h5 `mask` channels hold them in this order.
NECROTIC_CORE, EDEMA, ENHANCING = 1, 2, 4
MASK_LABELS = (NECROTIC_CORE, EDEMA, ENHANCING)

# Orientation of the real BraTS files (LPS-like, 1 mm voxels).
AFFINE = np.array([[-1, 0, 0, 0], [0, -1, 0, 239], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)

CASE_ID_FORMATS = {"2018": "BraTS20_Training_{:03d}", "2023": "BraTS-GLI-{:05d}-000"}
MAX_PATIENT_NUMBER = {"2018": 999, "2023": 99999}
FILE_SUFFIXES = {
  "2018": {"flair": "_flair", "t1": "_t1", "t1ce": "_t1ce", "t2": "_t2", "seg": "_seg"},
  "2023": {"flair": "-t2f", "t1": "-t1n", "t1ce": "-t1c", "t2": "-t2w", "seg": "-seg"},
}

# Tissue classes of the phantom: indexes into the lookup tables below.
_BACKGROUND, _WHITE, _GREY, _CSF, _EDEMA, _NECROSIS, _ENHANCING = range(7)
_SEG_LABEL_OF_TISSUE = np.array([0, 0, 0, 0, EDEMA, NECROTIC_CORE, ENHANCING], dtype=np.uint8)
# Mean raw intensity per tissue class, roughly as in real BraTS scans:
# FLAIR edema ~2x white matter, T1ce enhancing very bright, T2 fluid bright, T1 tumour dark.
_INTENSITIES = {
  #        bg  white grey  csf  edema necrosis enhancing
  "flair": (0, 200, 240, 60, 420, 150, 300),
  "t1": (0, 400, 330, 150, 320, 240, 330),
  "t1ce": (0, 420, 350, 160, 340, 250, 900),
  "t2": (0, 130, 180, 450, 330, 380, 260),
}
_TUMOR_FREE_FRACTION = 1 / 8
_TEXTURE_AMPLITUDE = 0.07
_NOISE_FRACTION = 0.025  # noise sigma relative to white matter
_MIN_BRAIN_INTENSITY = 10  # brain voxels stay strictly above the background 0


@dataclasses.dataclass(frozen=True)
class SyntheticPatient:
  """One phantom patient, volumes indexed [x, y, slice] like the real NIfTI files."""

  volumes: dict[str, np.ndarray]  # modality -> int16 [240, 240, S] raw intensities
  seg: np.ndarray  # uint8 [240, 240, S], labels {0, 1, 2, 4}
  patient_number: int


@dataclasses.dataclass(frozen=True)
class _Ellipsoid:
  centre: tuple[float, float, float]
  radii: tuple[float, float, float]
  angle: float = 0.0  # in-plane rotation, radians


@dataclasses.dataclass(frozen=True)
class _Tumor:
  edema: list[_Ellipsoid]  # union of 2-3 ellipsoids
  core: _Ellipsoid
  necrotic_fraction: float  # radius of the necrotic centre relative to the core


def case_id(patient_number, naming="2018"):
  """Case folder name of a patient, e.g. `BraTS20_Training_007` or `BraTS-GLI-00007-000`."""
  _check_patient_number(patient_number, naming)
  return CASE_ID_FORMATS[naming].format(patient_number)


def h5_slice_name(patient_number, slice_index):
  """Kaggle h5 file name of one axial slice (volume number not zero-padded)."""
  return f"volume_{patient_number}_slice_{slice_index}.h5"


def nifti_file_names(patient_number, naming="2018", compressed=True):
  """{modality or 'seg': file name} of one NIfTI case."""
  case = case_id(patient_number, naming)
  extension = ".nii.gz" if compressed else ".nii"
  return {key: f"{case}{suffix}{extension}" for key, suffix in FILE_SUFFIXES[naming].items()}


def _check_patient_number(patient_number, naming):
  if naming not in NAMINGS:
    raise ValueError(f"naming must be one of {NAMINGS}, got {naming!r}")
  if not 1 <= patient_number <= MAX_PATIENT_NUMBER[naming]:
    raise ValueError(f"patient number {patient_number} is outside 1..{MAX_PATIENT_NUMBER[naming]}")


# ----------------------------------------------------------------------------- phantom


def make_patient(
  seed: int, patient_number: int, num_slices: int = DEFAULT_NUM_SLICES
) -> SyntheticPatient:
  """Builds patient `patient_number` of `seed`; the same whatever else is generated."""
  if num_slices < MIN_NUM_SLICES:
    raise ValueError(f"num_slices must be at least {MIN_NUM_SLICES}, got {num_slices}")
  rng = np.random.default_rng([seed, patient_number])
  brain = _draw_brain(rng, num_slices)
  ventricles = _draw_ventricles(rng, brain)
  has_tumor = rng.random() >= _TUMOR_FREE_FRACTION
  tumor = _draw_tumor(rng, brain)  # drawn always, so later draws do not depend on it
  scales = {m: rng.uniform(0.75, 1.35) for m in MODALITIES}
  bias_gradient = rng.uniform(-0.08, 0.08, size=3)

  box = _bounding_box(brain, num_slices)
  shape = tuple(s.stop - s.start for s in box)
  texture = _smooth_noise(rng, shape, cell=6)
  shape_noise = _smooth_noise(rng, shape, cell=12)
  tissue = _tissue_map(box, brain, ventricles, tumor if has_tumor else None, shape_noise)
  intensity_factor = (1 + _TEXTURE_AMPLITUDE * texture) * _bias_field(box, bias_gradient)

  inside = tissue != _BACKGROUND
  tissue_in_brain = tissue[inside]
  factor_in_brain = intensity_factor[inside]
  volumes = {}
  for modality in MODALITIES:
    values = _render(rng, modality, tissue_in_brain, factor_in_brain, scales[modality])
    volume = np.zeros((IMAGE_SIZE, IMAGE_SIZE, num_slices), dtype=np.int16)
    crop = np.zeros(shape, dtype=np.int16)
    crop[inside] = values
    volume[box] = crop
    volumes[modality] = volume
  seg = np.zeros((IMAGE_SIZE, IMAGE_SIZE, num_slices), dtype=np.uint8)
  seg[box] = _SEG_LABEL_OF_TISSUE[tissue]
  return SyntheticPatient(volumes=volumes, seg=seg, patient_number=patient_number)


def _draw_brain(rng, num_slices):
  """Brain ellipsoid spanning most slices; the first and last slices stay empty."""
  centre_x = IMAGE_SIZE / 2 + rng.uniform(-6, 6)
  centre_y = IMAGE_SIZE / 2 + rng.uniform(-8, 8)
  radius_x = IMAGE_SIZE * rng.uniform(0.27, 0.31)  # left-right
  radius_y = IMAGE_SIZE * rng.uniform(0.34, 0.38)  # front-back
  first = max(rng.uniform(0.03, 0.08) * num_slices, 0.6)
  last = min(rng.uniform(0.88, 0.94) * num_slices, num_slices - 1.6)
  return _Ellipsoid(
    centre=(centre_x, centre_y, (first + last) / 2), radii=(radius_x, radius_y, (last - first) / 2)
  )


def _draw_ventricles(rng, brain):
  """Two lateral ventricles beside the midline, near the brain centre."""
  (cx, cy, cz), (ax, ay, az) = brain.centre, brain.radii
  ventricles = []
  for side in (-1, 1):
    centre = (
      cx + side * ax * rng.uniform(0.09, 0.13),
      cy + ay * rng.uniform(-0.08, 0.02),
      cz + az * rng.uniform(0.0, 0.15),
    )
    radii = (
      ax * rng.uniform(0.06, 0.09),
      ay * rng.uniform(0.25, 0.32),
      az * rng.uniform(0.18, 0.26),
    )
    ventricles.append(_Ellipsoid(centre=centre, radii=radii, angle=side * rng.uniform(0.0, 0.15)))
  return ventricles


def _draw_tumor(rng, brain):
  """Edema blob over roughly 28-50% of the brain slices, with a core near its centre."""
  (cx, cy, cz), (ax, ay, az) = brain.centre, brain.radii
  direction = rng.uniform(0, 2 * np.pi)
  distance = rng.uniform(0.0, 0.45)
  centre = (
    cx + ax * distance * np.cos(direction),
    cy + ay * distance * np.sin(direction),
    cz + az * rng.uniform(-0.35, 0.35),
  )
  radius_a = rng.uniform(16, 30)
  radii = (radius_a, radius_a * rng.uniform(0.7, 1.2), az * rng.uniform(0.28, 0.5))
  angle = rng.uniform(0, np.pi)
  edema = [_Ellipsoid(centre=centre, radii=radii, angle=angle)]
  for _ in range(rng.integers(1, 3)):
    offset_angle = rng.uniform(0, 2 * np.pi)
    offset = rng.uniform(0.4, 0.8) * radius_a
    satellite_centre = (
      centre[0] + offset * np.cos(offset_angle),
      centre[1] + offset * np.sin(offset_angle),
      centre[2] + radii[2] * rng.uniform(-0.3, 0.3),
    )
    satellite_radii = tuple(r * rng.uniform(0.45, 0.75) for r in radii)
    edema.append(
      _Ellipsoid(centre=satellite_centre, radii=satellite_radii, angle=rng.uniform(0, np.pi))
    )
  core_scale = rng.uniform(0.45, 0.65)
  core_centre = tuple(c + r * rng.uniform(-0.12, 0.12) for c, r in zip(centre, radii))
  core = _Ellipsoid(centre=core_centre, radii=tuple(r * core_scale for r in radii), angle=angle)
  return _Tumor(edema=edema, core=core, necrotic_fraction=rng.uniform(0.45, 0.7))


def _bounding_box(ellipsoid, num_slices):
  """Slices of the volume that hold the (axis-aligned) ellipsoid."""
  limits = (IMAGE_SIZE, IMAGE_SIZE, num_slices)
  return tuple(
    slice(max(int(np.floor(c - r)), 0), min(int(np.ceil(c + r)) + 1, n))
    for c, r, n in zip(ellipsoid.centre, ellipsoid.radii, limits)
  )


def _smooth_noise(rng, shape, cell):
  """Blurred Gaussian noise with features about `cell` voxels wide, unit std, float32."""
  coarse = rng.standard_normal([n // cell + 4 for n in shape], dtype=np.float32)
  for axis in range(3):
    coarse = _blur_axis(coarse, axis)
  coarse /= coarse.std()
  field = coarse
  for axis, size in enumerate(shape):
    matrix = _linear_upsample_matrix(size, cell)
    field = np.moveaxis(np.tensordot(matrix, field, axes=(1, axis)), 0, axis)
  return np.ascontiguousarray(field)


def _blur_axis(array, axis):
  """[1, 2, 1] / 4 smoothing along one axis, edges repeated."""
  padded = np.concatenate([np.take(array, [0], axis), array, np.take(array, [-1], axis)], axis)
  n = array.shape[axis]
  return (
    np.take(padded, range(0, n), axis) + 2 * array + np.take(padded, range(2, n + 2), axis)
  ) / 4


def _linear_upsample_matrix(size, cell):
  """[size, size // cell + 4] weights sampling coarse points 1.. by linear interpolation."""
  positions = 1 + np.arange(size, dtype=np.float64) / cell
  lower = np.floor(positions).astype(np.int64)
  weight = (positions - lower).astype(np.float32)
  matrix = np.zeros((size, size // cell + 4), dtype=np.float32)
  matrix[np.arange(size), lower] = 1 - weight
  matrix[np.arange(size), lower + 1] += weight
  return matrix


def _radius(box, ellipsoid):
  """Normalized ellipsoid radius over `box` (1 on the surface), float32 broadcast to the box."""
  x, y, z = (np.arange(s.start, s.stop, dtype=np.float32) for s in box)
  (cx, cy, cz), (ax, ay, az) = ellipsoid.centre, ellipsoid.radii
  dz2 = np.square((z - cz) / az)[None, None, :]
  if ellipsoid.angle == 0.0:
    plane = np.square((x - cx) / ax)[:, None] + np.square((y - cy) / ay)[None, :]
  else:
    cos, sin = np.cos(ellipsoid.angle), np.sin(ellipsoid.angle)
    dx, dy = (x - cx)[:, None], (y - cy)[None, :]
    plane = np.square((dx * cos + dy * sin) / ax) + np.square((dy * cos - dx * sin) / ay)
  return np.sqrt(plane[:, :, None].astype(np.float32) + dz2)


def _tissue_map(box, brain, ventricles, tumor, shape_noise):
  """uint8 tissue class per voxel of `box`; tumour overrides anatomy, only inside the brain."""
  brain_radius = _radius(box, brain) * (1 + 0.03 * shape_noise)
  inside = brain_radius <= 1
  tissue = np.where(inside, np.uint8(_WHITE), np.uint8(_BACKGROUND))
  tissue[inside & (brain_radius + 0.04 * shape_noise > 0.88)] = _GREY
  for ventricle in ventricles:
    tissue[inside & (_radius(box, ventricle) <= 1 + 0.15 * shape_noise)] = _CSF
  if tumor is not None:
    _paint_tumor(tissue, box, inside, tumor, shape_noise)
  return tissue


def _paint_tumor(tissue, box, inside, tumor, shape_noise):
  """Writes edema, enhancing rim and necrotic centre into `tissue` (in place)."""
  sub = _sub_box(box, _tumor_extent(tumor))
  if sub is None:
    return
  local = tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(sub, box))
  noise = shape_noise[local]
  region = tissue[local]  # a view: writes land in `tissue`
  brain = inside[local]
  edema = np.zeros(region.shape, dtype=bool)
  for ellipsoid in tumor.edema:
    edema |= _radius(sub, ellipsoid) <= 1 + 0.2 * noise
  core_radius = _radius(sub, tumor.core) * (1 - 0.1 * noise)
  region[brain & edema] = _EDEMA
  region[brain & (core_radius <= 1)] = _ENHANCING
  region[brain & (core_radius <= tumor.necrotic_fraction)] = _NECROSIS


def _tumor_extent(tumor):
  """Per-axis (lows, highs) voxel coordinates that can hold tumour, with room for the noise."""
  margin = 1.6  # shape noise widens a radius by 0.2 * |noise|, rarely beyond 3 sigma
  lows = [min(e.centre[axis] - margin * _reach(e, axis) for e in tumor.edema) for axis in range(3)]
  highs = [max(e.centre[axis] + margin * _reach(e, axis) for e in tumor.edema) for axis in range(3)]
  return lows, highs


def _reach(ellipsoid, axis):
  """Largest distance from the centre along `axis` (the in-plane rotation mixes x and y)."""
  return max(ellipsoid.radii[:2]) if axis < 2 else ellipsoid.radii[2]


def _sub_box(box, extent):
  """Intersection of `box` with an extent, or None when empty."""
  lows, highs = extent
  sub = tuple(
    slice(max(b.start, int(np.floor(lo))), min(b.stop, int(np.ceil(hi)) + 1))
    for b, lo, hi in zip(box, lows, highs)
  )
  return None if any(s.start >= s.stop for s in sub) else sub


def _bias_field(box, gradient):
  """Mild linear intensity drift across the brain (a scanner's coil sensitivity)."""
  x, y, z = (np.linspace(-1, 1, s.stop - s.start, dtype=np.float32) for s in box)
  return (
    1
    + gradient[0] * x[:, None, None]
    + gradient[1] * y[None, :, None]
    + gradient[2] * z[None, None, :]
  ).astype(np.float32)


def _render(rng, modality, tissue, factor, scale):
  """int16 intensities of the brain voxels of one modality, with Rician noise."""
  lookup = np.asarray(_INTENSITIES[modality], dtype=np.float32) * np.float32(scale)
  signal = lookup[tissue] * factor
  sigma = np.float32(_NOISE_FRACTION * _INTENSITIES[modality][_WHITE] * scale)
  real = signal + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
  imaginary = sigma * rng.standard_normal(signal.shape, dtype=np.float32)
  magnitude = np.sqrt(np.square(real) + np.square(imaginary))
  return np.clip(np.rint(magnitude), _MIN_BRAIN_INTENSITY, np.iinfo(np.int16).max).astype(np.int16)


# ----------------------------------------------------------------------------- writers


def write_nifti_case(
  patient: SyntheticPatient, output_dir: str, naming: str = "2018", compressed: bool = True
) -> str:
  """Writes one official-layout case folder; returns its path.

  Files are written in a hidden `.<case>.tmp-<pid>` folder (readers skip dot names), which
  is renamed into place; if the case folder exists, only its files of the same names are
  replaced. 2023 naming stores enhancing tumour as label 3.
  """
  case = case_id(patient.patient_number, naming)
  names = nifti_file_names(patient.patient_number, naming, compressed)
  case_dir = os.path.join(output_dir, case)
  tmp_dir = os.path.join(output_dir, f".{case}.tmp-{os.getpid()}")
  os.makedirs(tmp_dir, exist_ok=True)  # also creates output_dir
  try:
    for modality in MODALITIES:
      nib.save(_nifti_image(patient.volumes[modality]), os.path.join(tmp_dir, names[modality]))
    seg = (
      patient.seg
      if naming == "2018"
      else np.where(patient.seg == ENHANCING, np.uint8(3), patient.seg)
    )
    nib.save(_nifti_image(seg), os.path.join(tmp_dir, names["seg"]))
    _move_folder_into_place(tmp_dir, case_dir)
  except BaseException:
    shutil.rmtree(tmp_dir, ignore_errors=True)  # only our own temporary folder
    raise
  return case_dir


def _nifti_image(array):
  """A NIfTI-1 image with the header fields of the real BraTS files."""
  image = nib.Nifti1Image(array, AFFINE)
  image.set_qform(AFFINE, code=1)
  image.set_sform(AFFINE, code=1)
  image.header.set_data_dtype(array.dtype)
  image.header.set_xyzt_units(xyz="mm")
  return image


def _move_folder_into_place(tmp_dir, target_dir):
  """Renames `tmp_dir` to `target_dir`, or moves its files into an existing `target_dir`."""
  if not os.path.isdir(target_dir):
    try:
      os.rename(tmp_dir, target_dir)
      return
    except OSError:
      if not os.path.isdir(target_dir):
        raise  # not a race with another writer: a real failure
  for name in sorted(os.listdir(tmp_dir)):
    os.replace(os.path.join(tmp_dir, name), os.path.join(target_dir, name))
  os.rmdir(tmp_dir)


def write_h5_slices(patient: SyntheticPatient, output_dir: str) -> list[str]:
  """Writes one Kaggle-style h5 file per axial slice; returns their paths in slice order."""
  os.makedirs(output_dir, exist_ok=True)
  paths = []
  for slice_index, (image, mask) in enumerate(kaggle_slices(patient)):
    path = os.path.join(output_dir, h5_slice_name(patient.patient_number, slice_index))
    _write_h5_atomically(path, image=image, mask=mask)
    paths.append(path)
  return paths


def kaggle_slices(patient: SyntheticPatient) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Yields (image, mask) of each axial slice exactly as the Kaggle h5 release stores them.

  image: float64 [240, 240, 4], each channel z-scored over all pixels of the slice (zeros
  where a channel is constant); mask: uint8 [240, 240, 3] one-hot necrotic core, edema,
  enhancing.
  """
  # [S, 240, 240, 4]: each slice contiguous, channels in the Kaggle order.
  raw = np.stack([patient.volumes[m] for m in MODALITIES], axis=-1)
  raw = np.ascontiguousarray(raw.transpose(2, 0, 1, 3))
  means, scales = _zscore_parameters(patient)
  for slice_index, raw_slice in enumerate(raw):
    image = (raw_slice - means[slice_index]) * scales[slice_index]
    seg = patient.seg[:, :, slice_index]
    mask = np.stack([seg == label for label in MASK_LABELS], axis=-1).astype(np.uint8)
    yield image, mask


def _zscore_parameters(patient):
  """Per slice and channel mean and 1 / std over all pixels, float64 [S, 4] (scale 0 if constant).

  Computed from exact integer sums of the whole volume, which is several times faster
  than reducing each float slice.
  """
  pixels = IMAGE_SIZE * IMAGE_SIZE
  means, scales = [], []
  for modality in MODALITIES:
    values = patient.volumes[modality].astype(np.int32)
    total = values.sum(axis=(0, 1), dtype=np.int64)
    squares = np.square(values).sum(axis=(0, 1), dtype=np.int64)  # int16 squared fits in int32
    std = np.sqrt((pixels * squares - total * total).astype(np.float64)) / pixels
    means.append(total / pixels)
    scales.append(np.divide(1.0, std, out=np.zeros_like(std), where=std > 0))
  return np.stack(means, axis=-1), np.stack(scales, axis=-1)


def _write_h5_atomically(path, **datasets):
  """Writes uncompressed datasets to a hidden temporary file beside `path`, then renames it."""
  directory, name = os.path.split(path)
  tmp_path = os.path.join(directory, f".{name}.tmp-{os.getpid()}")
  try:
    with h5py.File(tmp_path, "w") as f:
      for key, value in datasets.items():
        f.create_dataset(key, data=value)
    os.replace(tmp_path, path)
  except BaseException:
    if os.path.exists(tmp_path):
      os.unlink(tmp_path)
    raise


def generate(
  output_dir: str,
  num_patients: int,
  fmt: str = "h5",
  seed: int = 0,
  naming: str = "2018",
  num_slices: int = DEFAULT_NUM_SLICES,
  compressed: bool = True,
  first_patient: int = 1,
  progress: Callable[[Iterable[int]], Iterable[int]] | None = None,
) -> list[str]:
  """Writes patients first_patient.. first_patient + num_patients - 1; returns every file written.

  h5 files all go into `output_dir`; NIfTI cases into `output_dir/<case>/`. `progress`
  may wrap the iterable of patient numbers (e.g. `tqdm.tqdm`).
  """
  if fmt not in FORMATS:
    raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
  if num_patients < 1:
    raise ValueError(f"num_patients must be at least 1, got {num_patients}")
  if num_slices < MIN_NUM_SLICES:
    raise ValueError(f"num_slices must be at least {MIN_NUM_SLICES}, got {num_slices}")
  numbering = naming if fmt == "nifti" else "2018"  # h5 volumes map to BraTS20_Training_%03d
  patient_numbers = range(first_patient, first_patient + num_patients)
  for number in (patient_numbers[0], patient_numbers[-1]):
    _check_patient_number(number, numbering)
  os.makedirs(output_dir, exist_ok=True)
  written = []
  for number in progress(patient_numbers) if progress else patient_numbers:
    patient = make_patient(seed, number, num_slices)
    if fmt == "h5":
      written.extend(write_h5_slices(patient, output_dir))
    else:
      case_dir = write_nifti_case(patient, output_dir, naming=naming, compressed=compressed)
      names = nifti_file_names(number, naming, compressed)
      written.extend(os.path.join(case_dir, names[key]) for key in (*MODALITIES, "seg"))
  return written
