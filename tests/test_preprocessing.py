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
      image, None, image_size=64, normalization=preprocessing.Normalization("volume"))
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
      kaggle, None, image_size=32, normalization=preprocessing.Normalization("slice"))
  for s in range(2):
    brain = out.images[s, 8:24, 8:24, 0]
    assert abs(brain.mean()) < 1e-3 and abs(brain.std() - 1) < 1e-2
    assert out.images[s, 0, 0, 0] == 0.0


def test_values_are_clipped():
  image = np.zeros((1, 32, 32, 1), np.float32)
  image[0, 4:28, 4:28] = 1.0
  image[0, 10, 10] = 1e6
  out = preprocessing.preprocess_volume(
      image, None, image_size=32, normalization=preprocessing.Normalization("volume"))
  assert out.images.max() <= preprocessing.CLIP_VALUE
