"""Turns raw BraTS slices into the model's input: one function for converter and prediction.

Training and prediction must see identical pixels, so `preprocess_volume` is the
only place that normalizes, crops, resizes, stacks 2.5D context and drops brainless
slices, and `paste_back` is its inverse for predictions. It is pure numpy (no
TensorFlow) so converter workers stay light and fork/spawn safely.
"""

import dataclasses
import functools

import numpy as np

# z-scores beyond this are clipped: a few hyperintense voxels must not dominate.
CLIP_VALUE = 5.0
# A brain whose intensities barely vary cannot be z-scored meaningfully.
_MIN_STD = 1e-6

NORMALIZATION_SCOPES = ("volume", "slice")
NORMALIZATION_METHODS = ("zscore_brain", "robust_brain")
CROPS = ("brain", "none")
# Voxels of background kept around the brain's bounding box when cropping.
CROP_MARGIN = 4
# IQR of a standard normal: robust scaling divides by IQR / this, so its units match a z-score.
_NORMAL_IQR = 1.349


@dataclasses.dataclass(frozen=True)
class Normalization:
  """How intensities were normalized; stored in the manifest so readers never guess."""

  scope: str  # "volume" (whole patient known) or "slice"
  clip: float = CLIP_VALUE
  method: str = "zscore_brain"  # or "robust_brain": median and IQR, not pulled by the tumour

  def to_json(self):
    return {
      "method": self.method,
      "scope": self.scope,
      "clip": [-self.clip, self.clip],
      "brain": "voxels above the slice background value",
      "background": 0.0,
    }

  @classmethod
  def from_json(cls, entry):
    return cls(
      scope=entry["scope"], clip=float(entry["clip"][1]), method=entry.get("method", "zscore_brain")
    )


@dataclasses.dataclass(frozen=True)
class PreprocessedSlices:
  """The kept slices of one patient, ready to be written or fed to the model."""

  images: np.ndarray  # float32 [S, size, size, C * (2 * context_slices + 1)]
  labels: np.ndarray | None  # uint8 [S, size, size] unified label map, or None
  slice_indices: np.ndarray  # int64 [S], position of each kept slice in the input stack
  crop: "CropBox"  # where the network's square lies in the source slice


def brain_mask(image):
  """Brain = any channel above its slice's background value.

  Raw NIfTI background is 0; Kaggle h5 slices were z-scored over all pixels, so their
  background is a negative constant, which is the slice minimum. Both cases are "above
  the per-slice, per-channel minimum" (a constant slice has no brain).

  Args:
    image: float [S, H, W, C].
  Returns:
    bool [S, H, W].
  """
  brain = np.zeros(image.shape[:3], bool)
  for channel in np.moveaxis(image, -1, 0):  # one channel at a time: 5x faster than at once
    brain |= channel > channel.min(axis=(1, 2), keepdims=True)
  return brain


def _zscore(values, brain, axes):
  """z-scores `values` (float32, ours to change) in place, with each channel's mean and std
  over the `brain` voxels of the volume (axes (0, 1, 2)) or of each slice (axes (1, 2))."""
  if axes == (0, 1, 2):
    # Only the brain voxels are read for the statistics (a fifth of a BraTS volume), and the
    # volume is changed in place: a four-modality volume is 140 MB, and every temporary of
    # that size cost more in fresh pages than in arithmetic.
    channels = values.shape[-1]  # np.compress: 5x faster than values[brain]
    voxels = np.compress(brain.ravel(), values.reshape(-1, channels), axis=0)  # [N, C]
    if not len(voxels):
      return values
    mean = voxels.mean(axis=0, dtype=np.float64)
    std = np.sqrt(np.square(voxels - mean.astype(np.float32)).mean(axis=0, dtype=np.float64))
  else:
    pixels = values.reshape(values.shape[0], -1, values.shape[-1])  # [S, H*W, C]
    weights = brain.reshape(brain.shape[0], 1, -1).astype(np.float32)  # [S, 1, H*W]
    count = np.maximum(weights.sum(axis=2), 1.0)  # [S, 1]
    mean = (weights @ pixels)[:, 0] / count  # [S, C]
    std = np.sqrt((weights @ np.square(pixels - mean[:, None]))[:, 0] / count)
    mean, std = mean[:, None, None], std[:, None, None]
  values -= mean.astype(np.float32)
  values /= np.maximum(std, _MIN_STD).astype(np.float32)
  return values


