"""Site-shift perturbations for the stress test: brain voxels only, deterministic, and each
doing what it imitates."""

import numpy as np
import pytest

from evaluation import site_shift


def _volume(slices=21, size=32, channels=2, seed=0):
  """A raw-looking volume [S, H, W, C]: an ellipsoid brain of positive, textured
  intensities with a bright tumour, background exactly 0."""
  rng = np.random.default_rng(seed)
  s, y, x = np.mgrid[:slices, :size, :size]
  brain = ((s - slices / 2) / (0.45 * slices)) ** 2 + ((y - size / 2) / (0.4 * size)) ** 2 + (
    (x - size / 2) / (0.35 * size)
  ) ** 2 < 1
  tumor = (s - slices / 2) ** 2 + (y - 0.45 * size) ** 2 + (x - 0.55 * size) ** 2 < (
    0.15 * size
  ) ** 2
  image = rng.normal(500.0, 80.0, brain.shape + (channels,)) + 900.0 * tumor[..., None]
  return np.where(brain[..., None], np.maximum(image, 1.0), 0.0).astype(np.float32)


@pytest.mark.parametrize("name", list(site_shift.PERTURBATIONS))
def test_only_brain_voxels_change_and_the_mask_stays(name):
  image = _volume()
  original = image.copy()
  out = site_shift.perturb(image, name, 5)
  assert out.dtype == np.float32 and out.shape == image.shape
  np.testing.assert_array_equal(out > 0, image > 0)
  assert np.all(out[image == 0] == 0.0)
  assert np.any(out != image)
  np.testing.assert_array_equal(image, original)  # the input is not touched


@pytest.mark.parametrize("name", list(site_shift.PERTURBATIONS))
def test_deterministic_for_a_seed(name):
  image = _volume()
  np.testing.assert_array_equal(
    site_shift.perturb(image, name, 9), site_shift.perturb(image, name, 9)
  )


@pytest.mark.parametrize("name", ["bias_field", "noise"])
def test_another_seed_another_perturbation(name):
  image = _volume()
  assert np.any(site_shift.perturb(image, name, 1) != site_shift.perturb(image, name, 2))


def test_low_contrast_halves_the_gap_between_bright_voxels_and_the_median():
  image = _volume()
  out = site_shift.perturb(image, "low_contrast", 0)
  for c in range(image.shape[-1]):
    before, after = image[..., c][image[..., c] > 0], out[..., c][image[..., c] > 0]
    gap = lambda voxels: np.percentile(voxels, 99) - np.median(voxels)
    assert gap(after) == pytest.approx(0.5 * gap(before), rel=0.05)


@pytest.mark.parametrize("value", [0.6, 1.6])
def test_gamma_keeps_the_order_of_brain_voxels(value):
  image = _volume()
  out = site_shift.gamma(image, 0, value=value)
  for c in range(image.shape[-1]):
    inside = image[..., c] > 0
    order = np.argsort(image[..., c][inside], kind="stable")
    assert np.all(np.diff(out[..., c][inside][order]) >= 0)
  assert np.any(out != image)


def test_bias_field_stays_within_a_quarter():
  image = _volume()
  ratio = site_shift.perturb(image, "bias_field", 3)[image > 0] / image[image > 0]
  assert ratio.min() >= 0.75 - 1e-5 and ratio.max() <= 1.25 + 1e-5
  assert ratio.max() - ratio.min() > 0.25  # and does change the brain


def test_thick_slices_smooth_the_change_from_slice_to_slice():
  image = _volume()
  out = site_shift.perturb(image, "thick_slices", 4)

  def slice_to_slice(volume):
    both = (image[1:] > 0) & (image[:-1] > 0)
    return np.abs(volume[1:] - volume[:-1])[both].mean()

  assert slice_to_slice(out) < 0.8 * slice_to_slice(image)


def test_noise_is_a_few_percent_of_the_median():
  image = _volume()
  change = site_shift.perturb(image, "noise", 6) - image
  for c in range(image.shape[-1]):
    inside = image[..., c] > 0
    assert 0.02 < change[..., c][inside].std() / np.median(image[..., c][inside]) < 0.06


def test_unknown_name_lists_the_known_ones():
  with pytest.raises(ValueError) as error:
    site_shift.perturb(_volume(), "motion", 0)
  for name in site_shift.PERTURBATIONS:
    assert name in str(error.value)
