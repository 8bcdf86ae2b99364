"""Turns raw BraTS slices into the model's input: one function for converter and prediction.

Training and prediction must see identical pixels, so `preprocess_volume` is the
only place that normalizes, resizes and drops brainless slices. It is pure numpy
(no TensorFlow) so converter workers stay light and fork/spawn safely.
"""

import dataclasses
import functools

import numpy as np

# z-scores beyond this are clipped: a few hyperintense voxels must not dominate.
CLIP_VALUE = 5.0
# A brain whose intensities barely vary cannot be z-scored meaningfully.
_MIN_STD = 1e-6

NORMALIZATION_SCOPES = ("volume", "slice")


@dataclasses.dataclass(frozen=True)
class Normalization:
  """How intensities were normalized; stored in the manifest so readers never guess."""
  scope: str  # "volume" (whole patient known) or "slice"
  clip: float = CLIP_VALUE
  method: str = "zscore_brain"

  def to_json(self):
    return {"method": self.method, "scope": self.scope, "clip": [-self.clip, self.clip],
            "brain": "voxels above the slice background value", "background": 0.0}


@dataclasses.dataclass(frozen=True)
class PreprocessedSlices:
  """The kept slices of one patient, ready to be written or fed to the model."""
  images: np.ndarray  # float32 [S, size, size, C]
  labels: np.ndarray | None  # uint8 [S, size, size] unified label map, or None
  slice_indices: np.ndarray  # int64 [S], index k in the source volume


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
  background = image.min(axis=(1, 2), keepdims=True)
  return (image > background).any(axis=-1)


def _zscore(values, brain, axes):
  """z-scores `values` with statistics over `brain` voxels, reduced over `axes`."""
  weights = brain[..., None].astype(np.float32)
  count = np.maximum(weights.sum(axis=axes, keepdims=True), 1.0)
  mean = (values * weights).sum(axis=axes, keepdims=True) / count
  var = (np.square(values - mean) * weights).sum(axis=axes, keepdims=True) / count
  return (values - mean) / np.maximum(np.sqrt(var), _MIN_STD)


def normalize(image, brain, normalization):
  """z-score over brain voxels per channel, background 0, clipped.

  Args:
    image: float32 [S, H, W, C].
    brain: bool [S, H, W].
    normalization: a `Normalization`.
  """
  axes = (0, 1, 2) if normalization.scope == "volume" else (1, 2)
  normalized = _zscore(image.astype(np.float32), brain, axes)
  normalized = np.clip(normalized, -normalization.clip, normalization.clip)
  return np.where(brain[..., None], normalized, 0.0).astype(np.float32)


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


def preprocess_volume(image, labels, *, image_size, normalization):
  """Normalizes, resizes and drops brainless slices of one patient.

  Args:
    image: float [S, H, W, C] raw intensities (or Kaggle's per-slice z-scores).
    labels: uint8 [S, H, W] unified label map, or None (prediction).
    image_size: output height and width.
    normalization: a `Normalization`.
  Returns:
    `PreprocessedSlices` with only the slices that contain brain.
  """
  image = np.asarray(image, dtype=np.float32)
  brain = brain_mask(image)
  keep = np.flatnonzero(brain.any(axis=(1, 2)))
  normalized = normalize(image[keep], brain[keep], normalization)
  resized = resize_images(normalized, image_size)
  resized_labels = None if labels is None else resize_labels(np.asarray(labels)[keep], image_size)
  return PreprocessedSlices(images=resized, labels=resized_labels, slice_indices=keep.astype(np.int64))