def _robust_scale(values, brain, axes):
  """(values - median) / (IQR / 1.349) over `brain` voxels: the tumour, a minority of bright
  voxels, barely moves the median and quartiles, while it pulls the mean and the std."""
  centred = np.empty_like(values)
  for c in range(values.shape[-1]):
    channel = values[..., c]
    if axes == (0, 1, 2):
      groups = [(slice(None), channel[brain])]
    else:
      groups = [(s, channel[s][brain[s]]) for s in range(channel.shape[0])]
    for where, voxels in groups:
      if voxels.size == 0:
        centred[where, ..., c] = 0.0
        continue
      q25, q50, q75 = np.percentile(voxels, (25, 50, 75))
      scale = max((q75 - q25) / _NORMAL_IQR, _MIN_STD)
      centred[where, ..., c] = (channel[where] - q50) / scale
  return centred


def normalize(image, brain, normalization, *, in_place=False):
  """Brain voxels per channel to z-score units (mean/std or median/IQR), background 0, clipped.

  Args:
    image: float32 [S, H, W, C].
    brain: bool [S, H, W].
    normalization: a `Normalization`.
    in_place: `image` (float32) may be overwritten, which saves a copy of the volume.
  """
  axes = (0, 1, 2) if normalization.scope == "volume" else (1, 2)
  if normalization.method == "robust_brain":
    normalized = _robust_scale(image.astype(np.float32, copy=False), brain, axes)  # new array
  elif normalization.method == "zscore_brain":
    normalized = _zscore(image if in_place else image.astype(np.float32), brain, axes)
  else:
    raise ValueError(
      f"unknown normalization {normalization.method!r}; expected one of {NORMALIZATION_METHODS}"
    )
  np.clip(normalized, -normalization.clip, normalization.clip, out=normalized)
  normalized[~brain] = 0.0
  return normalized


@functools.lru_cache(maxsize=16)
def linear_resize_matrix(in_size, out_size):
  """Antialiased linear resampling as a matrix [out, in] (triangle filter, half-pixel centres).

  Matches `tf.image.resize(method="bilinear", antialias=True)`: when shrinking, the
  triangle kernel is widened by the scale so every input pixel contributes. Resizing a
  slice is then two small matmuls, which is far faster than per-pixel code.
  """
  scale = in_size / out_size
  support = max(scale, 1.0)
  centres = (np.arange(out_size) + 0.5) * scale - 0.5  # in input pixel coordinates
  inputs = np.arange(in_size)
  distance = np.abs(inputs[None, :] - centres[:, None]) / support
  weights = np.clip(1.0 - distance, 0.0, None)
  weights /= weights.sum(axis=1, keepdims=True)
  return weights.astype(np.float32)


def nearest_indices(in_size, out_size):
  """Source index of each output pixel for nearest-neighbour resizing (half-pixel centres)."""
  scale = in_size / out_size
  return np.minimum(np.floor((np.arange(out_size) + 0.5) * scale).astype(np.int64), in_size - 1)


def resize_images(images, size, width=None):
  """Resizes float [S, H, W, C] to [S, size, width or size, C], antialiased linear interpolation."""
  rows = linear_resize_matrix(images.shape[1], size)
  cols = linear_resize_matrix(images.shape[2], width or size)
  # out[s, i, j, c] = sum_hw rows[i, h] * images[s, h, w, c] * cols[j, w]
  resized = np.einsum("ih,shwc->siwc", rows, images, optimize=True)
  return np.einsum("jw,siwc->sijc", cols, resized, optimize=True).astype(np.float32)


def resize_labels(labels, size):
  """Resizes a label map [S, H, W] to [S, size, size] by nearest neighbour (no new labels)."""
  rows = nearest_indices(labels.shape[1], size)
  cols = nearest_indices(labels.shape[2], size)
  return labels[:, rows][:, :, cols]


