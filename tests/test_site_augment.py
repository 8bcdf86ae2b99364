"""Site-like intensity augmentation: brain only, monotone curve, shared by context slices,
reproducible, and each change on or off with its probability."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from data_prep import preprocessing
from input_pipeline import augment
from input_pipeline import augment_config
from input_pipeline import site_augment

CHANGES = ("curve", "bias_field", "blur", "low_resolution", "noise", "slice_jitter")
# Geometry and the old intensity jitter off, so the site changes are all that happens.
STILL = dict(
  flip=False,
  rotate90=False,
  rotate_scale_probability=0.0,
  max_intensity_scale_delta=0.0,
  max_intensity_shift=0.0,
)


def _config(*changes, **overrides):
  """SITE_AUGMENT with only `changes` on (probability 1)."""
  probabilities = {f"{name}_probability": float(name in changes) for name in CHANGES}
  return dataclasses.replace(augment_config.SITE_AUGMENT, **STILL, **probabilities, **overrides)


def _batch(batch=4, size=32, modalities=2, context=3, seed=0):
  """Normalized-looking slices: brain an ellipse of z-scores with a bright tumour, the
  same brain in every channel; channels slice-major (context, then modality)."""
  rng = np.random.default_rng(seed)
  rows, columns = np.mgrid[:size, :size]
  brain = ((rows - size / 2) / (0.4 * size)) ** 2 + ((columns - size / 2) / (0.35 * size)) ** 2 < 1
  tumor = (rows - 0.45 * size) ** 2 + (columns - 0.55 * size) ** 2 < (0.12 * size) ** 2
  image = rng.normal(0.0, 0.6, (batch, size, size, context * modalities)) + 2.5 * tumor[..., None]
  image = np.where(brain[..., None], image, 0.0).astype(np.float32)
  label = np.broadcast_to(tumor, (batch, size, size)).astype(np.uint8)
  return image, label, brain, tumor


def _augment(image, label, config, seed=7, modalities=2):
  out_image, out_label = augment.augment_batch(
    tf.constant(image),
    tf.constant(label),
    tf.constant([seed, 3], tf.int64),
    config,
    num_modalities=modalities,
  )
  return out_image.numpy(), out_label.numpy()


def test_background_stays_zero_and_brain_nonzero():
  image, label, brain, _ = _batch()
  for seed in range(3):
    out, _ = _augment(image, label, _config(*CHANGES), seed=seed)
    assert np.all(out[:, ~brain] == 0.0)
    assert np.all(out[:, brain] != 0.0)


@pytest.mark.parametrize("change", CHANGES)
def test_each_change_acts_on_brain_pixels_only_when_drawn(change):
  image, label, brain, _ = _batch()
  out, _ = _augment(image, label, _config(change))
  changed = out != image
  assert changed[:, brain].mean() > 0.5  # probability 1: (nearly) every brain pixel moves
  assert not changed[:, ~brain].any()
  unchanged, _ = _augment(image, label, _config())  # every probability 0
  np.testing.assert_array_equal(unchanged, image)


def test_site_changes_off_give_the_geometric_augmentation_unchanged():
  """The site draws come from their own seed: with all probabilities 0, the output is the
  plain augmentation's, geometry included."""
  image, label, _, _ = _batch()
  plain = augment.AugmentConfig(rotate_scale_probability=1.0)
  site_off = dataclasses.replace(
    plain, site_augmentation=True, **{f"{name}_probability": 0.0 for name in CHANGES}
  )
  for a, b in zip(_augment(image, label, plain), _augment(image, label, site_off)):
    np.testing.assert_array_equal(a, b)


def test_curve_is_monotone_per_example_and_modality():
  image, label, _, _ = _batch(modalities=2, context=3)
  for seed in range(4):
    out, _ = _augment(image, label, _config("curve"), seed=seed)
    for b in range(image.shape[0]):
      for m in range(2):
        values, changed = image[b, ..., m::2], out[b, ..., m::2]  # all its context slices
        inside = values != 0
        order = np.argsort(values[inside], kind="stable")
        assert np.all(np.diff(changed[inside][order]) >= 0)


@pytest.mark.parametrize("gamma, compression", [(0.5, 0.1), (2.0, 1.0), (1.0, 0.5)])
def test_curve_is_monotone_at_the_ends_of_its_ranges(gamma, compression):
  values = np.linspace(-4.0, 5.0, 2 * 1 * 1 * 16 * 16, dtype=np.float32).reshape(2, 1, 1, 16, 16)
  values[values == 0] = 0.01  # brain = pixels != 0
  x = tf.constant(values)
  curved = site_augment.intensity_curve(
    x, x != 0, tf.fill([2, 1, 1, 1, 1], gamma), tf.fill([2, 1, 1, 1, 1], compression)
  ).numpy()
  assert np.all(np.diff(curved.reshape(2, -1), axis=1) >= 0)


