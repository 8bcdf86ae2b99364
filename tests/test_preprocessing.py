"""Normalization, resizing and slice selection: the pixels training and prediction share."""

import numpy as np
import pytest
import tensorflow as tf

from data_prep import preprocessing


@pytest.mark.parametrize("in_size,out_size", [(240, 128), (240, 96), (64, 128), (155, 128)])
def test_linear_resize_matches_tensorflow_antialiased_bilinear(in_size, out_size):
  rng = np.random.default_rng(0)
  images = rng.normal(size=(2, in_size, in_size, 2)).astype(np.float32)
  ours = preprocessing.resize_images(images, out_size)
  theirs = tf.image.resize(images, (out_size, out_size), method="bilinear", antialias=True).numpy()
  np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_label_resize_keeps_only_existing_labels_and_blocks():
  labels = np.zeros((1, 240, 240), np.uint8)
  labels[0, 60:180, 60:120] = 2
  labels[0, 100:140, 80:100] = 3
  resized = preprocessing.resize_labels(labels, 128)
  assert set(np.unique(resized)) == {0, 2, 3}
  # the edema block covers a quarter of the width and half the height in both grids
  assert abs((resized == 2).mean() + (resized == 3).mean() - (labels > 0).mean()) < 0.01


def test_volume_zscore_over_brain_has_zero_background_and_unit_brain_statistics():
  rng = np.random.default_rng(1)
  image = np.zeros((6, 64, 64, 1), np.float32)
  image[1:5, 16:48, 16:48, 0] = rng.normal(300, 40, size=(4, 32, 32))
  out = preprocessing.preprocess_volume(
    image, None, image_size=64, normalization=preprocessing.Normalization("volume")
  )
  assert out.slice_indices.tolist() == [1, 2, 3, 4]  # brainless slices 0 and 5 dropped
  brain = out.images[:, 16:48, 16:48, 0]
  assert abs(brain.mean()) < 1e-3 and abs(brain.std() - 1) < 1e-2
  assert np.all(out.images[:, :16] == 0) and np.all(out.images[:, :, 48:] == 0)


def test_slice_scope_handles_kaggle_negative_background():
  # Kaggle slices: z-scored over all pixels, so background is the (negative) minimum.
  rng = np.random.default_rng(2)
  raw = np.zeros((2, 32, 32, 1), np.float32)
  raw[0, 8:24, 8:24, 0] = rng.normal(500, 50, size=(16, 16))
  raw[1, 8:24, 8:24, 0] = rng.normal(900, 10, size=(16, 16))
  kaggle = (raw - raw.mean(axis=(1, 2), keepdims=True)) / raw.std(axis=(1, 2), keepdims=True)
  out = preprocessing.preprocess_volume(
    kaggle, None, image_size=32, normalization=preprocessing.Normalization("slice")
  )
  for s in range(2):
    brain = out.images[s, 8:24, 8:24, 0]
    assert abs(brain.mean()) < 1e-3 and abs(brain.std() - 1) < 1e-2
    assert out.images[s, 0, 0, 0] == 0.0


def test_values_are_clipped():
  image = np.zeros((1, 32, 32, 1), np.float32)
  image[0, 4:28, 4:28] = 1.0
  image[0, 10, 10] = 1e6
  out = preprocessing.preprocess_volume(
    image, None, image_size=32, normalization=preprocessing.Normalization("volume")
  )
  assert out.images.max() <= preprocessing.CLIP_VALUE


def _brain_volume(depth=6, height=60, width=50, box=(10, 40, 5, 30)):
  """Raw-like volume: background 0, a rectangular 'brain' of positive intensities."""
  rng = np.random.default_rng(0)
  image = np.zeros((depth, height, width, 1), np.float32)
  r0, r1, c0, c1 = box
  image[:, r0:r1, c0:c1] = rng.uniform(100, 200, (depth, r1 - r0, c1 - c0, 1))
  return image