@dataclasses.dataclass(frozen=True)
class CropBox:
  """A square of the source slice: rows [row, row + size), columns [column, column + size).
  It may reach past the slice's edges, where it reads zeros (background)."""

  row: int
  column: int
  size: int

  def to_json(self):
    return {"row": self.row, "column": self.column, "size": self.size}

  @classmethod
  def from_json(cls, entry):
    return cls(int(entry["row"]), int(entry["column"]), int(entry["size"]))


def crop_box(brain, crop="brain", margin=CROP_MARGIN):
  """The square the network sees: around the brain's bounding box over the whole volume
  (plus `margin`, centred on the box), or the whole slice padded to a square for "none".

  Args:
    brain: bool [S, H, W].
  """
  height, width = brain.shape[1:3]
  if crop == "none" or not brain.any():
    size = max(height, width)
    return CropBox((height - size) // 2, (width - size) // 2, size)
  if crop != "brain":
    raise ValueError(f"unknown crop {crop!r}; expected one of {CROPS}")
  rows = np.flatnonzero(brain.any(axis=(0, 2)))
  columns = np.flatnonzero(brain.any(axis=(0, 1)))
  box_height, box_width = rows[-1] - rows[0] + 1, columns[-1] - columns[0] + 1
  size = int(max(box_height, box_width) + 2 * margin)
  row = int(rows[0] - (size - box_height) // 2)
  column = int(columns[0] - (size - box_width) // 2)
  return CropBox(row, column, size)


def _overlap(start, size, limit):
  """(source start, source stop, destination start) of [start, start + size) inside [0, limit)."""
  source_start, source_stop = max(start, 0), min(start + size, limit)
  return source_start, max(source_stop, source_start), source_start - start


def crop_square(volume, box):
  """volume [S, H, W, ...] -> [S, box.size, box.size, ...], zeros where the box leaves the slice."""
  out = np.zeros((volume.shape[0], box.size, box.size) + volume.shape[3:], volume.dtype)
  r0, r1, dr = _overlap(box.row, box.size, volume.shape[1])
  c0, c1, dc = _overlap(box.column, box.size, volume.shape[2])
  out[:, dr : dr + r1 - r0, dc : dc + c1 - c0] = volume[:, r0:r1, c0:c1]
  return out


def paste_back(probability, box, height, width):
  """Inverse of crop + resize for predictions: [S, size, size, K] on the network's grid ->
  [S, height, width, K] on the source grid (linear interpolation, zero outside the box)."""
  square = resize_images(probability, box.size)
  out = np.zeros((probability.shape[0], height, width, probability.shape[3]), np.float32)
  r0, r1, dr = _overlap(box.row, box.size, height)
  c0, c1, dc = _overlap(box.column, box.size, width)
  out[:, r0:r1, c0:c1] = square[:, dr : dr + r1 - r0, dc : dc + c1 - c0]
  return out


def context_stack(images, centres, context_slices):
  """2.5D input: for each centre slice, slices centre-k .. centre+k of `images` [S, H, W, C]
  (edge slices repeated), concatenated slice-major: [offset -k: C channels, ..., +k: C]."""
  if context_slices == 0:
    return images[centres]
  offsets = np.arange(-context_slices, context_slices + 1)
  neighbours = np.clip(centres[:, None] + offsets[None, :], 0, images.shape[0] - 1)  # [N, 2k+1]
  stacked = images[neighbours]  # [N, 2k+1, H, W, C]
  stacked = np.moveaxis(stacked, 1, 3)  # [N, H, W, 2k+1, C]
  return stacked.reshape(stacked.shape[:3] + (stacked.shape[3] * stacked.shape[4],))


def preprocess_volume(image, labels, *, image_size, normalization, crop="none", context_slices=0):
  """Normalizes, crops, resizes and stacks context for the brain slices of one patient.

  Args:
    image: float [S, H, W, C] raw intensities (or Kaggle's per-slice z-scores).
    labels: uint8 [S, H, W] unified label map, or None (prediction).
    image_size: output height and width.
    normalization: a `Normalization`.
    crop: "brain" (square around the brain of the whole volume) or "none" (whole slice).
    context_slices: neighbours on each side stacked as extra channels (2.5D).
  Returns:
    `PreprocessedSlices` with only the slices that contain brain.
  """
  image = np.ascontiguousarray(image, dtype=np.float32)  # a strided view made each step 3x slower
  brain = brain_mask(image)
  keep = np.flatnonzero(brain.any(axis=(1, 2)))
  box = crop_box(brain, crop)
  # Context needs the neighbours of kept slices too, so every slice is prepared; slices
  # without brain normalize to zeros.
  needed = np.arange(image.shape[0]) if context_slices else keep
  # image[needed] is a copy already (fancy indexing): normalize it in place.
  normalized = normalize(image[needed], brain[needed], normalization, in_place=True)
  resized = resize_images(crop_square(normalized, box), image_size)
  centres = keep if context_slices else np.arange(len(keep))
  stacked = context_stack(resized, centres, context_slices)
  resized_labels = None
  if labels is not None:
    resized_labels = resize_labels(crop_square(np.asarray(labels)[keep], box), image_size)
  return PreprocessedSlices(
    images=stacked, labels=resized_labels, slice_indices=keep.astype(np.int64), crop=box
  )


@dataclasses.dataclass(frozen=True)
class Recipe:
  """Every choice that turns a source case into network input. The converter writes it into
  the manifest and the trainer into the model's dataset.json, so prediction prepares a new
  case exactly like the training slices instead of re-deriving the rules."""

  image_size: int = 128
  modalities: tuple = ("flair",)
  normalization: str = "zscore_brain"
  normalization_scope: str = "auto"  # per volume for NIfTI, per slice for Kaggle h5
  crop: str = "brain"
  context_slices: int = 1  # docs/accuracy.md, Tables 3 and 4: context 0 lost on 10 of 15 patients

  def __post_init__(self):
    object.__setattr__(self, "modalities", tuple(self.modalities))
    if self.normalization not in NORMALIZATION_METHODS:
      raise ValueError(
        f"normalization must be one of {NORMALIZATION_METHODS}, got {self.normalization!r}"
      )
    if self.crop not in CROPS:
      raise ValueError(f"crop must be one of {CROPS}, got {self.crop!r}")
    if self.context_slices < 0:
      raise ValueError(f"context_slices must be >= 0, got {self.context_slices}")

  @property
  def channels(self):
    """Input channels of the network: every modality for each of the 2k+1 slices."""
    return len(self.modalities) * (2 * self.context_slices + 1)

  def normalization_for(self, source_format):
    scope = self.normalization_scope
    if scope == "auto":
      # Kaggle slices were z-scored one by one, so only per-slice statistics are comparable.
      scope = "slice" if source_format == "h5" else "volume"
    return Normalization(scope=scope, method=self.normalization)

  def preprocess(self, image, labels, source_format):
    return preprocess_volume(
      image,
      labels,
      image_size=self.image_size,
      normalization=self.normalization_for(source_format),
      crop=self.crop,
      context_slices=self.context_slices,
    )

  def to_json(self):
    return {
      "image_size": self.image_size,
      "modalities": list(self.modalities),
      "normalization": self.normalization,
      "normalization_scope": self.normalization_scope,
      "crop": self.crop,
      "crop_margin": CROP_MARGIN,
      "context_slices": self.context_slices,
      "channel_order": "slice-major: offset -k (every modality), ..., offset +k",
    }

  @classmethod
  def before_recipes(cls, image_size, modalities=("flair",)):
    """The rule of manifests, dataset.json files and bare models written before recipes were
    recorded: whole slices, no context."""
    return cls(
      image_size=int(image_size), modalities=tuple(modalities), crop="none", context_slices=0
    )

  @classmethod
  def from_json(cls, entry):
    """Reads a recipe; what a manifest written before crops and context lacks reads as the
    rule of `before_recipes`."""
    old = cls.before_recipes(entry["image_size"], entry["modalities"])
    return dataclasses.replace(
      old,
      normalization=entry.get("normalization", old.normalization),
      normalization_scope=entry.get("normalization_scope", old.normalization_scope),
      crop=entry.get("crop", old.crop),
      context_slices=int(entry.get("context_slices", old.context_slices)),
    )