def test_strongest_curve_more_than_halves_tumor_contrast_after_the_moments_are_restored():
  image, _, brain, tumor = _batch(batch=1, modalities=1, context=1)
  x = site_augment.split_modalities(tf.constant(image), 1)
  inside = x != 0
  count = tf.reduce_sum(tf.cast(inside, tf.float32), (2, 3, 4), keepdims=True)
  mean, std = site_augment.brain_moments(x, count)
  low, _ = augment_config.SITE_AUGMENT.gamma_range
  strongest = tf.fill([1, 1, 1, 1, 1], min(augment_config.SITE_AUGMENT.bright_compression_range))
  curved = site_augment.intensity_curve(x, inside, tf.fill([1, 1, 1, 1, 1], low), strongest)
  out = site_augment.restandardize(curved, count, mean, std, 5.0).numpy()[0, 0, 0]
  normal = brain & ~tumor
  gap = lambda picture: np.median(picture[tumor]) - np.median(picture[normal])
  assert gap(out) < 0.5 * gap(image[0, ..., 0])


def test_changes_keep_each_modality_brain_mean_and_std():
  """The moments are restored, so the picture stays in the normalization's range."""
  image, label, _, _ = _batch()
  out, _ = _augment(image, label, _config("curve", "bias_field", "blur", "low_resolution", "noise"))
  for m in range(2):
    before, after = image[..., m::2], out[..., m::2]
    for b in range(image.shape[0]):
      inside = before[b] != 0
      np.testing.assert_allclose(after[b][inside].mean(), before[b][inside].mean(), atol=2e-3)
      np.testing.assert_allclose(after[b][inside].std(), before[b][inside].std(), rtol=2e-3)


def test_context_slices_of_a_modality_get_the_same_changes():
  image, label, _, _ = _batch(modalities=2, context=3)
  image[..., 2:4] = image[..., 0:2]  # three identical context slices per modality
  image[..., 4:6] = image[..., 0:2]
  shared = ("curve", "bias_field", "blur", "low_resolution")
  out, _ = _augment(image, label, _config(*shared))
  assert np.any(out != image)
  np.testing.assert_array_equal(out[..., 2:4], out[..., 0:2])
  np.testing.assert_array_equal(out[..., 4:6], out[..., 0:2])
  assert np.any(out[..., 0] != out[..., 1])  # modalities get their own draws
  for per_slice in ("slice_jitter", "noise"):  # these differ from slice to slice
    out, _ = _augment(image, label, _config(*shared, per_slice))
    assert np.any(out[..., 2:4] != out[..., 0:2])


def test_old_intensity_jitter_is_shared_by_context_slices():
  image, label, _, _ = _batch(modalities=2, context=3)
  image[..., 2:4] = image[..., 0:2]
  config = augment.AugmentConfig(rotate_scale_probability=0.0)
  out, _ = _augment(image, label, config)
  np.testing.assert_array_equal(out[..., 2:4], out[..., 0:2])
  assert np.any(out[..., 0:2] != image[..., 0:2])
  with pytest.raises(ValueError, match="not context slices"):
    _augment(image, label, config, modalities=4)


def test_same_seed_same_output_and_another_seed_another():
  image, label, _, _ = _batch()
  config = _config(*CHANGES)
  first, second = _augment(image, label, config, seed=11), _augment(image, label, config, seed=11)
  np.testing.assert_array_equal(first[0], second[0])
  assert np.any(_augment(image, label, config, seed=12)[0] != first[0])


def test_float32_out_shape_kept_and_labels_untouched():
  image, label, _, _ = _batch()
  for config in (
    _config(*CHANGES),
    dataclasses.replace(augment_config.SITE_AUGMENT, rotate_scale_probability=1.0),
  ):
    out, out_label = augment.augment_batch(
      tf.constant(image, tf.float16),
      tf.constant(label),
      tf.constant([5, 3], tf.int64),
      config,
      num_modalities=2,
    )
    assert out.dtype == tf.float32 and out.shape == image.shape
    plain = dataclasses.replace(config, site_augmentation=False)
    _, plain_label = augment.augment_batch(
      tf.constant(image, tf.float16),
      tf.constant(label),
      tf.constant([5, 3], tf.int64),
      plain,
      num_modalities=2,
    )
    np.testing.assert_array_equal(out_label.numpy(), plain_label.numpy())
  np.testing.assert_array_equal(_augment(image, label, _config(*CHANGES))[1], label)