def test_crop_box_is_a_square_around_the_brain_of_the_whole_volume():
  image = _brain_volume()
  image[0] = 0  # a slice without brain changes nothing
  image[3, 8, 20] = 150  # brain reaching higher on one slice widens the box for all
  box = preprocessing.crop_box(preprocessing.brain_mask(image), "brain", margin=2)
  # rows 8..39 (32), columns 5..29 (25): side 32 + 2 * 2, centred on the box
  assert box.size == 36
  assert (box.row, box.column) == (8 - 2, 5 - (36 - 25) // 2)
  whole = preprocessing.crop_box(preprocessing.brain_mask(image), "none")
  assert (whole.row, whole.column, whole.size) == (0, -5, 60)


def test_crop_round_trip_lands_on_the_source_voxels():
  # A box that leaves the slice on two sides, pasted back at the network's size and at 1:1.
  labels = np.zeros((2, 40, 30), np.uint8)
  labels[0, 5:9, 3:12] = 1
  labels[1, 30:39, 20:29] = 1
  box = preprocessing.CropBox(row=-6, column=-10, size=48)
  cropped = preprocessing.crop_square(labels, box)
  assert cropped.shape == (2, 48, 48) and cropped.sum() == labels.sum()
  pasted = preprocessing.paste_back(cropped[..., None].astype(np.float32), box, 40, 30)
  np.testing.assert_array_equal(pasted[..., 0] > 0.5, labels > 0)
  # Through a resize to the network's grid and back: the mask lands on the same voxels
  # up to the resampling of its edge.
  small = preprocessing.resize_images(cropped[..., None].astype(np.float32), 24)
  back = preprocessing.paste_back(small, box, 40, 30)[..., 0] > 0.5
  assert np.logical_and(back, labels > 0).sum() / max(back.sum(), 1) > 0.8
  assert back[:, 20:28, :].sum() == 0 and back[0, 6:8, 5:10].all()


def test_context_channels_are_slice_major_with_edge_slices_repeated():
  # Two modalities; each slice's value encodes (slice, modality).
  images = np.zeros((4, 2, 2, 2), np.float32)
  for s in range(4):
    images[s, ..., 0], images[s, ..., 1] = 10 * s, 10 * s + 1
  stacked = preprocessing.context_stack(images, np.array([0, 2, 3]), 1)
  assert stacked.shape == (3, 2, 2, 6)
  np.testing.assert_array_equal(stacked[0, 0, 0], [0, 1, 0, 1, 10, 11])  # slice -1 = slice 0
  np.testing.assert_array_equal(stacked[1, 0, 0], [10, 11, 20, 21, 30, 31])
  np.testing.assert_array_equal(stacked[2, 0, 0], [20, 21, 30, 31, 30, 31])  # last repeated


def test_recipe_with_context_keeps_brain_slices_and_centres_them():
  image = _brain_volume(depth=5)
  image[0] = 0
  recipe = preprocessing.Recipe(image_size=32, context_slices=1)
  slices = recipe.preprocess(image, None, "nifti")
  assert recipe.channels == 3 and slices.images.shape == (4, 32, 32, 3)
  assert slices.slice_indices.tolist() == [1, 2, 3, 4]
  assert not slices.images[0, ..., 0].any()  # slice 0 has no brain: normalized to zeros
  np.testing.assert_array_equal(slices.images[1, ..., 0], slices.images[0, ..., 1])
  np.testing.assert_array_equal(slices.images[3, ..., 2], slices.images[3, ..., 1])  # edge
  plain = preprocessing.Recipe(image_size=32, context_slices=0).preprocess(image, None, "nifti")
  np.testing.assert_allclose(plain.images[..., 0], slices.images[..., 1], atol=1e-5)


def test_robust_normalization_is_not_pulled_by_a_bright_tumor():
  rng = np.random.default_rng(1)
  brain = rng.normal(100, 10, (4, 30, 30, 1)).astype(np.float32)
  with_tumor = brain.copy()
  with_tumor[:, :6, :6] = 300  # 4% of the brain, very bright
  mask = np.ones((4, 30, 30), bool)
  for method, tolerance in (("robust_brain", 0.15), ("zscore_brain", None)):
    normalization = preprocessing.Normalization("volume", method=method, clip=100)
    a = preprocessing.normalize(brain, mask, normalization)[:, 10:, 10:]
    b = preprocessing.normalize(with_tumor, mask, normalization)[:, 10:, 10:]
    shift = np.abs(a - b).mean()
    if tolerance:
      assert shift < tolerance, (method, shift)
    else:
      assert shift > 0.3, (method, shift)  # the z-score of normal brain moves
