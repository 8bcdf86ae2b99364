"""Site-shift perturbations of one patient's raw volume, for a stress test.

The model learns from one institution's patients and is judged on others: other scanners
and protocols give less tumour contrast, other intensity curves, coil bias, thicker
slices and more noise. Each perturbation here imitates one of these on a source volume
before it is preprocessed, so the stress test scores the model as another site would.

Every function takes `image` float32 [S, H, W, C] (slices first, raw scanner intensities,
background exactly 0 and brain > 0: skull-stripped BraTS NIfTI) and a seed, and returns
a perturbed copy. Only brain voxels change and they stay > 0, so the brain mask, and with
it the crop and the normalization's voxels, are the same. Each is deterministic for a
seed. numpy and scipy only, so evaluation needs no TensorFlow for them.
"""

import numpy as np
from scipy import ndimage

_SMALLEST = np.finfo(np.float32).tiny  # keeps a brain voxel > 0


def _on_brain(image, perturbed):
  """`perturbed` on the brain voxels of `image` (kept > 0), 0 elsewhere, float32."""
  return np.where(image > 0, np.maximum(perturbed, _SMALLEST), 0.0).astype(np.float32)


def _channels(image):
  """(channel index, its brain voxels) for each channel with a brain."""
  for c in range(image.shape[-1]):
    voxels = image[..., c][image[..., c] > 0]
    if voxels.size:
      yield c, voxels


def low_contrast(image: np.ndarray, seed: int = 0, factor: float = 0.5) -> np.ndarray:
  """Intensities above the brain's median pulled towards it by `factor`, per channel:
  bright tumour stands out half as much from normal brain (monotone, so no voxel changes
  rank). Needs no randomness; `seed` is for the common signature."""
  del seed
  out = image.astype(np.float32, copy=True)
  for c, voxels in _channels(image):
    median = np.float32(np.median(voxels))
    channel = out[..., c]
    bright = channel > median
    channel[bright] = median + np.float32(factor) * (channel[bright] - median)
  return _on_brain(image, out)


def gamma(image: np.ndarray, seed: int, value: float | None = None) -> np.ndarray:
  """Gamma `value` (0.6 or 1.6, drawn from the seed, one for the volume) on the intensities
  between the brain's 1st and 99th percentile scaled to [0, 1], per channel; the rest is
  left as it is, so the curve stays continuous and monotone."""
  value = np.float32(np.random.default_rng(seed).choice([0.6, 1.6]) if value is None else value)
  out = image.astype(np.float32, copy=True)
  for c, voxels in _channels(image):
    low, high = np.percentile(voxels, (1, 99))
    if high <= low:
      continue
    channel = out[..., c]
    inside = (channel >= low) & (channel <= high)
    scaled = (channel[inside] - low) / (high - low)
    channel[inside] = low + (high - low) * np.power(scaled, value)
  return _on_brain(image, out)


def smooth_field(
  inside: np.ndarray, seed: int, amplitude: float = 0.25, degree: int = 3
) -> np.ndarray:
  """1 + amplitude * p [S, H, W]: p a random polynomial of the given degree in the
  normalized slice, row and column coordinates, scaled to max |p| = 1 over the voxels
  `inside` (bool [S, H, W]; a cubic's extremes lie in the corners, far from the brain)."""
  rng = np.random.default_rng(seed)
  axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in inside.shape]
  powers = [np.stack([axis**k for k in range(degree + 1)]) for axis in axes]  # [D + 1, n]
  coefficients = rng.uniform(-1.0, 1.0, (degree + 1,) * 3).astype(np.float32)
  total = np.add.outer(
    np.add.outer(np.arange(degree + 1), np.arange(degree + 1)), np.arange(degree + 1)
  )
  coefficients[(total == 0) | (total > degree)] = 0.0  # no constant, degree at most `degree`
  p = np.einsum("abc,as,bh,cw->shw", coefficients, *powers, optimize=True)
  largest = float(np.abs(p[inside]).max()) if inside.any() else 1.0
  return 1.0 + amplitude * p / max(largest, 1e-6)