def test_smoothing_keeps_a_constant_brain_constant():
  """Normalized convolution: blur and low resolution do not darken the brain's edge."""
  image, label, brain, _ = _batch(modalities=1, context=1)
  image = np.where(brain, 1.5, 0.0)[None, ..., None].repeat(4, axis=0).astype(np.float32)
  config = _config("blur", "low_resolution")
  changes = site_augment.draw_site_changes(tf.constant([1, 2], tf.int64), 4, config, 1, 1)
  rows, columns = (site_augment.smoothing_taps(changes, config, 32) for _ in range(2))
  x = site_augment.split_modalities(tf.constant(image), 1)
  out = site_augment.smooth_within_brain(x, x != 0, rows, columns).numpy()[:, 0, 0]
  np.testing.assert_allclose(out[:, brain], 1.5, rtol=1e-5)
  assert np.all(out[:, ~brain] == 0.0)


@pytest.mark.parametrize("factor", [1.0, 1.3, 1.7, 2.0])
def test_low_resolution_taps_are_the_bands_of_down_then_up_resizing(factor):
  length, radius = 32, 3
  count = int(np.ceil(length / factor))
  dense = preprocessing.linear_resize_matrix(count, length) @ preprocessing.linear_resize_matrix(
    length, count
  )
  taps = site_augment.low_resolution_taps(tf.constant([factor]), length, radius).numpy()[0]
  rebuilt = np.zeros((length, length), np.float32)
  for i in range(length):
    for t in range(-radius, radius + 1):
      if 0 <= i + t < length:
        rebuilt[i, i + t] = taps[i, t + radius]
  np.testing.assert_allclose(rebuilt, dense, atol=1e-5)


def _edema_batch(modalities=2):
  """`_batch` at 64 pixels with its tumour labelled edema (2), a bright core (1) and a bright
  normal spot apart from it; and the pixels well inside the edema."""
  image, label, brain, tumor = _batch(size=64, modalities=modalities)
  label = label * 2
  label[:, 40:44, 20:24] = 1
  image[:, 40:44, 20:24] = 3.0
  image[:, 10:13, 25:28] = 3.0  # bright normal brain
  image[:, 28:30, 34:36] = -0.5  # edema darker than the brain's median
  rows, columns = np.mgrid[:64, :64]
  inside = (rows - 0.45 * 64) ** 2 + (columns - 0.55 * 64) ** 2 < 5.0**2  # the edema's r: 7.7
  return image, label, brain, inside


def _fade(**overrides):
  return dataclasses.replace(
    augment.AugmentConfig(),
    **STILL,
    **{"faint_edema": True, "faint_edema_probability": 1.0, **overrides},
  )


def test_faint_edema_keeps_a_share_of_the_edemas_distance_to_the_brain_median():
  image, label, brain, inside = _edema_batch()
  out, out_label = _augment(image, label, _fade(faint_edema_range=(0.5, 0.5)))
  np.testing.assert_array_equal(out_label, label)
  x, y = image[0, ..., 0][inside], out[0, ..., 0][inside]
  bright = np.argsort(x)[-10:]
  # keep = 0.5: bright voxels move by half their distance to one median (that of the brain).
  median = 2 * y[bright] - x[bright]
  np.testing.assert_allclose(median, median.mean(), atol=1e-4)
  assert abs(median.mean() - np.median(image[0][brain])) < 0.3
  dim = x <= median.mean()
  assert dim.sum() > 3
  np.testing.assert_array_equal(y[dim], x[dim])  # at or below the median: unchanged
  # Away from the edema nothing changes: not the core, not bright normal brain.
  for rows, columns in ((slice(40, 44), slice(20, 24)), (slice(10, 13), slice(25, 28))):
    np.testing.assert_array_equal(out[:, rows, columns], image[:, rows, columns])
  assert np.all(out[:, ~brain] == 0.0) and np.all(out[:, brain] != 0.0)


def test_faint_edema_is_shared_by_context_slices_and_off_at_probability_zero():
  image, label, _, inside = _edema_batch(modalities=1)
  out, _ = _augment(image, label, _fade(), modalities=1)
  keeps = np.zeros((image.shape[0], image.shape[3]))
  for example in range(image.shape[0]):
    for channel in range(image.shape[3]):
      before, after = image[example, ..., channel][inside], out[example, ..., channel][inside]
      a, b = np.argsort(before)[-2:]  # the two brightest: both above the median
      keeps[example, channel] = (after[b] - after[a]) / (before[b] - before[a])
  np.testing.assert_allclose(keeps, keeps[:, :1].repeat(3, axis=1), atol=1e-3)
  assert np.all((keeps > 0.25 - 1e-3) & (keeps < 0.75 + 1e-3))
  assert len(np.unique(keeps[:, 0].round(3))) > 1  # drawn per example
  off, _ = _augment(image, label, _fade(faint_edema_probability=0.0), modalities=1)
  np.testing.assert_array_equal(off, image)