def bias_field(image: np.ndarray, seed: int, amplitude: float = 0.25) -> np.ndarray:
  """A smooth 3D multiplicative field within 1 +- `amplitude` over the brain, one for all
  channels (the coil's, which every sequence sees)."""
  field = smooth_field((image > 0).any(axis=-1), seed, amplitude)
  return _on_brain(image, image * field[..., None])


def _block_sums_along_slices(values, weights, phase, block):
  """Sums of values and weights over blocks of `block` slices (the first block shortened
  by `phase`), and each block's centre in slice coordinates."""
  starts = np.unique(np.clip(np.arange(-phase, values.shape[0], block), 0, None))
  ends = np.append(starts[1:], values.shape[0])
  sums = np.add.reduceat(values, starts, axis=0)
  counts = np.add.reduceat(weights, starts, axis=0)
  return sums, counts, (starts + ends - 1) / 2.0


def _interpolate_blocks(blocks, centres, length):
  """Linear interpolation along axis 0 from blocks at `centres` to slices 0..length-1
  (constant beyond the first and the last centre)."""
  if len(centres) == 1:
    return np.repeat(blocks, length, axis=0)
  positions = np.arange(length)
  upper = np.clip(np.searchsorted(centres, positions), 1, len(centres) - 1)
  lower = upper - 1
  weight = np.clip((positions - centres[lower]) / (centres[upper] - centres[lower]), 0.0, 1.0)
  weight = weight.astype(np.float32).reshape((-1,) + (1,) * (blocks.ndim - 1))
  out = blocks[upper] * weight
  out += blocks[lower] * (1 - weight)
  return out


def thick_slices(
  image: np.ndarray, seed: int, block: int = 3, in_plane_sigma: float = 0.7
) -> np.ndarray:
  """Thick, differently reconstructed slices: brain voxels averaged over blocks of `block`
  slices (where the blocks start is drawn from the seed), interpolated back to every
  slice, then blurred slightly in-plane. Both steps average brain voxels only
  (normalized convolution), so the brain's edge is not darkened by background zeros."""
  phase = int(np.random.default_rng(seed).integers(block))
  brain = (image > 0).astype(np.float32)
  values = image.astype(np.float32) * brain
  sums, counts, centres = _block_sums_along_slices(values, brain, phase, block)
  values = _interpolate_blocks(sums, centres, image.shape[0])
  weights = _interpolate_blocks(counts, centres, image.shape[0])
  sigma = (0, in_plane_sigma, in_plane_sigma, 0)
  values = ndimage.gaussian_filter(values, sigma, output=np.float32)
  weights = ndimage.gaussian_filter(weights, sigma, output=np.float32)
  return _on_brain(image, values / np.maximum(weights, 1e-6))


def noise(image: np.ndarray, seed: int, level: float = 0.04) -> np.ndarray:
  """Rician-like noise, as in magnitude images: |x + n1 + i n2| with n1, n2 Gaussian of
  std `level` x the brain's median intensity, per channel."""
  rng = np.random.default_rng(seed)
  out = image.astype(np.float32, copy=True)
  for c, voxels in _channels(image):
    std = np.float32(level * np.median(voxels))
    channel = out[..., c]
    real = channel + std * rng.standard_normal(channel.shape, dtype=np.float32)
    imaginary = std * rng.standard_normal(channel.shape, dtype=np.float32)
    out[..., c] = np.sqrt(real * real + imaginary * imaginary)
  return _on_brain(image, out)


PERTURBATIONS = {
  "low_contrast": low_contrast,
  "gamma": gamma,
  "bias_field": bias_field,
  "thick_slices": thick_slices,
  "noise": noise,
}


def perturb(image: np.ndarray, name: str, seed: int) -> np.ndarray:
  """`PERTURBATIONS[name](image, seed)`; an unknown name is a ValueError listing the names."""
  if name not in PERTURBATIONS:
    raise ValueError(f"unknown perturbation {name!r}; expected one of {', '.join(PERTURBATIONS)}")
  return PERTURBATIONS[name](image, seed)
